"""Data-parallel QAT and HMQ search under ``torchrun``: two CPU processes on gloo give the
one-process result on the same global batches (the user's command line, run both ways)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rmsmp.host.cli import main
from rmsmp.host.models import DigitsNet
from rmsmp.host.quant import QuantizedModel

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def files(tmp_path_factory, digits):
    d = tmp_path_factory.mktemp("ddp")
    torch.manual_seed(0)
    torch.save(DigitsNet().state_dict(), d / "w.pt")
    xtr, ytr, _, _ = digits
    # batches of 64 (the QAT test shares batches of 63 unevenly: 32 and 31)
    torch.save([(xtr[i:i + 64], ytr[i:i + 64]) for i in range(0, 256, 64)], d / "calib.pt")
    torch.save([(xtr[i:i + 63], ytr[i:i + 63]) for i in range(0, 252, 63)], d / "calib63.pt")
    return d


def _quantize(d: Path, out: str, method: list[str], ranks: int, calib: str = "calib.pt") -> QuantizedModel:
    args = ["quantize", "--model", "digits", "--weights", str(d / "w.pt"), "--calib", str(d / calib),
            *method, "--quiet", "-o", str(d / out)]
    if ranks == 1:
        assert main(args) == 0
    else:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        env.pop("PYTEST_XDIST_WORKER", None)
        r = subprocess.run([str(BIN / "torchrun"), "--standalone", f"--nproc_per_node={ranks}", "--no-python",
                            shutil.which("rmsmp", path=str(BIN)), *args],
                           capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        assert f"on {ranks} ranks" in r.stdout
    return QuantizedModel.load(d / out)


def _pairs(a: QuantizedModel, b: QuantizedModel):
    la = [l for l in a.layers if l.op in ("conv", "linear")]
    lb = [l for l in b.layers if l.op in ("conv", "linear")]
    assert [l.name for l in la] == [l.name for l in lb]
    for x, y in zip(la, lb):
        assert x.schemes == y.schemes
        yield x, y


def _rank_gaps(one: QuantizedModel, two: QuantizedModel, before):
    """Integer weights that differ between the two results (and of how many), and per layer
    the mean gap between their float weights and how far ``one`` moved from ``before(name)``."""
    differ = total = 0
    gap, moved = [], []
    for x, y in _pairs(one, two):
        differ += int((x.qweight != y.qweight).sum())
        total += x.qweight.numel()
        gap.append((x.weight - y.weight).abs().mean())
        moved.append((x.weight - before(x.name)).abs().mean())
    return differ, total, gap, moved


def test_hmq_search_on_two_ranks_equals_one_process(files):
    """Search (Gumbel samples and temperature the same on every rank) + pow2 fine-tuning:
    the same bit-widths and exponents.  Adam normalises each step, so the float summation
    order (two shares all-reduced vs one batch) moves a near-zero gradient's weight by up to
    about lr (1e-4) a step — 36 steps here — and a handful of integer weights at a rounding
    edge differ (on one CPU 0 of 78k, on another 21: the order's rounding is the machine's)."""
    method = ["--method", "hmq", "--hmq-steps", "24", "--grad-steps", "12"]
    one = _quantize(files, "hmq1.rmsmp", method, 1)
    two = _quantize(files, "hmq2.rmsmp", method, 2)
    assert one.meta["layer_bits"] == two.meta["layer_bits"]
    for x, y in _pairs(one, two):
        assert torch.equal(x.scale, y.scale), x.name
        assert torch.allclose(x.weight, y.weight, atol=36e-4, rtol=0), x.name
        assert torch.allclose(x.bias, y.bias, atol=36e-4, rtol=0), x.name
    w0 = torch.load(files / "w.pt")
    differ, total, gap, moved = _rank_gaps(one, two, lambda name: w0[f"{name}.weight"])
    assert differ <= total // 1000, f"{differ} of {total} integer weights differ"
    # the search and fine-tuning moved every layer's weights ten times further than the ranks differ
    assert min(m / g for m, g in zip(moved, gap)) > 10, (moved, gap)


def test_rmsmp_qat_on_two_ranks_equals_one_process(files):
    """RMSMP PTQ + QAT with learned per-row scales: Adam normalises each step, so the float
    summation order (two shares all-reduced vs one batch) shows in the scales at the 1e-4
    level; the schemes are equal, and a handful of integer weights at a rounding edge differ."""
    method = ["--method", "rmsmp", "--qat-steps", "20"]
    one = _quantize(files, "qat1.rmsmp", method, 1, "calib63.pt")
    two = _quantize(files, "qat2.rmsmp", method, 2, "calib63.pt")
    assert one.meta["qat_steps"] == two.meta["qat_steps"] == 20
    ptq = _quantize(files, "ptq.rmsmp", ["--method", "rmsmp"], 1, "calib63.pt")
    for (x, y), _ in zip(_pairs(one, two), _pairs(ptq, one)):     # (_pairs: PTQ's schemes stay too)
        assert torch.allclose(x.scale, y.scale, rtol=1e-3, atol=0), x.name
        # Adam's step is at most about lr (1e-4): a near-zero gradient may step differently
        assert torch.allclose(x.weight, y.weight, atol=5e-4, rtol=0), x.name
    differ, total, gap, moved = _rank_gaps(one, two, lambda name: ptq[name].weight)
    assert differ <= total // 1000, f"{differ} of {total} integer weights differ"
    # training moved the weights a hundred times further than the ranks' results differ
    assert min(moved) > 100 * max(gap), (moved, gap)


def test_qat_steps_need_labels(tmp_path, capsys):
    assert main(["quantize", "--model", "digits", "--calib", "random:16", "--qat-steps", "5",
                 "--quiet", "-o", str(tmp_path / "x")]) == 2
    assert "labels" in capsys.readouterr().err
