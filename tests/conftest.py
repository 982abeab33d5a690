"""Shared fixtures: a trained digits network and its RMSMP quantization (built once per run)."""
import pytest
import torch

from rmsmp.host import quantize
from rmsmp.host.models import DigitsNet, load_digits, train_digits


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
def digits_q(digits_fp, calib):
    return quantize(digits_fp, calib)


def accuracy(logits, y):
    return float((logits.argmax(1) == y).double().mean())
