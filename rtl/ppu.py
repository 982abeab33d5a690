"""Post-processing: per-row requantization and the residual add (docs/arithmetic.md §4–5).

Both are pipelines with ``always_ready`` streams whose payload carries the operands and
the parameters (bias, multiplier, shift, output bounds) so the core can feed per-row
values from its parameter buffer and per-layer values from the instruction.  ReLU is a
lower bound of 0; the output format's range is ``[lo, hi]``.
"""
from __future__ import annotations

from amaranth import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .arith import clamp, rshift_round

__all__ = ["Requantizer", "ResidualAdder"]


class Requantizer(wiring.Component):
    """``y = clamp(rshift_round((acc + bias) · mult, shift), lo, hi)``; 4-cycle latency.

    ``mult`` is unsigned ``mult_bits`` (``M``), ``shift`` unsigned ``shift_bits`` (``n``);
    ``mult = 1`` is the pure-shift mode.  ``y``, ``lo`` and ``hi`` are signed
    ``out_bits + 1`` bits, which holds both signed and unsigned ``out_bits`` formats.

    ``held_bounds=True``: ``lo``/``hi`` are not carried down the pipeline — the last stage
    clamps to the bounds on the input now, so the user must hold them while values are
    inside (the engine's are per layer); saves ``3 · 2 · (out_bits + 1)`` flip-flops.
    """

    latency = 4

    def __init__(self, *, acc_bits: int = 32, mult_bits: int = 16, shift_bits: int = 6, out_bits: int = 16,
                 held_bounds: bool = False):
        self._acc_bits, self._mult_bits, self._shift_bits, self._out_bits = acc_bits, mult_bits, shift_bits, out_bits
        self._held = held_bounds
        ow = out_bits + 1
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "acc": signed(acc_bits), "bias": signed(acc_bits), "mult": unsigned(mult_bits),
                "shift": unsigned(shift_bits), "lo": signed(ow), "hi": signed(ow)}), always_ready=True)),
            "o": Out(stream.Signature(signed(ow), always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.i.payload
        # stage 1: bias (acc + bias cannot wrap: one bit wider)
        v = Signal(signed(self._acc_bits + 1))
        s1 = Signal(p.shape(), name="s1")
        m.d.sync += [v.eq(p.acc + p.bias), s1.eq(p)]
        # stage 2: multiply (DSP); signed × unsigned
        prod = Signal(signed(self._acc_bits + 1 + self._mult_bits + 1))
        s2 = Signal(p.shape(), name="s2")
        m.d.sync += [prod.eq(v * s1.mult), s2.eq(s1)]
        # stage 3: round half up and shift
        r = Signal.like(prod)
        s3 = Signal(p.shape(), name="s3")
        m.d.sync += [r.eq(rshift_round(prod, s2.shift)), s3.eq(s2)]
        # stage 4: saturate to the output format
        b = p if self._held else s3
        m.d.sync += self.o.payload.eq(clamp(r, b.lo, b.hi))
        _valid_chain(m, self.i.valid, self.o.valid, self.latency)
        return m


class ResidualAdder(wiring.Component):
    """``y = clamp(rshift_round((a << sa) + (b << sb), rs), lo, hi)``; 3-cycle latency.

    The compiler sets, with ``f = max(fa, fb)``: ``sa = f - fa + max(0, fo - f)``,
    ``sb = f - fb + max(0, fo - f)``, ``rs = max(0, f - fo)`` — exactly the add of
    docs/arithmetic.md §5.  Shifts are at most ``2^shift_bits - 1``.
    """

    latency = 3

    def __init__(self, *, in_bits: int = 17, shift_bits: int = 4, out_bits: int = 16):
        self._in_bits, self._shift_bits, self._out_bits = in_bits, shift_bits, out_bits
        ow = out_bits + 1
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "a": signed(in_bits), "b": signed(in_bits), "sa": unsigned(shift_bits), "sb": unsigned(shift_bits),
                "rs": unsigned(shift_bits), "lo": signed(ow), "hi": signed(ow)}), always_ready=True)),
            "o": Out(stream.Signature(signed(ow), always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.i.payload
        wide = self._in_bits + 2 ** self._shift_bits
        s = Signal(signed(wide + 1))
        s1 = Signal(p.shape(), name="s1")
        m.d.sync += [s.eq((p.a << p.sa) + (p.b << p.sb)), s1.eq(p)]
        r = Signal(signed(wide + 1))
        s2 = Signal(p.shape(), name="s2")
        m.d.sync += [r.eq(rshift_round(s, s1.rs)), s2.eq(s1)]
        m.d.sync += self.o.payload.eq(clamp(r, s2.lo, s2.hi))
        _valid_chain(m, self.i.valid, self.o.valid, self.latency)
        return m


def _valid_chain(m: Module, valid_in, valid_out, stages: int):
    v = valid_in
    for k in range(stages - 1):
        d = Signal(name=f"valid_d{k}")
        m.d.sync += d.eq(v)
        v = d
    m.d.sync += valid_out.eq(v)
