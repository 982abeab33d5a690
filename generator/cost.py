"""Resource cost model of the core, calibrated from real synthesis (``generator/cost_data``).

``estimate(cfg, family)`` gives LUT, DSP and block-RAM counts of ``cfg``'s core:

- **LUT** (LUT4 + 2 per carry cell + 2 per distributed-RAM cell) and **DSP**: linear in the
  array shape — a fixed part, per row, per column, and per lane of each scheme — fitted by
  least squares to ``bench/calibrate_cost.py``'s yosys results; ``fit_error`` reports the
  worst relative error of the fit on its own points.
- **Block RAM**: counted from the memory shapes (weight buffer per lane group, the
  activation banks, the per-row parameter buffer, and on iCE40 the dot-product queue, which
  ECP5 keeps in LUT RAM) in the device's block geometries; the calibration points check it.

``AcceleratorConfig.for_board`` sizes arrays with it; ``make bitstream`` verifies a choice.
"""
from __future__ import annotations

import json
from functools import lru_cache
from math import ceil
from pathlib import Path

import numpy as np

__all__ = ["estimate", "bram_blocks", "memory_blocks", "fit", "DATA", "lut_equivalent", "size_for_budget",
           "FAMILY_PARAMS", "COLUMNS"]

#: buffer depths and accumulator width the calibration uses per family (and ``for_board``
#: keeps).  iCE40 parts hold small networks: a 24-bit accumulator (the compiler refuses a
#: layer whose worst-case sum needs more) saves ~200 LUTs and ~200 flip-flops there.
FAMILY_PARAMS = {"ecp5": {"weight_depth": 2048, "act_depth": 8192, "acc_depth": 512},
                 "ice40": {"weight_depth": 512, "act_depth": 1024, "acc_depth": 64, "acc_bits": 24,
                           "vector_ops": ("add",)}}
#: column counts ``for_board`` tries per family (the calibration spans them)
COLUMNS = {"ecp5": (4, 8, 16), "ice40": (1, 2, 4)}

DATA = Path(__file__).parent / "cost_data"

#: block RAM geometries (depth, width) per family
GEOMETRY = {"ecp5": [(16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36)],
            "ice40": [(2048, 2), (1024, 4), (512, 8), (256, 16)]}
BRAM_CELL = {"ecp5": "DP16KD", "ice40": "SB_RAM40_4K"}
DSP_CELL = {"ecp5": "MULT18X18D", "ice40": "SB_MAC16"}


def lut_equivalent(cells: dict, family: str) -> int:
    """LUT4s of a yosys cell count (a carry cell spans two LUTs; so does a 16×4 LUT RAM)."""
    if family == "ecp5":
        return cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0) + 2 * cells.get("TRELLIS_DPR16X4", 0)
    return cells.get("SB_LUT4", 0)


def memory_blocks(width: int, depth: int, family: str) -> int:
    """Blocks of one ``depth`` × ``width`` memory (the cheapest geometry)."""
    if width <= 0 or depth <= 0:
        return 0
    return min(ceil(width / w) * ceil(depth / d) for d, w in GEOMETRY[family])


