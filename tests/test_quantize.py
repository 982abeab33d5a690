"""quantize(): row counts, row assignment, scales, activation formats, bad input."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from rmsmp.host import RmsmpError, SchemeError, quantize
from rmsmp.host.models import DigitsNet
from rmsmp.host.quant import GraphModule, capture
from rmsmp.host.quant.calibrate import fit_frac
from rmsmp.host.quant.rmsmp import assign_rows, fit_scales, hessian_row_traces, parse_ratio, row_counts
from rmsmp.host.quant.schemes import parse_scheme

R1051 = {"pot4": 10 / 16, "fix4": 5 / 16, "fix8": 1 / 16}


def test_every_layer_follows_the_ratio_rule(digits_q):
    ratio = parse_ratio(R1051)
    comp = digits_q.compute_layers()
    for l in comp[1:-1]:
        got = {s: l.schemes.count(str(s)) for s in ratio}
        assert got == row_counts(l.rows, ratio), l.name
    for l in (comp[0], comp[-1]):                      # edge layers: all fix8 by default
        assert set(l.schemes) == {"fix8"}


def test_edge_layers_can_follow_the_ratio_too(digits_fp, calib):
    qm = quantize(digits_fp, calib, edge_scheme=None, edge_act_bits=None, assign="variance")
    comp = qm.compute_layers()
    assert comp[0].schemes.count("pot4") == 20 and comp[-1].schemes.count("fix8") == 1
    assert qm.input.out.bits == 4 and qm.input.out.signed


def test_activation_formats(digits_q):
    qm = digits_q
    assert qm.input.out.signed and qm.input.out.bits == 8
    for l in qm.layers[1:]:
        if l.attrs.get("relu"):
            assert not l.out.signed and l.out.bits == 4, l.name
        elif l.op == "conv":                           # pre-add branches
            assert l.out.signed and l.out.bits == 8, l.name
    assert qm["avgpool"].out.bits == 8 and not qm["avgpool"].out.signed  # feeds the 8-bit fc
    assert qm.output.out.signed and qm.output.out.bits == 16


def test_uniform_fix4(digits_fp, calib):
    qm = quantize(digits_fp, calib, ratio={"fix4": 1.0})
    for l in qm.compute_layers()[1:-1]:
        assert set(l.schemes) == {"fix4"}
        assert l.qweight.abs().max() <= 7


def test_calibration_formats_are_equivalent(digits_fp, digits):
    x = digits[0][:128]
    a = quantize(digits_fp, x, assign="variance")
    b = quantize(digits_fp, [x[:64], x[64:]], assign="variance")
    c = quantize(digits_fp, [(x[:64], None), (x[64:],)], assign="variance")
    for m in (b, c):
        assert [l.out for l in m] == [l.out for l in a]
        assert all(torch.equal(p.qweight, q.qweight) for p, q in zip(a.compute_layers(), m.compute_layers()))
    with pytest.raises(RmsmpError, match="no calibration"):
        quantize(digits_fp, [])
    with pytest.raises(RmsmpError, match="calibration batch of type"):
        quantize(digits_fp, ["images"])


@pytest.mark.parametrize("kw, msg", [
    ({"act_bits": 9}, "act_bits"), ({"act_bits": 1}, "act_bits"), ({"act_bits": "4"}, "act_bits"),
    ({"edge_act_bits": 12}, "edge_act_bits"), ({"out_bits": 64}, "out_bits"),
    ({"method": "magic"}, "unknown quantization method 'magic'"),
    ({"assign": "oracle"}, "unknown row assignment"),
    ({"ratio": {"pot4": 0.5, "fix4": 0.25}}, "sum to 0.75"),
    ({"ratio": {"pot9": 1.0}}, "unknown scheme"),
])
def test_bad_arguments_are_named(digits_fp, calib, kw, msg):
    with pytest.raises(RmsmpError, match=msg):
        quantize(digits_fp, calib, **kw)


def test_bad_edge_scheme(digits_fp, calib):
    with pytest.raises(SchemeError, match="fix12"):
        quantize(digits_fp, calib, edge_scheme="fix12")


# -- row assignment -------------------------------------------------------------------
def test_hessian_sends_sensitive_rows_to_high_precision():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 64, generator=g)
    trace = torch.ones(16)
    trace[[3, 11]] = 1000.0
    counts = row_counts(16, parse_ratio({"pot4": 0.5, "fix4": 0.375, "fix8": 0.125}))
    out = assign_rows(w, counts, mode="hessian", trace=trace)
    assert [r for r, s in enumerate(out) if s.name == "fix8"] == [3, 11]


def test_peaked_rows_go_to_pot_flat_rows_to_fix():
    g = torch.Generator().manual_seed(0)
    lap = torch.distributions.Laplace(0.0, 1.0).sample((8, 256))
    uni = torch.rand(8, 256, generator=g) * 2 - 1
    w = torch.cat([uni[:4], lap[:4], uni[4:], lap[4:]])
    peaked = {4, 5, 6, 7, 12, 13, 14, 15}
    counts = row_counts(16, parse_ratio({"pot4": 0.5, "fix4": 0.5}))
    out = assign_rows(w, counts, mode="hessian", trace=torch.ones(16))
    assert {r for r, s in enumerate(out) if s.is_pot} == peaked
    out_v = assign_rows(w * torch.tensor([1.0] * 8 + [0.1] * 8)[:, None], counts, mode="variance")
    assert {r for r, s in enumerate(out_v) if s.is_pot} == set(range(8, 16))


@pytest.mark.parametrize("mode", ["hessian", "variance", "random"])
def test_assignment_meets_counts_exactly(mode):
    w = torch.randn(37, 20)
    counts = row_counts(37, parse_ratio(R1051))
    out = assign_rows(w, counts, mode=mode, trace=torch.rand(37), generator=torch.Generator().manual_seed(1))
    assert {s: out.count(s) for s in counts} == counts


def test_hutchinson_trace_matches_exact_hessian():
    """Per-row traces vs the exact Hessian of a tiny linear classifier."""
    torch.manual_seed(0)
    lin = nn.Linear(5, 4)
    x, y = torch.randn(32, 5), torch.randint(0, 4, (32,))
    gm = GraphModule(capture(nn.Sequential(lin)), mode="float")
    est = hessian_row_traces(gm, ["0"], [(x, y)], samples=4000, max_images=32)["0"]
    W, b = lin.weight.detach().clone(), lin.bias.detach()
    H = torch.autograd.functional.hessian(lambda w: F.cross_entropy(x @ w.T + b, y), W)
    exact = torch.stack([H[r, :, r, :].diagonal().sum() for r in range(4)]).double()
    assert torch.allclose(est, exact, rtol=0.1, atol=1e-3)


# -- scales -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["fix4", "fix8", "pot4", "pot3"])
def test_msqe_scale_is_near_the_dense_optimum(name):
    s = parse_scheme(name)
    g = torch.Generator().manual_seed(2)
    w = torch.randn(6, 300, generator=g, dtype=torch.float64) * torch.rand(6, 1, generator=g, dtype=torch.float64)
    scale, err = fit_scales(w, s)
    naive = ((s.round(w / (w.abs().amax(1, keepdim=True) / s.qmax)) * (w.abs().amax(1, keepdim=True) / s.qmax)
              - w) ** 2).sum(1)
    assert torch.all(err <= naive + 1e-12)
    dense = torch.linspace(0.01, 1.5, 3000, dtype=torch.float64)[:, None] * w.abs().amax(1)[None] / s.qmax
    errs = ((s.round(w[None] / dense[..., None]) * dense[..., None] - w[None]) ** 2).sum(2)
    assert torch.all(err <= errs.min(0).values * 1.02)
    q = s.quantize(w, scale)
    assert torch.allclose(((q * scale[:, None] - w) ** 2).sum(1), err)


def test_activation_frac_minimises_mse():
    g = torch.Generator().manual_seed(3)
    v = torch.relu(torch.randn(20000, generator=g)) * 3
    v[:3] = 40.0                                               # outliers: clipping should win
    q = fit_frac(v, 4, False, float(v.max()))
    def mse(f):
        return float(((torch.floor(v * 2.0 ** f + 0.5).clamp(0, 15) / 2.0 ** f - v) ** 2).mean())
    assert all(mse(q.frac) <= mse(f) + 1e-12 for f in range(-6, 12))


def test_rows_with_large_bias_keep_the_integer_bias_in_range(digits_fp, calib):
    m = DigitsNet(16)
    m.load_state_dict({k: v for k, v in DigitsNet(16).state_dict().items()})
    m.eval()
    with torch.no_grad():
        m.fc.weight[0].zero_()          # a dead row with a bias
        m.fc.bias[0] = 3.0
    qm = quantize(m, calib[0][0])
    B = qm.requant["fc"]["bias"]
    assert B.abs().max() <= 2 ** 30
