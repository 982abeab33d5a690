"""Whole-network compiler: a ``QuantizedModel`` → one :class:`Program` for the core.

Memory: every activation tensor lives in external memory (the ``work`` region, first-fit
by liveness, so a skip tensor stays as long as its add needs it); the network input and
output have regions of their own per image of the batch.  Each layer moves its operands
through the on-chip activation buffer:

* **Row bands.** A conv or max-pool runs in bands of output rows: the band's input rows
  (with the kernel's halo) are loaded, the engine runs the band (``pad_top`` says how many
  of the padding rows lie above it; the bottom padding follows from the band height), the
  output rows are stored.  Bands that fit one bank of the activation buffer alternate
  banks and are software-pipelined: band i+1 loads and band i−1 stores while band i
  computes.  A layer whose weights stream in several sets may instead take the whole
  buffer for fewer bands (each band reloads the sets); a small cost model picks.  A
  residual add streams in pipelined chunks; a global average pool needs its input on chip.
* **Weights.** When every layer's weights and parameters fit the buffers they are loaded
  once for the whole batch.  Otherwise each layer streams them in sets of output groups;
  a set that fits half a buffer goes to the half the running layer does not use, and is
  loaded *while the previous set computes* (the core overlaps weight loads with the
  engine).  With several bands and several sets, bands are outer: every set is applied
  to the band on chip, so no partial output is ever stored.
* **First layer.** A conv on the network input with few channels (ResNet's 3-channel 7×7)
  would fill only ``C_in`` of ``C`` columns; the host lays its input out as im2col
  columns instead (:func:`~rmsmp.generator.lower.im2col_input`) and the layer runs as a
  1×1 conv over ``C_in·k²`` channels.  The program records the transform.

A graph the hardware cannot map fails with the layer named.  The ``QuantizedModel`` is
read by attribute; ``rmsmp.generator`` does not import ``rmsmp.host``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from rmsmp.rtl.dma import words_per_entry
from rmsmp.rtl.engine import buffer_ports
from rmsmp.rtl.isa import ACT_BANKS, DIM_BITS, Buffer

from .lower import CompileError, lower_avgpool_conv, lower_conv, lower_vec
from .program import Program, ProgramBuilder, _width

__all__ = ["compile_model", "infer_shapes"]


def infer_shapes(qm, input_shape) -> dict:
    """[C, H, W] of every layer's output (linear: [O, 1, 1])."""
    shapes = {qm.input.name: tuple(input_shape)}
    for l in qm.layers[1:]:
        c, h, w = shapes[l.inputs[0]]
        if l.op == "conv":
            k, s, p = l.attrs["kernel"], l.attrs["stride"], l.attrs["padding"]
            shapes[l.name] = (l.rows, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)
        elif l.op == "linear":
            if c != l.weight.shape[1] or (h, w) != (1, 1):
                raise CompileError(f"layer {l.name!r}: linear over a {c}×{h}×{w} tensor; only over [C, 1, 1] "
                                   "(after global pooling) is supported")
            shapes[l.name] = (l.rows, 1, 1)
        elif l.op == "maxpool":
            k, s, p = l.attrs["kernel"], l.attrs["stride"], l.attrs["padding"]
            shapes[l.name] = (c, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)
        elif l.op == "avgpool":
            shapes[l.name] = (c, 1, 1)
        elif l.op == "flatten":
            if (h, w) != (1, 1):
                raise CompileError(f"layer {l.name!r}: flatten of a {c}×{h}×{w} tensor (only 1×1 is supported)")
            shapes[l.name] = (c, 1, 1)
        elif l.op == "add":
            if shapes[l.inputs[1]] != (c, h, w):
                raise CompileError(f"layer {l.name!r}: add of {shapes[l.inputs[1]]} and {(c, h, w)}")
            shapes[l.name] = (c, h, w)
        else:
            raise CompileError(f"layer {l.name!r}: op {l.op!r} has no hardware mapping (fuse ReLU into its producer)")
    return shapes


class _Allocator:
    """First-fit allocation of words in a region."""

    def __init__(self, size: int | None, what: str):
        self.size, self.what, self.top = size, what, 0
        self.free = [(0, size if size is not None else 1 << 62)]

    def alloc(self, n: int, what: str) -> int:
        for i, (a, m) in enumerate(self.free):
            if m >= n:
                self.free[i] = (a + n, m - n)
                self.top = max(self.top, a + n)
                return a
        raise CompileError(f"{what}: needs {n} words, the {self.size}-word {self.what} has no room")

    def release(self, a: int, n: int):
        self.free.append((a, n))
        self.free.sort()
        merged = []
        for s, m in self.free:
            if merged and merged[-1][0] + merged[-1][1] == s:
                merged[-1] = (merged[-1][0], merged[-1][1] + m)
            else:
                merged.append((s, m))
        self.free = merged


