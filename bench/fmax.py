"""Routed Fmax of board designs against a target clock, and where the clock goes.

    python bench/fmax.py [--board ulx3s-85f] [--clock-mhz 100] [--design small] [--design for_board]
                         [--pnr-opts "--router router1"]

Builds each design with the open toolchain (``rmsmp build``'s path, nextpnr allowed to
finish when timing fails so the report exists) at ``--clock-mhz`` and prints, per design:
MACs/cycle, LUTs, routed Fmax against the target, the build time and nextpnr's worst path
by unit (``report.json``'s ``critical_paths``).  Designs:

* ``small``: ``for_board``'s configuration with 2 pot4 + 2 fix8 rows (64 MACs/cycle with two
  pixel lanes) — the control, vector, memory and link logic of the full core around a
  small array; a build takes about 6 minutes, so it is the loop to close timing in;
* ``for_board``: ``AcceleratorConfig.for_board(board, clock_hz=…)``, what users get (an
  hour or more on the ULX3S).

Each build goes to ``<out>/<design>-<MHz>`` and keeps its ``report.json``.
"""
import argparse
import time
from pathlib import Path

from rmsmp.boards.build import build_bitstream
from rmsmp.generator.config import AcceleratorConfig


def design(name: str, board: str, clock_hz: int) -> AcceleratorConfig:
    cfg = AcceleratorConfig.for_board(board, clock_hz=clock_hz)
    if name == "small":
        d = cfg.to_dict()
        d["lane_groups"] = [[g.scheme, min(g.rows, 2)] for g in cfg.lane_groups]
        cfg = AcceleratorConfig.from_dict(d)
    elif name != "for_board":
        raise SystemExit(f"unknown design {name!r}: small | for_board")
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--board", default="ulx3s-85f")
    ap.add_argument("--clock-mhz", type=float, default=100.0)
    ap.add_argument("--design", action="append", help="small | for_board (default: small)")
    ap.add_argument("--pnr-opts", default="", help="extra nextpnr options, e.g. '--router router1'")
    ap.add_argument("-o", "--out", default="build/fmax")
    a = ap.parse_args()
    clock = round(a.clock_mhz * 1e6)
    rows = []
    for name in a.design or ["small"]:
        cfg = design(name, a.board, clock)
        out = Path(a.out) / f"{name}-{a.clock_mhz:g}"
        t = time.perf_counter()
        r = build_bitstream(a.board, cfg, out_dir=out, allow_timing_fail=True, pnr_opts=a.pnr_opts.split())
        crit = r["critical_paths"][0] if r["critical_paths"] else None
        where = (f"{crit['from_cell']} → {crit['to_cell']} ({crit['logic_ns']:.1f} ns logic, "
                 f"{crit['routing_ns']:.1f} ns routing)") if crit else "-"
        rows.append(f"| {name} | {cfg.peak_macs_per_cycle} | {r['resources']['LUT']['used']:,} | "
                    f"{r['target_mhz']:g} | {r['fmax_mhz']:.1f} | {'met' if r['timing_met'] else 'not met'} | "
                    f"{time.perf_counter() - t:.0f} s | {where} |")
        print(rows[-1], flush=True)
    print(f"\n{a.board}, target {a.clock_mhz:g} MHz\n")
    print("| design | MACs/cycle | LUTs | target MHz | routed Fmax MHz | timing | build | worst path |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
