"""The formal proofs (rmsmp.sim.formal, ``make formal``): they hold on the RTL, and they fail
on planted bugs — a lane one bit too narrow, a pipeline stage the row does not account for,
an induction that needs more steps than allowed."""
import pytest

from rmsmp.rtl import lanes as lanes_mod
from rmsmp.rtl.mac import MacRow
from rmsmp.sim import formal
from rmsmp.sim.formal import PROOFS, ProofError, lane_miter, prove, row_miter

# the 9-bit fix8 lanes and the two wide arrays take about a minute each: `make formal` (run
# by CI) proves them
FAST = [n for n in PROOFS if not (n.startswith("lane fix8") and n.endswith("a9"))
        and not n.startswith(("array default", "array ulx3s"))]


@pytest.mark.parametrize("name", FAST)
def test_proof_holds(name):
    miter, seq, induct = PROOFS[name]()
    prove(miter, seq=seq, induct=induct, timeout_s=600)


def test_every_config_lane_kind_is_proved():
    """Every lane kind the default and board configs build has a lane proof at its width."""
    from rmsmp.generator.config import AcceleratorConfig
    for cfg in (AcceleratorConfig(), *(AcceleratorConfig.for_board(b) for b in ("icebreaker", "ulx3s-85f"))):
        for g in cfg.lane_groups:
            lut = g.format.name in cfg.lut_schemes
            aw = cfg.pot_act_width if g.format.kind == "pot" or lut else cfg.act_width
            fold = g.format.kind == "pot" and cfg.columns >= 8
            name = f"lane {g.format.name}{' lut' if lut else ''}{' folded' if fold else ''} a{aw}"
            assert name in PROOFS, name


def test_narrow_lane_fails(monkeypatch):
    """A lane whose product is one bit too narrow wraps at the extremes: the proof says so."""
    monkeypatch.setattr(lanes_mod, "product_width", lambda fmt, aw: ((1 << (aw - 1)) * fmt.qmax).bit_length())
    with pytest.raises(ProofError, match="proof failed"):
        prove(lane_miter("fix4", 5), timeout_s=120)


def test_misaligned_row_fails(monkeypatch):
    """A row whose pipeline is one stage longer than its reference accounts for."""
    true_latency = MacRow.latency.fget
    monkeypatch.setattr(MacRow, "latency", property(lambda self: true_latency(self) - 1))
    m = row_miter("pot4", columns=4, act_width=5, acc_bits=16, lanes="own")
    with pytest.raises(ProofError):
        prove(m, seq=8, induct=True, timeout_s=120)


def test_induction_too_short_is_not_a_proof():
    """Induction needs the row's latency in steps; with one step allowed, no proof."""
    m = row_miter("fix4", columns=4, act_width=5, acc_bits=16, lanes="own")
    with pytest.raises(ProofError):
        prove(m, seq=1, induct=True, timeout_s=120)


def test_main_reports_and_selects(capsys):
    assert formal.main(["-k", "lane pot3 a5"]) == 0
    assert "1 of 1 proofs hold" in capsys.readouterr().out
    assert formal.main(["-k", "no such proof"]) == 2
