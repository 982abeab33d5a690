"""cocotb bench: the whole board top (UART bridge + core + memory backend) driven through its
UART pins by the host's own link code (:class:`rmsmp.host.link.LinkClient`); with the SDRAM
backend, :func:`sdram_chip` models the chip on the board top's ``sdram`` pins.

The client is the one a serial device uses; here its transport writes and reads bytes
through cocotbext-uart on ``rx``/``tx``.  It runs in a thread (``cocotb.task.bridge``)
and calls back into the simulation (``cocotb.task.resume``), so it is the same blocking code.
Parameters (``RMSMP_BENCH``): ``image``, ``prog_addr``, ``out`` ([addr, words]),
``config_hash``, ``baud``, ``result`` (JSON file to write).
"""
import json

import cocotb
from cocotb.clock import Clock
from cocotb.task import bridge, resume
from cocotb.triggers import ClockCycles, FallingEdge, SimTimeoutError, Timer, with_timeout
from cocotbext.uart import UartSink, UartSource

from rmsmp.host.link import LinkClient, encode_request
from rmsmp.rtl.bridge import Cmd
from rmsmp.rtl.csr import CsrAddr, Ctrl, Status
from rmsmp.rtl.sdram import SdramGeometry, SdramTiming
from rmsmp.sim.benches import bench_params
from rmsmp.sim.sdram_model import SdramModel


class CocotbUart:
    """Link transport over the UART pins (timeouts in simulated time, scaled: 1 s = 1 ms)."""

    def __init__(self, src: UartSource, sink: UartSink, corrupt_first: int = 0):
        self.src, self.sink = src, sink
        self.corrupt = corrupt_first          # flip a bit in the next N request frames
        self.sdram = None                     # the SDRAM chip model, when the board top has one

    def write(self, data: bytes) -> None:
        if self.corrupt:
            self.corrupt -= 1
            data = bytearray(data)
            data[len(data) // 2] ^= 0x10
        resume(self._write)(bytes(data))

    async def _write(self, data):
        await self.src.write(data)
        await self.src.wait()         # on the wire before the response timeout starts

    def read(self, n: int, timeout: float) -> bytes:
        return resume(self._read)(n, timeout)

    async def _read(self, n, timeout):
        out = bytearray()
        try:
            while len(out) < n:       # one byte at a time: the sink's read(n) needs n queued
                out += await with_timeout(self.sink.read(1), max(1, int(timeout * 1e6)), "ns")
        except SimTimeoutError:       # fewer bytes on timeout, as pyserial gives
            pass
        return bytes(out)


async def sdram_chip(dut, model: SdramModel):
    """The SDRAM chip on the board top's ``sdram`` pins.  As on the board, its clock is the
    design clock inverted: it takes the pins at each falling edge (chip cycle ``k``) and
    drives read data from one falling edge to the next, so the board top's input register
    captures it at the rising edge in between.  Pins are read only when the model needs
    them (a command, the second half of a write, a cycle it drives dq in)."""
    cmd = [dut.sdram__ras_n, dut.sdram__cas_n, dut.sdram__we_n]
    dq_i = dut.sdram__dq_i
    edge = FallingEdge(dut.mem_clk if hasattr(dut, "mem_clk") else dut.clk)
    driving, k = False, 0
    while True:
        await edge
        c = tuple(int(s.value) for s in cmd)
        if (c != (1, 1, 1) or model.pending_write is not None or k in model.chip_drives) \
                and not int(dut.sdram__cs_n.value):
            model.edge(k, c, int(dut.sdram__a.value), int(dut.sdram__ba.value), int(dut.sdram__dq_o.value),
                       int(dut.sdram__dq_oe.value), int(dut.sdram__dqm.value))
        k += 1
        if k in model.drive:
            dq_i.value = model.drive.pop(k)
            driving = True
        elif driving:
            dq_i.value = 0x5A5A              # not driven: junk, never the last word
            driving = False


async def start_board(dut, baud: int, sdram: dict | None = None) -> CocotbUart:
    """Clock (10 ns) and reset the board top; the link transport on its UART pins.  With
    ``sdram`` ({"geometry": …, "timing": …} as dicts, and "ratio": the controller's own clock
    that many times faster, the top's ``mem_clk``) the chip model runs on the SDRAM pins (the
    transport's ``sdram``)."""
    Clock(dut.clk, 10, unit="ns").start()
    ratio = sdram.get("ratio", 1) if sdram else 1
    if ratio > 1:
        Clock(dut.mem_clk, 10_000 // ratio, unit="ps").start()
    chip = None
    if sdram:
        chip = SdramModel(SdramGeometry(**sdram["geometry"]), SdramTiming(**sdram["timing"]))
        cocotb.start_soon(sdram_chip(dut, chip))
    dut.rx.value = 1
    dut.rst.value = 1
    if ratio > 1:
        dut.mem_rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    if ratio > 1:
        dut.mem_rst.value = 0
    await ClockCycles(dut.clk, 4)
    uart = CocotbUart(UartSource(dut.rx, baud=baud, bits=8), UartSink(dut.tx, baud=baud, bits=8))
    uart.sdram = chip
    return uart


@cocotb.test()
async def board_link_runs_a_program(dut):
    p = bench_params()
    uart = await start_board(dut, p["baud"])
    link = LinkClient(uart, timeout=0.2)
    res = {}

    @bridge
    def host():
        # errors on the wire are reported and retried: a corrupted request frame first
        uart.corrupt = 1
        res["id"] = link.read_csr(CsrAddr.ID)
        res["retried_after_corruption"] = link.retried
        link.write_mem(0, p["image"])
        back = link.read_mem(0, len(p["image"]))
        res["upload_ok"] = back == p["image"]
        link.write_csr(CsrAddr.PROG_ADDR, p["prog_addr"])
        link.write_csr(CsrAddr.CTRL, Ctrl.const({"start": 1}).as_bits())
        for _ in range(100000):
            st = Status.as_shape().from_bits(link.read_csr(CsrAddr.STATUS))
            if st.done:
                break
        res["cycles"] = link.read_csr(CsrAddr.CYCLES)
        res["out"] = link.read_mem(*p["out"])
        # a raw frame with a bad checksum is answered BAD_CRC and writes nothing
        frame = bytearray(encode_request(Cmd.MEM_WRITE, 7, p["out"][0], 1, [0xDEADBEEF]))
        frame[-1] ^= 1
        uart.write(bytes(frame))
        resp = uart.read(7, 0.2)
        res["bad_crc_status"] = resp[1] if len(resp) > 1 else None
        res["after_bad_crc"] = link.read_mem(p["out"][0], 1)[0]

    await with_timeout(host(), p.get("max_ns", 10 ** 10), "ns")

    # a UART framing error (stop bit low) is reported as FRAMING
    bit = 1e9 / p["baud"]
    for level in [0] + [1, 0, 1, 0, 1, 0, 1, 0] + [0]:          # start, data, *low* stop bit
        dut.rx.value = level
        await Timer(int(bit), "ns")
    dut.rx.value = 1
    resp = await uart._read(7, 0.2)
    res["framing_status"] = resp[1]
    with open(p["result"], "w") as f:
        json.dump(res, f)
