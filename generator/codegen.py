"""Compiler pass: a :class:`~rmsmp.generator.schedule.Schedule` → instructions.

Resident weights load first.  A streamed weight set is loaded right after the first conv
of the set before it when both fit half the buffers (opposite halves: the core overlaps
the load with that conv), else behind a SYNC just before its first use; a use the
schedule found still on chip (``WeightSet.loaded`` false) loads nothing.  Each conv's
descriptor gets its set's buffer bases.
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


def _load_set(pb: ProgramBuilder, cfg, s: WeightSet) -> None:
    for b in s.spec.blobs:
        pb.load(b.buf, b.blob, _half_base(cfg, b.buf, s.half), wbits=b.wbits)


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
            _emit_conv(pb, cfg, sch.sets, op, loaded, first_conv_done)
        else:                                          # pragma: no cover - a new op kind
            raise TypeError(f"unknown op {op!r}")


def _emit_conv(pb, cfg, sets: list, op: Conv, loaded: set, first_conv_done: set) -> None:
    j, low = op.set, op.layer
    if j is not None:
        s = sets[j]
        if j not in loaded:
            if s.loaded:
                pb.sync()
                _load_set(pb, cfg, s)
            loaded.add(j)
        low = replace(low, desc={**low.desc, "w_base": _half_base(cfg, Buffer.WEIGHT0, s.half) + op.w_off,
                                 "p_base": _half_base(cfg, Buffer.PARAM, s.half) + op.p_off})
    pb.conv(low)
    if j is not None and j not in first_conv_done:
        first_conv_done.add(j)
        nxt = j + 1
        if nxt < len(sets) and sets[j].half is not None and sets[nxt].half is not None:
            if sets[nxt].loaded:          # (else it is still in its half)
                _load_set(pb, cfg, sets[nxt])
            loaded.add(nxt)
