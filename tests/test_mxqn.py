"""MXQN: SQNR-chosen weight fraction lengths and fixed vs base-√2 logarithmic activations."""
import math

import pytest
import torch
from conftest import accuracy, layerwise_agreement

from rmsmp.generator.lower import CompileError
from rmsmp.host import AcceleratorConfig, RmsmpError, compile_model, quantize
from rmsmp.host.quant.fake import GraphModule
from rmsmp.host.quant.graph import capture
from rmsmp.host.quant.mxqn import sqnr_pow2_exponent
from rmsmp.host.quant.qmodel import QuantizedModel, TensorQ
from rmsmp.host.quant.schemes import parse_scheme
from rmsmp.sim import golden, golden_trace
from rmsmp.sim.golden import conv_int, rshift_round


def _sqnr(x, xq):
    return 10 * math.log10(float((x * x).sum()) / float(((x - xq) ** 2).sum()))


def _ideal(c, frac_units=7):
    """Ideal (real √2) level of code c >= 1 in units of 2^-(frac + 7)."""
    return 2.0 ** (frac_units + (c - 1) / 2)


def _brute_log_code(v: torch.Tensor, bits: int) -> torch.Tensor:
    """Code of integers v (units 2^-(frac+7)): 0 below half the smallest level, else the
    code whose ideal level is nearest in the log domain (argmin over every code)."""
    codes = torch.arange(1, 2 ** bits)
    lv = torch.tensor([_ideal(int(c)) for c in codes], dtype=torch.float64)
    d = (torch.log2(v.double().clamp(min=1)).unsqueeze(-1) - torch.log2(lv)).abs()
    c = codes[d.argmin(-1)]
    return torch.where(v < 64, torch.zeros_like(c), c)


@pytest.mark.parametrize("bits", [2, 3, 4, 5])
def test_log_codes_round_to_the_nearest_level_in_the_log_domain(bits):
    q = TensorQ(bits, False, 0, "log")
    lv = q.levels()
    assert lv[:5] == [0, 128, 181, 256, 362][: len(lv[:5])]
    assert torch.equal(q.encode(torch.tensor(lv)), torch.arange(2 ** bits))      # levels are fixed points
    v = torch.arange(-5, 2 * lv[-1])
    assert torch.equal(q.encode(v), _brute_log_code(v, bits))
    assert torch.equal(q.decode(q.encode(torch.tensor(lv))), torch.tensor(lv))


def test_log_formats_are_unsigned_and_narrow():
    with pytest.raises(RmsmpError, match="unsigned"):
        TensorQ(4, True, 0, "log")
    with pytest.raises(RmsmpError, match="2..5 bits"):
        TensorQ(6, False, 0, "log")
    with pytest.raises(RmsmpError, match="tensor code"):
        TensorQ(4, False, 0, "ln")


@pytest.mark.parametrize("scheme", ["fix4", "fix8"])
def test_weight_fraction_length_has_the_highest_sqnr(scheme):
    s = parse_scheme(scheme)
    g = torch.Generator().manual_seed(1)
    for w in (torch.randn(500, generator=g) * 0.05,
              torch.cat([torch.randn(500, generator=g) * 0.01, torch.tensor([0.9, -1.3])])):
        e, db = sqnr_pow2_exponent(w, s)
        w64 = w.double()
        brute = max(range(-40, 10), key=lambda k: (_sqnr(w64, torch.clamp(torch.round(w64 / 2.0 ** k), -s.qmax, s.qmax)
                                                          * 2.0 ** k), k))
        assert e == brute and db == pytest.approx(_sqnr(w64, s.round(w64 / 2.0 ** e) * 2.0 ** e))


def _float_activations(model, batches):
    layers = capture(model)
    gm = GraphModule(layers, mode="float")
    vals = {}
    gm.observer = lambda n, y: vals.setdefault(n, []).append(y.detach().reshape(-1).double())
    with torch.no_grad():
        for x, _ in batches:
            gm(x)
    return {n: torch.cat(v) for n, v in vals.items()}


