"""Bitstreams for the supported boards with the open toolchain (YoWASP yosys + nextpnr +
ecppack/icepack), and the utilization/timing report of each build.

``rmsmp build --board ulx3s-85f [--config cfg.json] [--program net.prog]`` (``make bitstream
BOARD=… [CONFIG=…] [PROGRAM=…]``) runs :func:`build_bitstream`: the design
(:mod:`~rmsmp.boards.design`), the tools (:mod:`~rmsmp.boards.toolchain`), the report
(:mod:`~rmsmp.boards.report`: ``report.json`` and ``report.md`` in the build directory).
A ``program`` (``rmsmp compile``) is baked into the on-chip RAM's initial contents.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from rmsmp.generator.catalog import BoardError, board
from rmsmp.generator.config import AcceleratorConfig

from .design import BoardDesign
from .pll import PllError
from .report import BuildReport, make_report, overuse_error, parse_utilization
from .toolchain import NAME, abc9_crashed, pnr_defaults, run_build, toolchain_env

__all__ = ["build_bitstream"]


def build_bitstream(board_name: str, cfg: AcceleratorConfig | None = None, *, out_dir=None, program=None,
                    quiet: bool = False, synth_opts=(), pnr_opts=(), memory: str | None = None,
                    allow_timing_fail: bool = False) -> BuildReport:
    """Build the bitstream of ``cfg`` (default: ``AcceleratorConfig.for_board``) for
    ``board_name`` in ``out_dir``; ``program`` (a :class:`Program`) is baked into the
    on-chip memory; ``memory`` is the backend ("sdram", "spram" or "bram"; default: "bram" with a
    baked program, else the board's default); ``synth_opts`` are extra options of yosys'
    ``synth_<family>``, ``pnr_opts`` of nextpnr (ECP5 default: ``--placer static --router router2``).
    Returns the report (also written as report.json/report.md).  A design that routes but
    misses its clock gets its report written, then :class:`BoardError` naming the Fmax and
    the worst path (``allow_timing_fail``: the report is returned, ``timing_met`` false)."""
    spec = board(board_name)
    init = program.image if program is not None else ()
    # the backend, and a bad image/backend refused, before anything is built
    memory, _ = BoardDesign.check(spec, init=init, memory=memory)
    if cfg is None:
        cfg = AcceleratorConfig.for_board(spec.name, memory=memory)
    # the build runs at the config's clock (for_board's default: the board's target): the PLL,
    # the host link's divisor and the SDRAM's timings follow it
    spec = replace(spec, clock_hz=cfg.clock_hz)
    try:
        if spec.clock_hz != spec.clk_in_hz:          # (else the oscillator clocks the core)
            BoardDesign.pll_for(spec)
        spec.link_baud()
    except (PllError, BoardError) as e:
        raise BoardError(f"{spec.name} cannot run at {cfg.clock_hz / 1e6:g} MHz: {e}") from None
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
    pnr_opts = pnr_defaults(spec, pnr_opts)
    if "--timing-allow-fail" not in pnr_opts:        # routed but slow: a report, then our error
        pnr_opts = [*pnr_opts, "--timing-allow-fail"]
    design = lambda: BoardDesign(spec, cfg, init=init, memory=memory)  # noqa: E731
    rc, text = run_build(spec, design, out, env, synth_opts, pnr_opts)
    if rc and abc9_crashed(out) and spec.family == "ecp5":
        # yosys 0.70's ABC9 reintegration trips an internal assertion on some designs (the
        # for_board ULX3S core); map the LUTs with plain ABC instead: synth_ecp5 up to its
        # LUT mapping, ``abc -lut 4:7``, then synth_ecp5 from cell mapping on
        if not quiet:
            print("yosys ABC9 mapping failed with an internal error; retrying with plain ABC", flush=True)
        synth_opts += ["-run", ":map_luts"]
        rc, text = run_build(spec, design, out, env, synth_opts, pnr_opts, script_after_synth=(
            f"techmap -map +/lattice/latches_map.v; abc -lut 4:7 -dress; clean; "
            f"synth_ecp5 -run map_cells: -top {NAME}"))
    tim = (out / f"{NAME}.tim").read_text(errors="replace") if (out / f"{NAME}.tim").exists() else ""
    if rc:
        util = parse_utilization(tim)
        if any(a and u > a for u, a in util.values()) or "Unable to place" in tim:
            raise overuse_error(spec, cfg, tim)
        raise BoardError(f"the {spec.name} build failed (exit {rc}); last lines of its logs ({out}):\n"
                         + "\n".join((text + tim).splitlines()[-25:]))
    rep = json.loads((out / f"{NAME}.report.json").read_text())
    report = make_report(spec, cfg, rep, time.perf_counter() - t0, out, NAME)
    report.update(synth_opts=" ".join(synth_opts), pnr_opts=" ".join(pnr_opts), memory=memory,
                  memory_words=spec.memory_words(memory))
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(report.markdown())
    if not report["timing_met"] and not allow_timing_fail:
        worst = report["critical_paths"][0] if report["critical_paths"] else None
        where = (f"; worst path {worst['delay_ns']:.1f} ns from {worst['from_cell']} to {worst['to_cell']}"
                 if worst else "")
        raise BoardError(f"the {spec.name} design routed but misses its clock: Fmax {report['fmax_mhz']:.1f} MHz "
                         f"< {report['target_mhz']:g} MHz target{where} (report: {out / 'report.md'}); build at "
                         f"a lower clock (--clock-mhz / CLOCK_MHZ=) or with a smaller config")
    return report
