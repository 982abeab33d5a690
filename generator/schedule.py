"""Compiler pass: the operations of a whole program, in order, as typed data.

Each layer moves its operands through the on-chip activation buffer:

* **Row bands.** A conv or max-pool runs in bands of output rows: the band's input rows
  (with the kernel's halo) are loaded, the engine runs the band (``pad_top`` says how many
  of the padding rows lie above it; the bottom padding follows from the band height), the
  output rows are stored.  Bands that fit one bank of the activation buffer alternate
  banks and are software-pipelined: band i+1 loads and band i−1 stores while band i
  computes.  A layer whose weights stream in several sets may instead take the whole
  buffer for fewer bands (each band reloads the sets); :func:`band_cost` picks.  A band
  fits by the rows it reads (an end band skips its padding row; a 1×1 stride-2 window
  reads every other row), and bands may take even heights (7 rows: 2, 3, 2).
* A residual add streams in pipelined chunks — or, when its conv's output feeds it alone
  and the conv's weights load once, runs on each of the conv's output bands while they are
  on chip (:meth:`_LayerScheduler.bands_with_add`); a global average pool on the vector
  unit needs its input on chip.
* With several bands and several weight sets, bands are outer: every set is applied to
  the band on chip, so no partial output is ever stored.
* **A batch** of streamed weights runs *layer-major*: every image passes a layer before the
  next layer starts, and each weight set loads once for the batch (each image's tensors in
  a work region of its own).  A layer dealt in output parts of one set each runs part by
  part, every image's bands in turn under the part's set; one whose images all fit on chip
  at once (the classifier) loads them, runs each set over every image, then stores them;
  the others run image by image, a single set shared by all.

:func:`schedule` returns the ops (:class:`Load`, :class:`Store`, :class:`Conv`,
:class:`Vec`, :class:`Stamp`) and the weight sets in the order they are used;
:mod:`~rmsmp.generator.codegen` turns them into instructions.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from rmsmp.rtl.isa import ACT_BANKS, DmaDesc, VecDesc, VecKind, field_max

from .allocate import TensorPlan, fusable_adds
from .lower import CompileError, LaneGeometry, LoweredLayer
from .program import RowMap
from .weight_sets import WeightPlan, WeightSet

__all__ = ["Load", "Store", "Conv", "Vec", "Stamp", "Schedule", "schedule", "band_rows", "band_cost",
           "choose_bands", "even_bands", "BandShape", "band_shape", "min_parts", "parts_cost", "run_cost", "part_bands",
           "batch_parts_cost"]


@dataclass(frozen=True)
class Load:
    """DMA ``count`` activation entries from region ``ref`` (``offset`` bus words in) to
    activation-buffer entry ``buf_addr`` (``rows``: spread over the pixel lanes)."""
    ref: str
    offset: int
    count: int
    buf_addr: int
    rows: RowMap | None = None
    nib: tuple | None = None       # (signed,): a 4-bit tensor stored as nibbles
    blocks: tuple = (1, 0, 0)      # (n, ext_step, buf_step): n such transfers (DmaDesc.reps)


@dataclass(frozen=True)
class Store:
    """DMA ``count`` activation entries from ``buf_addr`` to region ``ref`` at ``offset``
    (``rows``: gathered from the pixel lanes)."""
    ref: str
    offset: int
    count: int
    buf_addr: int
    rows: RowMap | None = None
    nib: tuple | None = None
    blocks: tuple = (1, 0, 0)


@dataclass(frozen=True)
class Conv:
    """Run ``layer.desc`` on the conv engine; ``set`` indexes :attr:`Schedule.sets` (``None``:
    resident weights), ``p_off``/``w_off`` its parameter words' and weight entries' offsets
    from the set's base."""
    layer: LoweredLayer
    set: int | None = None
    p_off: int = 0
    w_off: int = 0


@dataclass(frozen=True)
class Vec:
    """Run ``layer.desc`` on the vector unit."""
    layer: LoweredLayer


@dataclass(frozen=True)
class Stamp:
    """Write the cycle counter into word ``index`` of the trace region (after a layer)."""
    index: int


@dataclass
class Schedule:
    ops: list = field(default_factory=list)
    sets: list = field(default_factory=list)         # WeightSet, in order of use
    halves: list = field(default_factory=lambda: [None, None])   # the SetSpec each buffer half holds
    moved: dict = field(default_factory=dict)        # layer -> bus words moved (first image)
    set_major: set = field(default_factory=set)      # layers run set by set over on-chip bands
    in_parts: set = field(default_factory=set)       # layers run over their whole input, the output in parts
    layer_major: bool = False                        # a batch runs layer by layer (weights once a batch)
    batch_parts: set = field(default_factory=set)    # layers run a part (one set) at a time over the batch
    images_on_chip: set = field(default_factory=set)  # layers holding every image of the batch on chip
    ops_of: dict = field(default_factory=dict)       # batch_parts layer -> its ops (instructions)
    fused: dict = field(default_factory=dict)        # residual add -> the conv whose bands run it
    adds: dict = field(default_factory=dict)         # conv -> the add it may run (allocate.fusable_adds)


#: engine cycles an op costs beyond its beats (its descriptor, the array's pipeline filling
#: and the last pixels' requantization draining): what makes many short bands dearer
OP_CYCLES = 80

#: transfers one LOAD/STORE makes at most (``DmaDesc.reps`` + 1)
MAX_REPS = field_max(DmaDesc, "reps") + 1

# -- row bands ----------------------------------------------------------------------------

def band_rows(oy0: int, oy1: int, k: int, s: int, p: int, H: int) -> tuple[int, int, int]:
    """Input rows [b0, b1) a band of output rows [oy0, oy1) reads, and its pad_top."""
    b0 = max(0, oy0 * s - p)
    b1 = min(H, (oy1 - 1) * s - p + k)
    return b0, b1, p + b0 - oy0 * s


