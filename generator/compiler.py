"""Whole-network compiler: a ``QuantizedModel`` → one :class:`Program` for the core.

The passes, each a module of its own:

1. :func:`infer_shapes` and :func:`plan_im2col` (here): every tensor's shape; a first conv
   on the network input with few channels (ResNet's 3-channel 7×7) would fill only
   ``C_in`` of ``C`` columns, so the host lays its input out as im2col columns instead
   (:func:`~rmsmp.generator.layout.im2col_input`) and the layer runs as a 1×1 conv over
   ``C_in·k²`` channels.  The program records the transform.
   :mod:`~rmsmp.generator.channel_order`: the channels no one outside sees (a conv's output
   only the next conv reads, a residual stage) stored with their writers' schemes
   interleaved, so output parts of channel blocks fill their groups.
2. :mod:`~rmsmp.generator.lower`: each layer to descriptors and buffer images.
3. :mod:`~rmsmp.generator.allocate`: every tensor's place in external memory.
4. :mod:`~rmsmp.generator.weight_sets`: resident weights, or each layer's streamed sets.
5. :mod:`~rmsmp.generator.schedule`: row bands and the typed operation list.
6. :mod:`~rmsmp.generator.codegen`: instructions, with weight loads overlapped.

A graph the hardware cannot map fails with the layer named.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import replace

from rmsmp.host.quant.layer import pad_after, window_out
from rmsmp.host.quant.qmodel import QuantizedModel
from rmsmp.rtl.isa import INSTR_BITS

from .allocate import TensorPlan, plan_tensors
from .channel_order import balance_channels
from .codegen import emit_program
from .config import AcceleratorConfig
from .lower import MAX_KERNEL, CompileError, lower_avgpool_conv, lower_conv, lower_depthwise, lower_vec, part_cuts
from .program import Program, ProgramBuilder, ProgramIO, TensorSlot
from .schedule import Schedule, band_shape, batch_parts_cost, min_parts, run_cost, schedule
from .weight_sets import WeightPlan, plan_weights, set_groups, stream_estimate, weights_resident

__all__ = ["compile_model", "infer_shapes", "plan_im2col", "lower_layers", "split_outputs", "batch_outputs"]


def infer_shapes(qm, input_shape) -> dict:
    """[C, H, W] of every layer's output (linear: [O, 1, 1])."""
    try:
        shape = tuple(int(v) for v in input_shape)
    except (TypeError, ValueError):
        raise CompileError(f"input shape {input_shape!r}: expected [C, H, W] integers") from None
    if len(shape) != 3 or min(shape) < 1 or shape != tuple(input_shape):
        raise CompileError(f"input shape {list(input_shape)}: expected [C, H, W], each at least 1")
    shapes = {qm.input.name: shape}
    for l in qm.layers[1:]:
        c, h, w = shapes[l.inputs[0]]
        if l.op == "conv" and c != l.weight.shape[1] * l.attrs.get("groups", 1):
            raise CompileError(f"layer {l.name!r} takes {l.weight.shape[1] * l.attrs.get('groups', 1)} input "
                               f"channels, its input "
                               f"{l.inputs[0]!r} has {c} (input shape {list(shape)})")
        if l.op in ("conv", "maxpool"):
            k, s, p = l.attrs["kernel"], l.attrs["stride"], l.attrs["padding"]
            shapes[l.name] = (l.rows if l.op == "conv" else c, *window_out(l.attrs, h, w))
            if min(shapes[l.name][1:]) < 1:
                raise CompileError(f"layer {l.name!r}: a {k}×{k} window (stride {s}, padding {p}) does not fit its "
                                   f"{h}×{w} input (input shape {list(shape)} is too small)")
        elif l.op == "linear":
            if c * h * w != l.weight.shape[1]:
                raise CompileError(f"layer {l.name!r} takes {l.weight.shape[1]} features, its input "
                                   f"{l.inputs[0]!r} has {c}×{h}×{w} = {c * h * w} (input shape {list(shape)})")
            if (h, w) != (1, 1) and (h != w or h > MAX_KERNEL):
                raise CompileError(f"layer {l.name!r}: linear over a flattened {c}×{h}×{w} map runs as a {h}×{w} "
                                   f"conv; the engine takes square kernels up to {MAX_KERNEL}×{MAX_KERNEL} (pool "
                                   "or convolve the map down first)")
            shapes[l.name] = (l.rows, 1, 1)
        elif l.op == "avgpool":
            shapes[l.name] = (c, 1, 1)
        elif l.op == "flatten":          # a view of its input: a following linear reads the map as it is stored
            shapes[l.name] = (c, h, w)
        elif l.op == "add":
            if shapes[l.inputs[1]] != (c, h, w):
                raise CompileError(f"layer {l.name!r}: add of {shapes[l.inputs[1]]} and {(c, h, w)}")
            shapes[l.name] = (c, h, w)
        else:
            raise CompileError(f"layer {l.name!r}: op {l.op!r} has no hardware mapping (fuse ReLU into its producer)")
    return shapes


