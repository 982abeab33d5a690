"""Hardware-friendly weight quantizers: uniform symmetric fixed-point with power-of-two scales.

"A Closer Look at Hardware-Friendly Weight Quantization" (arXiv 2210.03671) studies the
weights of accelerators that allow only a uniform, symmetric grid whose scale is ``2^e``
per layer (BN folded).  This module is its MSQE-based quantizer:

1. **Least-squares refinement** of a continuous scale: starting from ``max|w| / qmax``
   (and from a few smaller starts, 2^-3 … 2^-15 of it: with error weights the iteration
   can settle where the unimportant large weights put it), alternate
   ``q = clamp(round(w / a))`` and ``a = Σ ω·w·q / Σ ω·q²`` (the scale that minimises the
   weighted error for fixed codes) until it settles.
2. **Exponent line search**: the error of every exponent within ``search`` of each
   ``log2 a`` is evaluated and the lowest wins.  Rounding ``log2 a`` to the nearest
   integer is the scale-instability the paper measures (the nearest exponent is often
   not the better one, and the choice flips between neighbours); comparing the
   neighbours' errors fixes it.
3. **Outlier fix**: the error is estimated without the weights beyond
   ``outlier_sigma`` standard deviations (they are still quantized, i.e. clipped), so a
   few outliers do not drag the scale up for every other weight; and ``ω`` may weight
   each weight's error by its gradient second moment ``E[g²]`` (a diagonal Fisher
   estimate from calibration data), so the error that matters to the loss is minimised.

Choices where the paper leaves a detail open are documented in docs/quantization.md.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .schemes import Scheme

__all__ = ["msqe_pow2_exponent", "pow2_error", "gradient_second_moments"]


def pow2_error(w: torch.Tensor, scheme: Scheme, e: int, weight: torch.Tensor | None = None,
               mask: torch.Tensor | None = None) -> float:
    """Weighted squared error of quantizing ``w`` with scale ``2^e``."""
    w = w.double().reshape(-1)
    s = 2.0 ** e
    err = (scheme.round(w / s) * s - w) ** 2
    if weight is not None:
        err = err * weight.double().reshape(-1)
    if mask is not None:
        err = err[mask.reshape(-1)]
    return float(err.sum())


def msqe_pow2_exponent(w: torch.Tensor, scheme: Scheme, *, weight: torch.Tensor | None = None,
                       outlier_sigma: float | None = 3.0, search: int = 2, iters: int = 20) -> tuple[int, float]:
    """The exponent ``e`` of the power-of-two scale ``2^e`` for weights ``w`` (any shape).

    ``weight``: per-weight importance ``ω`` (e.g. gradient second moments), default 1.
    ``outlier_sigma``: weights with ``|w − mean| > outlier_sigma·std`` are left out of the
    error (``None`` keeps them).  Returns ``(e, error)`` (the error over the kept weights).
    """
    if scheme.kind != "fix":
        raise ValueError(f"power-of-two scale quantizers use a fixed-point grid, not {scheme}")
    w = w.detach().double().reshape(-1)
    om = torch.ones_like(w) if weight is None else weight.detach().double().reshape(-1).clamp(min=0)
    keep = torch.ones_like(w, dtype=torch.bool)
    if outlier_sigma is not None and w.numel() > 1:
        keep = (w - w.mean()).abs() <= outlier_sigma * w.std()
    if not bool((om[keep] > 0).any()):
        om = torch.ones_like(w)
    wk, ok = w[keep], om[keep]
    amax = float(wk.abs().max()) if wk.numel() else float(w.abs().max())
    if amax == 0.0:
        return 0, 0.0
    cands = set()
    for j in range(0, 16, 3):                     # several starts: LS settles in local minima
        a = amax / scheme.qmax * 2.0 ** -j
        for _ in range(iters):
            q = scheme.round(wk / a)
            den = float((ok * q * q).sum())
            if den == 0.0:
                break
            nxt = float((ok * wk * q).sum()) / den
            if not math.isfinite(nxt) or nxt <= 0:
                break
            done = abs(nxt - a) <= 1e-12 * a
            a = nxt
            if done:
                break
        centre = math.log2(a)
        cands.update(range(math.floor(centre) - search, math.ceil(centre) + search + 1))
    best = min((pow2_error(w, scheme, e, om, keep), -e, e) for e in cands)   # ties: the larger scale
    return best[2], best[0]


def gradient_second_moments(gm, layer_names, batches, max_images: int = 64) -> dict[str, torch.Tensor]:
    """``E[g²]`` of every weight of the named layers of float ``gm`` over calibration data:
    cross-entropy with the labels, or with the float model's own prediction when the
    calibration batches have none."""
    params = [gm.layer_weight(n) for n in layer_names]
    acc = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    used = 0
    for x, y in batches:
        if used >= max_images:
            break
        x = x[: max_images - used]
        for i in range(x.shape[0]):                      # per-example gradients: E[g²], not (E[g])²
            with torch.enable_grad():
                out = gm(x[i:i + 1])
                tgt = y[i:i + 1] if y is not None else out.detach().argmax(dim=1)
                grads = torch.autograd.grad(F.cross_entropy(out, tgt), params)
            for a, g in zip(acc, grads):
                a += g.double() ** 2
        used += x.shape[0]
    return {n: a / max(used, 1) for n, a in zip(layer_names, acc)}