@dataclass(frozen=True)
class BandShape:
    """A band of ``t`` output rows of a windowed layer: the activation entries it holds in
    (each lane of) the buffer — rows of ``in_pitch`` / ``out_pitch`` — and moves to and from
    memory — rows of ``in_w`` / ``out_w``."""
    in_blocks: int
    in_h: int
    in_w: int
    out_blocks: int
    out_w: int
    kernel: int
    stride: int
    in_pitch: int = 0
    out_pitch: int = 0
    in_wpe: int = 1            # bus words an entry of the input / output takes in memory
    out_wpe: int = 1
    pad: int = -1              # the window's padding (-1: not known — a band reads (t-1)·s + k rows)

    def _in_h(self, t: int) -> int:
        return min(self.in_h, (t - 1) * self.stride + self.kernel)

    def band_in_h(self, oy0: int, oy1: int) -> int:
        """Input rows band ``[oy0, oy1)`` reads: a band at the top or bottom reads fewer (its
        padding rows are not loaded)."""
        if self.pad < 0:
            return self._in_h(oy1 - oy0)
        b0, b1, _ = band_rows(oy0, oy1, self.kernel, self.stride, self.pad, self.in_h)
        return b1 - b0

    def band_loaded_h(self, oy0: int, oy1: int) -> int:
        """Input rows band ``[oy0, oy1)`` moves: with a kernel shorter than its stride only
        those its windows read (:meth:`_LayerScheduler.input_io`)."""
        if 0 < self.kernel < self.stride:
            return (oy1 - oy0) * self.kernel
        return self.band_in_h(oy0, oy1)

    def band_entries(self, oy0: int, oy1: int) -> int:
        """Buffer entries (each lane) band ``[oy0, oy1)`` holds: its input and output rows."""
        return self.in_blocks * (self.in_pitch or self.in_w) * self.band_in_h(oy0, oy1) + self.out_rows(oy1 - oy0)

    def in_rows(self, t: int) -> int:
        return self.in_blocks * (self.in_pitch or self.in_w) * self._in_h(t)

    def out_rows(self, t: int) -> int:
        return self.out_blocks * (self.out_pitch or self.out_w) * t

    def in_moved(self, t: int) -> int:
        return self.in_blocks * self.in_w * self._in_h(t)

    def out_moved(self, t: int) -> int:
        return self.out_blocks * self.out_w * t


def band_cost(bands: list, pipelined: bool, *, shape: BandShape, out_h: int, compute: float,
              weight_words: int, n_sets: int, n_dma: int, spread: float = 0, running: bool = False) -> float:
    """Cycles of a layer run in ``bands`` (a pure estimate).  Pipelined bands pay the first
    load and last store, then per band the longer of its compute and the other bank's
    transfers (plus the weight sets it reloads: all of them for the first band, then all but
    the two the band before ended with, :meth:`_LayerScheduler.use_set`); whole-buffer bands
    pay every transfer; each band's DMA instructions (``n_dma`` a band) cost beside its
    transfers — behind another band's compute when pipelined, else in series.  ``spread``:
    words of another load (the next part's set) issued beside the bands in proportion to
    their compute (:mod:`~.codegen`), which the DMA moves with each band's transfers.
    ``running``: the bands join a pipeline already running (a batch's next output part), so
    their first load and last store go beside the neighbouring parts' bands."""
    rows = [b1 - b0 for b0, b1 in bands]
    ld = [shape.in_wpe * shape.in_blocks * shape.in_w * shape.band_loaded_h(b0, b1) for b0, b1 in bands]
    st = [shape.out_wpe * shape.out_moved(n) for n in rows]
    cp = [compute * n / out_h + n_sets * OP_CYCLES for n in rows]
    sp = [spread * n / sum(rows) for n in rows]
    w = weight_words / n_sets if n_sets > 1 else 0          # per set; each band reloads them

    def band(i, extra):
        # a set loads while the one before computes; the band's transfers go with the last
        c = cp[i] / n_sets
        k = n_sets if i == 0 else max(0, n_sets - 2)         # the sets this band loads: its last k
        before = max(0, k - 1)                               # of them before the last set
        return (n_sets - 1 - before) * c + before * max(c, w) + max(c, (w if k else 0) + extra)

    ov = 16 * n_dma + 32                                      # a band's DMA instructions
    n = len(bands)
    if pipelined and running:
        return sum(band(i, ov + sp[i] + st[i - 1] + ld[(i + 1) % n]) for i in range(n))
    if pipelined and n > 1:
        # (the instructions of the transfers beside a band run while it computes)
        return ld[0] + st[-1] + 2 * ov + sum(
            band(i, ov + sp[i] + (st[i - 1] if i else 0) + (ld[i + 1] if i + 1 < n else 0))
            for i in range(n))
    return sum(ld[i] + band(i, sp[i]) + st[i] + ov for i in range(n))


def even_bands(out_h: int, n: int) -> list:
    """``out_h`` output rows in ``n`` bands whose heights differ by at most one, the taller
    ones in the middle (the end bands load the padding's row fewer)."""
    base, extra = divmod(out_h, n)
    first = (n - extra) // 2
    heights = [base + (first <= i < first + extra) for i in range(n)]
    tops = [sum(heights[:i]) for i in range(n + 1)]
    return list(zip(tops, tops[1:]))


