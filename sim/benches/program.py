"""cocotb bench: run a program image on the simulation top, free-running until ``done``.

The memory image arrives in bulk (+MEMFILE) and leaves in bulk (+DUMPFILE); Python only
starts the core and waits for ``done`` (the clock is cocotb's GPI clock, not Python).
Parameters (``RMSMP_BENCH``): ``config_hash``, ``prog_addr``, ``stats`` (path of the JSON
with cycles, MAC beats and wall time), ``max_cycles``.
"""
import json
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout

from rmsmp.sim.benches import bench_params


@cocotb.test()
async def run_program(dut):
    p = bench_params()
    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    dut.start.value = 0
    dut.dump.value = 0
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    hw_id = dut.id.value.to_unsigned()
    assert hw_id == p["config_hash"], f"hardware id {hw_id:08x} != program's config {p['config_hash']:08x}"
    dut.prog_addr.value = p.get("prog_addr", 0)
    dut.start.value = 1
    await RisingEdge(dut.clk)
    dut.start.value = 0
    t0 = time.perf_counter()
    await with_timeout(RisingEdge(dut.done), p.get("max_cycles", 10 ** 9) * 10, "ns")
    wall = time.perf_counter() - t0
    stats = {"cycles": dut.cycles.value.to_unsigned(), "mac_beats": dut.mac_beats.value.to_unsigned(),
             "wall_s": wall}
    dut.dump.value = 1
    await RisingEdge(dut.clk)
    dut.dump.value = 0
    await RisingEdge(dut.clk)
    with open(p["stats"], "w") as f:
        json.dump(stats, f)
