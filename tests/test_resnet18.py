"""ResNet-18 (torchvision layout) through quantize and golden at a small input size."""
import pytest
import torch
from conftest import layerwise_agreement

from rmsmp.host import quantize
from rmsmp.host.models import resnet18
from rmsmp.host.quant.rmsmp import parse_ratio, row_counts
from rmsmp.sim import golden

pytestmark = pytest.mark.slow      # quantizes ResNet-18 with Hessian row assignment


@pytest.fixture(scope="module")
def r18():
    torch.manual_seed(0)
    model = resnet18(num_classes=100).eval()
    x = torch.randn(8, 3, 64, 64)
    return model, x, quantize(model, x, hessian_images=4, hessian_samples=1)


def test_resnet18_rows_follow_ratio_in_every_layer(r18):
    _, _, qm = r18
    ratio = parse_ratio({"pot4": 10 / 16, "fix4": 5 / 16, "fix8": 1 / 16})
    comp = qm.compute_layers()
    assert len(comp) == 21
    for l in comp[1:-1]:
        assert {s: l.schemes.count(str(s)) for s in ratio} == row_counts(l.rows, ratio)
        assert l.rows % 16 == 0 and l.schemes.count("pot4") == l.rows * 10 // 16
    assert qm.realized_ratio["fix8"] > 1 / 16      # edge layers are all fix8


def test_resnet18_golden_runs_and_tracks_float(r18):
    model, x, qm = r18
    y = golden(qm, x)
    assert y.shape == (8, 100)
    with torch.no_grad():
        ref = model(x).double()
    c = torch.corrcoef(torch.stack([y.flatten(), ref.flatten()]))[0, 1]
    assert c > 0.8


def test_resnet18_fake_quant_agrees_with_golden_per_layer(r18):
    """docs §7 on all 21 conv/linear layers.  (End to end, a random-init network
    amplifies single-LSB differences, so the per-layer bound is the contract.)"""
    _, x, qm = r18
    for name, (mx, share) in layerwise_agreement(qm, x).items():
        assert mx <= 1 + 1e-6, name
        assert share < (0.1 if name == qm.output.name else 0.001), name
