"""Lower one conv/linear layer of a ``QuantizedModel`` to engine buffer images + a descriptor.

Output-channel permutation: the rows of each scheme are dealt, in channel order, onto the
array rows of a lane group that can run them — the scheme's own group first, then a wider
one (a fix8 lane multiplies fix4 and pot4 weights exactly, see :func:`can_run`) — using as
few output groups of ``R`` rows as possible.  With RMSMP's fixed ratio every group is full;
otherwise the unused rows are disabled (``en = 0``).  Each row's parameter
word names its output channel, so results land in natural channel order and tensors are
always stored unpermuted (a residual add needs both operands in one order; folding a
per-layer permutation into the next layer could not give that).

Row chains (a core with ``row_chains``): a fixed-point layer the power-of-two lanes cannot
run whole — an all-fix8 edge layer — may also put output channels on pot rows, each weight
split into power-of-two terms (:func:`pot_terms`), term ``j`` of every weight on the ``j``-th
row of a chain of consecutive rows (:class:`Term`); the requantizer sums the chain's rows
and writes the channel once, from the chain's last row.  Exact: the terms sum to the weight.

The ``QuantizedModel`` is read by attribute (``layer.qweight``, ``layer.schemes``,
``qm.requant``, …): ``rmsmp.generator`` does not import ``rmsmp.host``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np
import torch
from amaranth.lib import data

from rmsmp.host.errors import RmsmpError
from rmsmp.host.quant.formats import FormatError, parse_weight_format, requant_multiplier
from rmsmp.host.quant.layer import clip_code, window_out
from rmsmp.rtl.dma import packed_widths
from rmsmp.rtl.isa import (
    ACT_BANKS,
    AVGPOOL_SUM_BITS,
    CH_BITS,
    ConvDesc,
    VecDesc,
    VecKind,
    field_max,
    field_width,
    param_layout,
)

__all__ = ["MAX_KERNEL", "out_bounds", "LoweredLayer", "lower_conv", "lower_depthwise", "lower_vec",
           "lower_avgpool_conv", "CompileError", "can_run", "lanes_for", "fix_bits_for", "pack_words", "group_rows",
           "part_cuts", "Term", "pot_terms"]


class CompileError(RmsmpError):
    """A layer the configuration cannot run; names the layer and the reason."""


#: the largest square kernel the conv engine's descriptor takes
MAX_KERNEL = field_max(ConvDesc, "kernel")


def out_bounds(layer) -> tuple[int, int]:
    """The output clamp of a compute or add layer: ``[lo, hi]`` of its format, ``lo = 0``
    with a fused ReLU, ``hi`` at most the fused clip (ReLU6) in output units."""
    out = layer.out
    clip = clip_code(layer.attrs, out)
    lo = max(out.lo, 0) if layer.attrs.get("relu") else out.lo
    return lo, out.hi if clip is None else min(out.hi, clip)


@dataclass
class LoweredLayer:
    name: str
    desc: dict                       # ConvDesc fields
    weights: dict = field(default_factory=dict)   # scheme -> list of word ints (from w_base)
    packed: dict = field(default_factory=dict)    # scheme -> (DmaDesc.wbits, entry bits, words) in memory
    params: list = field(default_factory=list)    # param words (from p_base)
    perm: list = field(default_factory=list)      # out channel -> og·R + array row computing it
    out_channels_padded: int = 0     # channels of the stored output tensor (a multiple of C)
    macs: int = 0                    # useful MACs of the layer
    beats: int = 0                   # array beats (conv) or buffer taps (vector) issued
    kind: str = "conv"               # "conv" or "vec"
    pool_blocks: int = 0             # a global pool on the conv engine: ``desc`` pools one channel
                                     # block; it runs once per block b, reading input block b, with
                                     # the ``out_groups`` parameter words from p_base + b·out_groups
    lanes: "LaneGeometry | None" = None   # a conv-engine layer's spread over the pixel lanes
    block_w: int = 0                 # with pool_blocks: weight entries of each block's own kernel
                                     # (a depthwise conv: block b's at w_base + b·block_w); 0: the
                                     # blocks share one kernel (a global pool)
    parts: tuple = ()                # output parts ``(og_lo, og_hi, cb_lo, cb_hi)``: output groups
                                     # [og_lo, og_hi) compute exactly the channels of output blocks
                                     # [cb_lo, cb_hi), and their parameter words name channels from
                                     # the part's first block (the part's output is written from
                                     # out_base, then stored, before the next part runs)

    @property
    def desc_bits(self) -> int:
        return ConvDesc.const(self.desc).as_bits()


def lower_conv(qm, layer, cfg, *, in_hw, in_base, out_base, w_base=0, p_base=0, requant=None,
               placement=None, parts: int = 1) -> LoweredLayer:
    """Lower ``layer`` (op ``conv`` or ``linear``) for ``cfg``.

    ``in_hw``: input (H, W); ``in_base``/``out_base``: activation-buffer word addresses;
    ``requant``: per-row {"mult", "shift", "bias"} (default: the model's for ``layer``);
    ``placement``: ``(output groups, {(og, row): channel})`` (default: :func:`place_rows`);
    ``parts``: deal the output channels in that many parts of whole channel blocks — or in
    parts between the given block cuts (:func:`part_cuts`) — each part's rows in output groups
    of its own (:attr:`LoweredLayer.parts`), so the schedule can write and store the output
    a part at a time.
    """
    C = cfg.columns
    if layer.op == "linear":
        k, s, p = 1, 1, 0
        H = W = 1
    elif layer.op == "conv":
        k, s, p = layer.attrs["kernel"], layer.attrs["stride"], layer.attrs["padding"]
        H, W = in_hw
    else:
        raise CompileError(f"layer {layer.name!r}: op {layer.op!r} does not run on the conv engine")
    O, Cin = layer.qweight.shape[0], layer.qweight.shape[1]
    cb = math.ceil(Cin / C)
    OH, OW = window_out(layer.attrs, H, W) if layer.op == "conv" else (1, 1)
    if k > MAX_KERNEL or p > field_max(ConvDesc, "pad"):     # (padding after is implied by the output size)
        raise CompileError(f"layer {layer.name!r}: a {k}×{k} kernel with padding {p} exceeds the engine "
                           f"(kernels up to {MAX_KERNEL}, padding up to {field_max(ConvDesc, 'pad')})")
    bounds = ()
    n_parts = parts if isinstance(parts, int) else len(parts) - 1
    if n_parts > 1:
        if placement is not None or layer.out.bits > 8 or n_parts > math.ceil(O / C):
            raise ValueError(f"layer {layer.name!r}: {n_parts} output parts need a narrow output of at least "
                             f"{n_parts} channel blocks and the layer's own placement")
        placement, bounds = _place_parts(layer, cfg, qm.in_q(layer), parts)
    geo = lane_geometry(cfg, W, OW, k, s, p)
    qw = layer.qweight.reshape(O, Cin, k, k)
    planes = None if placement is not None or n_parts > 1 else _chain_planes(layer, cfg, qw, OH * geo.out_cols)
    chains = {} if planes is None else {"terms": _term_counts(planes), "beats": cb * k * k}
    og_n, row_of = placement or place_rows(layer, cfg, qm.in_q(layer), **chains)
    perm = [0] * O
    for (og, row), ch in row_of.items():
        if not isinstance(ch, Term):
            perm[ch] = og * cfg.rows + row
        elif ch.j == ch.of - 1:                  # a chain's channel is written by its last row
            perm[ch.ch] = og * cfg.rows + row
    weights, packed = _lane_weights(layer, cfg, qw, og_n, row_of, planes)
    rq = qm.requant[layer.name] if requant is None else requant
    inq, out = qm.in_q(layer), layer.out
    lo, hi = out_bounds(layer)
    worst = _channel_sums(qw, inq, planes)
    rq = saturating_biases(cfg, rq, worst, lo, hi)
    _check_accumulator(layer.name, cfg, worst, rq["bias"])
    params = _param_words(layer.name, cfg, rq, og_n, row_of, bounds)
    desc = {"in_base": in_base, "out_base": out_base, "w_base": w_base, "p_base": p_base,
            "in_h": H, "in_w": geo.pitch, "in_cb": cb, "out_h": OH, "out_w": geo.out_cols, "out_groups": og_n,
            "kernel": k, "stride": s, "pad": p, "pad_top": p, "in_signed": int(inq.signed), "wide": int(out.bits > 8),
            "out_lo": lo, "out_hi": hi, "banks": (1 << ACT_BANKS) - 1}
    if cfg.pixels > 1:
        desc["in_wg"] = W
    if out.bits > 16 or inq.bits > 8 or (out.bits > 8 and C < 2):
        raise CompileError(f"layer {layer.name!r}: input {inq.bits} / output {out.bits} bits do not fit the "
                           "activation buffer (inputs up to 8 bits, outputs up to 16)")
    slots = 2 * O if out.bits > 8 else O
    return LoweredLayer(layer.name, desc, weights, packed, params, perm, math.ceil(slots / C) * C,
                        macs=O * Cin * k * k * OH * OW, beats=og_n * OH * geo.out_cols * cb * k * k, lanes=geo,
                        parts=bounds)


def _place_block_run(layer, cfg, inq, b0: int, b1: int) -> tuple[range, int, dict]:
    """:func:`place_rows` of output channel blocks ``[b0, b1)`` alone: (their channels,
    output groups, {(og, row): index in the run})."""
    C, O = cfg.columns, layer.qweight.shape[0]
    chans = range(b0 * C, min(O, b1 * C))
    return (chans, *place_rows(replace(layer, schemes=tuple(layer.schemes[c] for c in chans)), cfg, inq))


def _place_parts(layer, cfg, inq, parts) -> tuple:
    """:func:`place_rows` for each of ``parts`` near-equal runs of whole output channel
    blocks (or the runs between block cuts ``parts``), the parts' output groups one after
    another: ``((og_n, row_of), parts)`` (see :attr:`LoweredLayer.parts`)."""
    C, O = cfg.columns, layer.qweight.shape[0]
    ocb = math.ceil(O / C)
    cuts = [round(i * ocb / parts) for i in range(parts + 1)] if isinstance(parts, int) else list(parts)
    if cuts[0] != 0 or cuts[-1] != ocb or any(a >= b for a, b in zip(cuts, cuts[1:])):
        raise ValueError(f"layer {layer.name!r}: output part cuts {cuts} do not split its {ocb} channel blocks")
    row_of, bounds, og_n = {}, [], 0
    for b0, b1 in zip(cuts, cuts[1:]):
        chans, n, rows = _place_block_run(layer, cfg, inq, b0, b1)
        row_of.update({(og_n + og, row): chans[c] for (og, row), c in rows.items()})   # (no chains in parts)
        bounds.append((og_n, og_n + n, b0, b1))
        og_n += n
    return (og_n, row_of), tuple(bounds)


def part_cuts(layer, cfg, inq, groups: int) -> tuple | None:
    """Block cuts of output parts whose channels each take at most ``groups`` output groups
    (one weight set, when that many fill a set): runs of whole channel blocks, each as long
    as it can be, left to right.  ``None`` when one block alone needs more groups."""
    ocb = math.ceil(layer.qweight.shape[0] / cfg.columns)
    cuts = [0]
    while cuts[-1] < ocb:
        b1 = cuts[-1]
        while b1 < ocb and _place_block_run(layer, cfg, inq, cuts[-1], b1 + 1)[1] <= groups:
            b1 += 1
        if b1 == cuts[-1]:
            return None
        cuts.append(b1)
    return tuple(cuts)


@dataclass(frozen=True)
class LaneGeometry:
    """How a windowed layer's rows spread over the pixel lanes: lane ``p`` computes output
    columns ``[p·out_cols, (p+1)·out_cols)`` of the ``out_w`` in a row and holds input
    columns ``[p·step - pad, p·step - pad + pitch)`` of the ``in_w``, stored rows of ``pitch``
    entries from its column ``-pad`` on (with one lane: the row as it is, ``pitch = in_w``)."""

    in_w: int
    out_w: int
    out_cols: int
    pitch: int
    step: int
    pad: int
    used: int                  # lanes with at least one output column

    @property
    def lane_mask(self) -> int:
        return (1 << self.used) - 1


def lane_geometry(cfg, W: int, OW: int, k: int, s: int, pad: int) -> LaneGeometry:
    P = cfg.pixels
    if P == 1:
        return LaneGeometry(W, OW, OW, W, OW * s, 0, 1)
    G = math.ceil(OW / P)
    return LaneGeometry(W, OW, G, (G - 1) * s + k, G * s, pad, math.ceil(OW / G))


def _fits_lut_lanes(inq, cfg) -> bool:
    """Whether every value of input format ``inq`` fits the LUT lanes' (power-of-two, and
    LUT-built fixed-point) activations."""
    half = 1 << (cfg.pot_act_width - 1)
    return -half <= inq.value_lo and inq.value_hi < half


def group_rows(cfg) -> dict:
    """Lane group scheme -> (first array row, rows)."""
    offsets, r0 = {}, 0
    for g in cfg.lane_groups:
        offsets[g.scheme] = (r0, g.rows)
        r0 += g.rows
    return offsets


class Term(NamedTuple):
    """An array row of a chain (``AcceleratorConfig.row_chains``): power-of-two term ``j``
    (of ``of``) of every weight of output channel ``ch`` (:func:`pot_terms`).  A chain's rows
    are consecutive rows of one lane group and one output group; its last (``j = of - 1``)
    carries the channel's parameters and writes it."""
    ch: int
    j: int
    of: int