@pytest.mark.parametrize("act_bits", [3, 4])
def test_each_activation_takes_the_format_with_higher_sqnr(digits_net, act_bits):
    m, cal, _, _ = digits_net
    cal = cal[:2]                               # 128 images: the recorder keeps every value
    qm = quantize(m, cal, method="mxqn", act_bits=act_bits)
    acts = _float_activations(m, cal)
    choice = qm.meta["activation_sqnr_db"]
    assert choice, "no tensor was eligible"
    for name, info in choice.items():
        x, bits = acts[name], qm[name].out.bits
        amax = float(x.abs().max())
        t0 = math.floor(math.log2(2 ** bits / amax))
        fix = max(_sqnr(x, torch.floor(x * 2.0 ** f + 0.5).clamp(0, 2 ** bits - 1) / 2.0 ** f)
                  for f in range(t0 - 1, t0 + 7))
        assert info["fix_db"] == pytest.approx(fix, abs=1e-9), name
        if bits > 5:                             # wider tensors stay fixed-point
            assert info["log_db"] is None and not qm[name].out.is_log
            continue
        assert bits == act_bits
        top = 2.0 ** ((2 ** bits - 2) / 2)
        t0 = math.floor(math.log2(top / amax))
        logs = []
        for f in range(t0 - 1, t0 + 7):
            v = torch.floor(x * 2.0 ** (f + 7) + 0.5).to(torch.int64)
            c = _brute_log_code(v, bits)
            lv = torch.tensor(TensorQ(bits, False, f, "log").levels(), dtype=torch.float64)
            logs.append(_sqnr(x, lv[c] * 2.0 ** -(f + 7)))
        assert info["log_db"] == pytest.approx(max(logs), abs=1e-9), name
        assert qm[name].out.is_log == (info["log_db"] > info["fix_db"]), name
    if act_bits == 3:                            # on this network 3-bit activations favour log
        assert qm.meta["log_activations"]


@pytest.fixture(scope="module")
def mxqn3(digits_net):
    m, cal, _, _ = digits_net
    return quantize(m, cal, method="mxqn", act_bits=3)


def test_golden_executes_log_codes_exactly(mxqn3, digits_net):
    """A conv reading log codes: int64 convolution of the decoded levels, the integer
    requantizer, then the nearest log level — recomputed independently of golden."""
    qm, x = mxqn3, digits_net[2][:16]
    tr = golden_trace(qm, x)
    checked = 0
    for l in qm.compute_layers():
        src = qm[l.inputs[0]].out
        if l.op != "conv" or not src.is_log:
            continue
        a = torch.tensor(src.levels())[tr[l.inputs[0]]]
        acc = conv_int(a, l.qweight, l.attrs["stride"], l.attrs["padding"])
        rq = qm.requant[l.name]
        y = rshift_round((acc + rq["bias"].view(1, -1, 1, 1)) * rq["mult"].view(1, -1, 1, 1),
                         rq["shift"].view(1, -1, 1, 1))
        if l.out.is_log:
            y = _brute_log_code(y, l.out.bits)
        else:
            y = y.clamp(0 if l.attrs.get("relu") else l.out.lo, l.out.hi)
        assert torch.equal(y, tr[l.name]), l.name
        checked += 1
    assert checked >= 2


def test_mxqn_accuracy_and_fake_quant_agreement(mxqn3, digits_net):
    m, cal, xte, yte = digits_net
    fp = accuracy(m(xte), yte)
    assert accuracy(golden(mxqn3, xte), yte) >= fp - 0.02
    q4 = quantize(m, cal, method="mxqn")
    assert accuracy(golden(q4, xte), yte) >= fp - 0.01
    for l in q4.compute_layers():                  # weights: one power-of-two scale per layer
        e = math.log2(float(l.scale[0]))
        assert e == round(e) and len(set(l.scale.tolist())) == 1
    for name, (mx, share) in layerwise_agreement(mxqn3, xte[:128]).items():
        assert mx <= 1 + 1e-6 and share < 0.05, name
    with torch.no_grad():
        f = mxqn3.fake_quant().eval()(xte)
    assert float((f.argmax(1) == golden(mxqn3, xte).argmax(1)).double().mean()) >= 0.99


def test_compiling_log_activations_names_the_layer(mxqn3, digits_net, tmp_path):
    first = mxqn3.meta["log_activations"][0]
    with pytest.raises(CompileError, match=rf"layer '{first}' produces logarithmic"):
        compile_model(mxqn3, AcceleratorConfig())
    back = QuantizedModel.load(mxqn3.save(tmp_path / "m.pt"))
    assert back[first].out == mxqn3[first].out and back[first].out.is_log
    m, cal, _, _ = digits_net
    fixed = quantize(m, cal, method="mxqn", act_bits=3, log_activations=False)
    assert not fixed.meta["log_activations"]
    assert compile_model(fixed, AcceleratorConfig()).io.resident


def test_mxqn_refuses_mixed_grids(digits_net):
    m, cal, _, _ = digits_net
    with pytest.raises(RmsmpError, match="'mxqn' quantizes every row"):
        quantize(m, cal, method="mxqn", ratio={"pot4": 0.5, "fix4": 0.5})