def plan_im2col(qm, cfg, shapes) -> tuple | None:
    """``(layer, kernel, stride, padding, padding after)`` of the first layer's im2col
    transform, when it fills the columns better; else ``None``."""
    inp = qm.input.name
    users = [l for l in qm.layers[1:] if inp in l.inputs]
    if len(users) != 1 or users[0].op != "conv":
        return None
    l, C = users[0], cfg.columns
    if l.attrs.get("groups", 1) > 1:
        return None
    k, s, p = l.attrs["kernel"], l.attrs["stride"], l.attrs["padding"]
    cin = shapes[inp][0]
    if k == 1 or math.ceil(cin * k * k / C) >= math.ceil(cin / C) * k * k:
        return None
    return l.name, k, s, p, pad_after(l.attrs)


def _check_fixed_point(qm) -> None:
    for l in qm.layers:
        if l.out.is_log:
            users = [u.name for u in qm.layers if l.name in u.inputs]
            raise CompileError(f"layer {l.name!r} produces logarithmic (base √2, MXQN) activations "
                               f"read by {', '.join(repr(u) for u in users) or 'the host'}; this accelerator's "
                               "lanes and post-processing take fixed-point activations only; quantize with "
                               "method='mxqn', log_activations=False to run it here (golden runs it as is)")


def lower_layers(qm, cfg, shapes: dict, im2col: tuple | None, parts: dict | None = None) -> dict:
    """Every layer that runs on the core, lowered with buffer addresses 0 (set per band);
    with ``parts`` ({layer: n}) only those layers, each dealt in ``n`` output parts."""
    lowered = {}
    for l in qm.layers[1:]:
        if parts is not None and l.name not in parts:
            continue
        c, h, w = shapes[l.inputs[0]]
        if l.op in ("conv", "linear"):
            if im2col and l.name == im2col[0]:          # a 1×1 conv over the im2col columns
                q = l.qweight
                l = replace(l, qweight=q.reshape(q.shape[0], -1, 1, 1),
                            attrs={**l.attrs, "kernel": 1, "stride": 1, "padding": 0, "pad_after": 0})
            elif l.op == "linear" and (h, w) != (1, 1):   # over a flattened c×h×w map: an h×h conv
                q = l.qweight                             # (flatten's order is c, y, x)
                l = replace(l, op="conv", qweight=q.reshape(q.shape[0], c, h, w),
                            attrs={**l.attrs, "kernel": h, "stride": 1, "padding": 0})
            if l.attrs.get("groups", 1) > 1:
                lowered[l.name] = lower_depthwise(qm, l, cfg, in_hw=(h, w))
            else:
                lowered[l.name] = lower_conv(qm, l, cfg, in_hw=(h, w), in_base=0, out_base=0,
                                             parts=(parts or {}).get(l.name, 1))
        elif l.op == "avgpool" and "avgpool" not in cfg.vector_ops:
            lowered[l.name] = lower_avgpool_conv(qm, l, cfg, channels=c, in_hw=(h, w))
        elif l.op in ("add", "maxpool", "avgpool"):
            lowered[l.name] = lower_vec(qm, l, cfg, channels=c, in_hw=(h, w), a_base=0, b_base=0, out_base=0)
    return lowered