def pot_terms(q: torch.Tensor, qmax: int) -> torch.Tensor:
    """Integer weights ``q`` as sums of power-of-two weights ``0, ±1, ±2, …, ±qmax`` (a pot
    scheme's values; ``qmax`` a power of two): ``[D, *q.shape]``, ``sum(dim=0) == q``, each
    weight in the fewest terms, largest first (zeros after), ``D`` the most any weight takes
    (e.g. with ±64: 127 = 64 + 64 − 1, 85 = 64 + 16 + 4 + 1)."""
    vmax = int(q.abs().max()) if q.numel() else 0
    pows = [1 << e for e in range(qmax.bit_length())]
    steps = sorted((sg * p for p in pows for sg in (1, -1)), key=abs, reverse=True)
    best = {0: ()}                      # value -> its fewest terms, breadth first
    frontier, lim = [0], vmax + qmax
    while frontier and any(v not in best for v in range(-vmax, vmax + 1)):
        nxt = []
        for v in frontier:
            for t in steps:
                w = v + t
                if abs(w) <= lim and w not in best:
                    best[w] = tuple(sorted(best[v] + (t,), key=abs, reverse=True))
                    nxt.append(w)
        frontier = nxt
    D = max(1, max(len(best[v]) for v in range(-vmax, vmax + 1)))
    table = torch.tensor([list(best[v]) + [0] * (D - len(best[v])) for v in range(-vmax, vmax + 1)],
                         dtype=torch.int64)
    return table[q.to(torch.int64) + vmax].movedim(-1, 0)


