"""The layer kinds of real small networks (issue 22): ReLU6, zero padding folded into a conv
(TensorFlow's asymmetric "same"), depthwise convs and flatten of a spatial map into Linear —
captured, executed exactly by golden (against independent int64 references), agreeing with
the fake-quant model, compiled, and refused clearly where the hardware cannot run them."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import layerwise_agreement

from rmsmp.generator.compiler import infer_shapes
from rmsmp.generator.lower import CompileError
from rmsmp.host import AcceleratorConfig, UnsupportedLayerError, compile_model, quantize
from rmsmp.host.quant import GraphModule, capture
from rmsmp.host.quant.layer import clip_code, pad_after
from rmsmp.sim import golden
from rmsmp.sim.golden import golden_trace, requantize


class TfSame(nn.Module):
    """Keras "same" at stride 2 written as PyTorch: F.pad (0, 1, 0, 1) then an unpadded conv."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, stride=2)
        self.d = nn.Conv2d(8, 8, 3, padding="same")

    def forward(self, x):
        return self.d(F.relu6(self.c(F.pad(x, (0, 1, 0, 1)))))


def test_padding_folds_into_the_conv_and_matches_float():
    torch.manual_seed(0)
    m = TfSame().eval()
    layers = {l.name: l for l in capture(m)}
    assert layers["c"].attrs["padding"] == 0 and layers["c"].attrs["pad_after"] == 1
    assert layers["c"].attrs["relu"] and layers["c"].attrs["clip"] == 6.0
    assert layers["d"].attrs["padding"] == 1 and "pad_after" not in layers["d"].attrs
    assert "pad" not in layers                         # no layer of its own
    x = torch.randn(2, 3, 10, 10)
    with torch.no_grad():
        assert torch.allclose(GraphModule(list(layers.values()), mode="float")(x), m(x), atol=1e-5)


@pytest.mark.parametrize("act", [nn.ReLU6(), nn.Hardtanh(0.0, 6.0), lambda x: torch.clamp(x, 0, 6),
                                 lambda x: x.clamp(min=0, max=6), F.relu6])
def test_relu6_spellings_fuse_as_a_clip(act):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(2, 4, 1)
            self.act = act if isinstance(act, nn.Module) else None

        def forward(self, x):
            return (self.act or act)(self.c(x))

    (_, c) = capture(M())
    assert c.attrs["relu"] and c.attrs["clip"] == 6.0


class ClampAfterPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(2, 4, 1)
        self.p = nn.MaxPool2d(2)

    def forward(self, x):
        return F.relu6(self.p(self.c(x)))


