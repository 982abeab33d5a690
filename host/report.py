"""``rmsmp report --html``: one self-contained HTML page of a model, its program, a run and a build.

What the text tables say — per layer the schemes and row counts, weight and activation
bit-widths, weight SQNR; with a run, cycles, MAC utilization and bytes moved; with a board
build, resources and Fmax — with matplotlib plots embedded as PNG (base64), so the page is
one file to mail or attach to CI.

    from rmsmp.host.report import write_report
    write_report("r18.html", qm, program=prog, run=dev.stats, build="build/ulx3s-85f/report.json")
"""
from __future__ import annotations

import base64
import datetime
import html
import io
import json
import math
from collections import Counter
from pathlib import Path

import torch

from .errors import RmsmpError

__all__ = ["write_report", "layer_rows", "weight_sqnr_db"]

SCHEME_COLOURS = {"pot": "#4c72b0", "fix": "#dd8452"}


def weight_sqnr_db(layer) -> float:
    """SQNR of a layer's integer weights × row scales against its float weights, in dB."""
    w = layer.weight.double()
    s = layer.scale.double().reshape(-1, *([1] * (w.dim() - 1)))
    err = float(((layer.qweight.double() * s - w) ** 2).sum())
    sig = float((w ** 2).sum())
    return math.inf if err == 0 else 10 * math.log10(sig / err) if sig > 0 else -math.inf


def layer_rows(qm) -> list[dict]:
    """Per conv/linear layer: rows per scheme, mean weight bits, activation bits, weight SQNR."""
    from .quant.schemes import parse_scheme
    out = []
    for l in qm.compute_layers():
        rows = Counter(l.schemes)
        bits = sum(parse_scheme(s).bits for s in l.schemes) / len(l.schemes)
        out.append({"layer": l.name, "op": l.op, "rows": len(l.schemes), "schemes": dict(sorted(rows.items())),
                    "weight_bits": bits, "in_bits": qm.in_q(l).bits, "out_bits": l.out.bits,
                    "out_log": bool(l.out.is_log), "weights": l.weight.numel(), "sqnr_db": weight_sqnr_db(l)})
    return out


# -- plots ------------------------------------------------------------------------------
def _figure(height: float):
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt.subplots(figsize=(9, height), dpi=96)


def _png(fig) -> str:
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return ('<img alt="plot" src="data:image/png;base64,' + base64.b64encode(buf.getvalue()).decode() + '">')


def _scheme_colour(name: str, shade: int, n: int) -> tuple:
    import matplotlib.colors as mc
    base = mc.to_rgb(SCHEME_COLOURS.get(name.rstrip("0123456789"), "#55a868"))
    f = 0.45 * shade / max(1, n - 1)              # lighter for the lower precisions
    return tuple(c + (1 - c) * f for c in base)


def plot_rows(rows: list[dict]) -> str:
    names = [r["layer"] for r in rows]
    schemes = sorted({s for r in rows for s in r["schemes"]}, key=lambda s: (s.rstrip("0123456789"), -int(
        "".join(ch for ch in s if ch.isdigit()) or 0)))
    fig, ax = _figure(0.28 * len(rows) + 1.2)
    left = [0] * len(rows)
    for s in schemes:
        same = [x for x in schemes if x.rstrip("0123456789") == s.rstrip("0123456789")]
        v = [r["schemes"].get(s, 0) for r in rows]
        ax.barh(names, v, left=left, label=s, color=_scheme_colour(s, same.index(s), len(same)))
        left = [a + b for a, b in zip(left, v)]
    ax.invert_yaxis()
    ax.set_xlabel("rows (output channels)")
    ax.set_title("rows per scheme")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    return _png(fig)


def plot_sqnr(rows: list[dict]) -> str:
    names = [r["layer"] for r in rows]
    fig, ax = _figure(0.28 * len(rows) + 1.2)
    v = [min(r["sqnr_db"], 99.0) for r in rows]
    ax.barh(names, v, color="#8172b3")
    ax2 = ax.twiny()
    ax2.plot([r["weight_bits"] for r in rows], names, "o-", color="#c44e52", ms=3, lw=1)
    ax2.set_xlabel("mean weight bits", color="#c44e52")
    ax2.set_xlim(0, 9)
    ax.invert_yaxis()
    ax.set_xlabel("weight SQNR (dB)")
    ax.tick_params(axis="y", labelsize=7)
    return _png(fig)