def bram_blocks(cfg, family: str) -> int:
    """Block RAMs of the core's memories (``rtl/engine.py``)."""
    from rmsmp.rtl.engine import ConvEngine
    from rmsmp.rtl.isa import ACT_BANKS, param_layout
    C, R = cfg.columns, cfg.rows
    n = 0
    for g in cfg.lane_groups:
        n += memory_blocks(g.rows * C * g.format.bits, cfg.weight_depth, family)
    n += memory_blocks(param_layout(cfg.acc_bits, cfg.mult_bits, cfg.shift_bits).size * R, cfg.acc_depth, family)
    n += ACT_BANKS * memory_blocks(8 * C, cfg.act_depth // ACT_BANKS, family)
    if family == "ice40":       # no LUT RAM there: the queue of R accumulators takes blocks
        n += memory_blocks(R * cfg.acc_bits, ConvEngine.QUEUE_DEPTH, family)
    return n


def _features(cfg) -> list[float]:
    """fixed, per column, per row, and per lane of pot / narrow fix (≤ 4 b) / wide fix rows."""
    C = cfg.columns
    pot = fix_n = fix_w = 0
    for g in cfg.lane_groups:
        f = g.format
        if f.kind == "pot":
            pot += g.rows * C
        elif f.bits <= 4:
            fix_n += g.rows * C
        else:
            fix_w += g.rows * C
    return [1.0, C, cfg.rows, pot, fix_n, fix_w]


@lru_cache(maxsize=None)
def fit(family: str):
    """(LUT coefficients, DSP coefficients, worst relative LUT error, points) from the data."""
    from .config import AcceleratorConfig
    path = DATA / f"{family}.json"
    if not path.exists():
        raise FileNotFoundError(f"no synthesis data for {family}: run python bench/calibrate_cost.py --family {family}")
    pts = json.loads(path.read_text())["points"]
    cfgs = [AcceleratorConfig.from_dict(p["config"]) for p in pts]
    X = np.array([_features(c) for c in cfgs])
    lut = np.array([lut_equivalent(p["cells"], family) for p in pts], dtype=float)
    dsp = np.array([p["cells"].get(DSP_CELL[family], 0) for p in pts], dtype=float)
    kl, *_ = np.linalg.lstsq(X, lut, rcond=None)
    kd, *_ = np.linalg.lstsq(X, dsp, rcond=None)
    err = float(np.max(np.abs(X @ kl - lut) / lut)) if len(pts) else 0.0
    return kl, kd, err, pts


def estimate(cfg, family: str = "ecp5") -> dict:
    """{"LUT", "DSP", "BRAM"} of ``cfg``'s core on ``family``."""
    kl, kd, _, _ = fit(family)
    x = np.array(_features(cfg))
    return {"LUT": int(round(float(x @ kl))), "DSP": int(round(max(0.0, float(x @ kd)))),
            "BRAM": bram_blocks(cfg, family)}


def _groups_for(ratio: dict, rows: int, split_fix: bool = False):
    """Lane groups for ``rows`` rows in ``ratio``'s proportions, or None when ``rows`` is too
    few for the layout: power-of-two rows on pot lanes of the widest pot scheme asked for;
    fixed-point rows on lanes of the widest fix scheme (a wide fix lane runs narrower rows;
    on both families a product of up to 9×9 bits takes one DSP either way), or with
    ``split_fix`` each fix scheme's rows on lanes of their own (at least one row each), where
    narrower lanes hold more weights per block RAM."""
    from rmsmp.rtl.formats import parse_weight_format
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


def size_for_budget(ratio: dict, family: str, budget: dict, *, clock_hz: int, columns=None,
                    max_rows: int = 96, split_fix: bool = False):
    """The configuration with the most MACs/cycle in ``ratio``'s proportions (fixed-point
    rows on the widest fix scheme's lanes; with ``split_fix`` also on lanes of their own
    schemes, whichever gives more) whose core fits ``budget`` ({"LUT", "DSP", "BRAM"} left
    for the core); ties go to fewer LUTs.  Returns (config, estimate), or (None, the
    smallest candidate's estimate) when nothing fits."""
    from .config import AcceleratorConfig
    best = smallest = None
    layouts = {_groups_for(ratio, rows, split) for rows in range(2, max_rows + 1)
               for split in ((False, True) if split_fix else (False,))}
    for C in columns or COLUMNS[family]:
        for groups in sorted(layouts - {None}):
            cfg = AcceleratorConfig(lane_groups=groups, columns=C, clock_hz=clock_hz, **FAMILY_PARAMS[family])
            est = estimate(cfg, family)
            if smallest is None or est["LUT"] < smallest[1]["LUT"]:
                smallest = (cfg, est)
            if all(est[k] <= budget[k] for k in ("LUT", "DSP", "BRAM")):
                key = (cfg.peak_macs_per_cycle, -est["LUT"])
                if best is None or key > best[0]:
                    best = (key, cfg, est)
    if best is None:
        return None, smallest
    return best[1], best[2]
