"""cocotb bench: one simulation of the simulation top that serves many program runs.

The host (:class:`rmsmp.sim.device.SimDevice`) listens on a local TCP port (parameter
``port``) and this bench connects to it, then answers one JSON line per request:

- ``{"op": "run", "load": bool, "prog_addr": a, "max_cycles": n, "dumps": [[lo, hi], …]}``:
  with ``load``, the memory first reads its load file (+LOADFILE, hex with ``@address``
  lines: only the words that changed since the last run); then the core runs the program
  at ``prog_addr`` free-running until ``done`` (Python never steps the clock; past
  ``max_cycles`` it is stopped) and the memory writes each range ``lo..hi`` to its dump file
  (+DUMPFILE), whose words go back in the reply with ``cycles``, ``mac_beats``, ``wall_s``
  (simulation time of the run), ``timeout``, ``error`` and ``pc``.  After a timeout or an
  error the bench ends (the core is in an unknown state); the host starts a new one.
- ``{"op": "quit"}``, or the connection closing: the simulation ends.

The first line the bench sends is ``{"ready": true, "id": <the hardware's ID register>}``.
"""
import json
import socket
import time
from pathlib import Path

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


async def _pulse(dut, name: str):
    getattr(dut, name).value = 1
    await RisingEdge(dut.clk)
    getattr(dut, name).value = 0
    await RisingEdge(dut.clk)              # the file is written and closed at the edge before


async def run_once(dut, csr: CsrDriver, req: dict, dump_file: Path) -> dict:
    if req.get("load"):
        await _pulse(dut, "load")
    await csr.write(CsrAddr.PROG_ADDR, req.get("prog_addr", 0))
    await csr.write(CsrAddr.CTRL, Ctrl.const({"start": 1}).as_bits())
    t0 = time.perf_counter()
    try:
        await with_timeout(RisingEdge(dut.done), req.get("max_cycles", 10 ** 9) * 10, "ns")
        timeout = False
    except SimTimeoutError:
        timeout = True
    wall = time.perf_counter() - t0
    st = Status.as_shape().from_bits(await csr.read(CsrAddr.STATUS))
    res = {"cycles": await csr.read(CsrAddr.CYCLES), "mac_beats": await csr.read(CsrAddr.MAC_BEATS),
           "wall_s": wall, "timeout": timeout, "error": bool(st.error), "pc": await csr.read(CsrAddr.PC),
           "done": bool(st.done and not st.busy), "dumps": []}
    if timeout or st.error or not res["done"]:
        return res
    for lo, hi in req.get("dumps", []):
        dut.dump_lo.value, dut.dump_hi.value = lo, hi
        await _pulse(dut, "dump")
        words = [w for w in dump_file.read_text().split() if not w.startswith("//")]
        res["dumps"].append(words)
    return res


@cocotb.test()
async def serve(dut):
    p = bench_params()
    Clock(dut.clk, 10, unit="ns").start()
    ratio = p.get("mem_ratio", 1)            # the SDRAM on a clock of its own: that many cycles a core cycle
    if ratio > 1:
        Clock(dut.mem_clk, 10_000 // ratio, unit="ps").start()
    csr = CsrDriver(dut)
    dut.rst.value = 1
    if ratio > 1:
        dut.mem_rst.value = 1
    dut.csr__we.value = 0
    dut.load.value = dut.dump.value = 0
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    if ratio > 1:
        dut.mem_rst.value = 0
    hw_id = await csr.read(CsrAddr.ID)
    with socket.create_connection(("127.0.0.1", p["port"])) as sock, sock.makefile("rw") as link:
        link.write(json.dumps({"ready": True, "id": hw_id}) + "\n")
        link.flush()
        while True:
            line = link.readline()            # the simulation waits here between runs
            if not line:
                return
            req = json.loads(line)
            if req.get("op") != "run":
                return
            res = await run_once(dut, csr, req, Path(p["dump_file"]))
            link.write(json.dumps(res) + "\n")
            link.flush()
            if res["timeout"] or res["error"] or not res["done"]:
                return