def plot_run(layers: list[dict]) -> str:
    names = [r["layer"] for r in layers]
    _figure(0)                                     # (selects the Agg backend)
    import matplotlib.pyplot as plt
    plt.close("all")
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(11, 0.28 * len(layers) + 1.4), dpi=96, sharey=True)
    util = [r["mac_utilization"] for r in layers]
    a1.barh(names, [r["cycles"] for r in layers], color=[plt.cm.viridis(u) for u in util])
    a1.set_xlabel("cycles (colour: MAC utilization)")
    a1.invert_yaxis()
    a1.tick_params(axis="y", labelsize=7)
    a2.barh(names, [100 * u for u in util], color="#55a868")
    a2.set_xlim(0, 100)
    a2.set_xlabel("MAC utilization %")
    a3.barh(names, [r["bytes_moved"] / 1024 for r in layers], color="#937860")
    a3.set_xlabel("KiB moved")
    return _png(fig)


def plot_resources(resources: dict) -> str:
    kinds = list(resources)
    fig, ax = _figure(0.4 * len(kinds) + 1.0)
    pct = [100 * r["used"] / r["available"] if r["available"] else 0 for r in resources.values()]
    ax.barh(kinds, pct, color=["#c44e52" if p > 90 else "#4c72b0" for p in pct])
    for k, (p, r) in enumerate(zip(pct, resources.values())):
        ax.text(min(p, 100) + 1, k, f"{r['used']:,} / {r['available']:,}", va="center", fontsize=8)
    ax.set_xlim(0, 125)
    ax.invert_yaxis()
    ax.set_xlabel("% of the part")
    return _png(fig)