def compile_model(qm: QuantizedModel, cfg: AcceleratorConfig, input_shape, *, batch: int = 1,
                  memory_words: int | None = None) -> Program:
    """Compile ``qm`` for ``cfg`` and an input of ``input_shape`` ([C, H, W]); the program
    runs ``batch`` images (with streamed weights layer by layer, each set once a batch).
    ``memory_words``: the external memory the program must fit (a device's ``mem_words``):
    a batch gives up output parts (:func:`batch_outputs`: their extra output groups take
    weight words, their bands over every image instructions), those adding the most first,
    until it fits; a program that cannot fit is refused naming its size."""
    whole: set = set()
    _check_fixed_point(qm)
    qm, orders = balance_channels(qm)            # (the network computes the same integers)
    while True:
        prog = _compile(qm, cfg, input_shape, batch, frozenset(whole), orders)
        over = len(prog.image) - (memory_words if memory_words is not None else len(prog.image))
        added = prog.io.batch_added
        if over <= 0:
            return prog
        if not added:
            raise CompileError(f"the program takes {len(prog.image):,} memory words (batch {batch}: inputs, weights "
                               f"and tensors), the memory holds {memory_words:,}; compile a smaller batch")
        for name in sorted(added, key=added.get, reverse=True):     # (an estimate: check by compiling)
            whole.add(name)
            over -= added[name]
            if over <= 0:
                break


def _compile(qm: QuantizedModel, cfg: AcceleratorConfig, input_shape, batch: int, whole: frozenset,
             orders: dict) -> Program:
    """:func:`compile_model`, the layers in ``whole`` kept out of :func:`batch_outputs`;
    ``orders``: the channel orders :func:`~.channel_order.balance_channels` gave ``qm``."""
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise CompileError(f"batch {batch!r}: a program runs at least one image (batch >= 1)")
    shapes = infer_shapes(qm, input_shape)
    im2col = plan_im2col(qm, cfg, shapes)
    if im2col:
        k = im2col[1]
        shapes[qm.input.name] = (shapes[qm.input.name][0] * k * k, *shapes[im2col[0]][1:])
    tensors = plan_tensors(qm, cfg, shapes)
    lowered = lower_layers(qm, cfg, shapes, im2col)
    lowered.update(split_outputs(qm, cfg, shapes, tensors, lowered, im2col))
    added = {}                        # layer -> weight words its batch parts add (+ their instructions, below)
    if batch > 1 and not weights_resident(cfg, lowered):
        # the batch runs layer by layer (each weight set once a batch): a work region an image
        tensors.images = batch
        parts = batch_outputs(qm, cfg, shapes, tensors, {n: v for n, v in lowered.items() if n not in whole},
                              im2col, batch)
        added = {n: stream_estimate(cfg, v)[1] - stream_estimate(cfg, lowered[n])[1] for n, v in parts.items()}
        lowered.update(parts)
    _check_row_fit(qm, cfg, lowered)
    pb = ProgramBuilder(cfg)
    for i in range(batch):
        pb.blob(f"x{i}", [0] * tensors.entries[tensors.inp], 8 * cfg.columns)
        pb.region(f"y{i}", tensors.entries[tensors.out], 8 * cfg.columns)
    pb.region("work", tensors.work_words * tensors.images, cfg.bus_width)
    weights = plan_weights(pb, cfg, lowered)
    sch = schedule(qm, cfg, shapes, tensors, lowered, weights, batch)
    emit_program(pb, cfg, weights, sch, len(sch.moved))
    prog = pb.build()
    prog.io = _network_io(qm, pb, tensors, shapes, tuple(input_shape), batch, im2col, weights, sch)
    words_per_op = INSTR_BITS // cfg.bus_width
    prog.io.batch_added = {n: w + words_per_op * sch.ops_of.get(n, 0) for n, w in added.items()}
    prog.io.tensors = _tensor_map(qm, cfg, prog, pb, tensors, shapes, sch, orders)
    return prog.seal()


