"""Resource cost model of the core, calibrated from real synthesis (``generator/cost_data``).

``estimate(cfg, family)`` gives LUT, DSP and block-RAM counts of ``cfg``'s core:

- **LUT** (LUT4 + 2 per carry cell + 2 per distributed-RAM cell) and **DSP**: linear in the
  array shape — a fixed part, per row, per column, and per lane of each scheme — fitted by
  least squares to ``bench/calibrate_cost.py``'s yosys results; ``fit_error`` reports the
  worst relative error of the fit on its own points.
- **Block RAM**: counted from the memory shapes (weight buffer per lane group, the
  activation banks, the per-row parameter buffer, and on iCE40 the dot-product queue, which
  ECP5 keeps in LUT RAM) in the device's block geometries; the calibration points check it.

``AcceleratorConfig.for_board`` sizes arrays with it (:mod:`.sizing`); ``make bitstream``
verifies a choice.
"""
from __future__ import annotations

import json
from functools import lru_cache
from math import ceil
from pathlib import Path

import numpy as np

from rmsmp.host.quant.formats import parse_weight_format
from rmsmp.rtl.engine import ConvEngine
from rmsmp.rtl.isa import ACT_BANKS, param_entry_bits, param_slots

__all__ = ["estimate", "bram_blocks", "memory_blocks", "fit", "DATA", "lut_equivalent", "FAMILY_PARAMS", "COLUMNS",
           "PIXELS", "family_params", "calibrated_narrow_pot", "calibrated_lut_fix"]

#: buffer depths and accumulator width the calibration uses per family (and ``for_board``
#: keeps).  The compiler refuses a layer whose worst-case sum needs a wider accumulator
#: (docs/arithmetic.md §3), so the width is what the networks need: on ECP5 25 bits, the
#: worst case of ResNet-18's ``fc`` (512 8-bit weights × 8-bit inputs) and of any 8 × 8-bit
#: dot product of 512 terms — 2,033 LUT-equivalents fewer than 32 bits on the ULX3S core
#: (24×pot4 + 9×fix8 × 8 × 2), as much as two of its pot rows; iCE40 parts hold small
#: networks: 24 bits saves ~200 LUTs and ~200 flip-flops there.  ``acc_depth`` 32 groups on
#: ECP5: a set holds at most 16 output groups a half, which no ResNet-18 layer fills (its
#: weights bind first), and the parameter buffer (a row an entry, ``acc_depth`` × the power of
#: two above the rows) stays 2,048 deep up to 64 rows: 8 block RAMs where 64 groups of 33–64
#: rows took 16.
FAMILY_PARAMS = {"ecp5": {"weight_depth": 2048, "act_depth": 8192, "acc_depth": 32, "acc_bits": 25},
                 "ice40": {"weight_depth": 512, "act_depth": 1024, "acc_depth": 64, "acc_bits": 24,
                           "vector_ops": ("add",), "pipelined": False}}
#: column counts and pixel-lane counts ``for_board`` tries per family (the calibration spans
#: them; one column cannot hold a 16-bit output such as a classifier's logits, two bytes of
#: one entry, so the smallest board core has two)
COLUMNS = {"ecp5": (4, 8, 16), "ice40": (2, 4)}
PIXELS = {"ecp5": (1, 2, 4), "ice40": (1,)}


