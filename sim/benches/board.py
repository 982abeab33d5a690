"""cocotb bench: the whole board top (UART bridge + core + on-chip memory) driven through its
UART pins by the host's own link code (:class:`rmsmp.host.link.LinkClient`).

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
from cocotb.triggers import ClockCycles, SimTimeoutError, Timer, with_timeout
from cocotbext.uart import UartSink, UartSource

from rmsmp.host.link import LinkClient, encode_request
from rmsmp.rtl.bridge import Cmd
from rmsmp.rtl.csr import CsrAddr, Ctrl, Status
from rmsmp.sim.benches import bench_params


class CocotbUart:
    """Link transport over the UART pins (timeouts in simulated time, scaled: 1 s = 1 ms)."""

    def __init__(self, src: UartSource, sink: UartSink, corrupt_first: int = 0):
        self.src, self.sink = src, sink
        self.corrupt = corrupt_first          # flip a bit in the next N request frames

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


async def start_board(dut, baud: int) -> CocotbUart:
    """Clock (10 ns) and reset the board top; the link transport on its UART pins."""
    Clock(dut.clk, 10, unit="ns").start()
    dut.rx.value = 1
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 4)
    return CocotbUart(UartSource(dut.rx, baud=baud, bits=8), UartSink(dut.tx, baud=baud, bits=8))


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
