"""Post-processing: per-row requantization (docs/arithmetic.md §4); the residual add runs on the
vector unit (:mod:`rmsmp.rtl.vector`).

Both are pipelines with ``always_ready`` streams whose payload carries the operands and
the parameters (bias, multiplier, shift, output bounds) so the core can feed per-row
values from its parameter buffer and per-layer values from the instruction.  ReLU is a
lower bound of 0; the output format's range is ``[lo, hi]``.
"""
from __future__ import annotations

from amaranth import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .arith import clamp, delay, round_half

__all__ = ["Requantizer"]


class Requantizer(wiring.Component):
    """``y = clamp(rshift_round((acc + bias) · mult, shift), lo, hi)``; 6-cycle latency.

    ``mult`` is unsigned ``mult_bits`` (``M``), ``shift`` unsigned ``shift_bits`` (``n``);
    ``mult = 1`` is the pure-shift mode.  ``y``, ``lo`` and ``hi`` are signed
    ``out_bits + 1`` bits, which holds both signed and unsigned ``out_bits`` formats.

    Stages: bias; two partial products (the sum's low ``SPLIT`` bits and the rest, each
    within one 18×18 DSP block); their sum; the half LSB; the shift; the clamp — each a
    register, so a 100 MHz clock sees one adder, one multiplier or one shifter per cycle.

    ``held_bounds=True``: ``lo``/``hi`` are not carried down the pipeline — the last stage
    clamps to the bounds on the input now, so the user must hold them while values are
    inside (the engine's are per layer); saves ``5 · 2 · (out_bits + 1)`` flip-flops.
    """

    latency = 6
    #: low bits of the biased sum in the first partial product (unsigned; the DSP block's
    #: signed 18-bit inputs take 17 unsigned bits)
    SPLIT = 17

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
        stage = [p]                     # the operands beside each stage's value

        def follow(k):
            s = Signal(p.shape(), name=f"s{k}")
            m.d.sync += s.eq(stage[-1])
            stage.append(s)
            return s
        # stage 1: bias (acc + bias cannot wrap: one bit wider)
        v = Signal(signed(self._acc_bits + 1))
        m.d.sync += v.eq(p.acc + p.bias)
        s1 = follow(1)
        # stage 2: two partial products (DSP); signed × unsigned
        k = min(self.SPLIT, len(v) - 1)
        lo_p = Signal(unsigned(k + self._mult_bits))
        hi_p = Signal(signed(len(v) - k + self._mult_bits + 1))
        m.d.sync += [lo_p.eq(v[:k] * s1.mult), hi_p.eq(v[k:].as_signed() * s1.mult)]
        follow(2)
        # stage 3: the product
        prod = Signal(signed(self._acc_bits + 1 + self._mult_bits + 1))
        m.d.sync += prod.eq((hi_p << k) + lo_p)
        s3 = follow(3)
        # stage 4: round half up ...
        total = prod + round_half(s3.shift)       # (as wide as the half LSB may be)
        rounded = Signal(total.shape())
        m.d.sync += rounded.eq(total)
        s4 = follow(4)
        # stage 5: ... and shift
        r = Signal.like(rounded)
        m.d.sync += r.eq(rounded >> s4.shift)
        s5 = follow(5)
        # stage 6: saturate to the output format
        b = p if self._held else s5
        m.d.sync += self.o.payload.eq(clamp(r, b.lo, b.hi))
        m.d.comb += self.o.valid.eq(delay(m, self.i.valid, self.latency, "valid"))
        return m