def family_params(family: str, pixels: int = 1) -> dict:
    """:data:`FAMILY_PARAMS` for ``pixels`` lanes: the activation buffer is split among the
    lanes (each holds its columns of a band; 2,048 entries a lane still band every
    ResNet-18 layer at 224×224)."""
    p = dict(FAMILY_PARAMS[family])
    if pixels > 1:
        p.update(act_depth=p["act_depth"] // pixels, pixels=pixels)
    return p

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
    C, R = cfg.columns, cfg.rows
    n = 0
    for g in cfg.lane_groups:
        n += memory_blocks(g.rows * C * g.format.bits, cfg.weight_depth, family)
    # the parameters a row an entry, and each output group's mask of enabled rows (ECP5 keeps
    # up to 64 masks in LUT RAM, as it does the queue)
    n += memory_blocks(param_entry_bits(cfg.acc_bits, cfg.mult_bits, cfg.shift_bits, R),
                       cfg.acc_depth * param_slots(R), family)
    if family == "ice40" or cfg.acc_depth > 64:
        n += memory_blocks(R, cfg.acc_depth, family)
    n += cfg.pixels * ACT_BANKS * memory_blocks(8 * C, cfg.act_depth // ACT_BANKS, family)
    if family == "ice40":       # no LUT RAM there: the queue of R accumulators takes blocks
        depth = ConvEngine.QUEUE_DEPTH if cfg.pixels == 1 else ConvEngine.WIDE_QUEUE_DEPTH
        n += memory_blocks(R * cfg.pixels * cfg.acc_bits, depth, family)
    return n


def _features(columns: int, groups, pixels: int = 1, narrow_pot: bool = False, lut=(),
              acc_bits: int = 32) -> list[float]:
    """fixed, per column, per row, per pixel lane, per column of a pixel lane (its
    activation path), per row of a pixel lane (tree root, accumulator, queue), per lane of
    pot rows (for full-width / narrow activations) / narrow fix (≤ 4 b) / wide fix rows /
    fix rows built from LUTs (``lut``: their schemes; calibrated for narrow activations),
    and per accumulator bit of a pixel lane (its requantizer) and of a row of a pixel lane
    (accumulator, queue entry, the requantizer's row select); ``groups``: (weight format,
    rows) of each lane group."""
    pot = pot_n = fix_n = fix_w = fix_l = 0
    for f, rows in groups:
        lanes = rows * columns * pixels
        if f.name in lut:
            fix_l += lanes
        elif f.kind == "pot" and narrow_pot:
            pot_n += lanes
        elif f.kind == "pot":
            pot += lanes
        elif f.bits <= 4:
            fix_n += lanes
        else:
            fix_w += lanes
    R = sum(r for _, r in groups)
    return [1.0, columns, R, pixels, columns * pixels, R * pixels, pot, pot_n, fix_n, fix_w, fix_l,
            acc_bits * pixels, acc_bits * R * pixels]


def _narrow(pot_act_bits: int, act_bits: int) -> bool:
    return 0 < pot_act_bits < act_bits


def _config_features(cfg) -> list[float]:
    return _features(cfg.columns, [(g.format, g.rows) for g in cfg.lane_groups], cfg.pixels,
                     _narrow(cfg.pot_act_bits, cfg.act_bits), cfg.lut_schemes, cfg.acc_bits)


@lru_cache(maxsize=None)
def fit(family: str):
    """(LUT coefficients, DSP coefficients, worst relative LUT error, points) from the data."""
    path = DATA / f"{family}.json"
    if not path.exists():
        raise FileNotFoundError(f"no synthesis data for {family}: run python bench/calibrate_cost.py --family {family}")
    pts = json.loads(path.read_text())["points"]
    X = np.array([_features(p["config"]["columns"],
                            [(parse_weight_format(s), r) for s, r in p["config"]["lane_groups"]],
                            p["config"].get("pixels", 1),
                            _narrow(p["config"].get("pot_act_bits", 0), p["config"]["act_bits"]),
                            tuple(p["config"].get("lut_schemes", ())), p["config"]["acc_bits"]) for p in pts])
    lut = np.array([lut_equivalent(p["cells"], family) for p in pts], dtype=float)
    dsp = np.array([p["cells"].get(DSP_CELL[family], 0) for p in pts], dtype=float)
    kl, *_ = np.linalg.lstsq(X, lut, rcond=None)
    kd, *_ = np.linalg.lstsq(X, dsp, rcond=None)
    err = float(np.max(np.abs(X @ kl - lut) / lut)) if len(pts) else 0.0
    return kl, kd, err, pts


def calibrated_narrow_pot(family: str) -> bool:
    """Whether the family's synthesis data has points with narrow power-of-two lanes (the
    cost model can only size those when it has)."""
    return any(_narrow(p["config"].get("pot_act_bits", 0), p["config"]["act_bits"]) for p in fit(family)[3])


def calibrated_lut_fix(family: str) -> bool:
    """Whether the family's synthesis data has points with LUT-built fixed-point lanes."""
    return any(p["config"].get("lut_schemes") for p in fit(family)[3])


def estimate(cfg, family: str = "ecp5") -> dict:
    """{"LUT", "DSP", "BRAM"} of ``cfg``'s core on ``family``."""
    kl, kd, _, _ = fit(family)
    x = np.array(_config_features(cfg))
    return {"LUT": int(round(float(x @ kl))), "DSP": int(round(max(0.0, float(x @ kd)))),
            "BRAM": bram_blocks(cfg, family)}
