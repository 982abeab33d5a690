"""Sizing an array for a board: the lane layouts a scheme ratio allows, and the candidate
with the most MACs/cycle that fits a resource budget by the cost model (:mod:`.cost`).
:meth:`AcceleratorConfig.for_board <rmsmp.generator.config.AcceleratorConfig.for_board>`
builds the candidates and calls these.
"""
from __future__ import annotations

from rmsmp.host.quant.formats import parse_weight_format

from .cost import estimate

__all__ = ["lane_layouts", "hardware_layouts", "dsp_lut_layouts", "edge_rows", "effective_macs", "best_fit"]


def _groups_for(ratio: dict, rows: int, split_fix: bool = False):
    """Lane groups for ``rows`` rows in ``ratio``'s proportions, or None when ``rows`` is too
    few for the layout: power-of-two rows on pot lanes of the widest pot scheme asked for;
    fixed-point rows on lanes of the widest fix scheme (a wide fix lane runs narrower rows;
    on both families a product of up to 9×9 bits takes one DSP either way), or with
    ``split_fix`` each fix scheme's rows on lanes of their own (at least one row each), where
    narrower lanes hold more weights per block RAM."""
    pot = {k: v for k, v in ratio.items() if v > 0 and parse_weight_format(k).kind == "pot"}
    fix = {k: v for k, v in ratio.items() if v > 0 and parse_weight_format(k).kind == "fix"}
    share = sum(pot.values()) / max(1e-12, sum(pot.values()) + sum(fix.values()))
    groups = []
    p_rows = round(rows * share) if fix else rows
    if pot and fix:
        p_rows = min(rows - (len(fix) if split_fix else 1), max(1, p_rows))
        if p_rows < 1:
            return None
    if pot:
        groups.append((max(pot, key=lambda k: parse_weight_format(k).bits), p_rows))
    f_rows = rows - (p_rows if pot else 0)
    if fix and not split_fix:
        groups.append((max(fix, key=lambda k: parse_weight_format(k).bits), f_rows))
    elif fix:
        if f_rows < len(fix):
            return None
        names = sorted(fix, key=lambda k: parse_weight_format(k).bits)
        # one row each, the rest by largest remainders, ties to the narrower scheme (its
        # lanes take less block RAM; the quantizer's row_counts breaks ties the other way)
        want = {k: fix[k] / sum(fix.values()) * (f_rows - len(fix)) for k in names}
        n = {k: 1 + int(want[k]) for k in names}
        for k in sorted(names, key=lambda k: want[k] - int(want[k]), reverse=True)[:f_rows - sum(n.values())]:
            n[k] += 1
        groups += [(k, n[k]) for k in names]
    return tuple(groups)


def lane_layouts(ratio: dict, *, max_rows: int = 96, split_fix: bool = False) -> list:
    """Every lane-group layout of 2 … ``max_rows`` rows in ``ratio``'s proportions (with
    ``split_fix`` also each fix scheme's rows on lanes of their own), sorted."""
    layouts = {_groups_for(ratio, rows, split) for rows in range(2, max_rows + 1)
               for split in ((False, True) if split_fix else (False,))}
    return sorted(layouts - {None})


def hardware_layouts(max_rows: int = 64, max_fix_rows: int = 24) -> list:
    """Lane-group layouts for a ratio chosen by the hardware: any number of pot4 rows (shift
    lanes: LUTs) beside 1 … ``max_fix_rows`` fix8 rows (multiplier lanes: DSP blocks take an
    8-bit product as readily as a 4-bit one, and fix8 lanes run a network's 8-bit edge
    layers and any narrower fixed-point rows)."""
    return sorted(((("pot4", rp), ("fix8", rf)) if rp else (("fix8", rf),))
                  for rf in range(1, max_fix_rows + 1) for rp in range(0, max_rows - rf + 1))


def dsp_lut_layouts(lut_scheme: str, max_rows: int = 96, max_dsp_rows: int = 40) -> list:
    """Lane-group layouts of a fixed-point core that uses both DSPs and LUTs for
    multipliers: 1 … ``max_dsp_rows`` fix8 rows on DSP lanes (they also run 8-bit edge
    layers) beside any number of ``lut_scheme`` rows on LUT-built lanes."""
    return sorted(((("fix8", rd), (lut_scheme, rl)) if rl else (("fix8", rd),))
                  for rd in range(1, max_dsp_rows + 1) for rl in range(0, max_rows - rd + 1))


def edge_rows(cfg) -> int:
    """Rows that can run an all-fix8 edge layer (8-bit weights, 8-bit input): fix lanes of at
    least 8 bits that take full-width activations."""
    return sum(g.rows for g in cfg.lane_groups
               if g.format.kind == "fix" and g.format.bits >= 8 and not cfg.narrow_lanes(g.scheme))


def effective_macs(cfg, edge_fraction: float = 0.0) -> float:
    """MACs/cycle on a network whose ``edge_fraction`` of MACs run on the edge rows only
    (:func:`edge_rows`; all-fix8 first and last layers) and the rest on every row: the
    harmonic mix ``1 / ((1 - e) / peak + e / edge peak)`` — peak MACs/cycle for ``e = 0``."""
    peak = cfg.peak_macs_per_cycle
    if edge_fraction <= 0:
        return float(peak)
    edge = edge_rows(cfg) * cfg.columns * cfg.pixels
    if edge == 0:
        return 0.0
    return 1.0 / ((1 - edge_fraction) / peak + edge_fraction / edge)


def best_fit(candidates, family: str, budget: dict, edge_fraction: float = 0.0):
    """The candidate config with the most MACs/cycle (:func:`effective_macs` with
    ``edge_fraction``) whose core fits ``budget`` ({"LUT", "DSP", "BRAM"} left for the
    core); ties go to fewer LUTs, then to the earlier candidate.
    Returns (config, estimate), or (None, (the smallest candidate, its estimate)) when
    nothing fits."""
    best = smallest = None
    for cfg in candidates:
        est = estimate(cfg, family)
        if smallest is None or est["LUT"] < smallest[1]["LUT"]:
            smallest = (cfg, est)
        if all(est[k] <= budget[k] for k in ("LUT", "DSP", "BRAM")):
            key = (effective_macs(cfg, edge_fraction), cfg.peak_macs_per_cycle, -est["LUT"])
            if best is None or key > best[0]:
                best = (key, cfg, est)
    if best is None:
        return None, smallest
    return best[1], best[2]
