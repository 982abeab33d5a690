"""The MAC array and post-processing units in Verilator, driven by cocotb, exact vs golden."""
import time

import pytest

from rmsmp.generator.config import AcceleratorConfig
from rmsmp.rtl.mac import MacArray
from rmsmp.rtl.ppu import Requantizer
from rmsmp.sim.verilator import VerilatorBuild

pytestmark = pytest.mark.slow      # Verilator builds (the Amaranth unit tests are the fast net)

BENCH = "rmsmp.sim.benches.units"


@pytest.mark.parametrize("cfg", [
    AcceleratorConfig(),                                                       # 10 pot4 + 6 fix8 rows, C=8
    AcceleratorConfig(lane_groups=(("pot3", 2), ("fix2", 1), ("fix6", 2), ("pot5", 1)), columns=5),
], ids=["default", "odd"])
def test_mac_array_in_verilator(cfg):
    comp = MacArray.for_config(cfg)
    t = time.perf_counter()
    b = VerilatorBuild(comp, "mac_array").build()
    print(f"\nverilator build of {cfg.describe()}: {time.perf_counter() - t:.1f} s")
    b.run(BENCH, {"groups": [[g.scheme, g.rows] for g in cfg.lane_groups], "columns": cfg.columns,
                  "act_width": cfg.act_width, "acc_bits": cfg.acc_bits, "products": 40},
          testcase="mac_array_random_and_extreme_dot_products")


def test_requantizer_in_verilator():
    p = {"acc_bits": 32, "mult_bits": 16, "shift_bits": 6, "out_bits": 16}
    VerilatorBuild(Requantizer(**p), "requantizer").run(BENCH, p, testcase="requantizer_matches_golden")
