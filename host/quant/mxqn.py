"""MXQN: post-training mixed fixed-point / logarithmic quantization chosen by SQNR.

"MXQN: Mixed quantization for reducing bit-width of CNNs" (Applied Intelligence, 2021)
quantizes a trained network without retraining:

* **Weights**: fixed-point, the fraction length of each layer (a power-of-two scale
  ``2^e``, ``e = -fraction length``) chosen to maximise the weights' SQNR — an exhaustive
  search over exponents, since SQNR is not unimodal in ``e`` once clipping starts.
* **Activations**: per tensor, fixed-point or *logarithmic* with a fine-grained step (base
  ``√2``: levels ``2^(k/2)``), whichever has the higher SQNR on the calibration data, each
  with its own best scale.  Log codes follow :class:`~rmsmp.host.quant.qmodel.TensorQ`
  (``code="log"``), which the golden model executes exactly.

SQNR here is ``10·log10(Σ x² / Σ (x − Q(x))²)`` over the calibration sample.
"""
from __future__ import annotations

import math

import torch

from .calibrate import fit_frac, frac_candidates
from .qmodel import LOG_MAX_BITS, TensorQ
from .schemes import Scheme

__all__ = ["sqnr_db", "sqnr_pow2_exponent", "fixed_values", "log_values", "best_fixed", "best_log",
           "choose_activation"]


def sqnr_db(x: torch.Tensor, xq: torch.Tensor) -> float:
    """``10·log10(Σx² / Σ(x − xq)²)`` in dB (``inf`` when exact)."""
    x, xq = x.double(), xq.double()
    sig = float((x * x).sum())
    noise = float(((x - xq) ** 2).sum())
    if noise == 0.0:
        return math.inf
    if sig == 0.0:
        return -math.inf
    return 10.0 * math.log10(sig / noise)


def sqnr_pow2_exponent(w: torch.Tensor, scheme: Scheme, *, span: int = 12) -> tuple[int, float]:
    """Exponent ``e`` of the fixed-point scale ``2^e`` with the highest SQNR for ``w``, over
    every ``e`` from the one that just covers ``max|w|`` down ``span`` octaves (and one up);
    ties go to the larger scale.  Returns ``(e, sqnr_db)``."""
    if scheme.kind != "fix":
        raise ValueError(f"MXQN quantizes weights to a fixed-point grid, not {scheme}")
    w = w.detach().double().reshape(-1)
    amax = float(w.abs().max())
    if amax == 0.0:
        return 0, math.inf
    top = math.ceil(math.log2(amax / scheme.qmax))
    best = None
    for e in range(top + 1, top - span - 1, -1):
        s = 2.0 ** e
        v = sqnr_db(w, scheme.round(w / s) * s)
        if best is None or v > best[1]:
            best = (e, v)
    return best


def fixed_values(x: torch.Tensor, q: TensorQ) -> torch.Tensor:
    """``x`` quantized to fixed-point ``q`` (round half-up, clamp) as real values."""
    s = 2.0 ** q.frac
    return torch.floor(x.double() * s + 0.5).clamp(q.lo, q.hi) / s


def log_values(x: torch.Tensor, q: TensorQ) -> torch.Tensor:
    """``x`` quantized to logarithmic ``q`` exactly as the golden model does (fine grid,
    then the code thresholds) as real values."""
    v = torch.floor(x.double() * 2.0 ** q.value_frac + 0.5).clamp(min=0).to(torch.int64)
    return q.dequantize(q.encode(v))


def best_fixed(x: torch.Tensor, bits: int, absmax: float) -> tuple[TensorQ, float]:
    """Unsigned fixed-point format of ``bits`` with the highest SQNR on ``x`` (the least
    squared error is the highest SQNR: :func:`~rmsmp.host.quant.calibrate.fit_frac`)."""
    q = fit_frac(x, bits, False, absmax)
    return q, sqnr_db(x, fixed_values(x, q))


def best_log(x: torch.Tensor, bits: int, absmax: float) -> tuple[TensorQ, float]:
    """Unsigned logarithmic (base √2) format of ``bits`` with the highest SQNR on ``x``."""
    top_level = 2.0 ** ((2 ** bits - 2) / 2)
    best = None
    for f in frac_candidates(top_level, absmax, 0):
        q = TensorQ(bits, False, f, "log")
        v = sqnr_db(x, log_values(x, q))
        if best is None or v > best[1] + 1e-12:
            best = (q, v)
    return best


def choose_activation(x: torch.Tensor, bits: int, absmax: float) -> tuple[TensorQ, dict]:
    """MXQN's per-tensor choice for unsigned activations ``x``: the best fixed-point and the
    best logarithmic format, and whichever has the higher SQNR (fixed on a tie, and
    always fixed above ``LOG_MAX_BITS`` bits).  Returns ``(format, {"fix_db", "log_db"})``."""
    qf, sf = best_fixed(x, bits, absmax)
    if bits > LOG_MAX_BITS:
        return qf, {"fix_db": sf, "log_db": None}
    ql, sl = best_log(x, bits, absmax)
    return (ql if sl > sf else qf), {"fix_db": sf, "log_db": sl}
