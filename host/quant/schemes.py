"""Per-row weight quantization schemes: ``fix-b`` and ``pot-b`` (docs/arithmetic.md §1).

A scheme maps a real row ``w`` with scale ``alpha`` to integers ``q`` such that
``w ≈ alpha * q``:

* ``fix-b``: ``q`` in ``[-(2^(b-1)-1), 2^(b-1)-1]`` (symmetric, narrow range), round
  half away from zero is *not* used: rounding is to nearest with ties to even
  (``torch.round``); only the integer result matters to the hardware.
* ``pot-b``: sign + (b-1)-bit code; code 0 is zero, code ``c > 0`` is magnitude
  ``2^(c-1)``.  ``pot4`` levels are ``0, ±1, ±2, …, ±64``.

The *integer* value ``q`` is what :class:`~rmsmp.host.quant.qmodel.QuantizedModel`
stores and what the golden model multiplies with; ``encode``/``decode`` give the
b-bit code the hardware stores for a row.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

import torch

from ..errors import SchemeError

__all__ = ["Scheme", "parse_scheme", "FIX_BITS", "POT_BITS"]

#: Bit-widths each kind supports.  ``pot`` stops at 5 bits: pot5 already spans
#: ``2^14``; wider codes buy no accuracy and need accumulators no hardware wants.
FIX_BITS = range(2, 9)
POT_BITS = range(2, 6)

_NAME = re.compile(r"^(fix|pot)(\d+)$")


@dataclass(frozen=True, order=True)
class Scheme:
    """A weight scheme: ``kind`` is ``"fix"`` or ``"pot"``, ``bits`` includes the sign."""

    kind: str
    bits: int

    def __post_init__(self):
        if self.kind not in ("fix", "pot"):
            raise SchemeError(f"unknown scheme kind {self.kind!r}; expected 'fix' or 'pot'")
        allowed = FIX_BITS if self.kind == "fix" else POT_BITS
        if not isinstance(self.bits, int) or self.bits not in allowed:
            raise SchemeError(
                f"{self.kind}{self.bits}: {self.kind} weights support "
                f"{allowed.start}..{allowed.stop - 1} bits, got {self.bits!r}")

    @property
    def name(self) -> str:
        return f"{self.kind}{self.bits}"

    def __str__(self) -> str:
        return self.name

    @property
    def is_pot(self) -> bool:
        return self.kind == "pot"

    @property
    def qmax(self) -> int:
        """Largest integer magnitude of the scheme."""
        if self.kind == "fix":
            return 2 ** (self.bits - 1) - 1
        return 2 ** (2 ** (self.bits - 1) - 2)

    @cached_property
    def levels(self) -> torch.Tensor:
        """All representable integers, ascending (int64)."""
        if self.kind == "fix":
            return torch.arange(-self.qmax, self.qmax + 1, dtype=torch.int64)
        mags = [0] + [2 ** (c - 1) for c in range(1, 2 ** (self.bits - 1))]
        pos = torch.tensor(mags, dtype=torch.int64)
        return torch.unique(torch.cat([-pos, pos]))

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
        r = (e - 1 + (mant >= 0.75).to(e.dtype)).clamp(0, self.bits_pot_max)
        mag = torch.where(m >= 0.5, torch.exp2(r.to(x.dtype)), torch.zeros((), dtype=x.dtype))
        return torch.where(x < 0, -mag, mag)

    @property
    def bits_pot_max(self) -> int:
        """Exponent of the largest pot magnitude (``qmax = 2^bits_pot_max``)."""
        return 2 ** (self.bits - 1) - 2

    def quantize(self, w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Integer weights (int64) of rows ``w`` [R, ...] with per-row ``scale`` [R]."""
        s = scale.reshape(-1, *([1] * (w.dim() - 1))).to(w.dtype)
        return self.round(w / s).to(torch.int64)

    # -- integer <-> code -----------------------------------------------------------
    def encode(self, q: torch.Tensor) -> torch.Tensor:
        """b-bit codes (int64, two's complement for fix; sign<<(b-1) | code for pot)."""
        self.check(q)
        if self.kind == "fix":
            return q & (2 ** self.bits - 1)
        mag = q.abs()
        code = torch.where(mag == 0, torch.zeros_like(mag),
                           torch.log2(mag.clamp(min=1).double()).round().to(torch.int64) + 1)
        sign = (q < 0).to(torch.int64)
        return (sign << (self.bits - 1)) | code

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`encode`."""
        code = code.to(torch.int64)
        if self.kind == "fix":
            half = 2 ** (self.bits - 1)
            return torch.where(code >= half, code - 2 ** self.bits, code)
        c = code & (2 ** (self.bits - 1) - 1)
        neg = (code >> (self.bits - 1)) & 1
        mag = torch.where(c == 0, torch.zeros_like(c), torch.ones_like(c) << (c - 1).clamp(min=0))
        return torch.where(neg.bool(), -mag, mag)

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
    m = _NAME.match(str(name).strip().lower())
    if not m:
        raise SchemeError(f"unknown scheme {name!r}; expected fix<b> (b in 2..8) or pot<b> (b in 2..5), e.g. 'fix8', 'pot4'")
    return Scheme(m.group(1), int(m.group(2)))
