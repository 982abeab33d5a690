"""Real data: scikit-learn digits — FP vs RMSMP PTQ vs QAT vs uniform fix4 (issue figures)."""
import pytest
import torch
from conftest import accuracy

from rmsmp.host import qat, quantize
from rmsmp.sim import golden


@pytest.fixture(scope="module")
def results(digits, digits_fp, digits_q, calib):
    xtr, ytr, xte, yte = digits
    train = [(xtr[i:i + 64], ytr[i:i + 64]) for i in range(0, len(ytr), 64)]
    with torch.no_grad():
        fp = accuracy(digits_fp(xte), yte)
    ptq = accuracy(golden(digits_q, xte), yte)
    q2 = qat(digits_q, train, steps=300)
    fix4 = quantize(digits_fp, calib, ratio={"fix4": 1.0})
    r = {"fp": fp, "rmsmp_ptq": ptq, "rmsmp_ptq_qat": accuracy(golden(q2, xte), yte),
         "fix4_ptq": accuracy(golden(fix4, xte), yte),
         "fix4_ptq_qat": accuracy(golden(qat(fix4, train, steps=300), xte), yte),
         "qat_model": q2}
    print("\ndigits top-1 (held-out, n=%d): " % len(yte)
          + ", ".join(f"{k} {v * 100:.2f}%" for k, v in r.items() if k != "qat_model"))
    return r


def test_fp_baseline_is_sane(results):
    assert results["fp"] >= 0.95


def test_rmsmp_ptq_plus_qat_within_one_point_of_fp(results):
    assert results["rmsmp_ptq_qat"] >= results["fp"] - 0.01


def test_rmsmp_ptq_is_close_without_training(results):
    assert results["rmsmp_ptq"] >= results["fp"] - 0.03


def test_fix4_baseline_runs(results):
    assert results["fix4_ptq"] >= 0.8


def test_qat_export_keeps_schemes_and_formats(results, digits_q):
    q2 = results["qat_model"]
    for a, b in zip(digits_q, q2):
        assert a.schemes == b.schemes and a.out == b.out


def test_qat_export_roundtrips_through_fake_quant(results, digits):
    """Export, rebuild the fake-quant module, export again: identical integers."""
    q2 = results["qat_model"]
    q3 = q2.fake_quant().to_quantized()
    for a, b in zip(q2.compute_layers(), q3.compute_layers()):
        assert torch.equal(a.qweight, b.qweight) and torch.equal(a.scale, b.scale)


def test_qat_model_still_agrees_with_golden(results, digits):
    """Scales trained in QAT stay legal: the exported model's fake-quant and golden agree."""
    _, _, xte, yte = digits
    q2 = results["qat_model"]
    with torch.no_grad():
        f = q2.fake_quant().eval()(xte)
    assert abs(accuracy(f, yte) - accuracy(golden(q2, xte), yte)) <= 0.01
