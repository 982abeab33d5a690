"""The whole board top in Verilator, driven through its UART pins by the host link code:
upload a layer program, start it, read the result back bit-exact vs golden; corrupted
frames, bad checksums and UART framing errors are reported and retried.  The layer test's
memories garble any read that collides with a write (rmsmp.sim.collisions, the property the
builds' NO_COLLISION_BYPASS relies on): the link's buffer, the core's and the on-chip RAM."""
import json
from dataclasses import asdict

import pytest
import torch

from rmsmp.boards.top import BoardTop
from rmsmp.generator.catalog import board
from rmsmp.generator.config import AcceleratorConfig
from rmsmp.generator.layout import unpack_activations
from rmsmp.generator.program import layer_program
from rmsmp.host import compile_model
from rmsmp.rtl.bridge import Status
from rmsmp.rtl.sdram import SdramTiming
from rmsmp.sim import golden
from rmsmp.sim.collisions import PoisonCollisions
from rmsmp.sim.layer_cases import mini_block, one_layer_model
from rmsmp.sim.verilator import VerilatorBuild

pytestmark = pytest.mark.slow      # whole board tops compiled and run in Verilator

CFG = AcceleratorConfig(lane_groups=(("pot4", 2), ("fix8", 2)), columns=4,
                        act_depth=256, weight_depth=128, acc_depth=16)
DIV = 8                       # clock cycles per UART bit (10 ns clock: 12.5 Mbaud in simulation)


