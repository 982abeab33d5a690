"""Bitstreams for the supported boards with the open toolchain (YoWASP yosys + nextpnr +
ecppack/icepack), and the utilization/timing report of each build.

``rmsmp build --board ulx3s-85f [--config cfg.json] [--program net.prog]`` (``make bitstream
BOARD=… [CONFIG=…] [PROGRAM=…]``) runs :func:`build_bitstream`: the design
(:mod:`~rmsmp.boards.design`), the tools (:mod:`~rmsmp.boards.toolchain`), the report
(:mod:`~rmsmp.boards.report`: ``report.json`` and ``report.md`` in the build directory).
A ``program`` (``rmsmp compile``) goes into a flash image (``flash.bin``: the bitstream and
past it the program, which the board copies into its memory after configuration —
:mod:`~rmsmp.boards.flash`), or with the block-RAM memory (``memory="bram"``) into the
on-chip RAM's initial contents.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from rmsmp.generator.catalog import BoardError, board
from rmsmp.generator.config import AcceleratorConfig
from rmsmp.generator.lower import CompileError

from .design import BoardDesign
from .flash import boot_image, boot_seconds, flash_image
from .pll import PllError
from .report import BuildReport, attempts_text, make_report, overuse_error, parse_utilization
from .toolchain import (
    NAME,
    ROUTE_PATIENCE,
    RouteStalled,
    abc9_crashed,
    plain_abc_after_luts,
    pnr_defaults,
    run_build,
    toolchain_env,
)

__all__ = ["build_bitstream"]


def build_bitstream(board_name: str, cfg: AcceleratorConfig | None = None, *, out_dir=None, program=None,
                    quiet: bool = False, synth_opts=(), pnr_opts=(), memory: str | None = None,
                    allow_timing_fail: bool = False, flash_boot: bool | None = None,
                    route_patience: int = ROUTE_PATIENCE, seeds=None) -> BuildReport:
    """Build the bitstream of ``cfg`` (default: ``AcceleratorConfig.for_board``) for
    ``board_name`` in ``out_dir``; ``program`` (a :class:`Program`) is baked into the
    on-chip memory; ``memory`` is the backend ("sdram", "spram" or "bram"; default: "bram" with a
    baked program, else the board's default); ``synth_opts`` are extra options of yosys'
    ``synth_<family>``, ``pnr_opts`` of nextpnr (ECP5 default: ``--placer static --router router2``).
    Returns the report (also written as report.json/report.md).  A design that routes but
    misses its clock gets its report written, then :class:`BoardError` naming the Fmax and
    the worst path (``allow_timing_fail``: the report is returned, ``timing_met`` false).  A
    design whose routing stalls is stopped with a :class:`BoardError` saying so
    (``route_patience``: router2 iterations without progress; 0: never stopped).  ``seeds``:
    nextpnr placement seeds to try in turn on the one synthesized netlist until a placement
    routes and meets the clock (the ULX3S's large cores route on some placements and not on
    others; default: the board's ``seeds``); the report's ``attempts`` says what came of each."""
    spec = board(board_name)
    if program is not None and memory is None and not spec.flash_offset:
        memory = "bram"                               # no flash to boot from: baked in
    init = program.image if program is not None and memory == "bram" else ()
    # the backend, and a bad image/backend refused, before anything is built
    memory, mem_words = BoardDesign.check(spec, init=init, memory=memory)
    if cfg is None:
        cfg = (AcceleratorConfig.from_dict(program.config) if program is not None and program.config
               else AcceleratorConfig.for_board(spec.name, memory=memory, flash_boot=flash_boot))
    # the build runs at the config's clock (for_board's default: the board's target): the PLL,
    # the host link's divisor and the SDRAM's timings follow it
    spec = replace(spec, clock_hz=cfg.clock_hz)
    try:
        if spec.clock_hz != spec.clk_in_hz or spec.sdram_own_clock(memory):   # (else: the oscillator)
            BoardDesign.pll_for(spec, memory)
        spec.link_baud()
    except (PllError, BoardError) as e:
        raise BoardError(f"{spec.name} cannot run at {cfg.clock_hz / 1e6:g} MHz: {e}") from None
    if program is not None and program.config_hash != cfg.config_hash:
        raise BoardError(f"program compiled for accelerator {program.config_hash:08x}, the build is "
                         f"{cfg.config_hash:08x} ({cfg.describe()}); recompile for this config")
    boot = None
    if program is not None and not init:              # a flash image: refused before the build if it cannot fit
        if flash_boot is False:
            raise BoardError("a program to boot from the flash needs the flash boot unit (flash_boot=False given)")
        flash_boot = spec.boots_from_flash(True)
        try:
            boot = boot_image(program, mem_words)
        except CompileError as e:
            raise BoardError(f"{spec.name}'s {memory} cannot boot this program: {e}") from None
        flash_image(spec, b"", boot)
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
    seed_given = any(o == "--seed" or o.startswith("--seed=") for o in pnr_opts)
    seeds = list(seeds if seeds is not None else () if seed_given else spec.seeds)
    if seeds and seed_given:
        raise BoardError("give the placement seed either in the nextpnr options (--seed N) or as seeds, not both")
    design = lambda: BoardDesign(spec, cfg, init=init, memory=memory, flash_boot=flash_boot)  # noqa: E731
    attempts = []                                     # (seed, what came of it) of each placement tried
    for k, seed in enumerate(seeds or [None]):
        last = k + 1 == max(1, len(seeds))
        opts = [*pnr_opts, "--seed", str(seed)] if seed is not None else pnr_opts
        if seed is not None and not quiet:
            print(f"placement seed {seed} ({k + 1} of {len(seeds)})" + (": the netlist synthesized above" if k else ""),
                  flush=True)
        if k:                                         # the previous seed's log, before this run writes over it
            _keep_log(out, seeds[k - 1])
        t_try = time.perf_counter()
        try:
            report = _place_and_report(spec, cfg, design, out, env, synth_opts, opts, route_patience,
                                       reuse_netlist=k > 0, quiet=quiet, t0=t0, flash_boot=flash_boot, memory=memory)
        except RouteStalled as e:
            w = e.watch
            attempts.append({"seed": seed, "routed": False, "overuse_min": w.best, "overuse_min_iter": w.best_iter,
                             "stopped_iter": w.last_iter, "s": round(time.perf_counter() - t_try)})
            if last:
                if len(attempts) > 1:
                    raise RouteStalled(f"the {spec.name} design did not route with any of the placement seeds "
                                       f"{', '.join(map(str, seeds))}: {attempts_text(attempts)}. Try other seeds, a "
                                       f"lower clock, or a smaller config (log of the last: {out / f'{NAME}.tim'})",
                                       w) from None
                raise
            if not quiet:
                print(f"seed {seed} did not route ({w.describe()}); next seed", flush=True)
            continue
        worst = report["critical_paths"][0] if report["critical_paths"] else None
        attempts.append({"seed": seed, "routed": True, "fmax_mhz": round(report["fmax_mhz"], 2),
                         "timing_met": report["timing_met"], "s": round(time.perf_counter() - t_try)})
        if worst:                                     # (the next seed's log replaces this one's)
            attempts[-1]["worst_path"] = {k: worst[k] for k in ("from_cell", "to_cell", "delay_ns")}
        if report["timing_met"] or allow_timing_fail or last:
            break
        if not quiet:
            print(f"seed {seed} routed at {report['fmax_mhz']:.1f} MHz, short of {report['target_mhz']:g}; next seed",
                  flush=True)
    if seeds:
        report.update(attempts=attempts, seed=attempts[-1]["seed"])
    if boot is not None:
        bitstream = Path(report["bitstream"]).read_bytes()
        (out / "program.bin").write_bytes(boot)
        (out / "flash.bin").write_bytes(flash_image(spec, bitstream, boot))
        report.update(flash={"image": str(out / "flash.bin"), "program_image": str(out / "program.bin"),
                             "bitstream_bytes": len(bitstream), "program_offset": spec.flash_offset,
                             "program_bytes": len(boot), "program_fingerprint": f"{program.fingerprint():016x}",
                             "boot_s": round(boot_seconds(program, spec, boot), 3)})
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(report.markdown())
    if not report["timing_met"] and not allow_timing_fail:
        worst = report["critical_paths"][0] if report["critical_paths"] else None
        where = (f"; worst path {worst['delay_ns']:.1f} ns from {worst['from_cell']} to {worst['to_cell']}"
                 if worst else "")
        tried = f"; seeds tried: {attempts_text(attempts)}" if len(attempts) > 1 else ""
        raise BoardError(f"the {spec.name} design routed but misses its clock: Fmax {report['fmax_mhz']:.1f} MHz "
                         f"< {report['target_mhz']:g} MHz target{where}{tried} (report: {out / 'report.md'}); build "
                         f"at a lower clock (--clock-mhz / CLOCK_MHZ=) or with a smaller config")
    return report


def _keep_log(out: Path, seed) -> None:
    """Copy a placement seed's nextpnr log to ``<name>.seed<N>.tim`` (the last seed's stays
    where the report reads it)."""
    tim = out / f"{NAME}.tim"
    if tim.exists():
        (out / f"{NAME}.seed{seed}.tim").write_bytes(tim.read_bytes())


def _place_and_report(spec, cfg, design, out, env, synth_opts, pnr_opts, route_patience, *, reuse_netlist,
                      quiet, t0, flash_boot, memory) -> BuildReport:
    """One run of the tools (``reuse_netlist``: placement and routing only) and its report;
    :class:`BoardError` when the design does not fit or a tool fails, :class:`RouteStalled`
    when the router stalls.  ``synth_opts`` may grow (the plain-ABC fallback): the list is
    updated in place, so a later seed's report names what made its netlist."""
    rc, text = run_build(spec, design, out, env, synth_opts, pnr_opts, route_patience=route_patience,
                         reuse_netlist=reuse_netlist)
    if rc and not reuse_netlist and abc9_crashed(out) and spec.family == "ecp5":
        # yosys 0.70's ABC9 reintegration trips an internal assertion on some designs (the
        # for_board ULX3S core); map the LUTs with plain ABC instead: synth_ecp5 up to its
        # LUT mapping, ``abc -lut 4:7``, then synth_ecp5 from cell mapping on
        if not quiet:
            print("yosys ABC9 mapping failed with an internal error; retrying with plain ABC", flush=True)
        synth_opts += ["-run", ":map_luts"]
        rc, text = run_build(spec, design, out, env, synth_opts, pnr_opts,
                             script_after_synth=plain_abc_after_luts(NAME), route_patience=route_patience)
    tim = (out / f"{NAME}.tim").read_text(errors="replace") if (out / f"{NAME}.tim").exists() else ""
    if rc:
        util = parse_utilization(tim)
        if any(a and u > a for u, a in util.values()) or "Unable to place" in tim:
            err = overuse_error(spec, cfg, tim)
            if spec.boots_from_flash(flash_boot) and not spec.flash_boot_default:
                err = BoardError(f"{err} With the flash boot unit the core must leave it room: size it with "
                                 f"AcceleratorConfig.for_board('{spec.name}', flash_boot=True) (rmsmp config --board "
                                 f"{spec.name} --flash-boot) and compile the program for that config.")
            raise err
        raise BoardError(f"the {spec.name} build failed (exit {rc}); last lines of its logs ({out}):\n"
                         + "\n".join((text + tim).splitlines()[-25:]))
    rep = json.loads((out / f"{NAME}.report.json").read_text())
    report = make_report(spec, cfg, rep, time.perf_counter() - t0, out, NAME)
    report.update(synth_opts=" ".join(synth_opts), pnr_opts=" ".join(pnr_opts), memory=memory,
                  memory_words=spec.memory_words(memory), flash_boot=spec.boots_from_flash(flash_boot))
    return report
