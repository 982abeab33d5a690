"""Compiler pass: a :class:`~rmsmp.generator.schedule.Schedule` → instructions.

Resident weights load first.  A streamed weight set loads while the set before it computes
when both fit half the buffers (opposite halves), else behind a SYNC just before its first
use; a use the schedule found still on chip (``WeightSet.loaded`` false) loads nothing.
The load is spread over the convs of the set before — a piece after each (its parameters
with the first), as large as that conv's share of the set's work (output rows × groups) —
so the activation transfers those convs' bands need, which the core issues in order behind
it, never wait for a whole set: a batch's part runs a set over every image's bands, and
its next set's 22 k words (layer4 on the ULX3S) held each part's second band back until
they were in; equal pieces still made the short last band of each image (one output row
of seven) wait for its piece.  Each conv's descriptor gets its set's buffer bases.
"""
from __future__ import annotations

from dataclasses import replace

from rmsmp.rtl.isa import Buffer

from .program import ProgramBuilder
from .schedule import Conv, Load, Schedule, Stamp, Store, Vec
from .weight_sets import BlobLoad, WeightPlan, WeightSet

__all__ = ["emit_program"]


def _half_base(cfg, buf: int, half: int | None) -> int:
    if half is None:
        return 0
    return (cfg.acc_depth if buf == Buffer.PARAM else cfg.weight_depth) // 2 * half


def _set_pieces(pb: ProgramBuilder, cfg, s: WeightSet, shares: list) -> list[list]:
    """Set ``s``'s load in ``len(shares)`` pieces (lists of LOAD arguments): its parameters
    in the first, each weight blob cut in proportion to ``shares``
    (:meth:`ProgramBuilder.blob_chunks`)."""
    pieces = [[] for _ in shares]
    for b in s.spec.blobs:
        base = _half_base(cfg, b.buf, s.half)
        if b.buf == Buffer.PARAM or len(shares) == 1:
            pieces[0].append(((b.buf, b.blob, base), {"wbits": b.wbits}))
            continue
        for k, (e0, off, count) in enumerate(pb.blob_chunks(b.blob, shares)):
            if count:
                pieces[k].append(((b.buf, b.blob, base + e0), {"offset": off, "count": count, "wbits": b.wbits}))
    return pieces


def _conv_share(op: Conv) -> int:
    """How much of its set's work a conv op is (its output rows times output groups): the
    share of the next set's load issued beside it."""
    d = op.layer.desc
    return max(1, d.get("out_h", 1) * d.get("out_groups", 1))


def _load_blob(pb: ProgramBuilder, b: BlobLoad) -> None:
    pb.load(b.buf, b.blob, b.base, wbits=b.wbits)


def emit_program(pb: ProgramBuilder, cfg, weights: WeightPlan, sch: Schedule, n_stamps: int) -> None:
    """Append the whole program's instructions to ``pb`` (a trace region of ``n_stamps + 1``
    stamps receives the core's counters before the first layer and after each)."""
    for b in weights.preload:
        _load_blob(pb, b)
    pb.trace("trace", n_stamps + 1)
    pb.stamp("trace", 0)
    loaded, first_conv_done = set(), set()
    convs: dict = {}                     # set index -> the shares of its convs, in order
    for op in sch.ops:
        if isinstance(op, Conv) and op.set is not None:
            convs.setdefault(op.set, []).append(_conv_share(op))
    pending: dict = {}                   # set index -> pieces of its load still to emit
    for op in sch.ops:
        if isinstance(op, Load):
            pb.load(Buffer.ACT, op.ref, op.buf_addr, offset=op.offset, count=op.count, rows=op.rows, nib=op.nib,
                    blocks=op.blocks)
        elif isinstance(op, Store):
            pb.store_to(op.ref, op.buf_addr, op.count, offset=op.offset, rows=op.rows, nib=op.nib,
                        blocks=op.blocks)
        elif isinstance(op, Stamp):
            pb.stamp("trace", op.index)
        elif isinstance(op, Vec):
            pb.vec(op.layer)
        elif isinstance(op, Conv):
            _emit_conv(pb, cfg, sch.sets, op, loaded, first_conv_done, convs, pending)
        else:                                          # pragma: no cover - a new op kind
            raise TypeError(f"unknown op {op!r}")


def _emit_pieces(pb: ProgramBuilder, pieces: list, n: int | None = None) -> None:
    """Emit the first ``n`` of ``pieces`` (default: all), taking them off the list."""
    for _ in range(len(pieces) if n is None else min(n, len(pieces))):
        for args, kw in pieces.pop(0):
            pb.load(*args, **kw)


def _emit_conv(pb, cfg, sets: list, op: Conv, loaded: set, first_conv_done: set, convs: dict,
               pending: dict) -> None:
    j, low = op.set, op.layer
    if j is not None:
        s = sets[j]
        _emit_pieces(pb, pending.pop(j, []))                 # what of its load is not out yet
        if j not in loaded:
            if s.loaded:
                pb.sync()
                _emit_pieces(pb, _set_pieces(pb, cfg, s, [1]))
            loaded.add(j)
        low = replace(low, desc={**low.desc, "w_base": _half_base(cfg, Buffer.WEIGHT0, s.half) + op.w_off,
                                 "p_base": _half_base(cfg, Buffer.PARAM, s.half) + op.p_off})
    pb.conv(low)
    if j is None:
        return
    if j not in first_conv_done:
        first_conv_done.add(j)
        nxt = j + 1
        if nxt < len(sets) and sets[j].half is not None and sets[nxt].half is not None:
            if sets[nxt].loaded:          # (else it is still in its half)
                pending[nxt] = _set_pieces(pb, cfg, sets[nxt], convs[j])
            loaded.add(nxt)
    if j + 1 in pending:                  # the next piece of the next set, after each conv
        _emit_pieces(pb, pending[j + 1], 1)
