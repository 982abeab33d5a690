"""Calibration data handling and per-tensor power-of-two activation formats."""
from __future__ import annotations

import math

import torch

from ..errors import RmsmpError
from .qmodel import TensorQ

__all__ = ["as_batches", "ActivationRecorder", "fit_frac", "frac_candidates"]


def as_batches(calib) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Normalise calibration data to ``[(x, y_or_None), …]``.

    Accepts one tensor (a single batch), or an iterable of tensors, of ``(x, y)``
    pairs, or a ``DataLoader`` yielding either.
    """
    if isinstance(calib, torch.Tensor):
        calib = [calib]
    out = []
    for item in calib:
        if isinstance(item, (tuple, list)):
            if not item or not isinstance(item[0], torch.Tensor):
                raise RmsmpError("calibration batches must be tensors or (tensor, labels) pairs")
            out.append((item[0], item[1] if len(item) > 1 else None))
        elif isinstance(item, torch.Tensor):
            out.append((item, None))
        else:
            raise RmsmpError(f"calibration batch of type {type(item).__name__}: expected a tensor or (tensor, labels)")
    if not out:
        raise RmsmpError("no calibration batches given")
    return out


class ActivationRecorder:
    """Observer for :class:`GraphModule`: keeps a bounded random sample and the max per tensor."""

    def __init__(self, per_tensor: int = 1 << 18, seed: int = 0):
        self.per_tensor = per_tensor
        self.samples: dict[str, list[torch.Tensor]] = {}
        self.count: dict[str, int] = {}
        self.absmax: dict[str, float] = {}
        self._gen = torch.Generator().manual_seed(seed)

    def __call__(self, name: str, y: torch.Tensor) -> None:
        v = y.detach().reshape(-1).float()
        self.absmax[name] = max(self.absmax.get(name, 0.0), float(v.abs().max()) if v.numel() else 0.0)
        if v.numel() > self.per_tensor:
            v = v[torch.randint(v.numel(), (self.per_tensor,), generator=self._gen)]
        self.samples.setdefault(name, []).append(v)

    def values(self, name: str) -> torch.Tensor:
        v = torch.cat(self.samples[name])
        if v.numel() > self.per_tensor:
            v = v[torch.randint(v.numel(), (self.per_tensor,), generator=self._gen)]
        return v


def frac_candidates(top_value: float, absmax: float, fallback: int) -> range:
    """Fracs to try for a format whose largest value is ``top_value`` steps: from one octave
    coarser than the frac that just covers ``absmax`` to six octaves finer (around
    ``fallback`` for an all-zero tensor)."""
    top = math.floor(math.log2(top_value / absmax)) if absmax > 0 else fallback
    return range(top - 1, top + 7)


def fit_frac(values: torch.Tensor, bits: int, signed: bool, absmax: float) -> TensorQ:
    """Power-of-two scale ``2^-frac`` minimising the mean squared quantization error.

    Candidates span from the scale that just covers ``absmax`` to 6 octaves finer
    (clipping outliers when it pays) and one octave coarser.
    """
    lim = 2 ** (bits - 1) if signed else 2 ** bits
    best = None
    v = values.double()
    for frac in frac_candidates(lim, absmax, bits):
        q = TensorQ(bits, signed, frac)
        s = 2.0 ** frac
        err = float(((torch.floor(v * s + 0.5).clamp(q.lo, q.hi) / s - v) ** 2).mean())
        if best is None or err < best[0] - 1e-15:
            best = (err, q)
    return best[1]
