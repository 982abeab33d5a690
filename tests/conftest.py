"""Shared fixtures: the trained digits network and its RMSMP quantization, and a quantized
ResNet-18 — each built once per run.  The ResNet-18 is also shared between the pytest-xdist
workers through an on-disk cache (under a file lock, keyed by the quantizer's sources), so
one worker quantizes and the other loads it."""
import hashlib
import os
from pathlib import Path

import pytest
import torch
from filelock import FileLock

from rmsmp.host import quantize
from rmsmp.host.models import DigitsNet, load_digits, resnet18, train_digits
from rmsmp.host.quant import QuantizedModel

if os.environ.get("PYTEST_XDIST_WORKER"):      # `make test` runs a process per core
    torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "build" / "test-cache"


def _sources_key(*parts) -> str:
    """A digest of the quantizer's and the models' sources and ``parts``."""
    h = hashlib.sha256(repr(parts).encode())
    for d in ("host/quant", "host/models"):
        for f in sorted((ROOT / d).glob("*.py")):
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def cached_model(name: str, make, *key) -> QuantizedModel:
    """``make()`` once per source version, shared by every process of the run."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{name}-{_sources_key(name, *key)}.rmsmp"
    with FileLock(str(path) + ".lock"):
        if path.exists():
            return QuantizedModel.load(path)
        qm = make()
        qm.save(path)
        return qm


@pytest.fixture(scope="session")
def digits():
    return load_digits()


@pytest.fixture(scope="session")
def digits_fp(digits):
    xtr, ytr, _, _ = digits
    torch.manual_seed(0)
    return train_digits(DigitsNet(width=32), xtr, ytr, epochs=20)


@pytest.fixture(scope="session")
def calib(digits):
    xtr, ytr, _, _ = digits
    return [(xtr[i:i + 64], ytr[i:i + 64]) for i in range(0, 256, 64)]


@pytest.fixture(scope="session")
def digits_net(digits_fp, calib, digits):
    """The digits CNN (width 32, seed 0), labelled calibration batches and the held-out set:
    what the power-of-two and HMQ method tests train and compare against."""
    _, _, xte, yte = digits
    return digits_fp, calib, xte, yte


@pytest.fixture(scope="session")
def digits_q(digits_fp, calib):
    return quantize(digits_fp, calib)


@pytest.fixture(scope="session")
def resnet18_224():
    """ResNet-18 (torchvision layout, 1000 classes, random init, seed 0), two random
    224×224 images, and the model quantized with RMSMP 10:5:1 (Hessian assignment from one
    image): ``(model, x, qm)`` — what every ResNet-18 compiler and simulator test runs."""
    torch.manual_seed(0)
    model = resnet18().eval()
    x = torch.randn(2, 3, 224, 224)
    qm = cached_model("resnet18_224", lambda: quantize(model, x, hessian_images=1, hessian_samples=1), 224, 0)
    return model, x, qm


def accuracy(logits, y):
    return float((logits.argmax(1) == y).double().mean())


def layerwise_agreement(qm, x):
    """Per layer: (max |fake - golden| in LSB, share of elements that differ), same integer inputs."""
    from rmsmp.sim import golden_trace
    fq = qm.fake_quant().eval()
    vals = golden_trace(qm, x)
    out = {}
    with torch.no_grad():
        for l in qm.layers[1:]:
            args = [qm[i].out.dequantize(vals[i]).float() for i in l.inputs]
            got = fq.run_layer(l, args).double()
            if l.out.is_log:             # compare codes (one code = one √2 step)
                got = l.out.encode(torch.floor(got * 2.0 ** l.out.value_frac + 0.5).to(torch.int64)).double()
            else:
                got = got / l.out.step
            d = (got - vals[l.name].double()).abs()
            out[l.name] = (float(d.max()), float((d > 0.5).double().mean()))
    return out


@pytest.fixture(scope="session")
def prog():
    """A real program for the host-side tests (link, flash image, integrity checks): the
    untrained digits CNN (seed 0) quantized on random images, compiled for
    ``AcceleratorConfig()``.  Tests copy it before changing it."""
    from rmsmp.generator.config import AcceleratorConfig
    from rmsmp.host import compile_model
    torch.manual_seed(0)
    qm = quantize(DigitsNet().eval(), torch.randn(16, 1, 8, 8), progress=False)
    return compile_model(qm, AcceleratorConfig(), (1, 8, 8))
