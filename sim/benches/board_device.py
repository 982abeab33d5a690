"""cocotb bench: the serial device API (:class:`rmsmp.host.serial_device.SerialDevice`) on the
whole board top, through its UART pins.

The board top is built either with the network's program baked into its on-chip memory
(as ``make bitstream MODEL=…`` does), so ``load(program, upload=False)``, or with the SDRAM
backend (parameter ``sdram``, the chip modelled by :func:`~rmsmp.sim.benches.board.sdram_chip`,
which checks every command's timing), so ``load`` uploads the program; ``run`` sends the inputs,
starts, polls and reads the outputs back, all through the link code a real board uses.
Also checked: a config mismatch is refused, and memory access while the core runs is
answered BUSY.  Parameters (``RMSMP_BENCH``): ``program`` (file), ``config`` (dict),
``images`` (file of a saved tensor), ``baud``, ``mem_words``, ``sdram`` (optional),
``result`` (JSON file).
"""
import json

import cocotb
import torch
from cocotb.task import bridge
from cocotb.triggers import with_timeout

from rmsmp.generator.config import AcceleratorConfig
from rmsmp.generator.program import Program
from rmsmp.generator.runtime import ProgramMismatchError
from rmsmp.host.link import LinkClient, LinkError
from rmsmp.host.serial_device import SerialDevice
from rmsmp.rtl.csr import CsrAddr, Ctrl, Status
from rmsmp.sim.benches import bench_params
from rmsmp.sim.benches.board import start_board


@cocotb.test()
async def serial_device_runs_a_network(dut):
    p = bench_params()
    uart = await start_board(dut, p["baud"], p.get("sdram"))
    link = LinkClient(uart, timeout=0.2)
    cfg = AcceleratorConfig.from_dict(p["config"])
    program = Program.load(p["program"])
    images = torch.load(p["images"])
    res = {}

    @bridge
    def host():
        other = AcceleratorConfig.from_dict({**p["config"], "columns": cfg.columns * 2})
        try:
            SerialDevice(link, other, mem_words=p["mem_words"], name="board")
        except ProgramMismatchError as e:
            res["mismatch"] = str(e)
        dev = SerialDevice(link, cfg, mem_words=p["mem_words"], progress=False, poll_s=0, name="board")
        # baked into the on-chip memory, or uploaded into the SDRAM
        dev.load(program, upload=bool(p.get("sdram")))
        y = dev.run(images)
        res["logits"] = y.tolist()
        res["stats"] = {k: v for k, v in dev.stats.items() if isinstance(v, (int, float))}
        # memory access while the core runs is refused with BUSY, then allowed again
        link.write_csr(CsrAddr.PROG_ADDR, program.prog_addr)
        link.write_csr(CsrAddr.CTRL, Ctrl.const({"start": 1}).as_bits())
        try:
            link.read_mem(0, 1)
            res["busy"] = "not refused"
        except LinkError as e:
            res["busy"] = str(e)
        while not Status.as_shape().from_bits(link.read_csr(CsrAddr.STATUS)).done:
            pass
        res["after_busy"] = link.read_mem(0, 1)[0] == program.image[0]

    await with_timeout(host(), p.get("max_ns", 10 ** 11), "ns")
    if p.get("sdram"):
        model = uart.sdram
        res["sdram_errors"] = model.errors[:10]
        res["sdram_refreshes"] = len(model.refreshes)
    with open(p["result"], "w") as f:
        json.dump(res, f)