def split_outputs(qm, cfg, shapes: dict, tensors: TensorPlan, lowered: dict, im2col) -> dict:
    """The streamed convs that run cheaper in output parts (:func:`~.schedule.parts_cost`),
    lowered so: a layer whose weights stream in several sets and whose input fits the
    activation buffer whole, but not beside its whole output, otherwise reloads either its
    input for every set (set-major) or its sets for every band; in parts the input loads
    once and the sets go by once, at the price of dealing each part's channels into output
    groups of its own (a part may take a group more than its share; the cost decides)."""
    if weights_resident(cfg, lowered):
        return {}
    out = {}
    for l, low, shape, out_h, n_sets, words in _streamed_convs(qm, cfg, shapes, tensors, lowered):
        n = min_parts(shape, out_h, cfg.act_depth)
        if n_sets < 2 or not n:
            continue
        alt = lower_layers(qm, cfg, shapes, im2col, parts={l.name: n})[l.name]
        alt_sets, alt_words = stream_estimate(cfg, alt)
        if (run_cost(alt, shape, out_h, act_depth=cfg.act_depth, weight_words=alt_words, n_sets=alt_sets)
                < run_cost(low, shape, out_h, act_depth=cfg.act_depth, weight_words=words, n_sets=n_sets)):
            out[l.name] = alt
    return out


def _streamed_convs(qm, cfg, shapes: dict, tensors: TensorPlan, lowered: dict):
    """The convs that may run in output parts — narrow-output convs of row schemes on the
    conv engine's lanes, whose weights stream — each as (layer, lowered, its
    :class:`~.schedule.BandShape`, output rows, and its sets and their bus words as
    :func:`~.weight_sets.stream_estimate` counts them)."""
    for l in qm.layers[1:]:
        low = lowered.get(l.name)
        if (low is not None and low.kind == "conv" and not low.pool_blocks and low.lanes is not None
                and l.op == "conv" and l.out.bits <= 8 and l.schemes):
            x = l.inputs[0]
            shape, _ = band_shape(tensors, low, x, shapes[tensors.source(x)], shapes[l.name])
            yield (l, low, shape, shapes[l.name][1], *stream_estimate(cfg, low))


def batch_outputs(qm, cfg, shapes: dict, tensors: TensorPlan, lowered: dict, im2col, batch: int) -> dict:
    """The streamed convs that run a batch cheaper in output parts of one weight set each
    (:func:`~.schedule.batch_parts_cost`: each set loads once and runs over every image's
    bands) than image by image, lowered so (:func:`~.lower.part_cuts`: runs of whole
    channel blocks, each as long as a set's output groups place)."""
    out = {}
    for l, low, shape, out_h, n_sets, words in _streamed_convs(qm, cfg, shapes, tensors, lowered):
        if n_sets < 2 or batch * (shape.in_rows(out_h) + shape.out_rows(out_h)) <= cfg.act_depth:
            continue                  # one set (loaded once a batch anyway), or every image on chip
        cuts = part_cuts(l, cfg, qm.in_q(l), set_groups(cfg, low))
        if cuts is None or len(cuts) < 3:
            continue
        alt = lower_layers(qm, cfg, shapes, im2col, parts={l.name: cuts})[l.name]
        alt_sets, alt_words = stream_estimate(cfg, alt)
        if alt_sets == len(alt.parts) and (
                batch_parts_cost(alt, shape, out_h, act_depth=cfg.act_depth, weight_words=alt_words, batch=batch)
                < batch * run_cost(low, shape, out_h, act_depth=cfg.act_depth, weight_words=words, n_sets=n_sets)):
            out[l.name] = alt
    return out


