"""RMSMP: row-wise mixed schemes and multiple precisions (docs/quantization.md).

Per layer the rows (output channels) are split between schemes by a fixed ratio, the
same in every layer (so a hardware array with that ratio of lanes stays busy):

1. :func:`row_counts` turns the ratio into integer counts (largest-remainder rule).
2. Precision: rows are ranked by sensitivity — a Hutchinson estimate of the row's
   Hessian trace (:func:`hessian_row_traces`) times its quantization error at the
   lower precision — and the most sensitive share gets the highest bit-width.
3. Scheme: within a bit-width that has both a ``pot`` and a ``fix`` scheme, the most
   peaked rows (largest excess kurtosis: Gaussian/Laplace-like, many small weights) go
   to power-of-two, the flattest to fixed-point.
4. Scales: per row, the scale minimising the squared quantization error (MSQE grid).

``assign="variance"`` ranks by row variance instead (ablation); ``assign="random"``
assigns at random (ablation).
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from ..errors import RatioError
from .schemes import Scheme, parse_scheme

__all__ = ["parse_ratio", "row_counts", "fit_scales", "hessian_row_traces", "assign_rows", "ASSIGN_MODES"]

ASSIGN_MODES = ("hessian", "variance", "random")


def parse_ratio(ratio: Mapping) -> dict[Scheme, float]:
    """Validate a ``{scheme: fraction}`` mapping; fractions must be ≥ 0 and sum to 1."""
    if not isinstance(ratio, Mapping) or not ratio:
        raise RatioError(f"ratio must be a non-empty mapping of scheme -> fraction, got {ratio!r}")
    out: dict[Scheme, float] = {}
    for k, v in ratio.items():
        try:
            s = parse_scheme(k)
        except ValueError as e:
            raise RatioError(f"ratio names an unknown scheme: {e}") from None
        if s in out:
            raise RatioError(f"ratio names {s} twice")
        try:
            v = float(v)
        except (TypeError, ValueError):
            raise RatioError(f"ratio[{k!r}] = {v!r} is not a number") from None
        if not math.isfinite(v) or v < 0:
            raise RatioError(f"ratio[{k!r}] = {v!r} must be a fraction >= 0")
        out[s] = v
    total = sum(out.values())
    if abs(total - 1.0) > 1e-6:
        raise RatioError(f"ratio fractions sum to {total:.6g}, not 1: {dict((str(k), v) for k, v in out.items())}")
    return {s: v for s, v in out.items() if v > 0}


def _priority(s: Scheme):
    """Tie-break order: more bits first, then fixed-point before power-of-two."""
    return (-s.bits, s.kind != "fix")


def row_counts(rows: int, ratio: Mapping[Scheme, float]) -> dict[Scheme, int]:
    """Largest-remainder (Hamilton) apportionment of ``rows`` by ``ratio``.

    Each scheme gets ``floor(rows * fraction)``; the rows left over go one each to the
    schemes with the largest remainders, ties broken by more bits, then fix before pot.
    """
    order = sorted(ratio, key=_priority)
    exact = {s: rows * ratio[s] for s in order}
    counts = {s: int(math.floor(exact[s] + 1e-9)) for s in order}
    left = rows - sum(counts.values())
    for s in sorted(order, key=lambda s: (-(exact[s] - counts[s]), _priority(s)))[:left]:
        counts[s] += 1
    return counts


@torch.no_grad()
def fit_scales(w: torch.Tensor, scheme: Scheme, grid: int = 48, fine: int = 32, chunk: int = 1 << 24):
    """Per-row MSQE scales for rows ``w`` [R, n]: ``argmin_a ||w - a*Q(w/a)||^2``.

    Coarse pass: ``a = max|w| / qmax * 2^u`` for ``grid`` values of ``u`` evenly spaced in
    [-3, 0.5] (clipping up to 3 octaves) plus ``u = 0``; fine pass: ``fine`` values spanning one coarse
    step either side of each row's best.  The search runs in float32; the returned
    error is recomputed in float64.  Returns ``(scale [R] float64, err [R] float64)``.
    """
    w64 = w.reshape(w.shape[0], -1).double()
    w = w64.float()
    R = w.shape[0]
    base = (w64.abs().amax(dim=1) / scheme.qmax).clamp(min=1e-30)
    coarse = torch.linspace(-3.0, 0.5, grid, dtype=torch.float64)
    du = float(coarse[1] - coarse[0])
    coarse = torch.cat([coarse, torch.zeros(1, dtype=torch.float64)])   # never worse than max|w|
    best_u = torch.zeros(R, dtype=torch.float64)
    best_err = torch.full((R,), float("inf"))
    step = max(1, chunk // max(1, w.numel()))
    for us in (coarse[:, None].expand(len(coarse), R),
               None):
        if us is None:
            us = best_u[None, :] + torch.linspace(-du, du, fine, dtype=torch.float64)[:, None]
        for i in range(0, us.shape[0], step):
            u = us[i:i + step]                                                    # [g, R]
            s = (base[None, :] * torch.exp2(u)).float()
            q = scheme.round(w[None] / s[..., None]) * s[..., None]               # [g, R, n]
            err = ((q - w[None]) ** 2).sum(dim=2)                                  # [g, R]
            e, j = err.min(dim=0)
            better = e < best_err
            best_err = torch.where(better, e, best_err)
            best_u = torch.where(better, u[j, torch.arange(R)], best_u)
    scale = (base * torch.exp2(best_u)).float().double()
    err = ((scheme.round(w64 / scale[:, None]) * scale[:, None] - w64) ** 2).sum(dim=1)
    return scale, err


def hessian_row_traces(gm, layer_names, batches, samples: int = 2, max_images: int = 16, seed: int = 0):
    """Hutchinson estimate of the Hessian trace of each row of each named layer.

    ``E_v[v_r . (H v)_r]`` with Rademacher ``v`` over all weights at once: the cross
    terms vanish in expectation, so each row gets the trace of its own diagonal block.
    The loss is cross-entropy on the labels, or on the float model's own predictions
    where the batches carry none.  Negative estimates (noise) are clamped to 0.
    """
    gen = torch.Generator().manual_seed(seed)
    params = [gm.layer_weight(n) for n in layer_names]
    traces = [torch.zeros(p.shape[0], dtype=torch.float64) for p in params]
    used = 0
    nb = 0
    for x, y in batches:
        if used >= max_images:
            break
        x = x[: max_images - used]
        used += x.shape[0]
        with torch.enable_grad():
            out = gm(x)
            tgt = y[: x.shape[0]] if y is not None else out.detach().argmax(dim=1)
            loss = F.cross_entropy(out, tgt)
            grads = torch.autograd.grad(loss, params, create_graph=True)
            for k in range(samples):
                vs = [(torch.randint(0, 2, p.shape, generator=gen) * 2 - 1).to(p.dtype) for p in params]
                hv = torch.autograd.grad(grads, params, grad_outputs=vs, retain_graph=k < samples - 1)
                for t, v, h in zip(traces, vs, hv):
                    t += (v * h).reshape(v.shape[0], -1).sum(dim=1).double()
        nb += 1
    return {n: (t / (samples * max(nb, 1))).clamp(min=0) for n, t in zip(layer_names, traces)}


def _kurtosis(w: torch.Tensor) -> torch.Tensor:
    w = w.reshape(w.shape[0], -1).double()
    c = w - w.mean(dim=1, keepdim=True)
    var = (c ** 2).mean(dim=1).clamp(min=1e-30)
    return (c ** 4).mean(dim=1) / var ** 2 - 3.0


def assign_rows(w: torch.Tensor, counts: dict[Scheme, int], *, mode: str = "hessian",
                trace: torch.Tensor | None = None, fits: dict | None = None,
                generator: torch.Generator | None = None) -> list[Scheme]:
    """Scheme per row of ``w`` [R, …] with exactly ``counts`` rows per scheme.

    ``fits`` may hold ``{scheme: fit_scales(w, scheme)}`` already computed for the
    schemes below the top bit-width (the Hessian score reuses their errors).
    """
    R = w.shape[0]
    levels = sorted({s.bits for s in counts if counts[s]}, reverse=True)
    flat = w.reshape(R, -1).double()
    var = flat.var(dim=1, unbiased=False)
    if mode == "random":
        perm = torch.randperm(R, generator=generator)
        out = [None] * R
        i = 0
        for s in sorted(counts, key=_priority):
            for r in perm[i:i + counts[s]].tolist():
                out[r] = s
            i += counts[s]
        return out
    # -- precision: rank rows, highest bit-width takes the top share -----------------
    if len(levels) > 1:
        if mode == "hessian":
            if trace is None:
                raise ValueError("hessian assignment needs per-row traces")
            fits = fits if fits is not None else {}
            low = [s for s in counts if counts[s] and s.bits < levels[0]]
            err = torch.stack([(fits[s] if s in fits else fit_scales(w, s))[1] for s in low]).min(dim=0).values
            score = trace.double() / flat.shape[1] * err
        else:  # variance: most spread rows need the most levels
            score = var
        order = torch.argsort(score, descending=True, stable=True).tolist()
    else:
        order = list(range(R))
    out = [None] * R
    start = 0
    for b in levels:
        schemes = [s for s in counts if s.bits == b and counts[s]]
        n = sum(counts[s] for s in schemes)
        rows = order[start:start + n]
        start += n
        if len(schemes) == 1:
            for r in rows:
                out[r] = schemes[0]
            continue
        # scheme within one bit-width: peaked rows -> pot, flat rows -> fix
        key = _kurtosis(w[rows]) if mode == "hessian" else -var[rows]
        ranked = [rows[i] for i in torch.argsort(key, descending=True, stable=True).tolist()]
        i = 0
        for s in sorted(schemes, key=lambda s: s.kind != "pot"):   # pot first
            for r in ranked[i:i + counts[s]]:
                out[r] = s
            i += counts[s]
    return out