def _term_counts(planes: torch.Tensor) -> list[int]:
    """Rows a chain of each output channel takes: its weights' most terms (at least one) —
    the planes with a nonzero term, since each weight's terms come first (:func:`pot_terms`)."""
    D, O = planes.shape[:2]
    return planes.reshape(D, O, -1).ne(0).any(dim=2).sum(dim=0).clamp(min=1).tolist()


def _chain_planes(layer, cfg, qw: torch.Tensor, pixels: int):
    """The power-of-two terms of ``layer``'s weights (``[D, O, Cin, k, k]``) if its rows may
    chain on the pot lanes: a core with ``row_chains``, a layer of one fixed-point scheme
    (which pot lanes cannot run whole), and weights reused over enough output pixels that a
    chain's wider weight entries do not make the layer wait for them (a lane's weight entry
    of every output group in at most one bus word per output pixel: not a classifier on one
    pixel).  Else None."""
    if not cfg.row_chains:
        return None
    names = {parse_weight_format(sn) for sn in layer.schemes}
    pots = [g.format for g in cfg.lane_groups if g.format.kind == "pot" and not cfg.narrow_lanes(g.scheme)]
    if len(names) != 1 or next(iter(names)).kind != "fix" or not pots:
        return None
    if pixels * cfg.bus_width < cfg.rows * cfg.columns * max(f.bits for f in cfg.row_formats()):
        return None
    return pot_terms(qw, min(f.qmax for f in pots))


