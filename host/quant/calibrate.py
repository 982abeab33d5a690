"""Calibration data handling and per-tensor power-of-two activation formats."""
from __future__ import annotations

import math

import torch

from ..errors import RmsmpError
from .layer import as_images
from .qmodel import TensorQ

__all__ = ["as_batches", "ActivationRecorder", "fit_frac", "frac_candidates"]


def _arraylike(obj) -> bool:
    return isinstance(obj, torch.Tensor) or hasattr(obj, "__array__")      # numpy arrays


def as_batches(calib) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Normalise calibration data to ``[(x, y_or_None), …]``.

    Accepts one tensor (a single batch), or an iterable of tensors, of ``(x, y)``
    pairs, or a ``DataLoader`` yielding either.
    """
    if _arraylike(calib):
        calib = [calib]
    out = []
    for k, item in enumerate(calib):
        if isinstance(item, (tuple, list)):
            if not item or not _arraylike(item[0]):
                raise RmsmpError("calibration batches must be tensors or (tensor, labels) pairs")
            x, y = item[0], item[1] if len(item) > 1 else None
        elif _arraylike(item):
            x, y = item, None
        else:
            raise RmsmpError(f"calibration batch of type {type(item).__name__}: expected a tensor or (tensor, labels)")
        x = as_images(x, f"calibration batch {k}").float()
        if x.dim() < 2 or len(x) == 0:
            raise RmsmpError(f"calibration batch {k} of shape {list(x.shape)}: expected a non-empty batch "
                             "[N, C, H, W] (or [N, features])")
        if out and x.shape[1:] != out[0][0].shape[1:]:
            raise RmsmpError(f"calibration batch {k} of shape {list(x.shape)}; batch 0 was {list(out[0][0].shape)}")
        if y is not None:
            y = torch.as_tensor(y)
            if len(y) != len(x):
                raise RmsmpError(f"calibration batch {k}: {len(y)} labels for {len(x)} images")
        out.append((x, y))
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
