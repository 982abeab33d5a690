"""Arithmetic and sequencing helpers shared by the RTL units (docs/arithmetic.md §4–5).

The address generators avoid hardware multipliers (an iCE40UP5K has eight): loop nests
advance running sums (:func:`nested_carries` gives each level's step condition,
:func:`nested_address` the word address of the walk), products by a few-bit operand are
shift-and-add (:func:`small_mul`), and the few products of two wide operands a unit needs
per layer are computed over several cycles by a :class:`SerialMultiplier`.
"""
from __future__ import annotations

import operator
from functools import reduce

from amaranth import C, Module, Mux, Signal, Value, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["stage", "rshift_round", "round_half", "clamp",
           "delay", "nested_count", "nested_carries", "nested_address", "small_mul", "one_hot_select",
           "window_origin", "lane_offsets", "window_inside", "SerialMultiplier"]


def delay(m: Module, value: Value, stages: int, name: str = "d", *, reset_less: bool = False) -> Value:
    """``value`` through ``stages`` registers (a delay line; 0 stages: ``value`` itself);
    ``reset_less``: data the domain's reset need not clear (see :func:`stage`)."""
    for k in range(stages):
        reg = Signal(len(value), name=f"{name}_d{k}", reset_less=reset_less)
        m.d.sync += reg.eq(value)
        value = reg
    return value


def stage(m: Module, value, on: bool, name: str, *, reset_less: bool = False):
    """``value`` through a register when ``on`` (a pipelined core's optional stage), else
    ``value`` itself; a register keeps ``value``'s shape (a layout's view stays a view).
    ``reset_less``: a data register whose value is never read before it is written after
    a reset (operands, products, sums): left off the domain's reset, whose one net would
    otherwise reach every such flip-flop (24,869 of 29,132 in a 400-MAC ULX3S core, the net
    router2's congestion map named first)."""
    if not on:
        return value
    reg = Signal.like(value, name=name, reset_less=reset_less)
    m.d.sync += reg.eq(value)
    return reg


def rshift_round(value: Value, amount: Value, half: Value | None = None) -> Value:
    """``floor(value / 2^amount + 1/2)`` for signed ``value``: add half an LSB of the
    result (Amaranth widens the sum, so it cannot overflow), then shift arithmetically.
    ``half``: that half LSB, ``2^(amount-1)`` (0 for ``amount = 0``), when the caller
    holds it in a register (:func:`round_half`)."""
    return (value + (round_half(amount) if half is None else half)) >> amount


def round_half(amount: Value) -> Value:
    """``2^(amount-1)``, or 0 for ``amount = 0``: the half LSB :func:`rshift_round` adds."""
    return (C(1, 1) << amount) >> 1


def clamp(value: Value, lo: Value, hi: Value) -> Value:
    return Mux(value < lo, lo, Mux(value > hi, hi, value))


def nested_carries(m, enable, counters, *, load=None):
    """Advance ``counters`` [(signal, limit), …], innermost first, like nested loops.

    On an ``enable`` cycle the innermost counter steps; a counter at ``limit - 1`` wraps to
    0 and carries into the next.  Returns ``len(counters) + 1`` conditions: element ``i``
    is "counter ``i`` steps this cycle" (it wraps if the next one steps too); the last is
    "the outermost wraps", i.e. the last iteration is being issued.

    Given ``load`` (a cycle when every counter is 0 and the limits are steady), "counter ``i``
    is at its last value" is kept in a register, set as the counter moves from a comparison
    of the value it leaves: the carries are then a chain of ANDs of registers, with no
    comparator between ``enable`` and the counters and addresses they step (a pipelined
    core's walk; one flip-flop a level).
    """
    carries = [enable]
    for sig, limit in counters:
        if load is None:
            at_last = sig == limit - 1
        else:
            at_last = Signal(name=f"{sig.name}_at_last")
            with m.If(load):
                m.d.sync += at_last.eq(limit == 1)
            with m.Elif(carries[-1]):               # it moves to 0 (wraps) or to sig + 1
                m.d.sync += at_last.eq(Mux(at_last, limit == 1, sig == limit - 2))
        with m.If(carries[-1]):
            m.d.sync += sig.eq(Mux(at_last, 0, sig + 1))
        carries.append(carries[-1] & at_last)
    return carries


def nested_count(m, enable, counters):
    """:func:`nested_carries`, returning only "the outermost wraps this cycle"."""
    return nested_carries(m, enable, counters)[-1]


