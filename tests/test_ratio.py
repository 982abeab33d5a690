"""Ratio validation and the largest-remainder row-count rule."""
import pytest

from rmsmp.host.errors import RatioError
from rmsmp.host.quant.rmsmp import parse_ratio, row_counts
from rmsmp.host.quant.schemes import parse_scheme

R1051 = parse_ratio({"pot4": 10 / 16, "fix4": 5 / 16, "fix8": 1 / 16})


def named(c):
    return {str(k): v for k, v in c.items()}


@pytest.mark.parametrize("rows", [16, 32, 64, 128, 256, 512])
def test_multiples_of_16_split_exactly(rows):
    assert named(row_counts(rows, R1051)) == {"pot4": rows * 10 // 16, "fix4": rows * 5 // 16, "fix8": rows // 16}


@pytest.mark.parametrize("rows", list(range(1, 70)) + [1000])
def test_counts_sum_and_stay_within_one_of_exact(rows):
    c = row_counts(rows, R1051)
    assert sum(c.values()) == rows
    for s, n in c.items():
        assert abs(n - rows * R1051[s]) < 1


def test_leftover_goes_to_largest_remainder_then_more_bits():
    # 10 rows: exact 6.25 / 3.125 / 0.625 -> floors 6/3/0, the one left goes to fix8
    assert named(row_counts(10, R1051)) == {"pot4": 6, "fix4": 3, "fix8": 1}
    # equal remainders: 1 row, pot4 = fix4 = 0.5 -> more bits tie, fix before pot
    half = parse_ratio({"pot4": 0.5, "fix4": 0.5})
    assert named(row_counts(1, half)) == {"pot4": 0, "fix4": 1}
    eight = parse_ratio({"fix4": 0.5, "fix8": 0.5})
    assert named(row_counts(1, eight)) == {"fix4": 0, "fix8": 1}


@pytest.mark.parametrize("bad, msg", [
    ({"pot4": 0.5, "fix4": 0.4}, "sum to 0.9"),
    ({"pot4": 0.5, "int4": 0.5}, "unknown scheme"),
    ({"pot4": 1.5, "fix4": -0.5}, ">= 0"),
    ({}, "non-empty"),
    ({"fix9": 1.0}, "unknown scheme"),
    ({"fix4": "a lot"}, "not a number"),
])
def test_bad_ratios_are_refused(bad, msg):
    with pytest.raises(RatioError, match=msg):
        parse_ratio(bad)


def test_zero_fraction_schemes_are_dropped():
    assert list(parse_ratio({"fix4": 1.0, "pot4": 0.0})) == [parse_scheme("fix4")]
