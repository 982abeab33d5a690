"""cocotb bench: a board top that boots from its SPI flash (:class:`rmsmp.sim.top.FlashBoardTop`:
the Verilog flash model holds the flash image given as the plusarg ``+flash=<file>``).

After reset the board copies the program from the flash while ``led_busy`` is lit; the bench
counts those cycles, then the host's own serial-device code looks at the board through the
UART: STATUS's boot bits, the resident record, the copied memory read back, and — when the
boot was good — a run of the resident program without an upload (``attach``).
Parameters (``RMSMP_BENCH``): ``program`` (file), ``config`` (dict), ``images`` (file of a
saved tensor), ``baud``, ``mem_words``, ``read_back`` ([address, words] ranges of memory to
read back), ``result`` (JSON file).
"""
import json

import cocotb
import torch
from cocotb.task import bridge
from cocotb.triggers import ClockCycles, FallingEdge, with_timeout
from cocotb.utils import get_sim_time

from rmsmp.generator.config import AcceleratorConfig
from rmsmp.generator.program import Program
from rmsmp.generator.runtime import ProgramMismatchError
from rmsmp.host.link import LinkClient
from rmsmp.host.serial_device import SerialDevice
from rmsmp.rtl.csr import CsrAddr, Status
from rmsmp.sim.benches import bench_params
from rmsmp.sim.benches.board import start_board


@cocotb.test()
async def board_boots_from_flash(dut):
    p = bench_params()
    uart = await start_board(dut, p["baud"])         # (reset released 4 cycles ago)
    t0 = get_sim_time("ns") - 40
    if int(dut.led_busy.value):
        await with_timeout(FallingEdge(dut.led_busy), p.get("max_boot_ns", 10 ** 10), "ns")
    boot_cycles = round((get_sim_time("ns") - t0) / 10)     # the bench's 10 ns clock
    await ClockCycles(dut.clk, 2)
    link = LinkClient(uart, timeout=0.2)
    cfg = AcceleratorConfig.from_dict(p["config"])
    program = Program.load(p["program"])
    images = torch.load(p["images"])
    res = {"boot_cycles": boot_cycles}

    @bridge
    def host():
        st = Status.as_shape().from_bits(link.read_csr(CsrAddr.STATUS))
        res["boot_ok"], res["boot_bad"] = int(st.boot_ok), int(st.boot_bad)
        dev = SerialDevice(link, cfg, mem_words=p["mem_words"], progress=False, poll_s=0, name="board")
        res["resident"] = dev.resident()
        res["memory"] = [link.read_mem(a, n) for a, n in p.get("read_back", [])]
        try:
            dev.attach(program)
        except ProgramMismatchError as e:
            res["refused"] = str(e)
            return
        y = dev.run(images)
        res["logits"] = y.tolist()
        res["uploaded_words"] = dev.stats["uploaded_words"]

    await with_timeout(host(), p.get("max_ns", 10 ** 11), "ns")
    res["flash_errors"] = int(dut.flash_errors.value)
    res["flash_reads"] = int(dut.flash_reads.value)
    with open(p["result"], "w") as f:
        json.dump(res, f)
