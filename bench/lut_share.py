"""What the ULX3S's LUT share buys: ``for_board`` designs as the share of the part's LUTs the
core may use (``BoardSpec.lut_share``: 0.6 by default, 0.56 on the ULX3S by what has routed) varies.

    python bench/lut_share.py [--board ulx3s-85f] [--shares 0.5,0.6,0.7,0.75,0.8]

For each share: the mixed core with the hardware-chosen ratio, the fix4 DSP-only core and
the fix4 DSP + LUT core (``lut_fix=True``), their peak MACs/cycle and the mixed core's
ratio to each (cost-model estimates; which share the part routes at is a build's question).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import rmsmp.generator.catalog as catalog
from rmsmp.generator.config import AcceleratorConfig
from rmsmp.generator.cost import estimate

sys.path.insert(0, str(Path(__file__).parent))
from mixed_vs_fixed import DESIGNS  # noqa: E402


def designs(board: str) -> dict:
    """The mixed (hardware ratio), fix4 DSP-only and fix4 DSP + LUT designs of
    bench/mixed_vs_fixed.py for ``board``."""
    return {label: AcceleratorConfig.for_board(board, ratio, **kw)
            for key, (label, ratio, kw) in DESIGNS.items() if key in ("mixed-hw", "fix4-dsp", "fix4-dsp-lut")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--board", default="ulx3s-85f")
    ap.add_argument("--shares", default="0.5,0.6,0.7,0.75,0.8")
    a = ap.parse_args(argv)
    spec = catalog.board(a.board)
    print("| LUT share | mixed (hardware ratio) | est. LUT / DSP / BRAM | fix4 DSP-only | fix4 DSP + LUT | "
          "mixed vs DSP-only | mixed vs DSP + LUT |")
    print("|---|---|---|---|---|---|---|")
    saved = catalog.BOARDS[spec.name]
    try:
        for share in (float(s) for s in a.shares.split(",")):
            catalog.BOARDS[spec.name] = replace(saved, lut_share=share)
            d = designs(spec.name)
            mixed = d["mixed, hardware ratio"]
            m, f, fl = (d[k].peak_macs_per_cycle for k in ("mixed, hardware ratio", "fix4 DSP-only", "fix4 DSP + LUT"))
            est = estimate(mixed, spec.family)
            print(f"| {share:.2f} | {mixed.describe().split(' = ')[0]} = {m} | {est['LUT']:,} / {est['DSP']} / "
                  f"{est['BRAM']} | {f} | {d['fix4 DSP + LUT'].describe().split(' = ')[0]} = {fl} | "
                  f"{m / f:.2f}× | {m / fl:.2f}× |", flush=True)
    finally:
        catalog.BOARDS[spec.name] = saved
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
