"""Random-network differential testing: small random CNNs, quantized, compiled, run on the
simulated accelerator and compared with the golden model (bit-exact or it is a failure).

:func:`networks` is a ``hypothesis`` strategy for :class:`NetSpec` — layer kinds (conv 1×1
and 3×3 with strides 1/2 and paddings 0/1, BatchNorm, ReLU, residual adds, max-pool, global
average pool, flatten + Linear of a 1×1 or spatial map, ReLU6, depthwise convs, TensorFlow-
style asymmetric "same" padding), channel counts, input sizes, schemes and ratios, batch
sizes.  :func:`run_case` is one differential test; ``bench/fuzz_networks.py --count N`` runs
many, ``tests/rtl/test_fuzz_verilator.py`` a few.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["NetSpec", "build", "networks", "run_case", "RATIOS"]

#: weight-scheme mixes drawn from (the RMSMP paper's 10:5:1, pot-heavy, fix-only ones)
RATIOS = (
    {"pot4": 10 / 16, "fix4": 5 / 16, "fix8": 1 / 16},
    {"pot4": 1 / 2, "fix8": 1 / 2},
    {"fix4": 1.0},
    {"fix8": 1.0},
    {"pot4": 1.0},
)


@dataclass(frozen=True)
class NetSpec:
    in_ch: int
    size: int
    blocks: tuple            # ("conv", cout, k, stride, pad, bn, act) | ("dw", k, stride, bn, act) |
                             # ("tfpad", cout, stride) | ("res", k) | ("pool",); act 0 none, 1 ReLU, 2 ReLU6
    head: str                # "gap" (global average pool) or "flatten"
    classes: int
    ratio: int               # index into RATIOS
    batch: int
    seed: int


class _Res(nn.Module):
    def __init__(self, ch: int, k: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, k, padding=k // 2, bias=False)
        self.bn = nn.BatchNorm2d(ch)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)) + x)


def build(spec: NetSpec) -> tuple[nn.Module, tuple]:
    """The float module of ``spec`` (random weights from ``spec.seed``, BatchNorm statistics
    made non-trivial) and its input shape (C, H, W)."""
    torch.manual_seed(spec.seed)
    layers, ch, size = [], spec.in_ch, spec.size
    for b in spec.blocks:
        if b[0] in ("conv", "dw"):
            if b[0] == "conv":
                _, cout, k, stride, pad, bn, act = b
                groups = 1
            else:
                _, k, stride, bn, act = b
                cout, pad, groups = ch, k // 2, ch
            layers.append(nn.Conv2d(ch, cout, k, stride=stride, padding=pad, groups=groups, bias=not bn))
            if bn:
                layers.append(nn.BatchNorm2d(cout))
            if act:
                layers.append(nn.ReLU() if act == 1 else nn.ReLU6())
            ch, size = cout, (size + 2 * pad - k) // stride + 1
        elif b[0] == "tfpad":                   # Keras "same" at stride 2: 0 before, 1 after
            _, cout, stride = b
            layers += [nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(ch, cout, 3, stride=stride), nn.ReLU()]
            ch, size = cout, (size + 1 - 3) // stride + 1
        elif b[0] == "res":
            layers.append(_Res(ch, b[1]))
        elif b[0] == "pool":
            layers.append(nn.MaxPool2d(2))
            size //= 2
    if spec.head == "gap":
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(ch, spec.classes)]
    else:
        layers += [nn.Flatten(), nn.Linear(ch * size * size, spec.classes)]
    net = nn.Sequential(*layers).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net, (spec.in_ch, spec.size, spec.size)


def networks():
    """A hypothesis strategy of :class:`NetSpec` small enough for the simulator."""
    from hypothesis import strategies as st

    @st.composite
    def spec(draw):
        in_ch = draw(st.integers(1, 4))
        size = draw(st.integers(6, 12))
        blocks, s = [], size
        for _ in range(draw(st.integers(1, 4))):
            kind = draw(st.sampled_from(["conv", "conv", "res", "pool", "dw", "tfpad"]))
            stride = draw(st.sampled_from([1, 2])) if s >= 6 else 1
            if kind == "pool" and s >= 4:
                blocks.append(("pool",))
                s //= 2
            elif kind == "res" and blocks:
                blocks.append(("res", draw(st.sampled_from([1, 3]))))
            elif kind == "dw" and blocks:
                k = draw(st.sampled_from([3, 5])) if s >= 5 else 3
                blocks.append(("dw", k, stride, draw(st.booleans()), draw(st.integers(0, 2))))
                s = (s + 2 * (k // 2) - k) // stride + 1
            elif kind == "tfpad" and s >= 3:
                blocks.append(("tfpad", draw(st.integers(1, 20)), stride))
                s = (s + 1 - 3) // stride + 1
            else:
                k = draw(st.sampled_from([1, 3])) if s >= 3 else 1     # every network is a valid one
                pad = draw(st.integers(0, k // 2))
                cout = draw(st.integers(1, 20))
                blocks.append(("conv", cout, k, stride, pad, draw(st.booleans()), draw(st.integers(0, 2))))
                s = (s + 2 * pad - k) // stride + 1
        return NetSpec(in_ch, size, tuple(blocks), draw(st.sampled_from(["gap", "gap", "gap", "flatten"])),
                       draw(st.integers(2, 12)), draw(st.integers(0, len(RATIOS) - 1)),
                       draw(st.integers(1, 3)), draw(st.integers(0, 2**16)))
    return spec()


def run_case(spec: NetSpec, dev, cfg) -> str:
    """Quantize, compile and run ``spec`` on ``dev``; returns "exact" or "refused: <why>" (a
    clear RmsmpError from quantize/compile for a network the hardware cannot take).  Raises
    AssertionError naming the network when the device's logits differ from golden's."""
    from rmsmp.host import compile_model, quantize
    from rmsmp.host.errors import RmsmpError
    from rmsmp.sim import golden
    net, shape = build(spec)
    g = torch.Generator().manual_seed(spec.seed)
    calib = torch.randn(8, *shape, generator=g)
    x = torch.randn(spec.batch, *shape, generator=g)
    try:
        qm = quantize(net, calib, ratio=RATIOS[spec.ratio], hessian_images=4)
        prog = compile_model(qm, cfg, batch=spec.batch)
    except RmsmpError as e:
        return f"refused: {e}"
    dev.load(prog)
    got, want = dev.run(x), golden(qm, x)
    if not torch.equal(got, want):
        bad = (got != want).nonzero()[0].tolist()
        raise AssertionError(f"device differs from golden on {spec}: first at {bad}, "
                             f"{got[tuple(bad)].item()} vs {want[tuple(bad)].item()}")
    return "exact"
