"""The whole board top in Verilator, driven through its UART pins by the host link code:
upload a layer program, start it, read the result back bit-exact vs golden; corrupted
frames, bad checksums and UART framing errors are reported and retried."""
import json

from rmsmp.boards.top import BoardTop
from rmsmp.generator.config import AcceleratorConfig
from rmsmp.generator.lower import unpack_activations
from rmsmp.generator.program import layer_program
from rmsmp.rtl.bridge import Status
from rmsmp.sim.layer_cases import one_layer_model
from rmsmp.sim.verilator import VerilatorBuild

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
                           "rmsmp_board")
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
