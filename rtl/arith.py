"""Arithmetic and sequencing helpers shared by the RTL units (docs/arithmetic.md §4–5)."""
from __future__ import annotations

from amaranth import C, Mux, Value

__all__ = ["rshift_round", "clamp", "nested_count"]


def rshift_round(value: Value, amount: Value) -> Value:
    """``floor(value / 2^amount + 1/2)`` for signed ``value``: add half an LSB of the
    result (Amaranth widens the sum, so it cannot overflow), then shift arithmetically."""
    half = (C(1, 1) << amount) >> 1          # 2^(amount-1), or 0 for amount = 0
    return (value + half) >> amount


def clamp(value: Value, lo: Value, hi: Value) -> Value:
    return Mux(value < lo, lo, Mux(value > hi, hi, value))


def nested_count(m, enable, counters):
    """Advance ``counters`` [(signal, limit), …], innermost first, like nested loops.

    On an ``enable`` cycle the innermost counter steps; a counter at ``limit - 1`` wraps to
    0 and carries into the next.  Returns the condition "the outermost wraps this cycle",
    i.e. the last iteration is being issued.
    """
    carry = enable
    for sig, limit in counters:
        at_last = sig == limit - 1
        with m.If(carry):
            m.d.sync += sig.eq(Mux(at_last, 0, sig + 1))
        carry = carry & at_last
    return carry
