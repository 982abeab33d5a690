"""Level sets, rounding and codes of every weight scheme (docs/arithmetic.md §1)."""
import pytest
import torch

from rmsmp.host.errors import SchemeError
from rmsmp.host.quant.schemes import FIX_BITS, POT_BITS, Scheme, parse_scheme

ALL = [Scheme("fix", b) for b in FIX_BITS] + [Scheme("pot", b) for b in POT_BITS]


@pytest.mark.parametrize("b", list(FIX_BITS))
def test_fix_levels_are_symmetric_narrow_range(b):
    lv = Scheme("fix", b).levels.tolist()
    assert lv == list(range(-(2 ** (b - 1) - 1), 2 ** (b - 1)))


@pytest.mark.parametrize("b", list(POT_BITS))
def test_pot_levels_are_zero_and_signed_powers_of_two(b):
    lv = set(Scheme("pot", b).levels.tolist())
    mags = {0} | {2 ** (c - 1) for c in range(1, 2 ** (b - 1))}
    assert lv == mags | {-m for m in mags}
    assert len(lv) == 2 ** b - 1          # sign + (b-1)-bit code, +0 and -0 coincide


def test_pot4_is_zero_to_64():
    assert Scheme("pot", 4).levels.tolist() == [-64, -32, -16, -8, -4, -2, -1, 0, 1, 2, 4, 8, 16, 32, 64]
    assert Scheme("pot", 4).qmax == 64


@pytest.mark.parametrize("s", ALL, ids=str)
def test_round_is_nearest_level(s):
    """Independent reference: argmin over the level set (ties may go either way)."""
    x = torch.cat([torch.linspace(-1.3 * s.qmax, 1.3 * s.qmax, 4001, dtype=torch.float64),
                   torch.randn(2000, dtype=torch.float64) * s.qmax / 3])
    q = s.round(x)
    lv = s.levels.double()
    d_best = (x[:, None] - lv[None]).abs().min(dim=1).values
    assert torch.all((x - q).abs() <= d_best + 1e-12)
    assert torch.isin(q.long(), s.levels).all()


@pytest.mark.parametrize("s", ALL, ids=str)
def test_encode_decode_roundtrip_and_width(s):
    lv = s.levels
    code = s.encode(lv)
    assert code.min() >= 0 and code.max() < 2 ** s.bits
    assert torch.equal(s.decode(code), lv)
    # codes are distinct for distinct levels
    assert len(set(code.tolist())) == len(lv)


def test_pot_code_zero_is_zero():
    s = Scheme("pot", 4)
    assert s.decode(torch.tensor([0, 0b1000])).tolist() == [0, 0]
    assert s.encode(torch.tensor([1, -1, 64])).tolist() == [1, 0b1001, 7]


@pytest.mark.parametrize("bad", ["fix9", "fix1", "pot6", "pot1", "int4", "fix", "", "pot4x"])
def test_bad_scheme_names_are_refused(bad):
    with pytest.raises(SchemeError, match="fix|pot|scheme"):
        parse_scheme(bad)


def test_check_names_offending_values():
    with pytest.raises(SchemeError, match=r"\[3\].*pot4"):
        Scheme("pot", 4).check(torch.tensor([1, 3, 4]))


@pytest.mark.parametrize("s", ALL, ids=str)
def test_tensor_codes_match_the_rtl_format_definition(s):
    """The tensor encode/decode (tables) == the integer definition, code by code."""
    from rmsmp.host.quant.formats import WeightFormat
    f = WeightFormat(s.kind, s.bits)
    assert f.level_list() == s.levels.tolist()
    assert s.encode(s.levels).tolist() == [f.encode_int(q) for q in f.level_list()]
    codes = torch.arange(2 ** s.bits)
    assert s.decode(codes).tolist() == [f.decode_int(c) for c in range(2 ** s.bits)]


def test_scheme_errors_are_both_host_and_rtl_errors():
    from rmsmp.host.quant.formats import FormatError
    with pytest.raises(FormatError):
        Scheme("pot", 7)
    with pytest.raises(SchemeError):
        Scheme("pot", 7)