# -- page -------------------------------------------------------------------------------
def _table(head: list[str], rows: list[list]) -> str:
    e = html.escape
    th = "".join(f"<th>{e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _load_json(what: str, src) -> dict:
    if src is None or isinstance(src, dict):
        return src
    p = Path(src)
    if not p.is_file():
        raise RmsmpError(f"{what} {str(src)!r}: no such file")
    try:
        return json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RmsmpError(f"{what} {str(src)!r}: not JSON ({e})") from None


CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:12px}td,th{border:1px solid #ddd;padding:2px 8px;
text-align:right}td:first-child,th:first-child{text-align:left}thead{background:#f3f3f3}
.cards{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #ddd;border-radius:6px;padding:8px 14px}
.card b{display:block;font-size:1.3em}.ok{color:#2a7}.bad{color:#c33}img{max-width:100%}
small{color:#777}"""


def write_report(path, qm, *, program=None, run=None, build=None, title: str | None = None) -> Path:
    """Write the HTML report to ``path`` and return it.

    ``qm``: a QuantizedModel (or a path to one).  ``program``: a Program or path (the config
    it was compiled for and its MACs).  ``run``: a device's ``stats`` dict, or a JSON file of
    one (``rmsmp sim … --stats run.json``).  ``build``: a board build's ``report.json``
    (``make bitstream``) or its dict."""
    from rmsmp.generator.program import Program

    from .quant import QuantizedModel
    if not isinstance(qm, QuantizedModel):
        qm = QuantizedModel.load(qm)
    if program is not None and not isinstance(program, Program):
        program = Program.load(program)
    run = _load_json("--run", run)
    build = _load_json("--build", build)
    if run is not None and "cycles" not in run:
        raise RmsmpError("--run: not a device's stats (no 'cycles'; write one with rmsmp sim … --stats run.json)")
    if build is not None and not {"resources", "fmax_mhz", "target_mhz"} <= set(build):
        raise RmsmpError("--build: not a board build's report.json (no resources / fmax_mhz / target_mhz)")

    e = html.escape
    rows = layer_rows(qm)
    title = title or f"rmsmp report: {qm.meta.get('model', 'model')} ({qm.meta.get('method', 'rmsmp')})"
    n_w = sum(r["weights"] for r in rows)
    bits = sum(r["weight_bits"] * r["weights"] for r in rows) / n_w if n_w else 0.0
    cards = [("conv/linear layers", f"{len(rows)}"), ("weights", f"{n_w:,}"),
             ("bits per weight", f"{bits:.2f}"), ("packed weights", f"{qm.weight_bits() / 8 / 1024:,.1f} KiB"),
             ("realized ratio", ", ".join(f"{k} {v:.3f}" for k, v in qm.realized_ratio.items()))]
    parts = []
    cfg = None
    if program is not None:
        from rmsmp.generator.config import AcceleratorConfig
        cfg = AcceleratorConfig.from_dict(program.config)
        cards.append(("accelerator", cfg.describe()))
    if run is not None and run.get("images"):
        cards += [("cycles / image", f"{run['cycles_per_image']:,.0f}"),
                  ("MAC utilization", f"{run['mac_utilization']:.1%}")]
        if "time_per_image_at_clock_s" in run:
            cards.append(("latency at the clock", f"{run['time_per_image_at_clock_s'] * 1e3:.2f} ms"))
    if build is not None:
        met = build.get("timing_met")
        cards.append(("Fmax / target", f"{build['fmax_mhz']:.1f} / {build['target_mhz']:g} MHz"
                      + (" ✓" if met else " ✗")))
    parts.append('<div class="cards">' + "".join(f'<div class="card">{e(k)}<b>{e(v)}</b></div>' for k, v in cards)
                 + "</div>")

    parts.append("<h2>Model: schemes, bit-widths, weight SQNR</h2>")
    parts.append(plot_rows(rows) + plot_sqnr(rows))
    parts.append(_table(["layer", "op", "rows", "rows per scheme", "mean weight bits", "in bits", "out bits",
                         "weight SQNR dB"],
                        [[r["layer"], r["op"], r["rows"], " ".join(f"{k}:{v}" for k, v in r["schemes"].items()),
                          f"{r['weight_bits']:.2f}", r["in_bits"],
                          f"{r['out_bits']}" + (" log" if r["out_log"] else ""),
                          f"{r['sqnr_db']:.1f}"] for r in rows]))

    if program is not None:
        parts.append("<h2>Program</h2>")
        macs = sum(l.macs for l in program.layers)
        parts.append(f"<p>compiled for <code>{e(cfg.describe())}</code> (config hash "
                     f"<code>{cfg.config_hash:#010x}</code>), peak {cfg.peak_macs_per_cycle} MACs/cycle at "
                     f"{cfg.clock_hz / 1e6:g} MHz; {len(program.image) * 4 / 2**20:.2f} MiB memory image, "
                     f"{macs:,} MACs per batch of {program.io.batch if program.io else 1}.</p>")

    layers = (run or {}).get("layers")
    if run is not None:
        parts.append("<h2>Run: cycles, MAC utilization, bytes moved</h2>")
        keys = [("images", "{:,}"), ("cycles", "{:,}"), ("cycles_per_image", "{:,.0f}"),
                ("mac_utilization", "{:.1%}"), ("time_per_image_at_clock_s", "{:.6f}"),
                ("time_at_clock_s", "{:.6f}"), ("memory_share", "{:.1%}")]
        parts.append(_table(["figure", "value"], [[k, f.format(run[k])] for k, f in keys if k in run]))
        if layers:
            parts.append(plot_run(layers))
            from rmsmp.generator.runtime import busy_shares
            busy = "engine_busy" in layers[0]          # (a pipelined core's STAMP counters)
            parts.append(_table(["layer", "MACs", "cycles", "MAC utilization", "bytes moved"]
                                + (["engine busy", "array beats", "DMA busy", "both idle"] if busy else []),
                                [[r["layer"], f"{r['macs']:,}", f"{r['cycles']:,}", f"{r['mac_utilization']:.1%}",
                                  f"{r['bytes_moved']:,}"] + ([f"{v:.0%}" for v in busy_shares(r)] if busy else [])
                                 for r in layers]))
        else:
            parts.append("<p><small>no per-layer trace in this run (compile with tracing, as "
                         "<code>compile_model</code> does by default for networks)</small></p>")

    if build is not None:
        parts.append(f"<h2>Board build: {e(str(build.get('board', '')))} ({e(str(build.get('device', '')))})</h2>")
        met = build.get("timing_met")
        parts.append(f"<p>Fmax <b>{build['fmax_mhz']:.1f} MHz</b> against a {build['target_mhz']:g} MHz target: "
                     f"<span class=\"{'ok' if met else 'bad'}\">{'met' if met else 'missed'}</span>; "
                     f"config <code>{e(str(build.get('config', '')))}</code>"
                     + (f"; built in {build['build_s']:.0f} s" if "build_s" in build else "") + ".</p>")
        parts.append(plot_resources(build["resources"]))
        parts.append(_table(["resource", "cell", "used", "available", "%"],
                            [[k, r["cell"], f"{r['used']:,}", f"{r['available']:,}",
                              f"{100 * r['used'] / r['available']:.1f}" if r["available"] else "—"]
                             for k, r in build["resources"].items()]))
        paths = build.get("critical_paths") or []
        if paths:
            parts.append("<h3>Worst paths</h3>")
            cols = [k for k in ("from", "to", "delay_ns", "logic_ns", "routing_ns", "clocks") if k in paths[0]]
            parts.append(_table(cols, [[p.get(c, "") for c in cols] for p in paths[:10]]))

    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    page = (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{e(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{e(title)}</h1>"
            f"<p><small>written {stamp} by rmsmp; method {e(str(qm.meta.get('method', '?')))}, "
            f"ratio {e(str(qm.ratio))}</small></p>" + "".join(parts) + "</body></html>")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out


def stats_json(stats: dict) -> str:
    """A device's ``stats`` as JSON (tensors and other numbers made plain)."""
    def plain(v):
        if isinstance(v, torch.Tensor):
            return v.tolist()
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v
    return json.dumps(plain(stats), indent=1)