def place_rows(layer, cfg, inq=None, *, terms=None, beats: int = 0) -> tuple[int, dict]:
    """The output-channel permutation: (output groups, {(og, array row): channel}).  With
    ``inq`` (the layer's input format) wider than the LUT lanes (power-of-two, LUT-built
    fixed-point) take, no row goes on them.  ``terms`` (a one-scheme fixed-point layer on a
    core with ``row_chains``: each channel's power-of-two terms, :func:`pot_terms`): channels
    may also take chains of pot rows (:class:`Term` values), where that runs the layer in
    fewer cycles — ``beats`` (per output pixel and group) against the requantizer's one row
    a cycle."""
    by_scheme: dict[str, list[int]] = {}
    for ch, sname in enumerate(layer.schemes):
        by_scheme.setdefault(parse_weight_format(sname).name, []).append(ch)
    narrow = inq is not None and not _fits_lut_lanes(inq, cfg)
    places = {sn: [g for g in lanes_for(sn, cfg) if not (narrow and cfg.narrow_lanes(g))]
              for sn in by_scheme}
    for sname, gs in places.items():
        if not gs:
            why = (f"; its {inq.bits}-bit input is wider than the {cfg.pot_act_bits}-bit activations of the "
                   f"lanes that could ({', '.join(g for g in lanes_for(sname, cfg) if cfg.narrow_lanes(g))})"
                   if narrow else "")
            raise CompileError(f"layer {layer.name!r}: scheme {sname} has no lane group that can run it in this "
                               f"accelerator ({', '.join(g.scheme for g in cfg.lane_groups)}){why}")
    og_n, slots = _deal_rows(by_scheme, places, group_rows(cfg))
    plain = og_n, {slot: ch for ch, slot in slots.items()}
    chained = _chain_rows(by_scheme, places, cfg, terms, og_n) if terms is not None and len(by_scheme) == 1 else None
    if chained is None:
        return plain

    def cycles(placement):              # a group's pixel: its beats, or the requantizer's rows + 2
        n, rows = placement
        return n * max(beats, max(sum(1 for og_, _ in rows if og_ == og) for og in range(n)) + 2)
    return chained if cycles(chained) < cycles(plain) else plain


def _chain_rows(by_scheme: dict, places: dict, cfg, terms: list, og_plain: int):
    """The fewest output groups (fewer than ``og_plain``) that hold the one scheme's channels
    on its own lane groups and as chains on the pot lanes (the channels of fewest terms
    first, first fit); None if no fewer."""
    (sn, chs), = by_scheme.items()
    offsets = group_rows(cfg)
    fix = places[sn]
    pots = [g.scheme for g in cfg.lane_groups
            if g.format.kind == "pot" and not cfg.narrow_lanes(g.scheme) and g.scheme not in fix]
    order = sorted(chs, key=lambda c: (terms[c], c))
    for og_n in range(1, og_plain):
        bins = [(og, *offsets[g]) for og in range(og_n) for g in pots]
        fill = [0] * len(bins)
        row_of, rest = {}, []
        for c in order:
            b = next((i for i, (_, _, n) in enumerate(bins) if fill[i] + terms[c] <= n), None)
            if b is None:
                rest.append(c)
                continue
            og, off, _ = bins[b]
            row_of.update({(og, off + fill[b] + j): Term(c, j, terms[c]) for j in range(terms[c])})
            fill[b] += terms[c]
        if len(rest) > og_n * sum(offsets[g][1] for g in fix):
            continue
        used = dict.fromkeys(fix, 0)
        for c in sorted(rest):
            g = next(g for g in fix if used[g] < og_n * offsets[g][1])
            og, row = divmod(used[g], offsets[g][1])
            row_of[(og, offsets[g][0] + row)] = c
            used[g] += 1
        return og_n, row_of
    return None


def _lane_weights(layer, cfg, qw: torch.Tensor, og_n: int, row_of: dict, planes=None) -> tuple[dict, dict]:
    """Per lane group, its weight words — word ``((og·cb + b)·k + ky)·k + kx`` holds the
    codes of the group's rows × ``C`` columns — and how they are stored in memory (a fix
    lane group's codes at the width its widest placed row needs).  ``planes``: the
    power-of-two terms the chains' rows (:class:`Term`) take."""
    C = cfg.columns
    O, Cin, k, _ = qw.shape
    cb = math.ceil(Cin / C)
    D = 0 if planes is None else planes.shape[0]
    # zero-padded [O + 1 + D·O, cb·C, k, k]: row O is the all-zero row of an unused array row,
    # then term j of channel ch at O + 1 + j·O + ch
    qpad = torch.zeros(O + 1 + D * O, cb * C, k, k, dtype=torch.int64)
    qpad[:O, :Cin] = qw
    if D:
        qpad[O + 1:, :Cin] = planes.reshape(D * O, Cin, k, k)

    def index(v):
        return O if v is None else v if not isinstance(v, Term) else O + 1 + v.j * O + v.ch
    weights, packed = {}, {}
    for g in cfg.lane_groups:
        f = g.format
        off, n = group_rows(cfg)[g.scheme]
        rows = torch.tensor([[index(row_of.get((og, off + i))) for i in range(n)] for og in range(og_n)])
        block = qpad[rows].reshape(og_n, n, cb, C, k, k).permute(0, 2, 4, 5, 1, 3)   # og cb ky kx row col
        flat = block.reshape(-1, n * C)
        weights[g.scheme] = pack_words(_encode(layer.name, f, flat), f.bits)
        pw = f.bits
        if cfg.packed_weights and f.kind == "fix":
            placed = {layer.schemes[ch] for (_, row), ch in row_of.items()
                      if off <= row < off + n and not isinstance(ch, Term)}
            need = max([2] + [fix_bits_for(sn) for sn in placed])
            pw = next((b for b in packed_widths(f.bits) if b >= need), f.bits)   # the widths the DMA unpacks
        if pw < f.bits:
            codes = _encode(layer.name, parse_weight_format(f"fix{pw}"), flat)
            packed[g.scheme] = (pw, n * C * pw, pack_words(codes, pw))
        else:
            packed[g.scheme] = (0, n * C * f.bits, weights[g.scheme])
    return weights, packed


