"""Compiler pass: how each layer's weights and requantization parameters reach the buffers.

When every conv layer's weights and parameters fit the buffers together they are
*resident*: loaded once, before the first image, each layer at its own base address.
Otherwise each layer streams them in *sets* of output groups (a global pool on the conv
engine: sets of channel blocks sharing its one kernel; a depthwise conv: sets of channel
blocks, each with its own kernel).  A set that fits half of every
buffer is loaded into the half the running set does not use, while that set computes; one
that does not takes the whole buffers and is loaded behind a SYNC.

This pass makes the sets' blobs (their place in the memory image) and, for resident
weights, the loads; :mod:`~rmsmp.generator.schedule` decides when each set is loaded.
A lane group none of whose rows computes a channel of the layer (or of the set's output
groups) gets no blob: its rows are disabled in the parameters, so whatever its buffer holds
is never written out — an all-fix8 edge layer does not move the pot lanes' zeros.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from rmsmp.rtl.isa import Buffer, param_entry_bits, param_slots

from .lower import CompileError, LoweredLayer, group_rows
from .program import ProgramBuilder, blob_words

__all__ = ["BlobLoad", "SetSpec", "WeightSet", "WeightPlan", "plan_weights", "stream_estimate",
           "weights_resident", "set_groups"]


@dataclass(frozen=True)
class BlobLoad:
    """One weight or parameter blob and the buffer it goes to."""

    buf: int                 # a Buffer code
    blob: str                # blob name in the ProgramBuilder
    wbits: int = 0           # DmaDesc.wbits: packed width of fix codes (0: the lane's width)
    base: int = 0            # buffer entry it starts at (resident weights)


@dataclass(frozen=True)
class SetSpec:
    """A set a streamed layer loads: output groups (or channel blocks) ``[lo, hi)``."""

    lo: int
    hi: int
    blobs: tuple             # BlobLoad, one per lane group and one for the parameters
    fits_half: bool          # fits half of every buffer (so the next set can load beside it)
    words: int               # bus words a load of it moves


@dataclass
class WeightSet:
    """One use of a :class:`SetSpec`, in the order the schedule makes them: in ``half`` (0/1,
    or ``None`` for the whole buffers), loaded for this use or (``loaded`` false) still in
    that half from an earlier one (:meth:`~.schedule._LayerScheduler.use_set`)."""

    layer: str
    spec: SetSpec
    half: int | None = None
    loaded: bool = True


@dataclass
class WeightPlan:
    resident: bool
    preload: list = field(default_factory=list)     # BlobLoad of resident weights, in order
    sets: dict = field(default_factory=dict)        # streamed layer -> [SetSpec]

    def set_words(self, layer: str) -> int:
        """Bus words of all of a streamed layer's sets (0 when resident)."""
        return sum(s.words for s in self.sets.get(layer, ()))


def plan_weights(pb: ProgramBuilder, cfg, lowered: dict) -> WeightPlan:
    """Resident weights when every conv fits, else each layer's sets; makes their blobs."""
    convs = [low for low in lowered.values() if low.kind == "conv"]
    if weights_resident(cfg, lowered):
        return WeightPlan(True, preload=_resident_loads(pb, cfg, convs))
    return WeightPlan(False, sets={low.name: _layer_sets(pb, cfg, low) for low in convs})