class _Im2colLayer:
    """The first conv seen as a 1×1 conv over its im2col columns (same name, rows, output)."""

    def __init__(self, layer):
        self._l = layer
        q = layer.qweight
        self.qweight = q.reshape(q.shape[0], -1, 1, 1)
        self.attrs = {**layer.attrs, "kernel": 1, "stride": 1, "padding": 0}

    def __getattr__(self, name):
        return getattr(self._l, name)


def _im2col_plan(qm, cfg, shapes):
    """The first layer's im2col transform, when it fills the columns better; else None."""
    inp = qm.input.name
    users = [l for l in qm.layers[1:] if inp in l.inputs]
    if len(users) != 1 or users[0].op != "conv":
        return None
    l, C = users[0], cfg.columns
    k, s, p = l.attrs["kernel"], l.attrs["stride"], l.attrs["padding"]
    cin = shapes[inp][0]
    if k == 1 or math.ceil(cin * k * k / C) >= math.ceil(cin / C) * k * k:
        return None
    _, oh, ow = shapes[l.name]
    return {"layer": l.name, "kernel": k, "stride": s, "padding": p, "shape": (cin * k * k, oh, ow)}


@dataclass
class _Set:
    """One load of a chunk of a layer's weights and parameters."""
    layer: str
    blobs: list            # (buffer code, blob name, DmaDesc.wbits)
    words: int             # bus words moved
    half: int | None       # 0/1: the half of the buffers it occupies; None: all of them


def _band_rows(oy0, oy1, k, s, p, H):
    """Input rows [b0, b1) a band of output rows [oy0, oy1) reads, and its pad_top."""
    b0 = max(0, oy0 * s - p)
    b1 = min(H, (oy1 - 1) * s - p + k)
    return b0, b1, p + b0 - oy0 * s


