"""cocotb benches (run inside the simulator via :class:`rmsmp.sim.verilator.VerilatorBuild`).

Each reads its parameters from the ``RMSMP_BENCH`` environment variable (JSON) and
checks the RTL against the golden arithmetic, exactly.
"""
import json
import os


def bench_params() -> dict:
    return json.loads(os.environ.get("RMSMP_BENCH", "{}"))
