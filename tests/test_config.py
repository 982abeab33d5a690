"""AcceleratorConfig: validation, derived figures, stable identity."""
import pytest

from rmsmp.generator.config import AcceleratorConfig, ConfigError, LaneGroup


def test_default_is_a_16_row_array_for_10_5_1_models():
    c = AcceleratorConfig()
    assert [(g.scheme, g.rows) for g in c.lane_groups] == [("pot4", 10), ("fix8", 6)]
    assert c.rows == 16 and c.peak_macs_per_cycle == 16 * c.columns
    assert c.ratio == {"pot4": 10 / 16, "fix8": 6 / 16}
    assert [f.name for f in c.row_formats()][:11] == ["pot4"] * 10 + ["fix8"]


def test_hash_is_stable_and_distinguishes_configs():
    a, b = AcceleratorConfig(), AcceleratorConfig(lane_groups=(("pot4", 10), ("fix8", 6)))
    assert a == b and hash(a) == hash(b) and a.config_hash == b.config_hash
    assert a.config_hash != AcceleratorConfig(columns=16).config_hash
    assert a.config_hash != AcceleratorConfig(lane_groups=(("pot4", 5), ("fix4", 10), ("fix8", 1))).config_hash
    assert 0 <= a.config_hash < 2 ** 32
    assert AcceleratorConfig.from_dict(a.to_dict()) == a


@pytest.mark.parametrize("kw, msg", [
    ({"lane_groups": ()}, "at least one lane group"),
    ({"lane_groups": (("int4", 4),)}, "unknown scheme"),
    ({"lane_groups": (("pot7", 4),)}, "pot weights support 2..5"),
    ({"lane_groups": (("fix4", 0),)}, "rows must be a positive integer"),
    ({"lane_groups": (("fix4", 2), ("fix4", 2))}, "twice"),
    ({"columns": 0}, "columns"),
    ({"acc_bits": 64}, "acc_bits"),
    ({"bus_width": 48}, "power of two"),
    ({"act_depth": 3000}, "act_depth must be a power of two"),
    ({"act_depth": 2}, "act_depth must be a power of two of at least 4"),
    ({"lut_schemes": ("pot4",)}, "not a fixed-point lane group"),
    ({"lut_schemes": ("fix4",)}, "not a fixed-point lane group"),
    ({"lut_schemes": ("int4",)}, "lut_schemes: .*unknown scheme"),
])
def test_bad_configs_are_named(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        AcceleratorConfig(**kw)


def test_lut_schemes_round_trip_and_leave_older_hashes_alone():
    """``lut_schemes`` names fixed-point groups built from LUTs: empty, it is left out of the
    canonical dict (every earlier config keeps its hash); set, it is part of the identity."""
    a = AcceleratorConfig(lane_groups=(("fix8", 2), ("fix4", 6)))
    assert "lut_schemes" not in a.to_dict()
    b = AcceleratorConfig(lane_groups=(("fix8", 2), ("fix4", 6)), lut_schemes=["FIX4"], pot_act_bits=4)
    assert b.lut_schemes == ("fix4",) and b.config_hash != a.config_hash
    assert AcceleratorConfig.from_dict(b.to_dict()) == b
    assert b.narrow_lanes("fix4") and not b.narrow_lanes("fix8") and not a.narrow_lanes("fix4")
    assert "2×fix8 + 6×fix4 (LUT)" in b.describe()


def test_group_lookup():
    c = AcceleratorConfig()
    assert c.group_of("FIX8") == LaneGroup("fix8", 6)
    assert c.group_of("pot3") is None
