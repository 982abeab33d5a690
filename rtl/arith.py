"""Arithmetic helpers shared by the post-processing units (docs/arithmetic.md §4–5)."""
from __future__ import annotations

from amaranth import C, Mux, Value

__all__ = ["rshift_round", "clamp"]


def rshift_round(value: Value, amount: Value) -> Value:
    """``floor(value / 2^amount + 1/2)`` for signed ``value``: add half an LSB of the
    result (Amaranth widens the sum, so it cannot overflow), then shift arithmetically."""
    half = (C(1, 1) << amount) >> 1          # 2^(amount-1), or 0 for amount = 0
    return (value + half) >> amount


def clamp(value: Value, lo: Value, hi: Value) -> Value:
    return Mux(value < lo, lo, Mux(value > hi, hi, value))
