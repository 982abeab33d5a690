"""The golden model against independent references and against the fake-quant model."""
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from conftest import accuracy, layerwise_agreement

from rmsmp.host.quant.qmodel import TensorQ
from rmsmp.sim import golden, golden_trace
from rmsmp.sim.golden import conv_int, requantize, rshift_round


def test_rshift_round_is_floor_half_up():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(-2 ** 40, 2 ** 40, (5000,), generator=g)
    for n in (0, 1, 2, 7, 17, 33):
        got = rshift_round(x, n)
        ref = [int((Fraction(int(v), 2 ** n) + Fraction(1, 2)).__floor__()) for v in x[:500]]
        assert got[:500].tolist() == ref
    # ties go up, also for negatives
    assert rshift_round(torch.tensor([-3, -1, 1, 3, -2, 2]), 1).tolist() == [-1, 0, 1, 2, -1, 1]


def test_requantize_saturates_at_both_ends():
    q = TensorQ(8, True, 0)
    v = torch.tensor([-10 ** 9, -129 * 4, -128 * 4, 0, 127 * 4, 128 * 4, 10 ** 9])
    assert requantize(v, 1, 2, q, relu=False).tolist() == [-128, -128, -128, 0, 127, 127, 127]
    assert requantize(v, 1, 2, q, relu=True).tolist() == [0, 0, 0, 0, 127, 127, 127]
    u = TensorQ(4, False, 0)
    assert requantize(torch.tensor([-5, 7, 15, 16, 99]), 1, 0, u, relu=True).tolist() == [0, 7, 15, 15, 15]


@pytest.mark.parametrize("k, s, p, c", [(3, 1, 1, 5), (3, 2, 1, 3), (1, 2, 0, 7), (7, 2, 3, 3)])
def test_float64_conv_path_equals_int64_reference(k, s, p, c):
    g = torch.Generator().manual_seed(k * 10 + s)
    x = torch.randint(0, 256, (2, c, 13, 11), generator=g)
    w = torch.randint(-127, 128, (6, c, k, k), generator=g)
    ref = conv_int(x, w, s, p)
    got = F.conv2d(x.double(), w.double(), stride=s, padding=p).round().long()
    assert torch.equal(got, ref)


def test_golden_layers_follow_the_contract(digits_q, digits):
    """Recompute every layer from its golden inputs with plain Python-int arithmetic on a sample."""
    qm = digits_q
    x = digits[2][:4]
    vals = golden_trace(qm, x)
    g = torch.Generator().manual_seed(0)
    for l in qm.layers[1:]:
        y = vals[l.name]
        if l.op == "conv":
            a = vals[l.inputs[0]]
            rq = qm.requant[l.name]
            k, st, p = l.attrs["kernel"], l.attrs["stride"], l.attrs["padding"]
            for _ in range(20):
                n = int(torch.randint(y.shape[0], (1,), generator=g))
                o = int(torch.randint(y.shape[1], (1,), generator=g))
                i = int(torch.randint(y.shape[2], (1,), generator=g))
                j = int(torch.randint(y.shape[3], (1,), generator=g))
                acc = 0
                for c in range(a.shape[1]):
                    for ky in range(k):
                        for kx in range(k):
                            yy, xx = i * st + ky - p, j * st + kx - p
                            if 0 <= yy < a.shape[2] and 0 <= xx < a.shape[3]:
                                acc += int(l.qweight[o, c, ky, kx]) * int(a[n, c, yy, xx])
                v = (acc + int(rq["bias"][o])) * int(rq["mult"][o])
                sh = int(rq["shift"][o])
                r = v if sh == 0 else (v + (1 << (sh - 1))) >> sh
                lo = 0 if l.attrs.get("relu") else l.out.lo
                assert int(y[n, o, i, j]) == min(max(r, lo), l.out.hi), (l.name, n, o, i, j)
        elif l.op == "add":
            qa, qb = qm[l.inputs[0]].out, qm[l.inputs[1]].out
            a, b = vals[l.inputs[0]], vals[l.inputs[1]]
            for idx in range(0, a.numel(), 97):
                real = Fraction(int(a.view(-1)[idx]), 2 ** qa.frac) + Fraction(int(b.view(-1)[idx]), 2 ** qb.frac)
                r = (real * 2 ** l.out.frac + Fraction(1, 2)).__floor__()
                lo = 0 if l.attrs.get("relu") else l.out.lo
                assert int(y.view(-1)[idx]) == min(max(r, lo), l.out.hi)
        elif l.op == "avgpool":
            a = vals[l.inputs[0]]
            assert y.shape[2:] == (1, 1)
            assert torch.all((a.double().mean(dim=(2, 3), keepdim=True) * 2.0 ** (l.out.frac - qm.in_q(l).frac)
                              - y.double()).abs() <= 0.5 + 1e-3)


def test_fake_quant_agrees_with_golden_per_layer(digits_q, digits):
    """docs §7: given the same integer inputs, a layer's outputs differ by at most 1 LSB."""
    agree = layerwise_agreement(digits_q, digits[2][:128])
    for name, (mx, share) in agree.items():
        assert mx <= 1 + 1e-6, name
        assert share < (0.05 if name == digits_q.output.name else 0.001), name


def test_fake_quant_agrees_with_golden_end_to_end(digits_q, digits):
    """docs §7: top-1 agreement on the held-out digits >= 99%."""
    _, _, xte, yte = digits
    with torch.no_grad():
        f = digits_q.fake_quant().eval()(xte)
    g = golden(digits_q, xte)
    agree = float((f.argmax(1) == g.argmax(1)).double().mean())
    assert agree >= 0.99
    assert abs(accuracy(f, yte) - accuracy(g, yte)) <= 0.01


def test_integer_input_path(digits_q, digits):
    x = digits[2][:8]
    xi = golden_trace(digits_q, x)["input"]
    assert torch.equal(golden(digits_q, xi, integer_input=True), golden(digits_q, x))
    with pytest.raises(ValueError, match="outside"):
        golden(digits_q, xi * 1000, integer_input=True)
