"""Weight formats the hardware lanes implement (docs/arithmetic.md §1), in plain integers.

This is the one definition of ``fix-b`` / ``pot-b``: the lanes in :mod:`rmsmp.rtl.lanes`
decode exactly these codes, the generator validates configurations against them, and
the host's quantizer (``rmsmp.host.quant.schemes.Scheme``) extends them with tensor
rounding.

* ``fix-b``: integers ``-(2^(b-1)-1) … 2^(b-1)-1``, stored in two's complement.
* ``pot-b``: sign + (b-1)-bit code ``c``; ``c = 0`` is zero, else magnitude ``2^(c-1)``;
  stored as ``sign << (b-1) | c``.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

from ..errors import FormatError

__all__ = ["FormatError", "WeightFormat", "parse_weight_format", "FIX_BITS", "POT_BITS",
           "requant_multiplier", "MULT_BITS", "MAX_SHIFT"]

#: Bit-widths each kind supports.  ``pot`` stops at 5 bits (``±2^14``): wider codes need
#: accumulators no hardware wants.
FIX_BITS = range(2, 9)
POT_BITS = range(2, 6)

_NAME = re.compile(r"^(fix|pot)(\d+)$")


@dataclass(frozen=True, order=True)
class WeightFormat:
    """A weight format: ``kind`` is ``"fix"`` or ``"pot"``, ``bits`` includes the sign."""

    kind: str
    bits: int

    _error = FormatError

    def __post_init__(self):
        if self.kind not in ("fix", "pot"):
            raise self._error(f"unknown scheme kind {self.kind!r}; expected 'fix' or 'pot'")
        allowed = FIX_BITS if self.kind == "fix" else POT_BITS
        if not isinstance(self.bits, int) or self.bits not in allowed:
            raise self._error(
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
    def pot_max_exp(self) -> int:
        """Exponent of the largest pot magnitude (``qmax = 2^pot_max_exp``)."""
        return 2 ** (self.bits - 1) - 2

    @property
    def qmax(self) -> int:
        """Largest integer magnitude."""
        return 2 ** (self.bits - 1) - 1 if self.kind == "fix" else 2 ** self.pot_max_exp

    def level_list(self) -> list[int]:
        """All representable integers, ascending."""
        if self.kind == "fix":
            return list(range(-self.qmax, self.qmax + 1))
        mags = [2 ** e for e in range(self.pot_max_exp + 1)]
        return sorted([-m for m in mags] + [0] + mags)

    def encode_int(self, q: int) -> int:
        """The b-bit code of integer ``q`` (must be a level): fix: two's complement; pot:
        ``sign << (b-1) | code``, code ``c`` standing for ``2^(c-1)``, 0 for zero."""
        if self.kind == "fix":
            if abs(q) > self.qmax:
                raise self._error(f"{q} is not a {self.name} level")
            return q & (2 ** self.bits - 1)
        m = abs(q)
        if m and (m & (m - 1) or m > self.qmax):
            raise self._error(f"{q} is not a {self.name} level")
        code = m.bit_length() if m else 0
        return ((q < 0) << (self.bits - 1)) | code

    def encode(self, q):
        """:meth:`encode_int` of every element of an integer tensor (by a table of it)."""
        import torch
        q = torch.as_tensor(q, dtype=torch.int64)
        lut = torch.tensor(_code_table(self), dtype=torch.int64)
        idx = q + self.qmax
        inside = (idx >= 0) & (idx < len(lut))
        codes = lut[idx.clamp(0, len(lut) - 1)]
        bad = ~inside | (codes < 0)
        if bool(bad.any()):
            raise self._error(f"{int(q[bad].flatten()[0])} is not a {self.name} level")
        return codes

    def decode(self, codes):
        """:meth:`decode_int` of every element of a tensor of codes (by a table of it)."""
        import torch
        codes = torch.as_tensor(codes, dtype=torch.int64)
        if bool(((codes < 0) | (codes >= 2 ** self.bits)).any()):
            raise self._error(f"codes outside {self.bits} bits")
        return torch.tensor([self.decode_int(c) for c in range(2 ** self.bits)], dtype=torch.int64)[codes]

    def decode_int(self, code: int) -> int:
        """Integer value of a b-bit code."""
        if not 0 <= code < 2 ** self.bits:
            raise self._error(f"code {code} does not fit {self.bits} bits")
        if self.kind == "fix":
            return code - 2 ** self.bits if code >= 2 ** (self.bits - 1) else code
        c = code & (2 ** (self.bits - 1) - 1)
        mag = 0 if c == 0 else 1 << (c - 1)
        return -mag if code >> (self.bits - 1) else mag


@lru_cache(maxsize=None)
def _code_table(fmt: WeightFormat) -> tuple:
    """Code of each integer ``-qmax … qmax`` (-1 where it is not a level)."""
    def code(q):
        try:
            return fmt.encode_int(q)
        except FormatError:
            return -1
    return tuple(code(q) for q in range(-fmt.qmax, fmt.qmax + 1))


def parse_weight_format(name) -> WeightFormat:
    """``"pot4"`` → ``WeightFormat("pot", 4)``; names an unknown format in the error."""
    if isinstance(name, WeightFormat):
        return name
    m = _NAME.match(str(name).strip().lower())
    if not m:
        raise FormatError(f"unknown scheme {name!r}; expected fix<b> (b in 2..8) or pot<b> (b in 2..5), "
                          "e.g. 'fix8', 'pot4'")
    return WeightFormat(m.group(1), int(m.group(2)))


#: Requantization multipliers are unsigned integers below ``2^MULT_BITS``.
MULT_BITS = 16
#: Largest shift of the requantizer.
MAX_SHIFT = 62


def requant_multiplier(t: float) -> tuple[int, int]:
    """Integers ``(M, n)`` with ``M / 2^n ≈ t``, ``0 <= M < 2^16``, ``0 <= n <= 62``.

    ``M`` is rounded to nearest from the exact float64 mantissa of ``t`` and then
    reduced (trailing zero bits moved out of ``M`` into ``n``), so a power of two
    gives ``M == 1``: the pure-shift mode.
    """
    if not (t > 0 and math.isfinite(t)):
        raise FormatError(f"requantization factor must be positive and finite, got {t!r}")
    m, e = math.frexp(t)                 # t = m * 2^e, m in [0.5, 1)
    M, n = round(m * 2 ** MULT_BITS), MULT_BITS - e
    if M == 2 ** MULT_BITS:
        M, n = M >> 1, n - 1
    if n < 0:
        raise FormatError(f"requantization factor {t:g} >= 2^{MULT_BITS}: not representable")
    if n > MAX_SHIFT:
        M, n = round(t * 2.0 ** MAX_SHIFT), MAX_SHIFT
        if M == 0:                        # below 2^-63: the output is always 0
            return 0, 0
    while n > 0 and M > 0 and M % 2 == 0:
        M, n = M >> 1, n - 1
    return int(M), int(n)
