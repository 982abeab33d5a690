"""Post-processing: per-row requantization (docs/arithmetic.md §4); the residual add runs on the
vector unit (:mod:`rmsmp.rtl.vector`).

Both are pipelines with ``always_ready`` streams whose payload carries the operands and
the parameters (bias, multiplier, shift, output bounds) so the core can feed per-row
values from its parameter buffer and per-layer values from the instruction.  ReLU is a
lower bound of 0; the output format's range is ``[lo, hi]``.
"""
from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .arith import clamp, delay, round_half, rshift_round

__all__ = ["Requantizer"]


class Requantizer(wiring.Component):
    """``y = clamp(rshift_round((acc + bias) · mult, shift), lo, hi)``; 7-cycle latency
    (``pipelined=False``: 4, the product and the rounding shift in one stage each).

    ``mult`` is unsigned ``mult_bits`` (``M``), ``shift`` unsigned ``shift_bits`` (``n``);
    ``mult = 1`` is the pure-shift mode.  ``y``, ``lo`` and ``hi`` are signed
    ``out_bits + 1`` bits, which holds both signed and unsigned ``out_bits`` formats.

    Stages: bias; two partial products (the sum's low ``SPLIT`` bits and the rest, each
    within one 18×18 DSP block); their sum; the half LSB; the shift; the comparisons with
    the bounds; the clamp — each a register, so a 100 MHz clock sees one adder, one
    multiplier or one shifter per cycle.

    ``held_bounds=True``: ``lo``/``hi`` are not carried down the pipeline — the last stage
    clamps to the bounds on the input now, so the user must hold them while values are
    inside (the engine's are per layer); saves ``(latency - 1) · 2 · (out_bits + 1)`` flip-flops.
    """

    #: low bits of the biased sum in the first partial product (unsigned; the DSP block's
    #: signed 18-bit inputs take 17 unsigned bits)
    SPLIT = 17

    def __init__(self, *, acc_bits: int = 32, mult_bits: int = 16, shift_bits: int = 6, out_bits: int = 16,
                 held_bounds: bool = False, pipelined: bool = True):
        self.latency = 7 if pipelined else 4
        self._pipe = pipelined
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
        # the operands a later stage needs travel beside the value, and only those (the
        # bounds only without ``held_bounds``)
        ow = self._out_bits + 1
        carried = {"mult": unsigned(self._mult_bits), "shift": unsigned(self._shift_bits)}
        if not self._held:
            carried.update(lo=signed(ow), hi=signed(ow))
        stage = [p]

        def follow(k, *names):
            s = Signal(data.StructLayout({n: carried[n] for n in names}), name=f"s{k}")
            m.d.sync += [getattr(s, n).eq(getattr(stage[-1], n)) for n in names]
            stage.append(s)
            return s
        bounds = () if self._held else ("lo", "hi")

        def reg(value, name, width=None):
            r = Signal(value.shape() if width is None else signed(width), name=name)
            m.d.sync += r.eq(value)
            return r
        # stage 1: bias (acc + bias cannot wrap: one bit wider)
        v = reg(p.acc + p.bias, "v")
        s1 = follow(1, "mult", "shift", *bounds)
        if self._pipe:
            # stages 2, 3: two partial products (DSP; signed × unsigned), then their sum
            k = min(self.SPLIT, len(v) - 1)
            lo_p, hi_p = reg(v[:k] * s1.mult, "lo_p"), reg(v[k:].as_signed() * s1.mult, "hi_p")
            follow(2, "shift", *bounds)
            prod = reg((hi_p << k) + lo_p, "prod")
            s3 = follow(3, "shift", *bounds)
            # stages 4, 5: round half up (as wide as the half LSB may be), then shift
            rounded = reg(prod + round_half(s3.shift), "rounded")
            s4 = follow(4, "shift", *bounds)
            r = reg(rounded >> s4.shift, "r", len(prod) + 1)
        else:
            # stage 2: the product; stage 3: round half up and shift
            prod = reg(v * s1.mult, "prod")
            s2 = follow(2, "shift", *bounds)
            r = reg(rshift_round(prod, s2.shift), "r", len(prod) + 1)
        # (|r| ≤ |prod| / 2^shift + 1: a bit wider than the product holds it, whatever the
        # width of the rounding sum)
        sl = follow(len(stage), *bounds)
        # last stage: saturate to the output format
        b = p if self._held else sl
        if self._pipe:
            # (pipelined: the comparisons with the bounds — carry chains as wide as ``r`` —
            # into registers first, then the selection: the comparisons' results fanned out
            # to every output bit across the placement in the same cycle)
            sc = follow(len(stage), *bounds) if not self._held else p
            under, over = reg(r < b.lo, "under"), reg(r > b.hi, "over")
            r_n = reg(r[:ow].as_signed(), "r_n")
            m.d.sync += self.o.payload.eq(Mux(under, sc.lo, Mux(over, sc.hi, r_n)))
        else:
            m.d.sync += self.o.payload.eq(clamp(r, b.lo, b.hi))
        m.d.comb += self.o.valid.eq(delay(m, self.i.valid, self.latency, "valid"))
        return m
