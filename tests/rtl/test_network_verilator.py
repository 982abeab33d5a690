"""A whole network on the cycle-accurate model: the digits CNN, bit-exact vs golden."""
import json

import pytest
import torch

from rmsmp.generator.lower import CompileError
from rmsmp.host import AcceleratorConfig, compile_model, open_device, quantize
from rmsmp.sim import golden

CFG = AcceleratorConfig()


@pytest.fixture(scope="module")
def digits_q(digits_q, digits):
    """The shared quantized digits network and the held-out set."""
    _, _, xte, yte = digits
    return digits_q, xte, yte


@pytest.mark.slow
def test_digits_network_bit_exact_on_the_simulator(digits_q):
    """Every held-out digit through the simulator: logits bit-exact, so the accuracy is golden's."""
    qm, xte, yte = digits_q
    dev = open_device("sim", CFG)
    prog = compile_model(qm, CFG, batch=128)
    assert prog.io.im2col == (3, 1, 1, 1)   # 1-channel 3×3 conv1
    dev.load(prog)
    y = dev.run(xte)
    g = golden(qm, xte)
    assert torch.equal(y, g)                            # logits, bit for bit
    acc_sim = float((y.argmax(1) == yte).double().mean())
    acc_golden = float((g.argmax(1) == yte).double().mean())
    assert acc_sim == acc_golden and acc_sim > 0.9
    s = dev.stats
    rows = s["layers"]                                  # per-layer report from the STAMPs
    assert [r["layer"] for r in rows] == [l.name for l in qm.layers if l.op not in ("input", "flatten")]
    assert 0 < sum(r["cycles"] for r in rows) <= s["cycles"] / 2      # first image of a 128-image chunk
    assert all(0 <= r["mac_utilization"] <= 1 for r in rows)
    # where each layer's cycles went (the STAMP's busy counters): the engine runs a layer's
    # MACs at most a peak's worth a cycle, and no count exceeds the layer's cycles
    for r in rows:
        assert r["macs"] <= r["mac_beats"] * CFG.peak_macs_per_cycle, r
        assert r["mac_beats"] <= r["engine_busy"], r
        assert 0 <= r["both_busy"] <= min(r["engine_busy"], r["dma_busy"]), r
        assert max(r["engine_busy"], r["dma_busy"]) <= r["cycles"], r
    assert "| engine busy | array beats | DMA busy | both idle |" in dev.layer_table()
    # resident 3x3 mixed-scheme convs; a layer's cycles include moving its tensors in and out
    assert max(r["mac_utilization"] for r in rows) > 0.8
    print("\n" + dev.layer_table())
    print(f"\ndigits on the simulator: {len(xte)} held-out images, {s['cycles_per_image']:.0f} cycles/image, "
          f"MAC utilization {s['mac_utilization']:.1%}, {s['sim_cycles_per_s'] / 1e3:.0f} kcycles/s, "
          f"accuracy {acc_sim:.2%} (golden {acc_golden:.2%})")


@pytest.mark.slow
def test_hmq_widths_run_packed_at_their_own_width(digits_q, digits_fp, calib):
    """An HMQ model (2..8-bit fix rows on the fix8 lanes) runs bit-exact with its weights
    moved at their own width: fewer bytes than the same program at lane width."""
    _, xte, _ = digits_q
    qm = quantize(digits_fp, calib, method="hmq", target_compression=10.0, hmq_steps=60, grad_steps=20)
    widths = set(qm.meta["layer_bits"].values())
    assert widths and max(widths) < 8
    prog = compile_model(qm, CFG, batch=32)
    wide = compile_model(qm, AcceleratorConfig(packed_weights=False), batch=32)
    assert len(prog.image) < len(wide.image)
    dev = open_device("sim", CFG)
    dev.load(prog)
    assert torch.equal(dev.run(xte[:32]), golden(qm, xte[:32]))
    print(f"\nHMQ widths {sorted(widths)}: memory image {len(prog.image)} words packed vs "
          f"{len(wide.image)} at lane width")


