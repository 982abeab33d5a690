"""Per-row weight quantization schemes: ``fix-b`` and ``pot-b`` (docs/arithmetic.md §1).

A scheme maps a real row ``w`` with scale ``alpha`` to integers ``q`` such that
``w ≈ alpha * q``:

* ``fix-b``: ``q`` in ``[-(2^(b-1)-1), 2^(b-1)-1]`` (symmetric, narrow range), rounded
  to nearest with ties to even (``torch.round``); only the integer matters to hardware.
* ``pot-b``: sign + (b-1)-bit code; code 0 is zero, code ``c > 0`` is magnitude
  ``2^(c-1)``.  ``pot4`` levels are ``0, ±1, ±2, …, ±64``.

The *integer* value ``q`` is what :class:`~rmsmp.host.quant.qmodel.QuantizedModel`
stores and what the golden model multiplies with; ``encode``/``decode`` give the
b-bit code the hardware stores for a row.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from ..errors import SchemeError
from .formats import FIX_BITS, POT_BITS, FormatError, WeightFormat, parse_weight_format

__all__ = ["Scheme", "parse_scheme", "FIX_BITS", "POT_BITS"]


@dataclass(frozen=True, order=True)
class Scheme(WeightFormat):
    """A weight scheme (:class:`rmsmp.rtl.formats.WeightFormat`) with tensor rounding."""

    _error = SchemeError

    @cached_property
    def levels(self) -> torch.Tensor:
        """All representable integers, ascending (int64)."""
        return torch.tensor(self.level_list(), dtype=torch.int64)

    # -- real -> integer ----------------------------------------------------------
    def round(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest level to ``x`` (already divided by the scale), as a float tensor.

        Differentiable callers wrap this in a straight-through estimator.
        """
        if self.kind == "fix":
            return torch.clamp(torch.round(x), -self.qmax, self.qmax)
        # |x| = mant * 2^e with mant in [0.5, 1): the neighbours are 2^(e-1) and 2^e with
        # midpoint 0.75 * 2^e.  Below 1 the neighbours are 0 and 1 (midpoint 0.5).
        m = x.abs()
        mant, e = torch.frexp(m)
        r = (e - 1 + (mant >= 0.75).to(e.dtype)).clamp(0, self.pot_max_exp)
        mag = torch.where(m >= 0.5, torch.exp2(r.to(x.dtype)), torch.zeros((), dtype=x.dtype))
        return torch.where(x < 0, -mag, mag)

    def quantize(self, w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Integer weights (int64) of rows ``w`` [R, ...] with per-row ``scale`` [R]."""
        s = scale.reshape(-1, *([1] * (w.dim() - 1))).to(w.dtype)
        return self.round(w / s).to(torch.int64)

    # integer <-> code: WeightFormat.encode / decode (tables of encode_int / decode_int)

    def check(self, q: torch.Tensor) -> None:
        """Raise :class:`SchemeError` if ``q`` holds an integer outside the level set."""
        ok = torch.isin(q.to(torch.int64), self.levels)
        if not bool(ok.all()):
            bad = q.reshape(-1)[~ok.reshape(-1)][:4].tolist()
            raise SchemeError(f"{self.name}: values {bad} are not {self.name} levels")


def parse_scheme(name: "str | Scheme") -> Scheme:
    """``"pot4"`` → ``Scheme("pot", 4)``; names an unknown scheme in the error."""
    if isinstance(name, Scheme):
        return name
    try:
        f = parse_weight_format(name)
    except FormatError as e:
        raise SchemeError(str(e)) from None
    return Scheme(f.kind, f.bits)