def test_board_top_runs_a_layer_over_the_uart_link(tmp_path):
    qm, layer, x, y = one_layer_model("conv", cin=6, cout=8, k=3, s=1, p=1, hw=5,
                                      ratio={"pot4": 0.5, "fix4": 0.5})
    prog = layer_program(qm, layer, CFG, x, in_hw=(5, 5))
    addr, entries, width = prog.outputs["y"]
    words = entries * (width // 32)
    model = VerilatorBuild(BoardTop(CFG, mem_words=len(prog.image) + 16, divisor=DIV, link_timeout=4096),
                           "rmsmp_board", platform=PoisonCollisions())
    model.build(log_file=tmp_path / "build.log")
    result = tmp_path / "result.json"
    model.run("rmsmp.sim.benches.board",
              {"image": prog.image, "prog_addr": prog.prog_addr, "out": [addr, words],
               "config_hash": CFG.config_hash, "baud": 100_000_000 // DIV, "result": str(result)},
              test_dir=tmp_path, log_file=tmp_path / "sim.log")
    r = json.loads(result.read_text())
    assert r["id"] == CFG.config_hash
    assert r["retried_after_corruption"] == 1          # the corrupted first frame was retried
    assert r["upload_ok"]
    low = prog.layers[0]
    OH, OW = low.desc["out_h"], low.desc["out_w"]
    image = list(prog.image)
    image[addr:addr + words] = r["out"]
    got = unpack_activations(prog.read_entries(image, "y"), layer.rows, OH, OW, CFG.columns, layer.out.signed)
    assert got == y.reshape(layer.rows, OH, OW).tolist()
    assert r["bad_crc_status"] == Status.BAD_CRC
    assert r["after_bad_crc"] == r["out"][0]           # the damaged write changed nothing
    assert r["framing_status"] == Status.FRAMING
    print(f"\nboard top over UART: {len(prog.image)} words uploaded, layer ran in {r['cycles']} cycles")


def _serial_device_on_board_top(tmp_path, sdram=None, ratio=1):
    """open_device's serial backend over the UART pins: a tiny network (conv, max-pool,
    residual block, average pool, fc) in the board memory, two images uploaded, run and read
    back through SerialDevice; also a board of another config and memory access during a
    run."""
    qm, _ = mini_block(hw=5)
    prog = compile_model(qm, CFG, [3, 5, 5])
    prog.save(tmp_path / "prog.npz")
    torch.manual_seed(3)
    images = torch.randn(2, 3, 5, 5)
    torch.save(images, tmp_path / "images.pt")
    if sdram:
        top = BoardTop(CFG, divisor=DIV, link_timeout=4096, sdram=sdram, sdram_clock=ratio > 1)
    else:                                 # the program baked into the on-chip memory
        top = BoardTop(CFG, mem_words=len(prog.image) + 64, divisor=DIV, init=prog.image, link_timeout=4096)
    model = VerilatorBuild(top, "rmsmp_board")
    model.build(log_file=tmp_path / "build.log")
    result = tmp_path / "result.json"
    params = {"program": str(tmp_path / "prog.npz"), "config": CFG.to_dict(), "images": str(tmp_path / "images.pt"),
              "baud": 100_000_000 // DIV, "mem_words": top.mem_words, "result": str(result)}
    if sdram:
        params["sdram"] = {"geometry": asdict(sdram[0]), "timing": asdict(sdram[1]), "ratio": ratio}
    model.run("rmsmp.sim.benches.board_device", params, test_dir=tmp_path, log_file=tmp_path / "sim.log")
    r = json.loads(result.read_text())
    assert "runs accelerator" in r["mismatch"] and f"{CFG.config_hash:08x}" in r["mismatch"]
    assert torch.equal(torch.tensor(r["logits"], dtype=torch.float64), golden(qm, images))
    assert "BUSY" in r["busy"], r["busy"]
    assert r["after_busy"]
    s = r["stats"]
    assert s["images"] == 2 and s["cycles"] > 0 and 0 < s["mac_utilization"] <= 1
    print(f"\nserial device on the board top ({'SDRAM' if sdram else 'on-chip memory'}): "
          f"{s['cycles_per_image']:.0f} cycles/image, {s['mac_utilization']:.1%} MAC utilization")
    return r


def test_serial_device_runs_a_network_on_the_board_top(tmp_path):
    """The network baked into the on-chip memory (as make bitstream MODEL=… does)."""
    _serial_device_on_board_top(tmp_path)


@pytest.mark.parametrize("ratio", [1, 2])
def test_serial_device_runs_a_network_from_sdram(tmp_path, ratio):
    """The ULX3S's memory backend: the SDRAM controller on the board top's pins, the chip
    modelled at the falling edge of the clock as on the board (inverted SDRAM clock) and
    every command checked (timings, refresh, bus turnaround); the program is uploaded
    through the link into the SDRAM, the network runs from it == golden.  ``ratio`` 2: the
    controller on its own clock at twice the core's, as the ULX3S builds it."""
    spec = board("ulx3s-85f")
    sim_clock = 100e6                     # the bench's 10 ns clock
    r = _serial_device_on_board_top(tmp_path, sdram=(spec.sdram, SdramTiming.at(sim_clock * ratio)), ratio=ratio)
    assert r["sdram_errors"] == []
    assert r["sdram_refreshes"] > 10      # the refresh timer ran through the whole session


def test_sim_device_on_the_ulx3s_sdram_runs_a_network_bit_exact():
    """open_device("sim", cfg, board="ulx3s-85f"): the core behind the ULX3S's SDRAM
    controller and a Verilog model of its chip, timings at the board clock; a tiny network
    == golden, and the memory holds the board's 32 MB."""
    from rmsmp.host import open_device
    qm, _ = mini_block(hw=5)
    prog = compile_model(qm, CFG, [3, 5, 5])
    dev = open_device("sim", CFG, board="ulx3s-85f")
    assert dev.memory == "sdram" and dev.mem_words == board("ulx3s-85f").memory_words()
    dev.load(prog)
    torch.manual_seed(4)
    x = torch.randn(2, 3, 5, 5)
    assert torch.equal(dev.run(x), golden(qm, x))
    print(f"\nsim device on the ULX3S SDRAM: {dev.stats['cycles_per_image']:.0f} cycles/image")