class PadBeforePool(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(2, 4, 1)

    def forward(self, x):
        return F.max_pool2d(F.pad(self.c(x), (0, 1, 0, 1)), 2)


class SkewedPad(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(2, 4, 3)

    def forward(self, x):
        return self.c(F.pad(x, (1, 0, 0, 1)))


class ReflectPad(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(2, 4, 3)

    def forward(self, x):
        return self.c(F.pad(x, (1, 1, 1, 1), mode="reflect"))


class OddClamp(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(2, 4, 1)

    def forward(self, x):
        return torch.clamp(self.c(x), -1, 1)


class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(8, 8, 3, groups=4)

    def forward(self, x):
        return self.c(x)


class Multiplier(nn.Module):
    """Depthwise with a channel multiplier (8 → 16): not one input channel per output."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(8, 16, 3, groups=8)

    def forward(self, x):
        return self.c(x)


@pytest.mark.parametrize("model, node, what", [
    (ClampAfterPool(), "relu6", "must directly follow"),
    (PadBeforePool(), "pad", "folded into the Conv2d"),
    (SkewedPad(), "pad", r"padding \(1, 0, 0, 1\)"),
    (ReflectPad(), "pad", "only zeros"),
    (OddClamp(), "clamp", r"clamp to \[-1, 1\]"),
    (Grouped(), "c", "groups=4"),
    (Multiplier(), "c", "groups=8"),
])
def test_what_cannot_run_is_refused_by_name(model, node, what):
    with pytest.raises(UnsupportedLayerError, match=rf"'{node}'.*{what}"):
        capture(model)


def _int_conv(x, w, stride, before, after, groups=1):
    """Independent int64 reference: explicit zero padding, per-group im2col and matmul."""
    x = F.pad(x, (before, after, before, after))
    n, c, h, wd = x.shape
    o, cg, k, _ = w.shape
    oh, ow = (h - k) // stride + 1, (wd - k) // stride + 1
    outs = []
    for g in range(groups):
        xs = x[:, g * cg:(g + 1) * cg]
        cols = xs.unfold(2, k, stride).unfold(3, k, stride).permute(0, 2, 3, 1, 4, 5).reshape(n, oh * ow, -1)
        ws = w[g * (o // groups):(g + 1) * (o // groups)].reshape(o // groups, -1)
        outs.append((cols @ ws.T).reshape(n, oh, ow, -1).permute(0, 3, 1, 2))
    return torch.cat(outs, 1)


class Mobile(nn.Module):
    """A MobileNetV2 inverted residual (expand, depthwise stride 1, project, add) after a
    Keras-padded stem, then a LeNet-style head: flatten of the 4×4 map into Linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2)
        self.bn0 = nn.BatchNorm2d(8)
        self.expand = nn.Conv2d(8, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.dw = nn.Conv2d(24, 24, 3, padding=1, groups=24, bias=False)
        self.bn2 = nn.BatchNorm2d(24)
        self.project = nn.Conv2d(24, 8, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(8)
        self.down = nn.Conv2d(8, 16, 3, stride=2, groups=1)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        x = F.relu6(self.bn0(self.stem(F.pad(x, (0, 1, 0, 1)))))
        y = F.relu6(self.bn1(self.expand(x)))
        y = F.relu6(self.bn2(self.dw(y)))
        x = x + self.bn3(self.project(y))
        x = F.relu(self.down(F.pad(x, (0, 1, 0, 1))))
        return self.fc(torch.flatten(x, 1))


def mobile_net(seed=0):
    torch.manual_seed(seed)
    m = Mobile().eval()
    with torch.no_grad():
        for bn in (m.bn0, m.bn1, m.bn2, m.bn3):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(0.0, 2.0)           # pushes some ReLU6 outputs past 6
    return m


@pytest.fixture(scope="module")
def mobile_q():
    m = mobile_net()
    x = torch.randn(24, 3, 16, 16) * 3
    return m, quantize(m, [x[:16]], act_bits=8), x


def test_golden_convs_equal_the_int64_reference(mobile_q):
    """Asymmetric padding and depthwise convs in golden equal an independent int64 reference."""
    _, qm, x = mobile_q
    tr = golden_trace(qm, x[:4])
    for name in ("stem", "dw"):
        l = qm[name]
        a = qm[l.inputs[0]].out.decode(tr[l.inputs[0]])
        acc = _int_conv(a, l.qweight, l.attrs["stride"], l.attrs["padding"], pad_after(l.attrs),
                        l.attrs.get("groups", 1))
        rq = qm.requant[name]
        want = requantize(acc + rq["bias"].reshape(1, -1, 1, 1), rq["mult"].reshape(1, -1, 1, 1),
                          rq["shift"].reshape(1, -1, 1, 1), l.out, True, clip_code(l.attrs, l.out))
        assert torch.equal(tr[name], want), name


def test_relu6_clips_at_six_in_output_units(mobile_q):
    _, qm, x = mobile_q
    tr = golden_trace(qm, x)
    clipped = 0
    for name in ("stem", "expand", "dw"):
        l = qm[name]
        top = clip_code(l.attrs, l.out)
        assert top == round(6 * 2 ** l.out.frac)
        assert int(tr[name].max()) <= min(top, l.out.hi)
        clipped += int((tr[name] == top).sum())
    assert clipped > 0                               # the clip is exercised, not only the format's range


def test_fake_quant_agrees_with_golden(mobile_q):
    m, qm, x = mobile_q
    for name, (mx, _) in layerwise_agreement(qm, x[:8]).items():
        assert mx <= 1 + 1e-6, name
    with torch.no_grad():
        f = qm.fake_quant().eval()(x)
    assert float((f.argmax(1) == golden(qm, x).argmax(1)).double().mean()) >= 0.9


def test_compiler_maps_the_new_kinds(mobile_q):
    _, qm, _ = mobile_q
    shapes = infer_shapes(qm, [3, 16, 16])
    assert shapes["stem"] == (8, 8, 8) and shapes["down"] == (16, 4, 4) and shapes["fc"] == (10, 1, 1)
    prog = compile_model(qm, AcceleratorConfig(), [3, 16, 16])
    assert prog.io.im2col == (3, 2, 0, 1)           # the stem's im2col keeps its asymmetric padding


def test_flatten_of_a_wide_or_oblong_map_is_refused_by_name():
    class Head(nn.Module):
        def __init__(self, h, w):
            super().__init__()
            self.c = nn.Conv2d(1, 2, 1)
            self.fc = nn.Linear(2 * h * w, 3)

        def forward(self, x):
            return self.fc(torch.flatten(self.c(x), 1))

    for h, w in ((4, 6), (16, 16)):
        qm = quantize(Head(h, w), [torch.randn(4, 1, h, w)])
        with pytest.raises(CompileError, match=rf"'fc'.*{h}×{w}"):
            compile_model(qm, AcceleratorConfig(), [1, h, w])


def test_mobilenet_v2_has_torchvisions_layout_and_compiles():
    from rmsmp.host.models import mobilenet_v2
    full = mobilenet_v2()
    sd = full.state_dict()
    assert sum(p.numel() for p in full.parameters()) == 3_504_872 and len(sd) == 314     # torchvision's figures
    assert tuple(sd["features.3.conv.1.0.weight"].shape) == (144, 1, 3, 3)                # a depthwise kernel
    torch.manual_seed(0)
    m = mobilenet_v2(num_classes=10, width_mult=0.35).eval()
    qm = quantize(m, [torch.randn(2, 3, 32, 32)], hessian_images=2)
    ops = [l.op for l in qm.layers]
    assert ops.count("conv") == 52 and ops.count("add") == 10
    assert sum(1 for l in qm.layers if l.attrs.get("groups", 1) > 1) == 17
    assert sum(1 for l in qm.layers if "clip" in l.attrs) == 35                             # every ReLU6
    prog = compile_model(qm, AcceleratorConfig(), [3, 32, 32])
    assert prog.io.im2col == (3, 2, 1, 1)