def _groups_used(cfg, low: LoweredLayer, og_lo: int = 0, og_hi: int | None = None) -> set:
    """Lane groups with a row computing some channel of output groups ``[og_lo, og_hi)``."""
    R = cfg.rows
    rows = {slot % R for slot in low.perm if slot // R >= og_lo and (og_hi is None or slot // R < og_hi)}
    return {scheme for scheme, (r0, n) in group_rows(cfg).items() if any(r0 <= r < r0 + n for r in rows)}


def _resident_loads(pb, cfg, convs) -> list[BlobLoad]:
    """Each layer's weights at the next free entry (setting its descriptor's bases); one
    load per layer and lane group (each packs at its own width), then all parameters."""
    w_next = p_next = 0
    for low in convs:
        low.desc["w_base"], low.desc["p_base"] = w_next, p_next
        w_next += len(low.weights[cfg.lane_groups[0].scheme])
        p_next += len(low.params)
    loads = []
    for k, g in enumerate(cfg.lane_groups):
        for low in convs:
            if low.perm and g.scheme not in _groups_used(cfg, low):
                continue
            wbits, width, words = low.packed[g.scheme]
            blob = pb.blob(f"{low.name}.w_{g.scheme}", words, width, weights=k)
            loads.append(BlobLoad(Buffer.WEIGHT0 + k, blob, wbits, low.desc["w_base"]))
    loads.append(BlobLoad(Buffer.PARAM, pb.param_blob("params", [p for low in convs for p in low.params])))
    return loads


def _make_set(pb, cfg, low: LoweredLayer, tag, w: tuple, p: tuple, ogs=None) -> tuple:
    """Blobs of one set: weight entries ``w = (w0, w1)`` of every lane group with a row in
    use in output groups ``ogs = (lo, hi)`` (``None``: every group), params ``p``."""
    used = _groups_used(cfg, low, *ogs) if ogs is not None and low.perm else None
    blobs = []
    for k, g in enumerate(cfg.lane_groups):
        if used is not None and g.scheme not in used:
            continue
        wbits, width, words = low.packed[g.scheme]
        blob = pb.blob(f"{low.name}.{tag}.w_{g.scheme}", words[w[0]:w[1]], width, weights=k)
        blobs.append(BlobLoad(Buffer.WEIGHT0 + k, blob, wbits))
    blobs.append(BlobLoad(Buffer.PARAM, pb.param_blob(f"{low.name}.{tag}.p", low.params[p[0]:p[1]])))
    return tuple(blobs)


def _layer_sets(pb, cfg, low: LoweredLayer) -> list[SetSpec]:
    """A streamed layer's sets: as many output groups (channel blocks) as fit half of every
    buffer — or, when one does not, all of them — in equal sets (those overlap best)."""
    og_n = low.desc["out_groups"]
    per_og = len(low.weights[cfg.lane_groups[0].scheme]) // og_n
    if per_og > cfg.weight_depth and not low.block_w:
        raise CompileError(f"layer {low.name!r}: one output group needs {per_og} weight entries, the "
                           f"buffers hold {cfg.weight_depth} (input-channel tiling is not implemented)")
    out = []

    def add(lo, hi, w, p, half, ogs=None):
        blobs = _make_set(pb, cfg, low, lo, w, p, ogs)
        out.append(SetSpec(lo, hi, blobs, half, sum(pb.blob_words(b.blob) for b in blobs)))

    if low.pool_blocks and not low.block_w:
        # a pool on the conv engine: every set holds its one kernel and whole blocks' parameters
        if og_n * per_og > cfg.weight_depth or og_n > cfg.acc_depth:
            raise CompileError(f"layer {low.name!r}: the average pool's kernel needs {og_n * per_og} "
                               f"weight and {og_n} parameter entries, the buffers hold "
                               f"{cfg.weight_depth} and {cfg.acc_depth}")
        half = og_n * per_og <= cfg.weight_depth // 2 and og_n <= cfg.acc_depth // 2
        nb = low.pool_blocks
        step = _equal_step(nb, max(1, min(nb, (cfg.acc_depth // 2 if half else cfg.acc_depth) // og_n)))
        for b0 in range(0, nb, step):
            b1 = min(nb, b0 + step)
            add(b0, b1, (0, og_n * per_og), (b0 * og_n, b1 * og_n), half)
        return out
    # sets of whole units, each with its own weights and parameters: an output group, or (a
    # depthwise conv) a channel block's kernel and its out_groups parameter words
    if low.block_w:
        n, wu, gu = low.pool_blocks, low.block_w, og_n
        if wu > cfg.weight_depth or gu > cfg.acc_depth:
            raise CompileError(f"layer {low.name!r}: a channel block needs {wu} weight and {gu} parameter "
                               f"entries, the buffers hold {cfg.weight_depth} and {cfg.acc_depth}")
    else:
        n, wu, gu = og_n, per_og, 1
    spans, half = _unit_spans(cfg, n, wu, gu, [(lo, hi) for lo, hi, *_ in low.parts])
    for u0, u1 in spans:
        add(u0, u1, (u0 * wu, u1 * wu), (u0 * gu, u1 * gu), half, (u0 * gu, u1 * gu))
    return out


def set_groups(cfg, low: LoweredLayer) -> int:
    """Output groups a set of conv ``low`` holds when it streams (:func:`_unit_spans`)."""
    per_og = len(low.weights[cfg.lane_groups[0].scheme]) // low.desc["out_groups"]
    half = per_og <= cfg.weight_depth // 2 and 1 <= cfg.acc_depth // 2
    return max(1, min((cfg.weight_depth // 2 if half else cfg.weight_depth) // per_og,
                      cfg.acc_depth // 2 if half else cfg.acc_depth))


def _unit_spans(cfg, n: int, wu: int, gu: int, parts=()) -> tuple[list, bool]:
    """Sets of ``n`` units of ``wu`` weight and ``gu`` parameter entries: ``([(u0, u1)], half)``,
    as many units a set as fit half of every buffer (``half``) or, when one does not, all
    of them, in equal sets within each of ``parts`` (unit ranges; default: all ``n``)."""
    half = wu <= cfg.weight_depth // 2 and gu <= cfg.acc_depth // 2
    cap_w = cfg.weight_depth // 2 if half else cfg.weight_depth
    cap_p = cfg.acc_depth // 2 if half else cfg.acc_depth
    spans = []
    for a, b in parts or [(0, n)]:
        step = _equal_step(b - a, max(1, min(b - a, cap_w // wu, cap_p // gu)))
        spans += [(u0, min(b, u0 + step)) for u0 in range(a, b, step)]
    return spans, half


def stream_estimate(cfg, low: LoweredLayer) -> tuple[int, int]:
    """(sets, bus words of all of them) of a conv streamed in sets of output groups — what
    :func:`plan_weights` makes of it, without making blobs (the words counted for the whole
    layer, not set by set, and every lane group with a row in use anywhere in it)."""
    og_n = low.desc["out_groups"]
    per_og = len(low.weights[cfg.lane_groups[0].scheme]) // og_n
    spans, _ = _unit_spans(cfg, og_n, per_og, 1, [(lo, hi) for lo, hi, *_ in low.parts])
    used = _groups_used(cfg, low) if low.perm else {g.scheme for g in cfg.lane_groups}
    words = sum(blob_words(cfg, len(low.packed[g.scheme][2]), low.packed[g.scheme][1], k)
                for k, g in enumerate(cfg.lane_groups) if g.scheme in used)
    words += blob_words(cfg, len(low.params) * param_slots(cfg.rows),
                        param_entry_bits(cfg.acc_bits, cfg.mult_bits, cfg.shift_bits, cfg.rows))
    return len(spans), words


def weights_resident(cfg, lowered: dict) -> bool:
    """Whether every conv layer's weights and parameters fit the buffers together."""
    convs = [low for low in lowered.values() if low.kind == "conv"]
    g0 = cfg.lane_groups[0].scheme
    return (sum(len(low.weights[g0]) for low in convs) <= cfg.weight_depth
            and sum(len(low.params) for low in convs) <= cfg.acc_depth)


def _equal_step(n: int, step: int) -> int:
    """The step that splits ``n`` into as few sets as ``step`` does, of equal size."""
    return math.ceil(n / math.ceil(n / step))