@pytest.mark.slow
def test_digits_on_an_add_only_vector_unit_pools_on_the_conv_engine(digits_q, resnet18_224):
    """The small-FPGA build (iCE40 parameters: 24-bit accumulators, a vector unit with only the
    residual add): the global average pool runs on the conv engine as a ones kernel, bit-exact;
    a network with a max-pool is refused by name."""
    from rmsmp.generator.cost import FAMILY_PARAMS
    qm, xte, _ = digits_q
    cfg = AcceleratorConfig(lane_groups=(("pot4", 1), ("fix8", 1)), columns=2, **FAMILY_PARAMS["ice40"])
    assert cfg.vector_ops == ("add",) and cfg.acc_bits == 24
    prog = compile_model(qm, cfg, batch=8)
    dev = open_device("sim", cfg)
    dev.load(prog)
    assert torch.equal(dev.run(xte[:8]), golden(qm, xte[:8]))
    rows = {r["layer"]: r for r in dev.stats["layers"]}
    assert rows["avgpool"]["macs"] > 0                 # the pool's MACs: it ran on the array
    _, _, rq = resnet18_224
    with pytest.raises(CompileError, match=r"layer 'maxpool': this accelerator's vector unit has no maxpool "
                                           r"\(vector_ops: add\)"):
        compile_model(rq, cfg, (3, 32, 32))


def test_dead_channels_with_huge_biases_run_on_a_narrow_accumulator(digits_q):
    """A channel whose weights are all 0 and whose integer bias is near the 2^30 limit (as
    MobileNetV1-VWW has hundreds) has the same output for every input; the compiler gives it
    a bias that fits a 24-bit accumulator and gives that output too, and the network runs
    bit-exact against golden, which keeps the original integers."""
    import copy

    from rmsmp.host.quant.layer import BIAS_LIMIT
    from rmsmp.host.quant.qmodel import QuantizedModel
    qm, xte, _ = digits_q
    layers = copy.deepcopy(qm.layers)
    layer = [l for l in layers if l.op == "conv"][1]
    unit = 2.0 ** -qm.in_q(qm[layer.name]).value_frac         # B = bias / (scale · unit)
    for c, sign in ((0, 1), (1, -1)):
        layer.qweight[c] = 0
        layer.bias[c] = sign * 0.999 * BIAS_LIMIT * float(layer.scale[c]) * unit
    qm = QuantizedModel(layers, ratio=qm.ratio, meta=qm.meta)
    cfg = AcceleratorConfig(acc_bits=24)
    assert all(abs(int(b)) > 0.99 * BIAS_LIMIT for b in qm.requant[layer.name]["bias"][:2])
    prog = compile_model(qm, cfg, batch=8)
    dev = open_device("sim", cfg)
    dev.load(prog)
    g = golden(qm, xte[:8])
    assert torch.equal(dev.run(xte[:8]), g)


def test_networks_that_do_not_fit_are_refused_with_the_reason(digits_q):
    qm, _, _ = digits_q
    with pytest.raises(CompileError, match=r"layer 'layer1.conv1': one output row needs \d+ activation entries"):
        compile_model(qm, AcceleratorConfig(act_depth=64))


@pytest.mark.slow
def test_resnet18_end_to_end_bit_exact_at_224x224(resnet18_224):
    """The full torchvision-layout ResNet-18 (1000 classes) at 224×224 on the cycle-accurate
    model: row bands through external memory, streamed weight sets, first-layer im2col."""
    _, x, qm = resnet18_224
    prog = compile_model(qm, CFG)
    assert not prog.io.resident and prog.io.im2col == (7, 2, 3, 3)
    # the all-fix8 conv1 also on the pot rows, in row chains (docs/hardware.md), and a conv
    # streamed in several weight sets runs its residual add on its output bands
    conv1 = next(low for low in prog.layers if low.name == "conv1")
    assert any(conv1.perm[ch] % CFG.rows < CFG.group_of("pot4").rows for ch in range(64))
    assert prog.io.fused["add_3"] == "layer2.1.conv2"
    dev = open_device("sim", CFG)
    dev.load(prog)
    y = dev.run(x[:1])
    assert torch.equal(y, golden(qm, x[:1]))
    s = dev.stats
    assert len(s["layers"]) == len(prog.io.trace) and s["layers"][0]["layer"] == "conv1"
    print("\n" + dev.layer_table())
    print(f"\nResNet-18 224x224 on the simulator: {s['cycles']:,} cycles, MAC utilization "
          f"{s['mac_utilization']:.1%}, {s['sim_cycles_per_s'] / 1e3:.0f} kcycles/s, {s['wall_s']:.0f} s simulated")


