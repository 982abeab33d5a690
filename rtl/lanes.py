"""MAC lanes: one weight × one activation per cycle, per weight format (combinational).

* :class:`FixLane` multiplies the two's-complement weight with the activation — yosys
  maps the ``*`` to DSP blocks (or LUT multipliers).
* :class:`PotLane` decodes ``sign | code`` and shifts: ``±(a << (code-1))``, zero for
  code 0 — LUTs only, no multiplier.

Both compute exactly ``a · decode(w)`` of the weight format they are given — a
:class:`rmsmp.host.quant.formats.WeightFormat` (``kind``, ``bits``, ``qmax``, ``name``):
the format's definition lives with the quantizer, the RTL takes it as a parameter.
"""
from __future__ import annotations

from amaranth import Module, Mux, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["FixLane", "PotLane", "make_lane", "product_width", "lane_format"]


def lane_format(fmt):
    """``fmt`` checked to be a weight format object (``kind`` "fix"/"pot", ``bits``, ``qmax``, ``name``)."""
    if not all(hasattr(fmt, a) for a in ("kind", "bits", "qmax", "name")) or fmt.kind not in ("fix", "pot"):
        raise TypeError(f"a lane needs a weight format object (rmsmp.host.quant.formats.parse_weight_format"
                        f"('pot4')), got {fmt!r}")
    return fmt


def product_width(fmt, act_width: int) -> int:
    """Signed width that holds ``a · q`` for any signed ``act_width``-bit ``a`` and level ``q``."""
    return ((1 << (act_width - 1)) * fmt.qmax).bit_length() + 1


class _Lane(wiring.Component):
    def __init__(self, fmt, act_width: int):
        fmt = lane_format(fmt)
        if not isinstance(act_width, int) or act_width < 2:
            raise ValueError(f"act_width must be an integer >= 2, got {act_width!r}")
        self._fmt, self._act_width = fmt, act_width
        super().__init__({
            "a": In(signed(act_width)),
            "w": In(unsigned(fmt.bits)),
            "p": Out(signed(product_width(fmt, act_width))),
        })

    @property
    def format(self):
        return self._fmt


class FixLane(_Lane):
    """``p = a · w`` with ``w`` a two's-complement ``fix-b`` code."""

    def __init__(self, fmt, act_width: int):
        super().__init__(fmt, act_width)
        if self._fmt.kind != "fix":
            raise ValueError(f"FixLane needs a fix format, got {self._fmt}")

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.p.eq(self.a * self.w.as_signed())
        return m


class PotLane(_Lane):
    """``p = ±(a << (c-1))`` for code ``sign | c``, 0 for ``c = 0``."""

    def __init__(self, fmt, act_width: int):
        super().__init__(fmt, act_width)
        if self._fmt.kind != "pot":
            raise ValueError(f"PotLane needs a pot format, got {self._fmt}")

    def elaborate(self, platform):
        m = Module()
        b = self._fmt.bits
        code, neg = self.w[:b - 1], self.w[b - 1]
        # (a << c) >> 1 == a << (c - 1) for c >= 1: the low bit shifted in is zero and the
        # arithmetic right shift keeps the sign.
        mag = Mux(code.any(), (self.a << code) >> 1, 0)
        m.d.comb += self.p.eq(Mux(neg, -mag, mag))
        return m


def make_lane(fmt, act_width: int) -> _Lane:
    fmt = lane_format(fmt)
    return (FixLane if fmt.kind == "fix" else PotLane)(fmt, act_width)
