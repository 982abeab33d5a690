"""QuantizedModel: file format, validation, requantization parameters."""
from fractions import Fraction

import pytest
import torch

from rmsmp.host import ModelFormatError, QuantizedModel
from rmsmp.host.quant.qmodel import requant_multiplier
from rmsmp.sim import golden


def test_save_load_roundtrip_is_exact(digits_q, digits, tmp_path):
    p = digits_q.save(tmp_path / "m.rmsmp")
    back = QuantizedModel.load(p)
    assert [l.name for l in back] == [l.name for l in digits_q]
    for a, b in zip(digits_q, back):
        assert (a.op, a.inputs, a.attrs, a.out, a.schemes) == (b.op, b.inputs, b.attrs, b.out, b.schemes)
        for f in ("weight", "bias", "qweight", "scale"):
            x, y = getattr(a, f), getattr(b, f)
            assert (x is None and y is None) or (torch.equal(x, y) and x.dtype == y.dtype)
    for k, rq in digits_q.requant.items():
        for f in rq:
            assert torch.equal(rq[f], back.requant[k][f])
    x = digits[2][:64]
    assert torch.equal(golden(digits_q, x, dequantize=False), golden(back, x, dequantize=False))
    assert back.ratio == digits_q.ratio and back.meta == digits_q.meta


def test_truncated_file_is_a_clear_error(digits_q, tmp_path):
    p = digits_q.save(tmp_path / "m.rmsmp")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError, match="not a readable rmsmp model file"):
        QuantizedModel.load(p)


def test_garbage_file_is_a_clear_error(tmp_path):
    p = tmp_path / "junk.rmsmp"
    p.write_bytes(b"\x00\x01 definitely not a model" * 10)
    with pytest.raises(ModelFormatError, match="junk.rmsmp"):
        QuantizedModel.load(p)


def test_foreign_and_future_files_are_refused(digits_q, tmp_path):
    d = digits_q.to_dict()
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ModelFormatError, match="not an rmsmp QuantizedModel"):
        QuantizedModel.load(tmp_path / "other.pt")
    d["version"] = 99
    torch.save(d, tmp_path / "future.rmsmp")
    with pytest.raises(ModelFormatError, match="version 99 is not supported"):
        QuantizedModel.load(tmp_path / "future.rmsmp")


def test_tampered_weights_are_refused(digits_q, tmp_path):
    d = digits_q.to_dict()
    layer = next(e for e in d["layers"] if e["schemes"] and "pot4" in e["schemes"])
    r = layer["schemes"].index("pot4")
    layer["qweight"] = layer["qweight"].clone()
    layer["qweight"][r].view(-1)[0] = 3           # 3 is not a power of two
    torch.save(d, tmp_path / "bad.rmsmp")
    with pytest.raises(ModelFormatError, match="not pot4 levels"):
        QuantizedModel.load(tmp_path / "bad.rmsmp")


def test_missing_field_is_refused(digits_q, tmp_path):
    d = digits_q.to_dict()
    del d["layers"][1]["qweight"]
    torch.save(d, tmp_path / "bad.rmsmp")
    with pytest.raises(ModelFormatError, match="damaged"):
        QuantizedModel.load(tmp_path / "bad.rmsmp")


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        QuantizedModel.load(tmp_path / "nope.rmsmp")


@pytest.mark.parametrize("t", [1.0, 0.5, 2.0 ** -20, 3.0, 0.0123456, 1 / 49, 65535.0, 1e-25, 0.75])
def test_requant_multiplier_is_close_and_canonical(t):
    M, n = requant_multiplier(t)
    assert 0 <= M < 2 ** 16 and 0 <= n <= 62
    assert n == 0 or M % 2 == 1                 # no trailing zeros left in M
    if t >= 2.0 ** -46:
        assert abs(Fraction(M, 2 ** n) - Fraction(t)) <= Fraction(t) * Fraction(1, 2 ** 16)


def test_power_of_two_factors_give_pure_shifts():
    for e in range(-40, 16):
        assert requant_multiplier(2.0 ** e) == (1, max(0, -e)) or e >= 0 and requant_multiplier(2.0 ** e) == (2 ** e, 0)


def test_requant_multiplier_rejects_out_of_range():
    with pytest.raises(ValueError):
        requant_multiplier(2.0 ** 17)
    with pytest.raises(ValueError):
        requant_multiplier(0.0)