@pytest.mark.slow
def test_cli_compile_and_sim(tmp_path, capsys):
    from rmsmp.generator.program import Program
    from rmsmp.host.cli import main
    m, p = tmp_path / "d.rmsmp", tmp_path / "d.prog"
    assert main(["quantize", "--model", "digits", "--calib", "random:16", "--quiet", "-o", str(m)]) == 0
    assert main(["compile", str(m), "-o", str(p), "--batch", "2"]) == 0
    prog = Program.load(p)
    assert prog.io.batch == 2 and prog.config_hash == CFG.config_hash
    assert main(["sim", str(p), "--model", str(m), "--images", "2", "--stats", str(tmp_path / "run.json")]) == 0
    out = capsys.readouterr().out
    assert "bit-exact" in out and "cycles/image" in out
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["images"] == 2 and run["layers"][0]["layer"] == "conv1"
    # the run's figures reach the HTML report, as printed
    html = tmp_path / "r.html"
    assert main(["report", str(m), "--html", str(html), "--program", str(p), "--run", str(tmp_path / "run.json")]) == 0
    page = html.read_text()
    assert f"{run['cycles_per_image']:,.0f}" in out and f"{run['cycles_per_image']:,.0f}" in page
    assert all(f"{r['cycles']:,}" in page for r in run["layers"])
    bad = tmp_path / "bad.prog"
    bad.write_bytes(b"not a program")
    assert main(["sim", str(bad)]) == 2
    assert "not a readable rmsmp program" in capsys.readouterr().err


@pytest.mark.slow
def test_the_localizer_names_a_planted_faulty_layer(digits_q):
    """A program compiled from the model, checked against a copy of the model with one layer's
    weight codes changed: the localizer names that layer, channel and pixel with both values
    (and finds nothing against the model itself — every traced tensor read back right)."""
    from copy import deepcopy

    from rmsmp.sim import localize
    from rmsmp.sim.device import SimDevice
    qm, xte, _ = digits_q
    prog = compile_model(qm, CFG)
    dev = SimDevice(CFG)
    x = xte[:2]
    assert localize(qm, prog, x, device=dev, image=1) is None
    planted = deepcopy(qm)
    name = [l.name for l in qm.layers if l.op == "conv"][3]
    layer = planted[name]
    layer.qweight[2] = -layer.qweight[2]              # row 2's codes negated (still on its level set)
    m = localize(planted, prog, x, device=dev, image=1)
    assert m is not None and m.layer == name and m.channel == 2, m
    assert m.golden != m.device and 0 < m.differing <= m.total
    assert m.runs <= 6                                 # bisected, not one run per layer
    print(f"\n{m} ({m.runs} runs)")
    dev.load(prog)
    assert torch.equal(dev.run(x), golden(qm, x))     # the program itself is unchanged and still exact


@pytest.mark.slow
def test_the_localizer_names_a_fault_in_a_conv_that_runs_its_add():
    """A block's conv2 runs its residual add on chip (its own output is never in memory): a
    fault planted in it is named at the add, with the conv that ran it."""
    from copy import deepcopy

    from test_core_amaranth import _MiniResNet

    from rmsmp.sim import localize
    from rmsmp.sim.device import SimDevice
    torch.manual_seed(0)
    x = torch.randn(4, 3, 9, 9)
    qm = quantize(_MiniResNet().eval(), x, ratio=CFG.ratio, assign="variance")
    prog = compile_model(qm, CFG, (3, 9, 9))
    assert prog.io.fused["add"] == "layer1.conv2"
    dev = SimDevice(CFG)
    assert localize(qm, prog, x[:2], device=dev) is None
    planted = deepcopy(qm)
    planted["layer1.conv2"].qweight[1] = -planted["layer1.conv2"].qweight[1]
    m = localize(planted, prog, x[:2], device=dev)
    assert m is not None and (m.layer, m.fused_with) == ("add", "layer1.conv2"), m
    assert "run on chip by 'layer1.conv2'" in str(m)