def compile_model(qm, cfg, input_shape, *, batch: int = 1) -> Program:
    """Compile ``qm`` for ``cfg`` and an input of ``input_shape`` ([C, H, W]); the program
    runs ``batch`` images one after another."""
    for l in qm.layers:
        if l.out.is_log:
            users = [u.name for u in qm.layers if l.name in u.inputs]
            raise CompileError(f"layer {l.name!r} produces logarithmic (base √2, MXQN) activations "
                               f"read by {', '.join(repr(u) for u in users) or 'the host'}; this accelerator's "
                               "lanes and post-processing take fixed-point activations only; quantize with "
                               "method='mxqn', log_activations=False to run it here (golden runs it as is)")
    C, bus, A = cfg.columns, cfg.bus_width, cfg.act_depth
    wpe = words_per_entry(8 * C, bus)                     # bus words per activation entry
    shapes = infer_shapes(qm, input_shape)
    inp, out = qm.input.name, qm.output.name
    im2col = _im2col_plan(qm, cfg, shapes)
    if im2col:
        shapes[inp] = im2col["shape"]
    blocks = {n: math.ceil(s[0] * (2 if qm[n].out.bits > 8 else 1) / C) for n, s in shapes.items()}
    entries = {n: blocks[n] * s[1] * s[2] for n, s in shapes.items()}

    alias, last_use = {}, {}
    for i, l in enumerate(qm.layers):
        if l.op == "flatten":
            alias[l.name] = alias.get(l.inputs[0], l.inputs[0])
        for x in l.inputs:
            last_use[alias.get(x, x)] = i

    # -- external workspace: tensors other than the network input/output, by liveness ----------
    work = _Allocator(None, "workspace")
    offset = {}
    for i, l in enumerate(qm.layers):
        if l.name in alias or l.name in (inp, out):
            continue
        offset[l.name] = work.alloc(entries[l.name] * wpe, f"tensor {l.name!r}")
        for x in set(l.inputs):
            src = alias.get(x, x)
            if last_use.get(src) == i and src in offset:
                work.release(offset[src], entries[src] * wpe)
        if last_use.get(l.name, -1) < i:          # never read (cannot happen in a checked graph)
            work.release(offset[l.name], entries[l.name] * wpe)

    def loc(name, img):
        name = alias.get(name, name)
        if name == inp:
            return f"x{img}", 0
        if name == out:
            return f"y{img}", 0
        return "work", offset[name]

    # -- lower every layer (buffer addresses are set per band below) ----------------------------
    lowered = {}
    for l in qm.layers[1:]:
        c, h, w = shapes[l.inputs[0]]
        if l.op in ("conv", "linear"):
            src = _Im2colLayer(l) if im2col and l.name == im2col["layer"] else l
            lowered[l.name] = lower_conv(qm, src, cfg, in_hw=(h, w), in_base=0, out_base=0)
        elif l.op == "avgpool" and "avgpool" not in cfg.vector_ops:
            lowered[l.name] = lower_avgpool_conv(qm, l, cfg, channels=c, in_hw=(h, w))
        elif l.op in ("add", "maxpool", "avgpool"):
            lowered[l.name] = lower_vec(qm, l, cfg, channels=c, in_hw=(h, w), a_base=0, b_base=0, out_base=0)
    convs = [low for low in lowered.values() if low.kind == "conv"]
    g0 = cfg.lane_groups[0].scheme
    resident = (sum(len(low.weights[g0]) for low in convs) <= cfg.weight_depth
                and sum(len(low.params) for low in convs) <= cfg.acc_depth)

    ports = buffer_ports(cfg)
    pwidth = _width(ports["par_w"][1])
    pb = ProgramBuilder(cfg)
    for i in range(batch):
        pb.blob(f"x{i}", [0] * entries[inp], 8 * C)
        pb.region(f"y{i}", entries[out], 8 * C)
    pb.region("work", max(work.top, 1), bus)

    # weight sets of a streamed layer: chunks of output groups, each fitting half the buffers
    # (loaded while the previous chunk computes) or, failing that, all of them
    chunks = {}
    if resident:
        w_next = p_next = 0
        for low in convs:
            low.desc["w_base"], low.desc["p_base"] = w_next, p_next
            w_next += len(low.weights[g0])
            p_next += len(low.params)
        for k, g in enumerate(cfg.lane_groups):      # one load per layer: each packs at its own width
            for low in convs:
                wbits, width, words = low.packed[g.scheme]
                pb.load(Buffer.WEIGHT0 + k, pb.blob(f"{low.name}.w_{g.scheme}", words, width, weights=k),
                        low.desc["w_base"], wbits=wbits)
        pb.load(Buffer.PARAM, pb.blob("params", [p for low in convs for p in low.params], pwidth))
    else:
        for low in convs:
            og_n = low.desc["out_groups"]
            per_og = len(low.weights[g0]) // og_n
            if per_og > cfg.weight_depth:
                raise CompileError(f"layer {low.name!r}: one output group needs {per_og} weight entries, the "
                                   f"buffers hold {cfg.weight_depth} (input-channel tiling is not implemented)")

            def make_set(tag, w0, w1, p0, p1):
                """Blobs of one weight set: entries [w0, w1) of every lane group, params [p0, p1)."""
                blobs = [(Buffer.WEIGHT0 + k, pb.blob(f"{low.name}.{tag}.w_{g.scheme}", low.packed[g.scheme][2][w0:w1],
                                                      low.packed[g.scheme][1], weights=k), low.packed[g.scheme][0])
                         for k, g in enumerate(cfg.lane_groups)]
                return blobs + [(Buffer.PARAM, pb.blob(f"{low.name}.{tag}.p", low.params[p0:p1], pwidth), 0)]

            lst = []
            if low.pool_blocks:
                # a pool on the conv engine: every set holds its one kernel and whole blocks' parameters
                if og_n * per_og > cfg.weight_depth or og_n > cfg.acc_depth:
                    raise CompileError(f"layer {low.name!r}: the average pool's kernel needs {og_n * per_og} "
                                       f"weight and {og_n} parameter entries, the buffers hold "
                                       f"{cfg.weight_depth} and {cfg.acc_depth}")
                half = og_n * per_og <= cfg.weight_depth // 2 and og_n <= cfg.acc_depth // 2
                nb = low.pool_blocks
                step = max(1, min(nb, (cfg.acc_depth // 2 if half else cfg.acc_depth) // og_n))
                step = math.ceil(nb / math.ceil(nb / step))
                for b0 in range(0, nb, step):
                    b1 = min(nb, b0 + step)
                    lst.append((b0, b1, make_set(b0, 0, og_n * per_og, b0 * og_n, b1 * og_n), half))
            else:
                half = per_og <= cfg.weight_depth // 2 and cfg.acc_depth >= 2
                cap_w = cfg.weight_depth // 2 if half else cfg.weight_depth
                cap_p = cfg.acc_depth // 2 if half else cfg.acc_depth
                step = max(1, min(og_n, cap_w // per_og, cap_p))
                step = math.ceil(og_n / math.ceil(og_n / step))        # equal sets overlap best
                for og0 in range(0, og_n, step):
                    og1 = min(og_n, og0 + step)
                    lst.append((og0, og1, make_set(og0, og0 * per_og, og1 * per_og, og0, og1), half))
            chunks[low.name] = lst

    # -- the operation list, all images ------------------------------------------------------
    ops = []                # ("ld", ref, off, n, buf) | ("st", ...) | ("conv"|"vec", low, set, p_off) | ("stamp", k)
    sets: list[_Set] = []
    names = [l.name for l in qm.layers[1:] if l.name in lowered]
    moved = {n: 0 for n in names}                  # bus words per layer (first image)

    def ld(img, name, ent_off, n, buf):
        ref, off = loc(name, img)
        ops.append(("ld", ref, off + ent_off * wpe, n, buf))
        if img == 0:
            moved[cur] += n * wpe

    def st(img, name, ent_off, n, buf):
        ref, off = loc(name, img)
        ops.append(("st", ref, off + ent_off * wpe, n, buf))
        if img == 0:
            moved[cur] += n * wpe

    def rows_io(name, b0, b1, img, buf, H, W, load=True):
        """Load (or store) rows [b0, b1) of every channel block of tensor ``name``."""
        nb, n = blocks[alias.get(name, name)], (b1 - b0) * W
        if b0 == 0 and b1 == H:
            (ld if load else st)(img, name, 0, nb * n, buf)
        else:
            for cb in range(nb):
                (ld if load else st)(img, name, (cb * H + b0) * W, n, buf + cb * n)

    half_a = A // ACT_BANKS
    set_words = {n: sum(pb.blob_words(b) for _, _, blobs, _ in lst for _, b, _ in blobs) for n, lst in chunks.items()}

    def run_bands(bands, pipelined):
        """Emit bands (each: load, compute, store closures).  Pipelined bands alternate
        banks: band i+1 loads and band i-1 stores while band i computes."""
        if not pipelined or len(bands) == 1:
            for load, compute, store in bands:
                load()
                compute()
                store()
            return
        bands[0][0]()
        for i, (_, compute, _) in enumerate(bands):
            compute()
            if i:
                bands[i - 1][2]()
            if i + 1 < len(bands):
                bands[i + 1][0]()
        bands[-1][2]()

    def choose_bands(name, OH, in_rows, out_rows, compute, weight_words, n_sets, n_dma):
        """Row bands for a layer and whether they pipeline (one bank each) or take the whole
        buffer.  Cost model in cycles: pipelined bands pay the first load and last store, then
        per band the longer of its compute and the other bank's transfers (plus the weight
        sets it reloads); whole-buffer bands pay every transfer; each band costs its DMA
        instructions (``n_dma`` a band).  ``in_rows(t)``/``out_rows(t)``: entries a band of
        ``t`` rows moves."""
        options = []
        for pipelined, cap in ((True, half_a), (False, A)):
            fits = [t for t in range(1, OH + 1) if in_rows(t) + out_rows(t) <= cap]
            for t in (fits if pipelined else fits[-1:]):
                bands = [(r, min(OH, r + t)) for r in range(0, OH, t)]
                rows = [b1 - b0 for b0, b1 in bands]
                ld_ = [wpe * in_rows(n) for n in rows]
                st_ = [wpe * out_rows(n) for n in rows]
                cp = [compute * n / OH for n in rows]
                ns = n_sets
                w = weight_words / ns if ns > 1 else 0          # per set; each band reloads them
                over = 16 * n_dma + 32

                def band(i, extra):
                    # the next set loads while this one computes; the band's transfers go with the last
                    c = cp[i] / ns
                    return (ns - 1) * max(c, w) + max(c, w + extra)
                if pipelined and len(bands) > 1:
                    cost = ld_[0] + st_[-1] + sum(
                        band(i, (st_[i - 1] if i else 0) + (ld_[i + 1] if i + 1 < len(bands) else 0))
                        for i in range(len(bands)))
                else:
                    cost = sum(ld_[i] + band(i, 0) + st_[i] for i in range(len(bands)))
                options.append((cost + over * len(bands), not pipelined, -t, bands, pipelined))
        if not options:
            raise CompileError(f"layer {name!r}: one output row needs {in_rows(1) + out_rows(1)} activation "
                               f"entries, the buffer holds {A} (column tiling is not implemented)")
        *_, bands, pipelined = min(options)
        return bands, pipelined

    for img in range(batch):
        for li, l in enumerate(qm.layers[1:]):
            if l.name not in lowered:
                continue
            cur = l.name
            low = lowered[l.name]
            first_emit = True

            def emit(kind, desc, set_=None, p_off=0):
                """``p_off``: the op's parameter words, from its weight set's base."""
                nonlocal first_emit
                v = replace(low, desc=desc, macs=low.macs if first_emit else 0,
                            beats=low.beats if first_emit else 0)
                first_emit = False
                ops.append((kind, v, set_, p_off))

            def emit_pool(band, b_lo, b_hi, set_=None):
                """The pool's op for each channel block b in [b_lo, b_hi): input block b (its
                band rows start at in_base + b·rows·W), block b's parameter words."""
                og = low.desc["out_groups"]
                for b in range(b_lo, b_hi):
                    desc = {**band, "in_base": band["in_base"] + b * band["in_h"] * band["in_w"]}
                    if set_ is None:
                        emit("conv", {**desc, "p_base": band["p_base"] + b * og})
                    else:
                        emit("conv", desc, set_, (b - b_lo) * og)

            x = l.inputs[0]
            ci, H, W = shapes[alias.get(x, x)]
            co, OH, OW = shapes[l.name]
            icb, ocb = blocks[alias.get(x, x)], blocks[l.name]
            if l.op in ("conv", "linear", "maxpool") or low.kind == "conv":     # (an avgpool may be a conv)
                d = low.desc
                k, s, p = d["kernel"], d["stride"], d["pad"]
                n_sets = len(chunks[l.name]) if low.kind == "conv" and not resident else 1
                multi = n_sets > 1
                bands, pipelined = choose_bands(l.name, OH, lambda t: icb * W * min(H, (t - 1) * s + k),
                                                lambda t: ocb * OW * t, low.beats, set_words.get(l.name, 0),
                                                n_sets, icb + ocb)
                only = None
                if low.kind == "conv" and not resident and not multi:
                    # a layer whose weights are one set loads them once for all its bands
                    blobs, hf = chunks[l.name][0][2:]
                    sets.append(_Set(l.name, blobs, sum(pb.blob_words(b) for _, b, _ in blobs), hf))
                    only = len(sets) - 1
                closures = []
                for i, (oy0, oy1) in enumerate(bands):
                    b0, b1, pad_top = _band_rows(oy0, oy1, k, s, p, H)
                    base = (i % ACT_BANKS) * half_a if pipelined else 0
                    a_out = base + icb * W * (b1 - b0)
                    banks = 1 << (i % ACT_BANKS) if pipelined else (1 << ACT_BANKS) - 1

                    def load(b0=b0, b1=b1, base=base):
                        rows_io(x, b0, b1, img, base, H, W)

                    def store(oy0=oy0, oy1=oy1, a_out=a_out):
                        rows_io(l.name, oy0, oy1, img, a_out, OH, OW, load=False)

                    if low.kind == "vec":
                        def compute(b0=b0, b1=b1, pad_top=pad_top, oy0=oy0, oy1=oy1, base=base, a_out=a_out,
                                    banks=banks):
                            emit("vec", {**d, "a_base": base, "out_base": a_out, "in_h": b1 - b0, "pad_top": pad_top,
                                         "out_h": oy1 - oy0, "banks": banks})
                    else:
                        def compute(b0=b0, b1=b1, pad_top=pad_top, oy0=oy0, oy1=oy1, base=base, a_out=a_out,
                                    banks=banks):
                            band = {**d, "in_base": base, "in_h": b1 - b0, "pad_top": pad_top, "out_base": a_out,
                                    "out_h": oy1 - oy0, "banks": banks}
                            if resident or only is not None:       # weights loaded already / once
                                if low.pool_blocks:
                                    emit_pool(band, 0, low.pool_blocks, only)
                                else:
                                    emit("conv", band, only)
                            else:
                                for c0, c1, blobs, hf in chunks[l.name]:
                                    sets.append(_Set(l.name, blobs, sum(pb.blob_words(b) for _, b, _ in blobs), hf))
                                    if low.pool_blocks:          # sets of channel blocks
                                        emit_pool(band, c0, c1, len(sets) - 1)
                                    else:                        # sets of output groups
                                        emit("conv", {**band, "out_groups": c1 - c0}, len(sets) - 1)
                    closures.append((load, compute, store))
                run_bands(closures, pipelined)
            elif l.op == "add":
                n_all = entries[l.name]
                T = min(half_a // 3, (1 << DIM_BITS) - 1)
                closures = []
                for i, o in enumerate(range(0, n_all, T)):
                    n, base = min(T, n_all - o), (i % ACT_BANKS) * half_a

                    def load(o=o, n=n, base=base):
                        ld(img, l.inputs[0], o, n, base)
                        ld(img, l.inputs[1], o, n, base + T)

                    def compute(n=n, base=base, i=i):
                        emit("vec", {**low.desc, "a_base": base, "b_base": base + T, "out_base": base + 2 * T,
                                     "in_w": n, "out_w": n, "banks": 1 << (i % ACT_BANKS)})

                    def store(o=o, n=n, base=base):
                        st(img, l.name, o, n, base + 2 * T)
                    closures.append((load, compute, store))
                run_bands(closures, True)
            else:                                                   # global average pool
                n_in = entries[alias.get(x, x)]
                if n_in + ocb > A:
                    raise CompileError(f"layer {l.name!r}: global pooling of {n_in} entries needs its whole "
                                       f"input on chip; the buffer holds {A}")
                ld(img, x, 0, n_in, 0)
                emit("vec", {**low.desc, "a_base": 0, "out_base": n_in, "banks": (1 << ACT_BANKS) - 1})
                st(img, l.name, 0, ocb, n_in)
            if img == 0:
                ops.append(("stamp", names.index(l.name) + 1))

    # -- emit: weight sets are loaded right after the first conv of the set before them when
    # both fit half the buffers (opposite halves), else behind a SYNC just before their use ---
    per_image = len(sets) // batch
    for j, st_ in enumerate(sets):
        prev = sets[j - 1] if j else None
        st_.half = (1 - prev.half if prev is not None and prev.half is not None else 0) if st_.half else None
        if j < per_image:
            moved[st_.layer] += st_.words

    def load_set(j):
        st_ = sets[j]
        for buf, blob, wbits in st_.blobs:
            base = 0
            if st_.half is not None:
                base = (cfg.acc_depth if buf == Buffer.PARAM else cfg.weight_depth) // 2 * st_.half
            pb.load(buf, blob, base, wbits=wbits)

    pb.trace("trace", len(names) + 1)
    pb.stamp("trace", 0)
    loaded, first_conv_done = set(), set()
    for op in ops:
        if op[0] == "ld":
            pb.load(Buffer.ACT, op[1], op[4], offset=op[2], count=op[3])
        elif op[0] == "st":
            pb.store_to(op[1], op[4], op[3], offset=op[2])
        elif op[0] == "stamp":
            pb.stamp("trace", op[1])
        elif op[0] == "vec":
            pb.vec(op[1])
        else:
            _, low, j, p_off = op
            if j is not None:
                st_ = sets[j]
                if j not in loaded:
                    pb.sync()
                    load_set(j)
                    loaded.add(j)
                base_w = cfg.weight_depth // 2 * st_.half if st_.half is not None else 0
                base_p = cfg.acc_depth // 2 * st_.half if st_.half is not None else 0
                low = replace(low, desc={**low.desc, "w_base": base_w, "p_base": base_p + p_off})
            pb.conv(low)
            if j is not None and j not in first_conv_done:
                first_conv_done.add(j)
                nxt = j + 1
                if nxt < len(sets) and sets[j].half is not None and sets[nxt].half is not None:
                    load_set(nxt)
                    loaded.add(nxt)
    prog = pb.build()
    iq, oq = qm.input.out, qm.output.out
    prog.io = {"network": {
        "input_q": {"bits": iq.bits, "signed": iq.signed, "frac": iq.frac},
        "output_q": {"bits": oq.bits, "signed": oq.signed, "frac": oq.frac},
        "input_shape": tuple(input_shape), "output_shape": shapes[out], "batch": batch, "resident": resident,
        "input_transform": ({"im2col": [im2col["kernel"], im2col["stride"], im2col["padding"]]}
                            if im2col else None),
        "trace": names, "moved_words": [moved[n] for n in names],
        "inputs": [pb.blob_addr[f"x{i}"] for i in range(batch)], "outputs": [f"y{i}" for i in range(batch)]}}
    return prog
