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

from .arith import clamp, delay, rshift_round

__all__ = ["Requantizer"]


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
        m.d.comb += self.o.valid.eq(delay(m, self.i.valid, self.latency, "valid"))
        return m
