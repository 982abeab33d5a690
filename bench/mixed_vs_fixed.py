"""Whole designs side by side: the mixed-scheme core for_board sizes vs the fix4 core, same board.

    python bench/mixed_vs_fixed.py [--board ulx3s-85f] [--build] [--sim [--memory ideal|sdram]] [--json out.json]

Designs, each the largest core ``AcceleratorConfig.for_board`` fits beside the board top
(synthesis-calibrated cost model):

- **mixed, hardware ratio**: ``for_board(board)`` — pot4 rows on LUT shift lanes beside
  fix8 rows on DSP lanes, as many of each as the part holds (its ``cfg.ratio`` is what a
  model is quantized for);
- **mixed, hardware ratio for ResNet-18's mix**: ``for_board(board, edge_fraction=0.065)`` —
  the same, chosen by MACs/cycle on a network with ResNet-18's share of all-fix8 edge-layer
  MACs (more fix8 rows);
- **mixed 10:5:1**: ``for_board(board, {"pot4": 10/16, "fix4": 5/16, "fix8": 1/16})``;
- **fix4 DSP-only**: ``for_board(board, {"fix4": 1})`` — the RMSMP paper's baseline;
- **fix4 DSP + LUT**: ``for_board(board, {"fix4": 1}, lut_fix=True)`` — fix8 rows on the
  DSPs beside fix4 rows on LUT-built (shift-and-add) lanes for 4-bit activations: the
  strongest fixed-point core, which spends the LUTs on multipliers too.

Printed per design: the array, peak MACs/cycle and the ratio to the fix4 core, the cost
model's LUT/DSP/BRAM against the budget.  ``--build`` builds each bitstream
(``build/compare/<design>/``, minutes to an hour each) and adds the routed resources, Fmax
and GMAC/s at Fmax; without it, reports already in those directories are read.  ``--sim``
runs ResNet-18 224×224 (random init, RMSMP-quantized for the design's ratio) on each
design in Verilator, bit-exact against golden, and adds cycles/image and images/s at the
target clock and at Fmax (``--memory sdram``: behind the board's SDRAM model; default the
one-word-per-cycle memory).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from rmsmp.generator.catalog import board
from rmsmp.generator.config import AcceleratorConfig
from rmsmp.generator.cost import estimate

RATIO_1051 = {"pot4": 10 / 16, "fix4": 5 / 16, "fix8": 1 / 16}
DESIGNS = {
    "mixed-hw": ("mixed, hardware ratio", None, {}),
    "mixed-edge": ("mixed, hardware ratio for ResNet-18's mix", None, {"edge_fraction": 0.065}),
    "mixed-1051": ("mixed 10:5:1", RATIO_1051, {}),
    "fix4-dsp": ("fix4 DSP-only", {"fix4": 1.0}, {}),
    "fix4-dsp-lut": ("fix4 DSP + LUT", {"fix4": 1.0}, {"lut_fix": True}),
}


def design_configs(board_name: str) -> dict:
    return {k: AcceleratorConfig.for_board(board_name, ratio, **kw) for k, (_, ratio, kw) in DESIGNS.items()}


def simulate(cfg, ratio: dict, board_name: str | None) -> dict:
    """ResNet-18 quantized for ``ratio`` on ``cfg`` in Verilator: its edge layers fix8 where
    the array has fix8 lanes, else (the fix4 core) fix4 like the rest."""
    from rmsmp.host import compile_model, open_device, quantize
    from rmsmp.host.models import resnet18
    from rmsmp.sim import golden
    torch.manual_seed(0)
    model = resnet18().eval()
    x = torch.randn(2, 3, 224, 224)
    edge = "fix8" if cfg.group_of("fix8") else next(g.scheme for g in cfg.lane_groups if g.format.kind == "fix")
    qm = quantize(model, x, ratio=ratio, edge_scheme=edge, hessian_images=1, hessian_samples=1)
    prog = compile_model(qm, cfg, (3, 224, 224))
    dev = open_device("sim", cfg, board=board_name)
    dev.build()
    dev.load(prog)
    y = dev.run(x[:1])
    s = dev.stats
    return {"cycles": s["cycles_per_image"], "mac_utilization": s["mac_utilization"],
            "bit_exact": bool(torch.equal(y, golden(qm, x[:1]))), "layers": s.get("layers")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--board", default="ulx3s-85f")
    ap.add_argument("--build", action="store_true", help="build every design's bitstream")
    ap.add_argument("--sim", action="store_true", help="ResNet-18 224×224 on every design in Verilator")
    ap.add_argument("--memory", choices=("ideal", "sdram"), default="ideal")
    ap.add_argument("--only", help="comma-separated designs: " + ", ".join(DESIGNS))
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    spec = board(a.board)
    avail = spec.core_budget()
    cfgs = design_configs(a.board)
    names = a.only.split(",") if a.only else list(DESIGNS)
    base = cfgs["fix4-dsp"].peak_macs_per_cycle
    base_dl = cfgs["fix4-dsp-lut"].peak_macs_per_cycle
    rows = {}
    for name in names:
        cfg = cfgs[name]
        est = estimate(cfg, spec.family)
        r = {"design": DESIGNS[name][0], "config": cfg.describe(), "ratio": cfg.ratio,
             "peak_macs_per_cycle": cfg.peak_macs_per_cycle, "vs_fix4": cfg.peak_macs_per_cycle / base,
             "vs_fix4_dsp_lut": cfg.peak_macs_per_cycle / base_dl,
             "estimate": est, "budget": avail}
        out = Path("build/compare") / a.board / name
        if a.build:
            from rmsmp.boards.build import build_bitstream
            t = time.perf_counter()
            try:
                build_bitstream(a.board, cfg, out_dir=out)
            except Exception as e:          # a failed build is a result too: report it
                r["build_error"] = str(e)[:500]
            r["build_s"] = time.perf_counter() - t
        if (out / "report.json").exists():
            rep = json.loads((out / "report.json").read_text())
            if rep.get("config_hash") == cfg.config_hash:
                r["built"] = {k: rep[k] for k in ("resources", "fmax_mhz", "target_mhz", "timing_met", "build_s")}
        if a.sim:
            r["resnet18"] = simulate(cfg, DESIGNS[name][1] or cfg.ratio, a.board if a.memory == "sdram" else None)
        rows[name] = r
        print(json.dumps({k: v for k, v in r.items() if k != "budget"}, default=str)[:600], flush=True)
    print(f"\n# {spec.name}: whole designs sized by AcceleratorConfig.for_board "
          f"(budget beside the board top: {', '.join(f'{k} {v:,}' for k, v in avail.items())})\n")
    print("| design | array | peak MACs/cycle | vs fix4 DSP-only | vs fix4 DSP + LUT | est. LUT / DSP / BRAM | "
          "routed LUT / DSP / BRAM | Fmax MHz | GMAC/s at Fmax | ResNet-18 cycles/image | utilization | "
          "images/s at Fmax |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows.values():
        est, b, sim = r["estimate"], r.get("built"), r.get("resnet18")
        fmax = b["fmax_mhz"] if b else None
        cells = [r["design"], r["config"].split(",")[0], str(r["peak_macs_per_cycle"]), f"{r['vs_fix4']:.2f}×",
                 f"{r['vs_fix4_dsp_lut']:.2f}×",
                 f"{est['LUT']:,} / {est['DSP']} / {est['BRAM']}",
                 " / ".join(f"{b['resources'][k]['used']:,}" for k in ("LUT", "DSP", "BRAM")) if b else "–",
                 f"{fmax:.1f}" if fmax else "–",
                 f"{r['peak_macs_per_cycle'] * fmax / 1e3:.1f}" if fmax else "–",
                 f"{sim['cycles']:,.0f}" if sim else "–", f"{sim['mac_utilization']:.1%}" if sim else "–",
                 f"{fmax * 1e6 / sim['cycles']:.2f}" if sim and fmax else "–"]
        print("| " + " | ".join(cells) + " |")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
