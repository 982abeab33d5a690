"""Shared fixtures: a trained digits network and its RMSMP quantization (built once per run)."""
import os

import pytest
import torch

from rmsmp.host import quantize
from rmsmp.host.models import DigitsNet, load_digits, train_digits

if os.environ.get("PYTEST_XDIST_WORKER"):      # `make test` runs a process per core
    torch.set_num_threads(1)


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
def digits_net(digits):
    """The default-width digits CNN (seed 0), labelled calibration batches and the held-out
    set: what the power-of-two and HMQ method tests train and compare against."""
    xtr, ytr, xte, yte = digits
    torch.manual_seed(0)
    m = train_digits(DigitsNet(), xtr, ytr, epochs=20)
    return m, [(xtr[i:i + 64], ytr[i:i + 64]) for i in range(0, 256, 64)], xte, yte


@pytest.fixture(scope="session")
def digits_q(digits_fp, calib):
    return quantize(digits_fp, calib)


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
