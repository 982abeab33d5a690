"""Mixed-scheme vs fixed-4-only MAC arrays on the ULX3S-85F (LFE5U-85F-6): MACs/s at Fmax.

    python bench/array_compare.py [--board ulx3s-85f] [--memory sdram|bram] [--json out.json]

Arrays (``rtl/mac.py`` ``MacArray``) are synthesized (yosys synth_ecp5) and placed and
routed out of context (nextpnr-ecp5 --out-of-context) on the board's device; Fmax is
nextpnr's after routing.  Designs:

All three are sized for the board's memory backend (``--memory``; default the board's:
the ULX3S's SDRAM leaves the core the block RAMs on-chip memory would take).

- **mixed**: the array of ``AcceleratorConfig.for_board(board)`` (the hardware-chosen
  ratio: power-of-two rows on shift lanes in LUTs, fix8 rows on DSPs, with its pixel lanes);
- **fix4 DSP-only** (the RMSMP paper's baseline): ``for_board(board, {"fix4": 1})``, as many
  4-bit fixed-point rows as the DSPs allow beside the rest of the core;
- **fix4 DSP + LUT**: that array plus as many fix4 rows with LUT multipliers (LUTs per row
  from a probe array synthesized with ``-nodsp``) as the core budget still holds — LUTs,
  and block RAM for their weights and parameters (cost model); Fmax is the lower of the
  two arrays'.

MACs/s = lanes × Fmax (one MAC per lane per cycle).  About 20 min on this machine.
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from amaranth.back import rtlil

sys.path.insert(0, str(Path(__file__).parent))
from synth_ecp5 import yosys  # noqa: E402

from rmsmp.boards.toolchain import toolchain_env  # noqa: E402
from rmsmp.generator.catalog import board  # noqa: E402
from rmsmp.generator.config import AcceleratorConfig  # noqa: E402
from rmsmp.generator.cost import estimate, fit  # noqa: E402
from rmsmp.rtl.mac import MacArray  # noqa: E402
from rmsmp.rtl.toplevel import flat_toplevel  # noqa: E402


def place_and_route(cfg, *, nodsp=False) -> dict:
    env = toolchain_env(board("ulx3s-85f"))
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        (d / "a.il").write_text(rtlil.convert(flat_toplevel(MacArray.for_config(cfg)), name="array", emit_src=False))
        t = time.perf_counter()
        out = subprocess.run([yosys(), "-q", "-p", f"read_rtlil a.il; synth_ecp5 {'-nodsp ' if nodsp else ''}"
                              "-top array -json a.json; tee -o stat.json stat -json"],
                             capture_output=True, text=True, cwd=d)
        if out.returncode:
            raise RuntimeError(out.stderr[-2000:])
        cells = json.loads((d / "stat.json").read_text())["design"]["num_cells_by_type"]
        out = subprocess.run([env["NEXTPNR_ECP5"], "--85k", "--package", "CABGA381", "--speed", "6",
                              "--out-of-context", "--json", "a.json", "--report", "r.json", "--freq", "100",
                              "--timing-allow-fail", "--quiet", "--log", "pnr.log"],
                             capture_output=True, text=True, cwd=d)
        if out.returncode:
            raise RuntimeError((d / "pnr.log").read_text()[-3000:])
        rep = json.loads((d / "r.json").read_text())
    fmax = min(v["achieved"] for v in rep["fmax"].values())
    util = {k: v["used"] for k, v in rep["utilization"].items() if v["used"]}
    return {"fmax_mhz": fmax, "cells": {k: cells.get(k, 0) for k in ("LUT4", "CCU2C", "MULT18X18D")},
            "util": util, "seconds": time.perf_counter() - t}


def fit_coeffs():
    return fit("ecp5")[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--board", default="ulx3s-85f")
    ap.add_argument("--memory", choices=("sdram", "bram"), help="memory backend (default: the board's)")
    ap.add_argument("--json")
    a = ap.parse_args()
    spec = board(a.board)
    mixed = AcceleratorConfig.for_board(spec.name, memory=a.memory)
    fix4 = AcceleratorConfig.for_board(spec.name, {"fix4": 1.0}, memory=a.memory)
    res = {}
    for name, cfg in (("mixed", mixed), ("fix4 DSP-only", fix4)):
        r = place_and_route(cfg)
        r.update(lanes=cfg.peak_macs_per_cycle, config=cfg.describe().split(",")[0])
        res[name] = r
        print(f"{name}: {r}", flush=True)
    # fix4 rows with LUT multipliers added to the DSP-only array while the whole core still
    # fits the budget (LUTs, block RAMs for their weights and parameters), by the cost model
    # and the LUTs per row of a probe array synthesized with -nodsp
    C = fix4.columns
    probe = AcceleratorConfig(lane_groups=(("fix4", 4),), columns=C)
    lut = place_and_route(probe, nodsp=True)
    per_row = (lut["cells"]["LUT4"] + 2 * lut["cells"]["CCU2C"]) / 4
    avail = spec.core_budget(a.memory)
    extra = 0
    while True:
        k = extra + 1
        cand = AcceleratorConfig(lane_groups=(("fix4", fix4.rows + k),), columns=C, clock_hz=fix4.clock_hz)
        est = estimate(cand, "ecp5")
        need = {"LUT": est["LUT"] + k * per_row, "DSP": est["DSP"] - k * C, "BRAM": est["BRAM"]}
        if any(need[r] > avail[r] for r in avail):
            break
        extra = k
    res["fix4 LUT rows (probe, 4 rows)"] = dict(lut, lanes=4 * C, luts_per_row=per_row)
    res["fix4 DSP + LUT"] = {"lanes": fix4.peak_macs_per_cycle + extra * C, "extra_lut_rows": extra,
                             "fmax_mhz": min(res["fix4 DSP-only"]["fmax_mhz"], lut["fmax_mhz"]),
                             "config": f"{fix4.describe().split(',')[0]} + {extra} fix4 rows on LUT multipliers"}
    print(f"LUTs per fix4 LUT-multiplier row of {C} lanes: {per_row:.0f}; pot4 lane in the core fit: "
          f"{fit_coeffs()[3]:.0f} LUTs", flush=True)
    base = res["fix4 DSP-only"]["lanes"] * res["fix4 DSP-only"]["fmax_mhz"] / 1e3
    print(f"\n| design ({spec.name}, memory {spec.memory(a.memory)}) | lanes (MACs/cycle) | Fmax (MHz) | GMAC/s "
          "| vs fix4 DSP-only |")
    print("|---|---|---|---|---|")
    for name in ("mixed", "fix4 DSP-only", "fix4 DSP + LUT"):
        r = res[name]
        r["gmacs"] = r["lanes"] * r["fmax_mhz"] / 1e3
        print(f"| {name}: {r['config']} | {r['lanes']} | {r['fmax_mhz']:.1f} | {r['gmacs']:.2f} | "
              f"{r['gmacs'] / base:.2f}× |")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
