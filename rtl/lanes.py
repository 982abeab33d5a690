"""MAC lanes: one weight × one activation per cycle, per weight format (combinational).

* :class:`FixLane` multiplies the two's-complement weight with the activation — yosys
  maps the ``*`` to a DSP block; with ``lut=True`` the product is written as the sum of
  the weight bits' shifted activations (no ``*``), which yosys builds from LUTs and carry
  chains: the fixed-point lanes of a core that also uses its LUTs for multipliers.
* :class:`PotLane` decodes ``sign | code`` and shifts: ``±(a << (code-1))``, zero for
  code 0 — LUTs only, no multiplier.  ``folded=True`` leaves the negation's ``+1`` to the
  caller: ``p`` is the shifted value, inverted bitwise for a negative weight, and ``neg``
  the bit to add, so a row adds its lanes' ``neg`` bits once (a popcount) instead of each
  lane carrying a negation adder — a third of a pot row's LUTs (bench/synth_ecp5.py).

Both compute exactly ``a · decode(w)`` of the weight format they are given — a
:class:`rmsmp.host.quant.formats.WeightFormat` (``kind``, ``bits``, ``qmax``, ``name``):
the format's definition lives with the quantizer, the RTL takes it as a parameter.
"""
from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
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
    def __init__(self, fmt, act_width: int, extra: dict | None = None):
        fmt = lane_format(fmt)
        if not isinstance(act_width, int) or act_width < 2:
            raise ValueError(f"act_width must be an integer >= 2, got {act_width!r}")
        self._fmt, self._act_width = fmt, act_width
        super().__init__({
            "a": In(signed(act_width)),
            "w": In(unsigned(fmt.bits)),
            "p": Out(signed(product_width(fmt, act_width))),
            **(extra or {}),
        })

    @property
    def format(self):
        return self._fmt


class FixLane(_Lane):
    """``p = a · w`` with ``w`` a two's-complement ``fix-b`` code; ``lut``: built as
    ``Σ_{i<b-1} w_i·(a << i) − w_{b-1}·(a << (b-1))`` instead of a multiplier."""

    def __init__(self, fmt, act_width: int, *, lut: bool = False):
        super().__init__(fmt, act_width)
        if self._fmt.kind != "fix":
            raise ValueError(f"FixLane needs a fix format, got {self._fmt}")
        self._lut = lut

    def elaborate(self, platform):
        m = Module()
        if not self._lut:
            m.d.comb += self.p.eq(self.a * self.w.as_signed())
            return m
        b = self._fmt.bits
        terms = [Mux(self.w[i], self.a << i, 0) for i in range(b)]
        pos = terms[0]
        for t in terms[1:b - 1]:
            pos = pos + t
        m.d.comb += self.p.eq(pos - terms[b - 1])
        return m


class PotLane(_Lane):
    """``p = ±(a << (c-1))`` for code ``sign | c``, 0 for ``c = 0``; ``folded``: ``p + neg``
    is that product (``p = ~(a << (c-1))`` and ``neg = 1`` for a negative weight)."""

    def __init__(self, fmt, act_width: int, *, folded: bool = False):
        super().__init__(fmt, act_width, {"neg": Out(1)} if folded else None)
        if self._fmt.kind != "pot":
            raise ValueError(f"PotLane needs a pot format, got {self._fmt}")
        self._folded = folded

    @property
    def folded(self) -> bool:
        return self._folded

    def elaborate(self, platform):
        m = Module()
        b = self._fmt.bits
        code, neg = self.w[:b - 1], self.w[b - 1]
        # (a << c) >> 1 == a << (c - 1) for c >= 1: the low bit shifted in is zero and the
        # arithmetic right shift keeps the sign.
        mag = Signal(signed(len(self.p)), name="mag")
        m.d.comb += mag.eq(Mux(code.any(), (self.a << code) >> 1, 0))
        if self._folded:            # -mag = ~mag + 1: the + 1 is the row's (``neg``)
            m.d.comb += [self.p.eq(mag ^ neg.replicate(len(mag))), self.neg.eq(neg)]
        else:
            m.d.comb += self.p.eq(Mux(neg, -mag, mag))
        return m


def make_lane(fmt, act_width: int, *, lut: bool = False, folded: bool = False) -> _Lane:
    """A lane for ``fmt``; ``lut``: a fixed-point lane built without a multiplier;
    ``folded``: a power-of-two lane that leaves its negation's ``+1`` to the row."""
    fmt = lane_format(fmt)
    if fmt.kind == "fix":
        return FixLane(fmt, act_width, lut=lut)
    return PotLane(fmt, act_width, folded=folded)
