"""MSQE power-of-two scale quantizer (arXiv 2210.03671): exponents against brute force,
the outlier and error-weighting fixes, and ``quantize(method="msqe")`` end to end."""
import math

import pytest
import torch

from rmsmp.host import quantize
from rmsmp.host.errors import RmsmpError
from rmsmp.host.quant.pow2 import msqe_pow2_exponent, pow2_error
from rmsmp.host.quant.schemes import parse_scheme

FIX4, FIX8 = parse_scheme("fix4"), parse_scheme("fix8")


def brute(w, scheme, weight=None, mask=None):
    return min(range(-30, 8), key=lambda e: (pow2_error(w, scheme, e, weight, mask), -e))


@pytest.mark.parametrize("dist", ["normal", "laplace", "uniform"])
@pytest.mark.parametrize("scheme", [FIX4, FIX8], ids=["fix4", "fix8"])
def test_exponent_is_the_global_minimum(dist, scheme):
    """Least squares then the neighbour with the lower error finds the exponent a dense
    search over all exponents finds (rounding log2 of the LS scale does not, always)."""
    g = torch.Generator().manual_seed(0)
    misses = 0
    for k in range(12):
        n = torch.randn(2000, generator=g, dtype=torch.float64)
        w = {"normal": n, "laplace": torch.sign(n) * torch.empty_like(n).exponential_(generator=g),
             "uniform": torch.rand(2000, generator=g, dtype=torch.float64) - 0.5}[dist] * 10.0 ** (-k / 4)
        e, err = msqe_pow2_exponent(w, scheme, outlier_sigma=None)
        assert e == brute(w, scheme)
        assert err == pytest.approx(pow2_error(w, scheme, e))
        # the naive choice, round(log2(max|w|/qmax)), is sometimes worse
        naive = round(math.log2(float(w.abs().max()) / scheme.qmax))
        misses += pow2_error(w, scheme, naive) > err
    assert misses > 0


def test_outliers_do_not_drag_the_scale():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(4000, generator=g, dtype=torch.float64) * 0.05
    w[7] = 3.0                                                          # one 60-sigma outlier
    e_keep, _ = msqe_pow2_exponent(w, FIX4, outlier_sigma=None)
    e_mask, _ = msqe_pow2_exponent(w, FIX4, outlier_sigma=3.0)
    inliers = (w - w.mean()).abs() <= 3.0 * w.std()
    assert e_mask == brute(w, FIX4, mask=inliers)
    assert e_mask < e_keep                                             # finer grid for the 3999 others
    assert pow2_error(w, FIX4, e_mask, mask=inliers) < pow2_error(w, FIX4, e_keep, mask=inliers)


def test_error_weighting_follows_the_important_weights():
    g = torch.Generator().manual_seed(2)
    small = torch.randn(1000, generator=g, dtype=torch.float64) * 0.01
    large = torch.randn(1000, generator=g, dtype=torch.float64) * 1.0
    w = torch.cat([small, large])
    om = torch.cat([torch.ones(1000), torch.full((1000,), 1e-6)]).double()   # only the small ones matter
    e_w, _ = msqe_pow2_exponent(w, FIX4, weight=om, outlier_sigma=None)
    e_u, _ = msqe_pow2_exponent(w, FIX4, outlier_sigma=None)
    assert e_w == brute(w, FIX4, weight=om) and e_w < e_u


def test_pot_grids_are_refused():
    with pytest.raises(ValueError, match="fixed-point grid"):
        msqe_pow2_exponent(torch.randn(10), parse_scheme("pot4"))


def test_msqe_model_has_power_of_two_scales_and_keeps_accuracy(digits_net):
    from rmsmp.sim import golden
    m, cal, xte, yte = digits_net
    qm = quantize(m, cal, method="msqe")
    assert qm.meta["method"] == "msqe" and qm.meta["error_weight"] == "grad2"
    for l in qm.compute_layers():
        assert len(set(l.scale.tolist())) == 1                          # one scale per layer
        e = math.log2(float(l.scale[0]))
        assert e == round(e)                                            # a power of two
        assert set(l.schemes) == ({"fix8"} if l.name in ("conv1", "fc") else {"fix4"})
    fp = float((m(xte).argmax(1) == yte).double().mean())
    acc = float((golden(qm, xte).argmax(1) == yte).double().mean())
    assert acc >= fp - 0.01
    # the accelerator runs it: fix4 rows go to the fix8 lanes
    from rmsmp.host import AcceleratorConfig, compile_model
    assert compile_model(qm, AcceleratorConfig()).io.resident


def test_msqe_refuses_mixed_or_pot_grids(digits_net):
    m, cal, _, _ = digits_net
    with pytest.raises(RmsmpError, match="one fixed-point grid"):
        quantize(m, cal, method="msqe", ratio={"pot4": 0.5, "fix4": 0.5})
    with pytest.raises(RmsmpError, match="fixed-point edge_scheme"):
        quantize(m, cal, method="msqe", edge_scheme="pot4")
    with pytest.raises(RmsmpError, match="error_weight"):
        quantize(m, cal, method="msqe", error_weight="hessian")


def test_grad_rounds_the_exponent_to_the_neighbour_with_lower_error(digits_net):
    from rmsmp.host.quant.fake import GraphModule
    m, cal, _, _ = digits_net
    qm = quantize(m, cal, method="msqe")
    fq = GraphModule(qm, mode="fake", pow2=True)
    for l in qm.compute_layers():
        e0 = math.log2(float(l.scale[0]))
        for frac in (0.3, 0.5, 0.7):
            with torch.no_grad():
                fq.log2_scale[l.name.replace(".", "_")].fill_(e0 + frac)
            sch = parse_scheme(l.schemes[0])
            want = min((pow2_error(l.weight, sch, e), e) for e in (int(e0), int(e0) + 1))[1]
            assert fq.pow2_exponent(l.name) == want
            s = fq.row_scale(l.name)
            assert s.requires_grad and torch.equal(s.detach(), torch.full((l.rows,), 2.0 ** want))


def test_grad_method_learns_power_of_two_scales(digits_net):
    from rmsmp.host.quant.qat import qat
    from rmsmp.sim import golden
    m, cal, xte, yte = digits_net
    qm = quantize(m, cal, method="grad", grad_steps=60)
    assert qm.meta["method"] == "grad" and qm.meta["init"] == "msqe"
    for l in qm.compute_layers():
        e = math.log2(float(l.scale[0]))
        assert len(set(l.scale.tolist())) == 1 and e == round(e)
    fp = float((m(xte).argmax(1) == yte).double().mean())
    assert float((golden(qm, xte).argmax(1) == yte).double().mean()) >= fp - 0.01
    # frozen from the first step: the exponents stay where MSQE put them
    init = quantize(m, cal, method="msqe")
    frozen = qat(init, cal, steps=5, pow2=True, freeze_at=0.0)
    assert [float(l.scale[0]) for l in frozen.compute_layers()] == [float(l.scale[0]) for l in init.compute_layers()]
    with pytest.raises(RmsmpError, match="labelled"):
        quantize(m, [x for x, _ in cal], method="grad")