def nested_address(m, steps, increments, *, start, load, width: int, name: str = "addr"):
    """The word address of a loop nest walked by :func:`nested_carries` (``steps``), mod ``2^width``.

    Loop ``i`` (innermost first) keeps the word where its current iteration began; when it
    steps it adds ``increments[i]`` to that word and the loops inside it begin there too.
    An increment ``None`` sends the walk back to ``start``; ``load`` puts it there.
    """
    bases = [Signal(width, name=f"{name}_{i}") for i in range(len(increments))]
    with m.If(load):
        m.d.sync += [b.eq(start) for b in bases]
    for i in reversed(range(len(increments))):          # the outermost loop stepping wins
        nxt = start if increments[i] is None else (bases[i] + increments[i])[:width]
        with (m.If if i == len(increments) - 1 else m.Elif)(steps[i]):
            m.d.sync += [b.eq(nxt) for b in bases[:i + 1]]
    return bases[0]


def window_origin(m, *, restart, next_row, next_pixel, pad_top, pad, stride, width: int, name: str = "w"):
    """The input pixel ``(iy0, ix0)`` of tap (0, 0) of a sliding window, as running sums:
    ``restart`` (a new layer or plane) puts it at ``(-pad_top, -pad)``, ``next_row`` moves
    it ``stride`` rows down to the row's start, ``next_pixel`` ``stride`` columns right (the
    conditions in that priority).  A tap ``(ky, kx)`` reads ``(iy0 + ky, ix0 + kx)``: the
    conv engine and the vector unit's window walk both use it."""
    iy0, ix0 = Signal(signed(width), name=f"{name}_iy0"), Signal(signed(width), name=f"{name}_ix0")
    with m.If(restart):
        m.d.sync += [iy0.eq(-pad_top), ix0.eq(-pad)]
    with m.Elif(next_row):
        m.d.sync += [iy0.eq(iy0 + stride), ix0.eq(-pad)]
    with m.Elif(next_pixel):
        m.d.sync += ix0.eq(ix0 + stride)
    return iy0, ix0


def lane_offsets(m, *, load, out_w, stride, pixels: int, width: int, name: str = "off") -> list:
    """Pixel lane ``p``'s first input column in the global row, ``p · out_w · stride``, set
    on ``load`` (lane 0's is the constant 0)."""
    offs = [C(0, width)] + [Signal(width, name=f"{name}{p}") for p in range(1, pixels)]
    if pixels > 1:
        with m.If(load):
            step = small_mul(out_w, stride, width)
            m.d.sync += [offs[p].eq(p * step) for p in range(1, pixels)]
    return offs


def window_inside(iy, ix, offs, *, in_h, in_w, in_wg) -> list:
    """Per pixel lane, whether the tap ``(iy, ix)`` of its window is inside the input (not
    padding): one lane checks the plane ``in_h × in_w``; several check the global row
    ``in_wg`` from their offset (``lane_offsets``)."""
    row_in = (iy >= 0) & (iy < in_h)
    if len(offs) == 1:
        return [row_in & (ix >= 0) & (ix < in_w)]
    gx = [ix + off if p else ix for p, off in enumerate(offs)]
    return [row_in & (g >= 0) & (g < in_wg) for g in gx]


def one_hot_select(sel, values) -> Value:
    """The ``values[i]`` whose ``sel[i]`` is set (``sel`` one-hot, or 0 for 0), as an AND-OR:
    a register per select bit drives only its own value's gates, where a binary index fans
    out to every leg of a multiplexer tree."""
    return reduce(operator.or_, (Mux(s, Value.cast(v), 0) for s, v in zip(sel, values, strict=True)))


def small_mul(wide: Value, narrow: Value, width: int) -> Value:
    """``wide · narrow`` mod ``2^width`` for unsigned ``narrow`` of a few bits, as a sum of
    shifted copies of ``wide`` (adders, never a DSP block)."""
    total = C(0, width)
    for j in range(len(narrow)):
        total = (total + Mux(narrow[j], wide << j, 0))[:width]
    return total


class SerialMultiplier(wiring.Component):
    """``p = a · b`` (mod ``2^width``), unsigned, one bit of ``b`` per cycle, least significant first.

    ``start`` loads ``a`` and ``b``; from the next cycle ``busy`` is high while bits of ``b``
    remain, so a product takes ``bit_length(b)`` cycles (none for ``b = 0``) and ``p``
    holds it once ``busy`` is low.  One adder of ``width`` bits, no DSP block.
    """

    def __init__(self, a_bits: int, b_bits: int, width: int):
        super().__init__({"start": In(1), "a": In(a_bits), "b": In(b_bits), "busy": Out(1), "p": Out(width)})

    def elaborate(self, platform):
        m = Module()
        addend = Signal(len(self.p))         # a · 2^i
        rest = Signal(len(self.b))           # the bits of b not yet used
        m.d.comb += self.busy.eq(rest != 0)
        with m.If(self.start):
            m.d.sync += [self.p.eq(0), addend.eq(self.a), rest.eq(self.b)]
        with m.Elif(rest != 0):
            with m.If(rest[0]):
                m.d.sync += self.p.eq(self.p + addend)
            m.d.sync += [addend.eq(addend << 1), rest.eq(rest >> 1)]
        return m