@pytest.mark.slow
@pytest.mark.parametrize("cfg", [CFG, AcceleratorConfig(pixels=2, weight_depth=64, acc_depth=8)],
                         ids=["default", "pixel-lanes-streamed"])
def test_mobilenet_style_layers_bit_exact(cfg):
    """Issue 22's layer kinds on the cycle-accurate model: a Keras-padded stem (F.pad 0/1 +
    stride-2 conv, im2col'd), ReLU6 clips that bind, a MobileNetV2 inverted residual with a
    depthwise conv, a stride-2 conv with asymmetric padding and a LeNet-style flatten of a
    4×4 map into Linear — resident on the default core, and on pixel lanes with buffers so
    small that every layer streams its weights (the depthwise conv block by block)."""
    from test_layer_kinds import mobile_net
    m = mobile_net()
    x = torch.randn(20, 3, 16, 16) * 3
    qm = quantize(m, [x[:16]], act_bits=8)
    prog = compile_model(qm, cfg, [3, 16, 16], batch=4)
    assert prog.io.resident == (cfg is CFG)
    dev = open_device("sim", cfg)
    dev.load(prog)
    assert torch.equal(dev.run(x[16:]), golden(qm, x[16:]))
    rows = {r["layer"]: r for r in dev.stats["layers"]}
    assert 0 < rows["dw"]["mac_utilization"] <= 1 / cfg.rows      # one lane per working row
    print("\n" + dev.layer_table())


@pytest.mark.slow
def test_one_simulation_serves_many_runs(digits_q):
    """Runs after the first send only the words that changed (the next images) to the same
    simulation, and stay bit-exact; a new program is sent whole; a closed device starts a
    new simulation; ``run_dataset`` shards a data set over two simulations, in order."""
    from rmsmp.sim import run_dataset
    qm, xte, _ = digits_q
    prog = compile_model(qm, CFG, batch=4)
    with open_device("sim", CFG) as dev:
        dev.load(prog)
        assert torch.equal(dev.run(xte[:4]), golden(qm, xte[:4]))
        first, server = dev.stats["uploaded_words"], dev._server
        assert first >= len(prog.image) - 8
        for k in range(1, 3):
            assert torch.equal(dev.run(xte[4 * k:4 * k + 4]), golden(qm, xte[4 * k:4 * k + 4]))
            assert dev._server is server and dev.stats["uploaded_words"] < first / 4
        assert torch.equal(dev.run(xte[:4]), golden(qm, xte[:4]))             # the first images again
        other = compile_model(qm, CFG, batch=2)
        dev.load(other)
        assert torch.equal(dev.run(xte[:2]), golden(qm, xte[:2]))
        assert dev.stats["uploaded_words"] >= len(other.image) - 8 and dev._server is server
        dev.close()
        assert torch.equal(dev.run(xte[2:4]), golden(qm, xte[2:4])) and dev._server is not server
    y, st = run_dataset(prog, CFG, xte[:22], workers=2, progress=False)
    assert st["workers"] == 2 and st["images"] == 22 and torch.equal(y, golden(qm, xte[:22]))


@pytest.mark.slow
def test_mobilenet_v2_bit_exact():
    """torchvision-layout MobileNetV2 (width 0.35: 17 depthwise convs, 35 ReLU6, 10 residual
    adds) at 32×32 on the cycle-accurate model."""
    from rmsmp.host.models import mobilenet_v2
    torch.manual_seed(0)
    m = mobilenet_v2(num_classes=10, width_mult=0.35).eval()
    with torch.no_grad():
        for bn in m.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.running_var.uniform_(0.5, 1.5)
                bn.running_mean.uniform_(-0.1, 0.1)
    x = torch.randn(6, 3, 32, 32)
    qm = quantize(m, [x[:4]], hessian_images=2)
    with open_device("sim", CFG) as dev:
        dev.load(compile_model(qm, CFG, [3, 32, 32]))
        assert torch.equal(dev.run(x[4:]), golden(qm, x[4:]))
