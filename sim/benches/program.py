"""cocotb bench: run a program image on the simulation top, free-running until ``done``.

The memory image arrives in bulk (+MEMFILE) and leaves in bulk (+DUMPFILE); Python only
starts the core and waits for ``done`` (the clock is cocotb's GPI clock, not Python).
Parameters (``RMSMP_BENCH``): ``config_hash``, ``prog_addr``, ``stats`` (path of the JSON
with cycles, MAC beats and wall time), ``max_cycles`` (the run's cycle budget: past it the
simulation stops and the stats say ``"timeout": true``).  A core that stops with ``error``
set (an instruction it cannot run) gives ``"error": true``; both carry the ``pc``.
"""
import json
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge, SimTimeoutError, with_timeout

from rmsmp.rtl.csr import CsrAddr, Ctrl, Status
from rmsmp.sim.benches import bench_params


class CsrDriver:
    """Host side of the CSR bus, using the RTL's own register map and layouts."""

    def __init__(self, dut):
        self.dut = dut

    async def write(self, addr: CsrAddr, value: int):
        self.dut.csr__addr.value = addr.value
        self.dut.csr__wdata.value = value
        self.dut.csr__we.value = 1
        await RisingEdge(self.dut.clk)
        self.dut.csr__we.value = 0

    async def read(self, addr: CsrAddr) -> int:
        self.dut.csr__addr.value = addr.value
        await ReadOnly()
        v = self.dut.csr__rdata.value.to_unsigned()
        await RisingEdge(self.dut.clk)
        return v


@cocotb.test()
async def run_program(dut):
    p = bench_params()
    Clock(dut.clk, 10, unit="ns").start()
    csr = CsrDriver(dut)
    dut.rst.value = 1
    dut.csr__we.value = 0
    dut.dump.value = 0
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    hw_id = await csr.read(CsrAddr.ID)
    assert hw_id == p["config_hash"], f"hardware id {hw_id:08x} != program's config {p['config_hash']:08x}"
    await csr.write(CsrAddr.PROG_ADDR, p.get("prog_addr", 0))
    await csr.write(CsrAddr.CTRL, Ctrl.const({"start": 1}).as_bits())
    t0 = time.perf_counter()
    try:
        await with_timeout(RisingEdge(dut.done), p.get("max_cycles", 10 ** 9) * 10, "ns")
        timeout = False
    except SimTimeoutError:
        timeout = True
    wall = time.perf_counter() - t0
    st = Status.as_shape().from_bits(await csr.read(CsrAddr.STATUS))
    assert timeout or (st.done and not st.busy), st
    stats = {"cycles": await csr.read(CsrAddr.CYCLES), "mac_beats": await csr.read(CsrAddr.MAC_BEATS),
             "wall_s": wall, "timeout": timeout, "error": bool(st.error), "pc": await csr.read(CsrAddr.PC)}
    if timeout or st.error:
        with open(p["stats"], "w") as f:
            json.dump(stats, f)
        return
    dut.dump.value = 1
    await RisingEdge(dut.clk)
    dut.dump.value = 0
    await RisingEdge(dut.clk)
    with open(p["stats"], "w") as f:
        json.dump(stats, f)
