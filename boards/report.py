"""The report of a build: resources used against the device, Fmax against the target clock,
peak MACs; a design that does not fit fails naming the overused resources."""
from __future__ import annotations

import re

from rmsmp.generator.catalog import BoardError

__all__ = ["parse_utilization", "BuildReport", "overuse_error", "critical_paths", "make_report", "attempts_text"]


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
        others = [(k, v) for k, v in r.get("clocks", {}).items()
                  if "constraint" in v and abs(v["achieved"] - f) > 1e-9]
        if others:                      # e.g. the SDRAM controller's own clock
            lines.append("Other clocks: " + "; ".join(
                f"{k} {v['achieved']:.1f} MHz against {v['constraint']:g} MHz"
                f" ({'met' if v['achieved'] >= v['constraint'] else 'NOT met'})" for k, v in others) + ".")
        if r.get("flash"):
            fl = r["flash"]
            lines.append(f"Flash image {fl['image']}: the bitstream ({fl['bitstream_bytes']:,} bytes) at 0, the "
                         f"program {fl['program_fingerprint']} ({fl['program_bytes']:,} bytes, {fl['program_image']}) "
                         f"at {fl['program_offset']:#x}; the board boots it in ~{fl['boot_s']:.2f} s.")
        if r.get("attempts"):
            lines.append(f"Placement seed {r['seed']}; seeds tried: {attempts_text(r['attempts'])}.")
        for c in r.get("critical_paths", [])[:3]:
            lines.append(f"Critical path ({c['clocks']}): {c['delay_ns']:.2f} ns ({c['logic_ns']:.2f} logic, "
                         f"{c['routing_ns']:.2f} routing) from {c['from_cell']} to {c['to_cell']}, "
                         f"through {' → '.join(c['units'])}.")
        return "\n".join(lines) + "\n"


def _worst_text(attempt) -> str:
    w = attempt.get("worst_path")
    return f" (worst path {w['delay_ns']:.1f} ns, {w['from_cell']} -> {w['to_cell']})" if w else ""


def attempts_text(attempts) -> str:
    """What came of each placement seed a build tried (``BuildReport["attempts"]``)."""
    return "; ".join(f"seed {a['seed']}: " + (f"routed, Fmax {a['fmax_mhz']:.1f} MHz{_worst_text(a)}"
                                              if a["routed"] else
                                              f"did not route (overuse {a['overuse_min']:,} at iteration "
                                              f"{a['overuse_min_iter']}, stopped at {a['stopped_iter']})")
                     for a in attempts)


def overuse_error(spec, cfg, log: str) -> BoardError:
    util = parse_utilization(log)
    over = [f"{c} {u:,}/{a:,} ({u / a:.0%})" for c, (u, a) in util.items() if a and u > a]
    lines = ", ".join(f"{c} {u:,}/{a:,}" for c, (u, a) in util.items() if u)
    return BoardError(f"the design does not fit {spec.name} ({spec.device}): "
                      f"{'; '.join(over) or 'placement failed'} — utilization: {lines}. "
                      f"Use a smaller configuration (AcceleratorConfig.for_board('{spec.name}', ratio)).")


def _unit(cell: str) -> str:
    """The design unit of a nextpnr cell: its hierarchical name up to the cell's own part
    (``top.core.engine.vec.busy_TRELLIS_FF_Q`` → ``core.engine.vec``)."""
    parts = cell.split(".")
    path = [q for q in parts[:-1] if q != "top"] if len(parts) > 1 else []
    return ".".join(path) or "(board top)"


def critical_paths(rep: dict) -> list:
    """nextpnr's worst path of each clock pair (its report gives one per pair), summarized by
    unit: where it starts and ends, the units it crosses in order, and its delay split into
    logic and routing (ns), worst first."""
    out = []
    for cp in rep.get("critical_paths", []):
        steps = cp.get("path", [])
        if not steps:
            continue
        units = []
        for st in steps:
            if "." not in st["to"]["cell"]:          # a cell nextpnr made (a carry chain's split)
                continue
            u = _unit(st["to"]["cell"])
            if not units or units[-1] != u:
                units.append(u)
        logic = sum(st["delay"] for st in steps if st["type"] != "routing")
        routing = sum(st["delay"] for st in steps if st["type"] == "routing")
        out.append({"from": _unit(steps[0]["from"]["cell"]), "to": _unit(steps[-1]["to"]["cell"]),
                    "from_cell": steps[0]["from"]["cell"], "to_cell": steps[-1]["to"]["cell"],
                    "clocks": f"{cp.get('from', '?')} -> {cp.get('to', '?')}", "units": units,
                    "delay_ns": round(logic + routing, 2), "logic_ns": round(logic, 2),
                    "routing_ns": round(routing, 2)})
    return sorted(out, key=lambda c: -c["delay_ns"])


def make_report(spec, cfg, rep, seconds, out, name: str) -> BuildReport:
    util = rep.get("utilization", {})
    res = {}
    for kind, cell in spec.budget.cells.items():      # (not ``name``: the design's file name)
        u = util.get(cell, {"used": 0, "available": spec.budget.as_dict()[kind]})
        res[kind] = {"cell": cell, "used": u["used"], "available": u["available"]}
    fmax = rep.get("fmax", {})
    # the core's clock: the PLL output (the only constrained clock besides the input pin) —
    # of the PLL's outputs the one constrained at the target (the other: the SDRAM's own clock).
    # The target is the design's clock (``cfg``'s), whatever the board's default
    target = cfg.clock_hz / 1e6
    clocks = {k: v for k, v in fmax.items() if "clk" in k.lower()}
    core = [v for k, v in clocks.items() if "clocking" in k or "pll" in k.lower()] or list(clocks.values())
    core = [v for v in core if abs(v.get("constraint", target) - target) <= 0.01 * target] or core
    achieved = min(v["achieved"] for v in core) if core else 0.0
    # met: the core's clock, and every other clock its own constraint
    others_met = all(v["achieved"] >= v["constraint"] for v in clocks.values() if "constraint" in v)
    bit = next((p for p in (out / f"{name}.bit", out / f"{name}.bin") if p.exists()), None)
    return BuildReport(board=spec.name, device=spec.device, config=cfg.describe(), config_hash=cfg.config_hash,
                       resources=res, fmax_mhz=achieved, target_mhz=target, timing_met=achieved >= target
                       and others_met,
                       clocks=dict(fmax),
                       peak_macs_per_cycle=cfg.peak_macs_per_cycle,
                       peak_gmacs_at_target=cfg.peak_macs_per_cycle * cfg.clock_hz / 1e9,
                       peak_gmacs_at_fmax=cfg.peak_macs_per_cycle * achieved / 1e3,
                       build_s=seconds, bitstream=str(bit) if bit else None,
                       critical_paths=critical_paths(rep))