class RatioMismatchWarning(UserWarning):
    """The model's row schemes leave much of the array idle: it was quantized for another
    ratio than the one the array was sized for."""


def _check_row_fit(qm, cfg: AcceleratorConfig, lowered, *, lost: float = 0.15) -> None:
    """Warn when the mixed-scheme layers (more than one scheme among their output channels;
    a one-scheme edge layer is the user's explicit choice) need ``lost`` or more of their
    array passes beyond what the array's rows would need for any split: each conv runs in
    output groups of ``cfg.rows`` rows, every scheme within the rows that can run it, so a
    model whose ratio does not match ``cfg.ratio`` is bound by its scarcest scheme's rows."""
    macs = need = 0
    for name, lw in lowered.items():                # (lowered by the model's layer names)
        if lw.kind != "conv" or not lw.perm or lw.pool_blocks or len(set(qm[name].schemes or ())) < 2:
            continue
        groups = max(lw.perm) // cfg.rows + 1
        macs += lw.macs
        need += lw.macs * math.ceil(len(lw.perm) / cfg.rows) / groups
    if macs and need / macs < 1 - lost:
        mine = ", ".join(f"{k} {v:.3g}" for k, v in (qm.ratio or qm.realized_ratio).items())
        hw = ", ".join(f"{k} {v:.3g}" for k, v in cfg.ratio.items())
        warnings.warn(f"the model's mixed-scheme layers use {need / macs:.0%} of the array's row passes "
                      f"(MAC-weighted): its rows ({mine}) do not match the rows this accelerator was sized "
                      f"for ({hw}); quantize with ratio=cfg.ratio, or size the accelerator for the model's ratio "
                      f"(AcceleratorConfig.for_board(board, ratio=...))", RatioMismatchWarning, stacklevel=3)


def _tensor_map(qm, cfg, prog: Program, pb: ProgramBuilder, tensors: TensorPlan, shapes: dict, sch: Schedule,
                orders: dict) -> dict:
    """Where each traced layer's output lies for the first image after its STAMP (and, for a
    layer whose channels the compiler reordered, ``channels``: the model's channel stored at
    each place)."""
    out = {}
    for name in sch.moved:
        if name in sch.fused.values():                # its output is only ever on chip
            continue
        src = tensors.source(name)
        region, off = tensors.locate(name, 0)
        base = prog.outputs[region][0] if region in prog.outputs else pb.blob_addr[region]
        q = qm[name].out
        out[name] = {"addr": base + off, "shape": list(shapes[src]), "signed": bool(q.signed), "wide": q.bits > 8,
                     "nib": src in tensors.packed, "wpe": tensors.words_per_entry(name)}
        if name in orders:
            out[name]["channels"] = list(orders[name])
    return out


def _network_io(qm, pb: ProgramBuilder, tensors: TensorPlan, shapes: dict, input_shape: tuple, batch: int,
                im2col, weights: WeightPlan, sch: Schedule) -> ProgramIO:
    iq, oq = qm.input.out, qm.output.out
    return ProgramIO(
        inputs=[TensorSlot(f"x{i}", input_shape, iq.signed, addr=pb.blob_addr[f"x{i}"]) for i in range(batch)],
        outputs=[TensorSlot(f"y{i}", shapes[tensors.out], oq.signed, oq.bits > 8) for i in range(batch)],
        input_q=iq, output_q=oq, batch=batch, im2col=im2col[1:] if im2col else None, resident=weights.resident,
        trace=list(sch.moved), moved_words=list(sch.moved.values()), set_major=sorted(sch.set_major),
        in_parts=sorted(sch.in_parts), layer_major=sch.layer_major, batch_parts=sorted(sch.batch_parts),
        images_on_chip=sorted(sch.images_on_chip), fused=dict(sch.fused))