def choose_bands(name: str, out_h: int, shape: BandShape, *, act_depth: int, compute: float,
                 weight_words: int, n_sets: int, n_dma: int, repeat: int = 1,
                 spread: float = 0, running: bool = False) -> tuple[list, bool, float]:
    """Row bands for a layer, whether they pipeline (one bank each) or take the whole
    buffer, and their cost: the cheapest by :func:`band_cost` (ties: pipelined, then taller
    bands) — for ``repeat`` images run one after another in one pipeline (a batch's
    images under one weight set).  Pipelined bands of ``t`` rows are tried as they are and
    as many bands of even heights (7 rows: 3, 3, 1 or 2, 3, 2 — the short band's compute
    may not cover the transfers beside it)."""
    options = []
    for pipelined, cap in ((True, act_depth // ACT_BANKS), (False, act_depth)):
        fits = []                    # (t, band lists of at most t rows whose every band fits)
        for t in range(1, out_h + 1):
            cands = [[(r, min(out_h, r + t)) for r in range(0, out_h, t)]]
            if pipelined and out_h % t:
                cands.append(even_bands(out_h, -(-out_h // t)))
            cands = [b for b in cands if max(shape.band_entries(*band) for band in b) <= cap]
            if cands:
                fits.append((t, cands))
        for t, cands in (fits if pipelined else fits[-1:]):
            for bands in cands:
                cost = band_cost(bands * repeat, pipelined, shape=shape, out_h=out_h, compute=compute,
                                 weight_words=weight_words, n_sets=n_sets, n_dma=n_dma, spread=spread,
                                 running=running and pipelined)
                options.append((cost, not pipelined, -t, bands, pipelined))
    if not options:
        raise CompileError(f"layer {name!r}: one output row needs {shape.in_rows(1) + shape.out_rows(1)} "
                           f"activation entries, the buffer holds {act_depth} (column tiling is not implemented)")
    cost, *_, bands, pipelined = min(options)
    return bands, pipelined, cost


def set_major_bands(out_h: int, shape: BandShape, *, act_depth: int, compute: float, weight_words: int,
                    n_sets: int, n_dma: int) -> tuple[list, float] | None:
    """Bands for a *set-major* run of a layer streamed in several weight sets: every band's
    output stays on chip while the sets go by, once each, and the (smaller) input bands are
    loaded again for every set.  The tallest bands whose input fits beside the whole output;
    with their estimated cycles (the DMA loads a set's input bands and the next set's
    weights; the engine waits for the inputs).  ``None`` when the output does not fit."""
    room = act_depth - shape.out_rows(out_h)
    fits = [t for t in range(1, out_h + 1) if shape.in_rows(t) <= room]
    if not fits:
        return None
    t = fits[-1]
    bands = [(r, min(out_h, r + t)) for r in range(0, out_h, t)]
    loads = sum(shape.in_wpe * shape.in_moved(b1 - b0) for b0, b1 in bands)
    w = weight_words / n_sets
    cost = n_sets * (loads + max(compute / n_sets, w)) + shape.out_wpe * shape.out_moved(out_h)
    return bands, cost + (16 * n_dma + 32) * len(bands) * n_sets


def band_shape(tensors: TensorPlan, low: LoweredLayer, x: str, in_shape, out_shape) -> tuple:
    """(:class:`BandShape`, :class:`LaneGeometry`) of windowed layer ``low`` reading tensor
    ``x``: its channel blocks in and out and how its rows spread over the pixel lanes."""
    _, H, W = in_shape
    _, OH, OW = out_shape
    d = low.desc
    g = low.lanes or LaneGeometry(W, OW, OW, W, OW * d["stride"], 0, 1)        # the vector unit: lane 0
    shape = BandShape(tensors.blocks[tensors.source(x)], H, W, tensors.blocks[low.name], OW, d["kernel"],
                      d["stride"], g.pitch, g.out_cols, tensors.words_per_entry(x),
                      tensors.words_per_entry(low.name), d.get("pad", 0))
    return shape, g


def _part_fits(shape: BandShape, out_h: int, blocks: int, act_depth: int) -> bool:
    return shape.in_rows(out_h) + blocks * (shape.out_pitch or shape.out_w) * out_h <= act_depth


def min_parts(shape: BandShape, out_h: int, act_depth: int) -> int:
    """The fewest output parts (≥ 2, of whole channel blocks) whose largest fits the
    activation buffer beside the whole input; 0 when input and output fit together, or the
    input does not fit even beside one block."""
    if _part_fits(shape, out_h, shape.out_blocks, act_depth):
        return 0
    return next((n for n in range(2, shape.out_blocks + 1)
                 if _part_fits(shape, out_h, -(-shape.out_blocks // n), act_depth)), 0)


def parts_cost(shape: BandShape, out_h: int, parts: tuple, *, act_depth: int, compute: float, weight_words: int,
               n_sets: int, **_) -> float | None:
    """Cycles of a streamed layer run in output ``parts`` (:attr:`LoweredLayer.parts`, an
    estimate): the whole input loaded once, the sets once each (the next set's weights load
    while one computes), each part's output stored after its last set.  ``None`` when the
    input and the largest part do not fit the buffer together."""
    if not _part_fits(shape, out_h, max(cb1 - cb0 for *_, cb0, cb1 in parts), act_depth):
        return None
    cost = (shape.in_wpe * shape.in_moved(out_h) + n_sets * max(compute / n_sets, weight_words / n_sets)
            + shape.out_wpe * shape.out_moved(out_h))
    return cost + 48 * (len(parts) + 1)


def run_cost(low: LoweredLayer, shape: BandShape, out_h: int, *, act_depth: int, weight_words: int,
             n_sets: int) -> float:
    """Estimated cycles of windowed layer ``low`` as :func:`schedule` runs it: in output
    parts when it has them, else the cheaper of row bands and (several sets and bands) a
    set-major run."""
    costs = dict(act_depth=act_depth, compute=low.beats, weight_words=weight_words, n_sets=n_sets,
                 n_dma=shape.in_blocks + shape.out_blocks)
    if low.parts:
        cost = parts_cost(shape, out_h, low.parts, **costs)
        return float("inf") if cost is None else cost
    bands, _, cost = choose_bands(low.name, out_h, shape, **costs)
    if n_sets > 1 and len(bands) > 1 and not low.pool_blocks:
        sm = set_major_bands(out_h, shape, **costs)
        if sm:
            cost = min(cost, sm[1])
    return cost


def part_bands(low: LoweredLayer, shape: BandShape, out_h: int, groups: int, blocks: int,
               act_depth: int, batch: int, spread: float = 0) -> tuple[list, bool, float]:
    """:func:`choose_bands` for one output part of ``groups`` output groups writing ``blocks``
    channel blocks, its weights on chip, over ``batch`` images (the cost is the batch's),
    the next part's set (``spread`` words) loading beside its bands, in the pipeline of the
    layer's parts (:meth:`_LayerScheduler.batched_parts`)."""
    return choose_bands(low.name, out_h, replace(shape, out_blocks=blocks), act_depth=act_depth,
                        compute=low.beats * groups / low.desc["out_groups"], weight_words=0, n_sets=1,
                        n_dma=shape.in_blocks + blocks, repeat=batch, spread=spread, running=True)


def batch_parts_cost(low: LoweredLayer, shape: BandShape, out_h: int, *, act_depth: int, weight_words: int,
                     batch: int) -> float:
    """Cycles of a batch through ``low`` run part by part (:meth:`_LayerScheduler.batched_parts`,
    an estimate): the first set's load, then per part the longer of the next set's load and
    the part's bands over every image."""
    w = weight_words / len(low.parts)
    return w + sum(max(w, part_bands(low, shape, out_h, og1 - og0, cb1 - cb0, act_depth, batch, w)[2])
                   for og0, og1, cb0, cb1 in low.parts)


def pipeline(bands: list, pipelined: bool) -> list:
    """The ops of bands, each ``(loads, computes, stores[, after])``, in issue order:
    pipelined bands alternate banks, so band i+1 loads and band i−1 stores while band i
    computes; ``after`` (engine ops that wait for the computes) issue behind those
    transfers, since the core issues in order and they would hold the transfers back."""
    bands = [(*b, []) if len(b) == 3 else b for b in bands]
    if not pipelined or len(bands) == 1:
        return [op for ld, cp, st, af in bands for op in ld + cp + af + st]
    ops = list(bands[0][0])
    for i, (_, cp, _, af) in enumerate(bands):
        ops += cp + (bands[i - 1][2] if i else []) + (bands[i + 1][0] if i + 1 < len(bands) else []) + af
    return ops + bands[-1][2]


# -- the program --------------------------------------------------------------------------

class _LayerScheduler:
    """Schedules one layer of one image into a :class:`Schedule`."""

    def __init__(self, sch: Schedule, cfg, tensors: TensorPlan, weights: WeightPlan, low: LoweredLayer,
                 img: int):
        self.sch, self.cfg, self.t, self.w, self.low, self.img = sch, cfg, tensors, weights, low, img
        self.counted: set = set()         # images whose MACs and beats an op already carries
        #: (add layer, its LoweredLayer) that may run on this conv's output bands (fusable_adds)
        self.then_add = None

    # transfers -------------------------------------------------------------------------
    def _dma(self, cls, name, ent_off, n, buf, rows: RowMap | None = None, blocks: tuple = (1, 0, 0)):
        """A transfer of ``n`` entries of tensor ``name`` from entry ``ent_off`` (``blocks``:
        ``(k, entry step, buffer step)``, k such transfers)."""
        ref, off = self.t.locate(name, self.img)
        wpe = self.t.words_per_entry(name)
        if self.img == 0:
            self.sch.moved[self.low.name] += n * wpe * blocks[0]
        nib = self.t.packed.get(self.t.source(name))
        k, e_step, b_step = blocks
        return cls(ref, off + ent_off * wpe, n, buf, rows, nib, (k, e_step * wpe, b_step))

    def rows_io(self, cls, name, b0, b1, buf, H, W, pitch=None, rows: RowMap | None = None,
                blocks: tuple | None = None, taps: tuple | None = None) -> list:
        """Load (or store) rows [b0, b1) of every channel block of tensor ``name`` — or of
        blocks ``[cb0, cb1)`` — (rows of ``W`` entries in memory, ``pitch`` in the buffer,
        spread over the lanes by ``rows``).  ``taps = (stride, kernel)``, a kernel shorter
        than its stride (a 1×1 stride-2 downsample): only the rows a window reads
        are moved, each at its place in the buffer — half the input's words."""
        cb0, cb1 = blocks or (0, self.t.blocks[self.t.source(name)])
        n, nbuf = (b1 - b0) * W, (b1 - b0) * (pitch or W)
        step = H * W * self.t.words_per_entry(name)
        per = MAX_REPS if step <= field_max(DmaDesc, "ext_step") else 1
        if taps is not None:
            # a row at a time, repeated over the channel blocks
            used = [r for r in range(b0, b1) if (r - b0) % taps[0] < taps[1]]
            return [self._dma(cls, name, (cb * H + r) * W, W, buf + (cb - cb0) * nbuf + (r - b0) * (pitch or W), rows,
                              (min(per, cb1 - cb), H * W, nbuf)) for r in used for cb in range(cb0, cb1, per)]
        if b0 == 0 and b1 == H:
            return [self._dma(cls, name, cb0 * H * W, (cb1 - cb0) * n, buf, rows)]
        # one instruction repeated over the channel blocks (DmaDesc.reps), in runs the
        # descriptor's fields can express
        return [self._dma(cls, name, (cb * H + b0) * W, n, buf + (cb - cb0) * nbuf, rows,
                          (min(per, cb1 - cb), H * W, nbuf)) for cb in range(cb0, cb1, per)]

    def input_io(self, x, b0, b1, buf, H, W, pitch, rows: RowMap | None, blocks: tuple | None = None) -> list:
        """The loads of input rows [b0, b1) of this windowed layer (:meth:`rows_io`; only the
        rows its windows read)."""
        d = self.low.desc
        taps = (d["stride"], d["kernel"]) if d.get("kernel", 0) < d.get("stride", 0) else None
        return self.rows_io(Load, x, b0, b1, buf, H, W, pitch, rows, blocks, taps)

    # compute ---------------------------------------------------------------------------
    def op(self, cls, desc, set_=None, p_off=0, w_off=0):
        """An op of this layer; the layer's MACs and beats count on each image's first op."""
        first = self.img not in self.counted
        self.counted.add(self.img)
        v = replace(self.low, desc=desc, macs=self.low.macs if first else 0, beats=self.low.beats if first else 0)
        return cls(v) if cls is Vec else Conv(v, set_, p_off, w_off)

    def use_set(self, spec) -> int:
        """The index of a use of ``spec`` in :attr:`Schedule.sets`: the last one when the
        previous op's set is this one (an image of a batch after another, or the next band
        starting with the set the last one ended with: still on chip); a use without a load
        when the other half of the buffers still holds it (the set before the last, both
        fitting half); else a new load — into the half the last set does not use, or the
        whole buffers."""
        sch = self.sch
        last = sch.sets[-1] if sch.sets else None
        if last is not None and last.spec is spec:
            return len(sch.sets) - 1
        prev = last.half if last is not None else None
        if spec.fits_half and prev is not None and sch.halves[1 - prev] is spec:
            sch.sets.append(WeightSet(self.low.name, spec, 1 - prev, loaded=False))
        else:
            half = (1 - prev if prev is not None else 0) if spec.fits_half else None
            sch.sets.append(WeightSet(self.low.name, spec, half))
            if half is None:
                sch.halves = [None, None]
            else:
                sch.halves[half] = spec
        return len(sch.sets) - 1

    def pool_ops(self, band, b_lo, b_hi, set_=None) -> list:
        """The op for each channel block b in [b_lo, b_hi) of a layer run block by block (a
        pool or depthwise conv): input block b (its band rows start at in_base + b·rows·W),
        block b's parameter words and (depthwise) its own kernel."""
        og, bw = self.low.desc["out_groups"], self.low.block_w
        ops = []
        for b in range(b_lo, b_hi):
            desc = {**band, "in_base": band["in_base"] + b * band["in_h"] * band["in_w"]}
            if set_ is None:
                ops.append(self.op(Conv, {**desc, "p_base": band["p_base"] + b * og,
                                          "w_base": band["w_base"] + b * bw}))
            else:
                ops.append(self.op(Conv, desc, set_, (b - b_lo) * og, (b - b_lo) * bw))
        return ops

    def band_compute(self, band: dict, only) -> list:
        """The engine ops of one band of a conv layer: with its weights on chip (resident,
        or one set loaded once) one op (a pool: one per block), else one per set."""
        low = self.low
        if self.w.resident or only is not None:
            if low.pool_blocks:
                return self.pool_ops(band, 0, low.pool_blocks, only)
            return [self.op(Conv, band, only)]
        ops = []
        specs = self.w.sets[low.name]
        if self.sch.sets and self.sch.sets[-1].spec is specs[-1]:
            specs = specs[::-1]          # serpentine: the last band's last sets are still on chip
        for spec in specs:
            j = self.use_set(spec)
            if low.pool_blocks:                          # sets of channel blocks
                ops += self.pool_ops(band, spec.lo, spec.hi, j)
            else:                                        # sets of output groups
                ops.append(self.op(Conv, {**band, "out_groups": spec.hi - spec.lo}, j))
        return ops

    # layer kinds -----------------------------------------------------------------------
    def windowed(self, x, in_shape, out_shape) -> list:
        """A conv, linear, max-pool or engine pool, in row bands."""
        low, d, t = self.low, self.low.desc, self.t
        _, H, W = in_shape
        _, OH, OW = out_shape
        icb, ocb = t.blocks[t.source(x)], t.blocks[low.name]
        k, s, p = d["kernel"], d["stride"], d["pad"]
        sets = self.w.sets.get(low.name, []) if low.kind == "conv" and not self.w.resident else []
        n_sets = max(1, len(sets))
        shape, g, in_map, out_map = self.geometry(x, in_shape, out_shape)
        if low.parts:
            self.sch.in_parts.add(low.name)
            return self.in_parts(x, sets, g, in_map, out_map, (H, W, OH, OW), shape)
        costs = dict(act_depth=self.cfg.act_depth, compute=low.beats, weight_words=self.w.set_words(low.name),
                     n_sets=n_sets, n_dma=icb + ocb)
        fuse = self.fused_add(n_sets, ocb, costs, shape, OH)
        if fuse:
            return self.bands_with_add(x, fuse, (H, W, OH, OW),
                                       only=self.use_set(sets[0]) if len(sets) == 1 else None)
        bands, pipelined, cost = choose_bands(low.name, OH, shape, **costs)
        groups = [(0, icb)]                  # channel blocks a band holds: all of them, or
        if low.kind == "vec" and d["kind"] == VecKind.MAXPOOL and icb > 1:   # a max-pool's groups
            split = self.block_groups(icb, OH, shape, costs, cost)
            if split:
                bg, bands, pipelined = split
                groups = [(cb0, min(icb, cb0 + bg)) for cb0 in range(0, icb, bg)]
        if n_sets > 1 and len(bands) > 1 and not low.pool_blocks:
            sm = set_major_bands(OH, shape, **costs)
            if sm and sm[1] < cost:
                self.sch.set_major.add(low.name)
                return self.set_major(x, sm[0], sets, g, in_map, out_map, (H, W, OH, OW), shape)
        only = self.use_set(sets[0]) if len(sets) == 1 else None     # one set: loaded once for all bands
        half_a = self.cfg.act_depth // ACT_BANKS
        parts = []
        for cb0, cb1 in groups:              # (one pipeline over every group's bands)
            blocks = (cb0, cb1) if len(groups) > 1 else None
            for oy0, oy1 in bands:
                i = len(parts)
                b0, b1, pad_top = band_rows(oy0, oy1, k, s, p, H)
                base = (i % ACT_BANKS) * half_a if pipelined else 0
                a_out = base + (cb1 - cb0) * g.pitch * (b1 - b0)
                banks = 1 << (i % ACT_BANKS) if pipelined else (1 << ACT_BANKS) - 1
                # a lane's rows start at its column -pad: column 0 is pad entries in
                loads = self.input_io(x, b0, b1, base + g.pad, H, W, g.pitch, in_map, blocks=blocks)
                stores = self.rows_io(Store, low.name, oy0, oy1, a_out, OH, OW, g.out_cols, out_map, blocks=blocks)
                if low.kind == "vec":
                    compute = [self.op(Vec, {**d, "cb": cb1 - cb0 if blocks else d["cb"], "a_base": base + g.pad,
                                             "out_base": a_out, "in_h": b1 - b0, "pad_top": pad_top,
                                             "out_h": oy1 - oy0, "banks": banks})]
                else:
                    compute = self.band_compute({**d, "in_base": base + g.pad, "in_h": b1 - b0, "pad_top": pad_top,
                                                 "out_base": a_out, "out_h": oy1 - oy0, "banks": banks}, only)
                parts.append((loads, compute, stores))
        return pipeline(parts, pipelined)

    def block_groups(self, icb: int, OH: int, shape: BandShape, costs: dict, whole: float):
        """A max-pool's bands over groups of its channel blocks — ``(blocks a group, row bands,
        pipelined)`` — where they cost less than bands of every block (``whole``): a band of
        fewer blocks holds more rows in a bank, so fewer of the rows its windows share with the
        next band are loaded twice (ResNet-18's 112×112×64 input: one output row a band over
        all 8 blocks, its 3 input rows loaded for 2 rows' worth; 3 output rows over 4 blocks,
        7 rows for 6).  ``None`` if no grouping is cheaper."""
        best = None
        for bg in sorted({-(-icb // n) for n in range(2, icb + 1)}):
            groups = -(-icb // bg)
            sub = replace(shape, in_blocks=bg, out_blocks=bg)
            try:
                bands, pipelined, cost = choose_bands(self.low.name, OH, sub, **{
                    **costs, "compute": self.low.beats * bg / icb}, repeat=groups)
            except CompileError:
                continue
            if cost < whole and (best is None or cost < best[0]):
                best = (cost, bg, bands, pipelined)
        return best[1:] if best else None

    def add_operands(self):
        """``(add layer, its LoweredLayer, other operand, conv is operand a)`` of the residual
        add (:attr:`then_add`) this conv may run on its output on chip, or ``None``: a conv
        (not a pool) whose other operand is shaped as its output."""
        if self.then_add is None or self.low.kind != "conv" or self.low.pool_blocks:
            return None
        l, add_low = self.then_add
        t, me = self.t, self.low.name
        a, b = (t.source(v) for v in l.inputs)
        other = b if a == me else a
        if t.blocks[other] != t.blocks[me] or t.entries[other] != t.entries[me]:
            return None
        return l, add_low, other, a == me

    @staticmethod
    def add_ops(add_low: LoweredLayer, conv_a: bool, a_out: int, at: int, n_lane: int, banks: int,
                beats: int) -> list:
        """The vector ops adding the other operand's ``n_lane`` entries (each lane) at ``at`` to
        the conv's output at ``a_out``, the sum over the output, in ops the descriptor's width
        allows; ``beats`` on the first."""
        a_at, b_at = (a_out, at) if conv_a else (at, a_out)
        max_w, ops = field_max(VecDesc, "in_w"), []
        for o in range(0, n_lane, max_w):
            n = min(max_w, n_lane - o)
            desc = {**add_low.desc, "a_base": a_at + o, "b_base": b_at + o, "out_base": a_out + o,
                    "in_w": n, "out_w": n, "banks": banks}
            ops.append(Vec(replace(add_low, desc=desc, macs=0, beats=beats if o == 0 else 0)))
        return ops

    def fused_add(self, n_sets: int, ocb: int, costs: dict, shape: BandShape, OH: int):
        """The bands for running this conv's residual add (:attr:`then_add`) on its output while
        it is on chip — ``(add layer, add's LoweredLayer, other operand, conv is operand a,
        bands, pipelined)`` — or ``None``: its bands must fit the add's other operand beside
        the output (each band holds its input, the output and the other operand; the sum
        overwrites the output), and a conv streamed in several weight sets is fused only where
        the estimate says it pays (below)."""
        operands = self.add_operands()
        if operands is None:
            return None
        l, add_low, other, conv_a = operands
        wide = replace(shape, out_blocks=2 * ocb)          # the other operand in, the sum out
        try:
            bands, pipelined, cost = choose_bands(self.low.name, OH, wide, **costs)
        except CompileError:
            return None
        if n_sets > 1:
            # streamed weights: the fused bands are shorter (the other operand beside the
            # output), so the sets go by more often; fused when that costs less than the add
            # on its own (moving its operand and sum: two tensors) and the conv's own bands
            # (or set-major run); the vector unit's two cycles an entry count either way
            own, _, plain = choose_bands(self.low.name, OH, shape, **costs)
            sm = set_major_bands(OH, shape, **costs) if len(own) > 1 else None
            plain = min(plain, sm[1]) if sm else plain
            if cost >= plain + 2 * shape.out_wpe * shape.out_moved(OH):
                return None
        return l, add_low, other, conv_a, bands, pipelined

    def bands_with_add(self, x, fuse, dims, only) -> list:
        """This conv in row bands with its residual add run on each band's output on chip:
        the band's rows of the add's other operand load beside the output, the vector unit
        adds them (the sum overwrites the output) and the sum's rows are stored — the conv's
        output never goes to memory, nor the add's operands back in."""
        low, d = self.low, self.low.desc
        l, add_low, other, conv_a, bands, pipelined = fuse
        H, W, OH, OW = dims
        k, s, p = d["kernel"], d["stride"], d["pad"]
        icb, ocb = self.t.blocks[self.t.source(x)], self.t.blocks[low.name]
        shape, g, in_map, out_map = self.geometry(x, (0, H, W), (0, OH, OW))
        half_a = self.cfg.act_depth // ACT_BANKS
        self.sch.fused[l.name] = low.name
        first_add = True
        parts = []
        for i, (oy0, oy1) in enumerate(bands):
            b0, b1, pad_top = band_rows(oy0, oy1, k, s, p, H)
            base = (i % ACT_BANKS) * half_a if pipelined else 0
            a_out = base + icb * g.pitch * (b1 - b0)
            n_lane = ocb * g.out_cols * (oy1 - oy0)               # output entries in each lane
            at = a_out + n_lane                                   # the other operand's rows
            banks = 1 << (i % ACT_BANKS) if pipelined else (1 << ACT_BANKS) - 1
            loads = (self.input_io(x, b0, b1, base + g.pad, H, W, g.pitch, in_map)
                     + self.rows_io(Load, other, oy0, oy1, at, OH, OW, g.out_cols, out_map))
            compute = self.band_compute({**d, "in_base": base + g.pad, "in_h": b1 - b0, "pad_top": pad_top,
                                         "out_base": a_out, "out_h": oy1 - oy0, "banks": banks}, only)
            adds = self.add_ops(add_low, conv_a, a_out, at, n_lane, banks, add_low.beats if first_add else 0)
            first_add = False
            stores = self.rows_io(Store, l.name, oy0, oy1, a_out, OH, OW, g.out_cols, out_map)
            parts.append((loads, compute, stores, adds))    # (the add after the neighbours' transfers)
        return pipeline(parts, pipelined)

    def geometry(self, x, in_shape, out_shape) -> tuple:
        """(:class:`BandShape`, :class:`LaneGeometry`, input and output :class:`RowMap` — ``None``
        on one lane) of this windowed layer reading ``x``."""
        _, _, W = in_shape
        _, _, OW = out_shape
        shape, g = band_shape(self.t, self.low, x, in_shape, out_shape)
        if g.pitch == W and g.out_cols == OW:
            return shape, g, None, None
        # spread over the pixel lanes
        return (shape, g, RowMap(W, g.pitch, g.step, -g.pad, g.pitch - g.pad, g.lane_mask),
                RowMap(OW, g.out_cols, g.out_cols, 0, g.out_cols, g.lane_mask))

    def batched_parts(self, x, in_shape, out_shape, batch: int) -> list:
        """A batch through a layer dealt in output parts of one weight set each: part by part,
        the set loaded once and every image's row bands run under it (pipelined across the
        images when a band fits a bank), each band's output rows of the part's blocks stored.
        Pipelined parts in a row make one pipeline: the next part's first band loads while the
        last one's computes (its set is in the other half by then)."""
        low, d, t = self.low, self.low.desc, self.t
        _, H, W = in_shape
        _, OH, OW = out_shape
        k, s, p = d["kernel"], d["stride"], d["pad"]
        icb = t.blocks[t.source(x)]
        shape, g, in_map, out_map = self.geometry(x, in_shape, out_shape)
        half_a, all_banks = self.cfg.act_depth // ACT_BANKS, (1 << ACT_BANKS) - 1
        self.sch.batch_parts.add(low.name)
        fuse, plans = self.part_add(shape, OH, batch)
        if fuse:
            add_l, add_low, other, conv_a = fuse
            self.sch.fused[add_l.name] = low.name
        added = set()
        runs = []                # (items, pipelined): consecutive pipelined parts share one pipeline
        for (og_lo, og_hi, cb_lo, cb_hi), (bands, pipelined) in zip(low.parts, plans):
            (spec,) = [sp for sp in self.w.sets[low.name] if og_lo <= sp.lo < og_hi]
            j = self.use_set(spec)
            if not (pipelined and runs and runs[-1][1]):
                runs.append(([], pipelined))
            items = runs[-1][0]
            for img in range(batch):
                self.img = img
                for oy0, oy1 in bands:
                    i = len(items)
                    b0, b1, pad_top = band_rows(oy0, oy1, k, s, p, H)
                    base = (i % ACT_BANKS) * half_a if pipelined else 0
                    a_out = base + icb * g.pitch * (b1 - b0)
                    banks = 1 << (i % ACT_BANKS) if pipelined else all_banks
                    conv = self.op(Conv, {**d, "in_base": base + g.pad, "in_h": b1 - b0, "pad_top": pad_top,
                                          "out_base": a_out, "out_h": oy1 - oy0, "out_groups": spec.hi - spec.lo,
                                          "banks": banks}, j)
                    loads = self.input_io(x, b0, b1, base + g.pad, H, W, g.pitch, in_map)
                    if not fuse:
                        items.append((loads, [conv], self.rows_io(Store, low.name, oy0, oy1, a_out, OH, OW,
                                                                  g.out_cols, out_map, (cb_lo, cb_hi))))
                        continue
                    # the residual add on the part's output rows: its other operand's rows of
                    # the part's blocks beside them, the sum over the output, the sum stored
                    n_lane = (cb_hi - cb_lo) * g.out_cols * (oy1 - oy0)
                    at = a_out + n_lane
                    loads += self.rows_io(Load, other, oy0, oy1, at, OH, OW, g.out_cols, out_map, (cb_lo, cb_hi))
                    adds = self.add_ops(add_low, conv_a, a_out, at, n_lane, banks,
                                        0 if img in added else add_low.beats)
                    added.add(img)
                    items.append((loads, [conv], self.rows_io(Store, add_l.name, oy0, oy1, a_out, OH, OW,
                                                              g.out_cols, out_map, (cb_lo, cb_hi)), adds))
        self.img = 0
        return [op for items, pipelined in runs for op in pipeline(items, pipelined)]

    def part_add(self, shape: BandShape, OH: int, batch: int) -> tuple:
        """Whether a batch run part by part runs this conv's residual add (:attr:`then_add`)
        on each band's output while it is on chip — ``((add layer, its LoweredLayer, other
        operand, conv is operand a) or None, [(bands, pipelined)] a part)``: where every
        part's bands fit the other operand's rows beside the output and cost less than the
        add on its own (moving the conv's output, its operand and the sum: three tensors)."""
        low, depth = self.low, self.cfg.act_depth
        w = self.w.set_words(low.name) / len(low.parts)        # the next set, beside each part

        def plans(extra):
            return [part_bands(low, replace(shape, out_blocks=extra * (cb1 - cb0)), OH, og1 - og0,
                               extra * (cb1 - cb0), depth, batch, w) for og0, og1, cb0, cb1 in low.parts]

        plain = plans(1)
        operands = self.add_operands()
        if operands is None:
            return None, [b[:2] for b in plain]
        try:
            fused = plans(2)
        except CompileError:
            return None, [b[:2] for b in plain]
        alone = 3 * batch * shape.out_wpe * shape.out_moved(OH)
        if sum(f[2] for f in fused) >= sum(q[2] for q in plain) + alone:
            return None, [b[:2] for b in plain]
        return operands, [b[:2] for b in fused]

    def images_on_chip(self, x, in_shape, out_shape, batch: int) -> list | None:
        """A batch through a streamed layer whose every image's input and output fit the
        buffer at once (a classifier): each image's input loaded, every set once over all the
        images, the outputs stored.  ``None`` when they do not fit."""
        low, d = self.low, self.low.desc
        _, H, W = in_shape
        _, OH, OW = out_shape
        shape, g, in_map, out_map = self.geometry(x, in_shape, out_shape)
        at = shape.in_rows(OH) + shape.out_rows(OH)          # one image's area
        if batch * at > self.cfg.act_depth or low.parts or low.pool_blocks:
            return None
        self.sch.images_on_chip.add(low.name)
        b0, b1, pad_top = band_rows(0, OH, d["kernel"], d["stride"], d["pad"], H)
        out_at = shape.in_rows(OH)
        ops = []
        for img in range(batch):
            self.img = img
            ops += self.input_io(x, b0, b1, img * at + g.pad, H, W, g.pitch, in_map)
        for spec in self.w.sets[low.name]:
            j = self.use_set(spec)
            for img in range(batch):
                self.img = img
                ops.append(self.op(Conv, {**d, "in_base": img * at + g.pad, "in_h": b1 - b0, "pad_top": pad_top,
                                          "out_base": img * at + out_at, "out_h": OH, "banks": (1 << ACT_BANKS) - 1,
                                          "out_groups": spec.hi - spec.lo}, j))
        for img in range(batch):
            self.img = img
            ops += self.rows_io(Store, low.name, 0, OH, img * at + out_at, OH, OW, g.out_cols, out_map)
        self.img = 0
        return ops

    def set_major(self, x, bands, sets, g: LaneGeometry, in_map, out_map, dims, shape: BandShape) -> list:
        """Every set once, applied to every band in turn: the bands' outputs stay on chip (one
        after another above the input area), an input band is loaded for each (set, band)."""
        low, d = self.low, self.low.desc
        H, W, OH, OW = dims
        k, s, p = d["kernel"], d["stride"], d["pad"]
        all_banks = (1 << ACT_BANKS) - 1
        in_cap = max(shape.in_rows(b1 - b0) for b0, b1 in bands)
        out_at, top = [], in_cap
        for b0, b1 in bands:
            out_at.append(top)
            top += shape.out_rows(b1 - b0)
        ops = []
        for spec in sets:
            j = self.use_set(spec)
            for i, (oy0, oy1) in enumerate(bands):
                b0, b1, pad_top = band_rows(oy0, oy1, k, s, p, H)
                ops += self.input_io(x, b0, b1, g.pad, H, W, g.pitch, in_map)
                ops.append(self.op(Conv, {**d, "in_base": g.pad, "in_h": b1 - b0, "pad_top": pad_top,
                                          "out_base": out_at[i], "out_h": oy1 - oy0, "banks": all_banks,
                                          "out_groups": spec.hi - spec.lo}, j))
        for i, (oy0, oy1) in enumerate(bands):
            ops += self.rows_io(Store, low.name, oy0, oy1, out_at[i], OH, OW, g.out_cols, out_map)
        return ops

    def in_parts(self, x, sets, g: LaneGeometry, in_map, out_map, dims, shape: BandShape) -> list:
        """The whole input loaded once; then per output part (:attr:`LoweredLayer.parts`) its
        sets, each over the whole input, writing the part's channel blocks above the input
        (its parameter words count channels from the part's first block), and one store of
        those blocks."""
        low, d = self.low, self.low.desc
        H, W, OH, OW = dims
        b0, b1, pad_top = band_rows(0, OH, d["kernel"], d["stride"], d["pad"], H)
        out_at = shape.in_rows(OH)
        ops = self.input_io(x, b0, b1, g.pad, H, W, g.pitch, in_map)
        for og_lo, og_hi, cb_lo, cb_hi in low.parts:
            for spec in sets:
                if og_lo <= spec.lo < og_hi:
                    ops.append(self.op(Conv, {**d, "in_base": g.pad, "in_h": b1 - b0, "pad_top": pad_top,
                                              "out_base": out_at, "out_h": OH, "banks": (1 << ACT_BANKS) - 1,
                                              "out_groups": spec.hi - spec.lo}, self.use_set(spec)))
            ops += self.rows_io(Store, low.name, 0, OH, out_at, OH, OW, g.out_cols, out_map, (cb_lo, cb_hi))
        return ops

    def add(self, a, b) -> list:
        """A residual add in pipelined chunks of a third of a bank each (a, b, sum); with
        pixel lanes a chunk is one row spread over them, every lane adding its share."""
        n_all, half_a, P = self.t.entries[self.low.name], self.cfg.act_depth // ACT_BANKS, self.cfg.pixels
        T = min(half_a // 3, field_max(VecDesc, "in_w"))         # entries a lane holds per operand
        if P > 1:
            T = min(T * P, field_max(DmaDesc, "row_w"))
        parts = []
        for i, o in enumerate(range(0, n_all, T)):
            n, base = min(T, n_all - o), (i % ACT_BANKS) * half_a
            L = -(-n // P)                                       # a lane's entries
            rows = RowMap(n, L, L, 0, L, (1 << -(-n // L)) - 1) if P > 1 else None
            Tl = -(-T // P)
            loads = [self._dma(Load, a, o, n, base, rows), self._dma(Load, b, o, n, base + Tl, rows)]
            compute = [self.op(Vec, {**self.low.desc, "a_base": base, "b_base": base + Tl, "out_base": base + 2 * Tl,
                                     "in_w": L, "out_w": L, "banks": 1 << (i % ACT_BANKS)})]
            parts.append((loads, compute, [self._dma(Store, self.low.name, o, n, base + 2 * Tl, rows)]))
        return pipeline(parts, True)

    def global_pool(self, x) -> list:
        """A global average pool on the vector unit (lane 0), as many whole channel blocks at
        a time as the buffer holds."""
        n_in, ocb = self.t.entries[self.t.source(x)], self.t.blocks[self.low.name]
        plane = n_in // ocb
        per = min(ocb, self.cfg.act_depth // (plane + 1))
        if per == 0:
            raise CompileError(f"layer {self.low.name!r}: global pooling needs a channel block's {plane} "
                               f"entries on chip; the buffer holds {self.cfg.act_depth}")
        ops = []
        for b0 in range(0, ocb, per):
            m = min(per, ocb - b0)
            ops += [self._dma(Load, x, b0 * plane, m * plane, 0),
                    self.op(Vec, {**self.low.desc, "cb": m, "a_base": 0, "out_base": m * plane,
                                  "banks": (1 << ACT_BANKS) - 1}),
                    self._dma(Store, self.low.name, b0, m, m * plane)]
        return ops


def schedule(qm, cfg, shapes: dict, tensors: TensorPlan, lowered: dict, weights: WeightPlan,
             batch: int) -> Schedule:
    """Every layer in order — image by image, or (a batch of streamed weights) layer by layer
    for the whole batch — each followed (the first image, or the batch) by a :class:`Stamp`."""
    names = [l.name for l in qm.layers[1:] if l.name in lowered]
    sch = Schedule(moved={n: 0 for n in names}, layer_major=batch > 1 and not weights.resident,
                   adds=fusable_adds(qm))
    layers = [l for l in qm.layers[1:] if l.name in lowered]
    if sch.layer_major:
        for l in layers:
            sch.ops += _batch_layer(sch, cfg, shapes, tensors, weights, lowered, l, batch)
            sch.ops.append(Stamp(names.index(l.name) + 1))
        for s in sch.sets:                          # a set's words shared by the batch
            sch.moved[s.layer] += s.spec.words / batch if s.loaded else 0
        sch.moved = {n: round(w) for n, w in sch.moved.items()}
        return sch
    for img in range(batch):
        for l in layers:
            sch.ops += _image_layer(_scheduler(sch, cfg, tensors, weights, lowered, l, img), l, shapes)
            if img == 0:
                sch.ops.append(Stamp(names.index(l.name) + 1))
    for s in sch.sets[:len(sch.sets) // batch]:                      # the first image's sets
        sch.moved[s.layer] += s.spec.words if s.loaded else 0
    return sch


def _image_layer(ls: _LayerScheduler, l, shapes: dict) -> list:
    """The ops of layer ``l`` for one image (none for an add its conv ran)."""
    x, t = l.inputs[0], ls.t
    if l.op == "add" and l.name in ls.sch.fused:
        return []
    if l.op in ("conv", "linear", "maxpool") or ls.low.kind == "conv":     # (an avgpool may be a conv)
        return ls.windowed(x, shapes[t.source(x)], shapes[l.name])
    if l.op == "add":
        return ls.add(l.inputs[0], l.inputs[1])
    return ls.global_pool(x)


def _scheduler(sch: Schedule, cfg, tensors: TensorPlan, weights: WeightPlan, lowered: dict, l,
               img: int) -> _LayerScheduler:
    """The scheduler of layer ``l`` for image ``img``, told the residual add it may run
    (:func:`~.allocate.fusable_adds`)."""
    ls = _LayerScheduler(sch, cfg, tensors, weights, lowered[l.name], img)
    add = sch.adds.get(l.name)
    if add is not None and add.name in lowered and "add" in cfg.vector_ops:
        ls.then_add = (add, lowered[add.name])
    return ls


def _batch_layer(sch: Schedule, cfg, shapes: dict, tensors: TensorPlan, weights: WeightPlan, lowered: dict,
                 l, batch: int) -> list:
    """The ops of layer ``l`` for every image of a batch (weights streamed): a layer in parts
    of one set each part by part, one whose images fit on chip together with each set over
    all of them, else image by image (a single set loads once: :meth:`_LayerScheduler.use_set`)."""
    low = lowered[l.name]
    sets = weights.sets.get(low.name, [])
    if low.kind == "conv" and len(sets) > 1:
        ls = _scheduler(sch, cfg, tensors, weights, lowered, l, 0)
        x = l.inputs[0]
        dims = shapes[tensors.source(x)], shapes[l.name]
        if low.parts and len(sets) == len(low.parts):
            ops = ls.batched_parts(x, *dims, batch)
            sch.ops_of[low.name] = len(ops) + len(sets)
            return ops
        ops = ls.images_on_chip(x, *dims, batch)
        if ops is not None:
            return ops
    return [op for img in range(batch)
            for op in _image_layer(_scheduler(sch, cfg, tensors, weights, lowered, l, img), l, shapes)]