def _encode(name: str, fmt, q: torch.Tensor) -> torch.Tensor:
    try:
        return fmt.encode(q)
    except FormatError as e:
        raise CompileError(f"layer {name!r}: weights placed on {fmt.name} lanes: {e}") from None


def _channel_sums(qw: torch.Tensor, inq, planes=None) -> list[int]:
    """Each output channel's worst |sum| Σ|q|·max|x| (with row chains: also over its terms)."""
    xmax = max(abs(inq.value_lo), abs(inq.value_hi))
    worst = qw.abs().sum(dim=(1, 2, 3)) * xmax
    if planes is not None and qw.shape[0]:
        worst = torch.maximum(worst, planes.abs().sum(dim=(0, 2, 3, 4)) * xmax)
    return [int(w) for w in worst]


def saturating_biases(cfg, rq: dict, worst: list, lo: int, hi: int) -> dict:
    """``rq`` with every bias too wide for the accumulator whose channel's output is one
    value ``y0`` for every sum the channel can reach (``|acc| ≤ worst``: the clamped
    requantization of ``acc + B`` is the same at both ends, so everywhere between) replaced,
    where it fits, by the bias nearest zero that gives ``y0`` over the same span of sums with
    the channel's multiplier and shift, or else with ``M = 1`` and the least shift whose
    rounding step spans the sums: the same output for every input, so the program stays
    bit-exact against the golden model's requantization with the original parameters
    (docs/arithmetic.md §4).  Such biases come from channels whose weights vanish (a tiny
    scale makes ``B`` huge: MobileNetV1-VWW has hundreds at the 2^30 clamp, with every
    weight 0).  Other biases are kept, for the accumulator check to refuse."""
    lim = 1 << (cfg.acc_bits - 1)
    bias = [int(b) for b in rq["bias"]]
    if all(abs(b) < lim for b in bias):
        return rq
    mult, shift = [int(v) for v in rq["mult"]], [int(v) for v in rq["shift"]]
    for c, b in enumerate(bias):
        if abs(b) < lim:
            continue
        m, n, w = mult[c], shift[c], worst[c]
        half = 1 << (n - 1) if n else 0
        y0 = min(hi, max(lo, ((b - w) * m + half) >> n))          # the requantizer at both ends
        if m == 0:
            new = 0                     # the output is clamp(half >> n) whatever the sum
        elif y0 != min(hi, max(lo, ((b + w) * m + half) >> n)):
            continue                    # the sum matters
        elif y0 == hi:
            # sums from k up: the least k ≥ 0 with out(k) ≥ hi, k·M ≥ hi·2^n − half
            new = w + max(0, -(-((hi << n) - half) // m))
        elif y0 == lo:
            # sums down from −k: the least k ≥ 0 with out(−k) ≤ lo, half − k·M < (lo + 1)·2^n
            new = -w - max(0, (half - ((lo + 1) << n)) // m + 1)
        else:
            # sums from the least v with out(v) = y0: the original's window of 2·w + 1 sums
            # fits in y0's, so this one does
            new = w - ((half - (y0 << n)) // m)
        if abs(new) < lim:
            bias[c] = new
            continue
        # M = 1 and a shift n' with 2^n' > 2·w: (v + half') >> n' = y0 for the 2·w + 1 sums
        # from y0·2^n' − half'
        n1 = (2 * w).bit_length()
        new = (y0 << n1) - ((1 << (n1 - 1)) if n1 else 0) + w
        if abs(new) < lim and n1 < 1 << cfg.shift_bits:
            bias[c], mult[c], shift[c] = new, 1, n1
    return {**rq, "bias": torch.tensor(bias, dtype=torch.int64), "mult": torch.tensor(mult, dtype=torch.int64),
            "shift": torch.tensor(shift, dtype=torch.int64)}


def _check_accumulator(name: str, cfg, worst: list, bias) -> None:
    """docs/arithmetic.md §3: the array wraps silently, so every row's worst sum (``worst``,
    :func:`_channel_sums`: Σ|q|·max|x|, with row chains every partial sum of a chain) and its
    bias must fit the config's signed accumulator."""
    worst = max(worst, default=0)
    bmax = max((abs(int(b)) for b in bias), default=0)
    lim = 1 << (cfg.acc_bits - 1)
    if worst >= lim or bmax >= lim:
        what = f"sums reach {worst:,}" if worst >= lim else f"biases reach {bmax:,}"
        raise CompileError(f"layer {name!r}: accumulator {what}, beyond the config's signed "
                           f"{cfg.acc_bits}-bit accumulator (needs acc_bits ≥ {max(worst, bmax).bit_length() + 1})")


def _param_words(name: str, cfg, rq: dict, og_n: int, row_of: dict, parts=()) -> list[int]:
    """Requantization parameters: one word of ``R`` rows per output group (unused rows off);
    in output ``parts`` a row's channel counts from its part's first block."""
    arr = data.ArrayLayout(param_layout(cfg.acc_bits, cfg.mult_bits, cfg.shift_bits), cfg.rows)
    ch_base = {og: cb_lo * cfg.columns for og_lo, og_hi, cb_lo, _ in parts for og in range(og_lo, og_hi)}
    params = []
    for og in range(og_n):
        rows = []
        for row in range(cfg.rows):
            ch = row_of.get((og, row))
            if ch is None:
                rows.append({"bias": 0, "mult": 0, "shift": 0, "ch": 0, "en": 0, "chain": 0})
                continue
            if isinstance(ch, Term):
                if ch.j < ch.of - 1:        # a chain's row before its last: its sum goes on
                    rows.append({"bias": 0, "mult": 0, "shift": 0, "ch": 0, "en": 1, "chain": 1})
                    continue
                ch = ch.ch
            m, n = int(rq["mult"][ch]), int(rq["shift"][ch])
            if m >= 1 << cfg.mult_bits or n >= 1 << cfg.shift_bits:
                raise CompileError(f"layer {name!r}: requantizer M={m}, n={n} exceeds "
                                   f"{cfg.mult_bits}/{cfg.shift_bits} bits")
            rows.append({"bias": int(rq["bias"][ch]), "mult": m, "shift": n,
                         "ch": ch - ch_base.get(og, 0), "en": 1, "chain": 0})
        params.append(arr.const(rows).as_bits())
    return params


def fix_bits_for(scheme) -> int:
    """Two's complement width that holds every weight of ``scheme`` (pot4: ±64 → 8)."""
    f = parse_weight_format(scheme)
    return f.bits if f.kind == "fix" else f.qmax.bit_length() + 1


def can_run(lane, scheme) -> bool:
    """Whether a lane of format ``lane`` computes every weight of ``scheme`` exactly: a fix
    lane multiplies any integer up to its ``qmax`` (so it also runs narrower fix and pot
    rows); a pot lane shifts, so it runs pot rows of no more bits."""
    lane, scheme = parse_weight_format(lane), parse_weight_format(scheme)
    if lane.kind == "fix":
        return scheme.qmax <= lane.qmax
    return scheme.kind == "pot" and scheme.bits <= lane.bits


def lanes_for(scheme, cfg) -> list[str]:
    """Lane groups of ``cfg`` that can run ``scheme``, the best fit first (its own format,
    then the narrowest wider one)."""
    fmt = parse_weight_format(scheme)
    gs = [g for g in cfg.lane_groups if can_run(g.scheme, fmt.name)]
    gs.sort(key=lambda g: (g.scheme != fmt.name, g.format.bits, g.format.kind != fmt.kind))
    return [g.scheme for g in gs]


def _deal_rows(by_scheme: dict, places: dict, offsets: dict):
    """Place every channel on an (output group, array row) with as few output groups as
    possible: schemes with the fewest lane choices first, each filling its preferred lane
    group before the next.  Returns (groups, {channel: (og, row)})."""
    order = sorted(by_scheme, key=lambda sn: (len(places[sn]), -parse_weight_format(sn).bits))
    og_n = max(1, max(math.ceil(len(chs) / sum(offsets[g][1] for g in places[sn])) for sn, chs in by_scheme.items()))
    while True:
        free = {g: og_n * n for g, (_, n) in offsets.items()}
        used = {g: 0 for g in offsets}
        slots, ok = {}, True
        for sn in order:
            for ch in by_scheme[sn]:
                g = next((g for g in places[sn] if free[g] > 0), None)
                if g is None:
                    ok = False
                    break
                off, n = offsets[g]
                og, row = divmod(used[g], n)
                slots[ch] = (og, off + row)
                used[g] += 1
                free[g] -= 1
            if not ok:
                break
        if ok:
            return og_n, slots
        og_n += 1


def pack_words(codes: torch.Tensor, bits: int) -> list[int]:
    """Rows of codes [words, n] → one int per row, code j at bits [j·bits, (j+1)·bits)."""
    bitarr = ((codes.unsqueeze(-1) >> torch.arange(bits)) & 1).reshape(codes.shape[0], -1).to(torch.uint8)
    packed = np.packbits(bitarr.numpy(), axis=1, bitorder="little")
    return [int.from_bytes(row.tobytes(), "little") for row in packed]


def _avgpool_requant(layer, iq, H: int, W: int, cfg):
    """(M, n) of a global average pool: the sum times 2^(f_out - f_in) / (H·W), checked
    against the requantizer's widths."""
    M, n = requant_multiplier(2.0 ** (layer.out.frac - iq.frac) / (H * W))
    mb, sb_ = min(field_width(VecDesc, "mult"), cfg.mult_bits), min(field_width(VecDesc, "shift"), cfg.shift_bits)
    if M >= 1 << mb or n >= 1 << sb_:
        raise CompileError(f"layer {layer.name!r}: average-pool requantizer M={M}, n={n} exceeds "
                           f"{mb}/{sb_} bits")
    return M, n


def _ones_kernel_layer(layer, channels: int, H: int, cfg):
    """A global average pool over ``channels`` × H × W seen as a conv: output channel c
    sums input channel c over an H × H kernel (weights 1, which every lane format holds),
    the sum requantized with the pool's (M, n) and bias 0 — the vector unit's arithmetic."""
    q = torch.zeros(channels, channels, H, H, dtype=torch.int64)
    q[torch.arange(channels), torch.arange(channels)] = 1
    rows = [f.name for f in cfg.row_formats()]       # fill every array row
    return replace(layer, op="conv", qweight=q, schemes=tuple(rows[c % len(rows)] for c in range(channels)),
                   attrs={"kernel": H, "stride": 1, "padding": 0, "relu": layer.attrs.get("relu", False)})


def lower_avgpool_conv(qm, layer, cfg, *, channels: int, in_hw) -> LoweredLayer:
    """A global average pool on the conv engine (for a vector unit built without
    ``avgpool``), one channel block at a time: the op for block ``b`` reads input block ``b``
    (C channels) and sums each channel over a ones kernel on the diagonal of a C × C × H × H
    weight — the same for every block, so it is stored once — while block ``b``'s parameter
    words name its output channels.  Weights are C²·H² codes and beats ``blocks·⌈C/R⌉·H²``,
    where a dense channels × channels kernel would take channels²·H² and ``⌈channels/R⌉·
    blocks·H²`` (square planes up to the kernel field's range, 15×15)."""
    H, W = in_hw
    kmax = field_max(ConvDesc, "kernel")
    if H != W or H > kmax:
        raise CompileError(f"layer {layer.name!r}: this accelerator's vector unit has no average pool "
                           f"(vector_ops {', '.join(cfg.vector_ops) or 'none'}), and the conv engine pools "
                           f"only square planes up to {kmax}×{kmax}, not {H}×{W}")
    R, C = cfg.rows, cfg.columns
    iq = qm[layer.inputs[0]].out
    M, n = _avgpool_requant(layer, iq, H, W, cfg)
    one = lower_conv(qm, _ones_kernel_layer(layer, C, H, cfg), cfg, in_hw=in_hw, in_base=0, out_base=0,
                     requant={"mult": [M] * C, "shift": [n] * C, "bias": [0] * C})
    ogc, nb = one.desc["out_groups"], math.ceil(channels / C)
    if (nb * C - 1).bit_length() > CH_BITS:
        raise CompileError(f"layer {layer.name!r}: {channels} channels exceed the parameter word's "
                           f"{CH_BITS}-bit channel field")
    arr = data.ArrayLayout(param_layout(cfg.acc_bits, cfg.mult_bits, cfg.shift_bits), R)
    off = {"bias": 0, "mult": 0, "shift": 0, "ch": 0, "en": 0}
    params = []
    for b in range(nb):
        words = [[off] * R for _ in range(ogc)]
        for c in range(min(C, channels - b * C)):
            og, row = divmod(one.perm[c], R)
            words[og][row] = {"bias": 0, "mult": M, "shift": n, "ch": b * C + c, "en": 1}
        params += [arr.const(w).as_bits() for w in words]
    slots = 2 * channels if layer.out.bits > 8 else channels
    return LoweredLayer(layer.name, one.desc, one.weights, one.packed, params,
                        perm=[one.perm[ch % C] for ch in range(channels)],
                        out_channels_padded=math.ceil(slots / C) * C, macs=channels * H * W,
                        beats=nb * one.beats, pool_blocks=nb, lanes=one.lanes)


def lower_depthwise(qm, layer, cfg, *, in_hw) -> LoweredLayer:
    """A depthwise conv (groups = channels) on the conv engine, one channel block at a time.

    The array broadcasts one ``C``-channel activation word to every row, so a row whose
    output channel reads a single input channel can use one lane of it: block ``b``'s ``C``
    channels run as a ``C → C`` conv whose kernel is diagonal (row ``c`` has channel
    ``b·C + c``'s ``k×k`` taps in lane ``c``, zeros elsewhere) over input block ``b`` alone —
    ``k²`` beats per output pixel and block, where a dense ``channels × channels`` conv would
    take ``channels / C`` times more.  At most ``C`` of the ``R`` rows work, one lane each:
    MAC utilization ≤ 1/R (what a broadcast array gives a layer without reuse across output
    channels).  Each block's rows are placed by scheme like a conv's (``out_groups`` per
    block, the most any block needs), and its kernel and parameter words follow the previous
    block's, so the op for block ``b`` reads weights ``w_base + b·block_w`` and parameters
    ``p_base + b·out_groups``."""
    C = cfg.columns
    G, k = layer.qweight.shape[0], layer.attrs["kernel"]
    nb = math.ceil(G / C)
    if (nb * C - 1).bit_length() > CH_BITS:
        raise CompileError(f"layer {layer.name!r}: {G} channels exceed the parameter word's {CH_BITS}-bit "
                           "channel field")
    inq = qm.in_q(layer)
    blocks = []
    for b in range(nb):
        chans = range(b * C, min(G, (b + 1) * C))
        sub = replace(layer, schemes=tuple(layer.schemes[c] for c in chans))
        blocks.append(place_rows(sub, cfg, inq))
    ogb = max(og for og, _ in blocks)
    row_of = {(b * ogb + og, row): b * C + c for b, (_, rows) in enumerate(blocks) for (og, row), c in rows.items()}
    qw = torch.zeros(G, C, k, k, dtype=torch.int64)      # channel ch's taps in lane ch % C
    qw[torch.arange(G), torch.arange(G) % C] = layer.qweight[:, 0]
    dense = replace(layer, qweight=qw, attrs={**layer.attrs, "groups": 1})
    low = lower_conv(qm, dense, cfg, in_hw=in_hw, in_base=0, out_base=0, placement=(nb * ogb, row_of))
    low.desc["out_groups"], low.desc["in_cb"] = ogb, 1
    H, W = in_hw
    OH, OW = window_out(layer.attrs, H, W)
    return replace(low, macs=G * k * k * OH * OW, beats=nb * ogb * OH * low.lanes.out_cols * k * k,
                   pool_blocks=nb, block_w=ogb * k * k)


def lower_vec(qm, layer, cfg, *, channels: int, in_hw, a_base: int, out_base: int, b_base: int = 0) -> LoweredLayer:
    """Lower a residual ``add``, ``maxpool`` or global ``avgpool`` layer to a VecDesc."""
    if layer.op not in cfg.vector_ops:
        raise CompileError(f"layer {layer.name!r}: this accelerator's vector unit has no {layer.op} "
                           f"(vector_ops: {', '.join(cfg.vector_ops) or 'none'})")
    C = cfg.columns
    H, W = in_hw
    cb = math.ceil(channels / C)
    iq, out = qm[layer.inputs[0]].out, layer.out
    lo, hi = out_bounds(layer)
    if out.bits > 8 or iq.bits > 8:
        raise CompileError(f"layer {layer.name!r}: tensors wider than 8 bits do not fit the activation buffer")
    base = {"a_base": a_base, "b_base": b_base, "out_base": out_base, "kernel": 0, "stride": 0, "pad": 0, "pad_top": 0,
            "a_signed": int(iq.signed), "b_signed": 0, "sa": 0, "sb": 0, "rs": 0, "mult": 0, "shift": 0,
            "lo": lo, "hi": hi, "banks": (1 << ACT_BANKS) - 1}
    if layer.op == "add":
        qb = qm[layer.inputs[1]].out
        f = max(iq.frac, qb.frac)
        up = max(0, out.frac - f)
        sa, sb, rs = f - iq.frac + up, f - qb.frac + up, max(0, f - out.frac)
        if max(sa, sb, rs) > field_max(VecDesc, "sa"):
            raise CompileError(f"layer {layer.name!r}: residual add shifts {sa}/{sb}/{rs} exceed "
                               f"{field_max(VecDesc, 'sa')}")
        words = cb * H * W
        desc = {**base, "kind": VecKind.ADD, "b_signed": int(qb.signed), "sa": sa, "sb": sb, "rs": rs,
                "cb": 1, "in_h": 1, "in_w": words, "out_h": 1, "out_w": words}
        oh, ow, taps = H, W, 2 * words
    elif layer.op == "maxpool":
        k, s, p = layer.attrs["kernel"], layer.attrs["stride"], layer.attrs["padding"]
        oh, ow = window_out(layer.attrs, H, W)
        geo = lane_geometry(cfg, W, ow, k, s, p)          # spread over the pixel lanes as a conv is
        desc = {**base, "kind": VecKind.MAXPOOL, "kernel": k, "stride": s, "pad": p, "pad_top": p, "cb": cb,
                "in_h": H, "in_w": geo.pitch, "out_h": oh, "out_w": geo.out_cols, "lo": iq.lo, "hi": iq.hi}
        if cfg.pixels > 1:
            desc["in_wg"] = W
        # (a pipelined unit walks a 3×3/2-like pool, kernel = stride + 1, column by column:
        # ``kernel`` taps a column, ``(out_w - 1)·stride + kernel`` columns a row — rtl/vector.py)
        by_cols = cfg.pipelined and k == s + 1
        taps = cb * oh * ((geo.out_cols - 1) * s + k) * k if by_cols else cb * oh * geo.out_cols * k * k
    elif layer.op == "avgpool":
        M, n = _avgpool_requant(layer, iq, H, W, cfg)     # on the engine's requantizer (rtl/vector.py)
        sum_bits = min(AVGPOOL_SUM_BITS, cfg.acc_bits)
        if H * W * 256 > 1 << (sum_bits - 1):
            raise CompileError(f"layer {layer.name!r}: average pool of {H}x{W} pixels overflows the "
                               f"{sum_bits}-bit sum")
        if lo < -(1 << cfg.out_bits) or hi >= 1 << cfg.out_bits:
            raise CompileError(f"layer {layer.name!r}: output range {lo}..{hi} exceeds the requantizer's "
                               f"{cfg.out_bits + 1}-bit output")
        desc = {**base, "kind": VecKind.AVGPOOL, "mult": M, "shift": n, "cb": cb, "in_h": H, "in_w": W,
                "out_h": 1, "out_w": 1}
        oh = ow = 1
        taps = cb * H * W
    else:
        raise CompileError(f"layer {layer.name!r}: op {layer.op!r} does not run on the vector unit")
    low = LoweredLayer(layer.name, desc, out_channels_padded=cb * C, beats=taps, kind="vec",
                       lanes=geo if layer.op == "maxpool" else None)
    low.out_hw = (oh, ow)
    return low
