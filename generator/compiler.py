"""Whole-network compiler: a ``QuantizedModel`` → one :class:`Program` for the core.

This first version schedules networks whose tensors fit the on-chip buffers (the digits
network; ResNet-18 at 224×224 needs tiling — see the error it raises):

* shapes are inferred from ``input_shape``; every tensor gets an activation-buffer region
  (first fit, freed after its last reader), ``flatten`` of a 1×1 tensor is an alias;
* when all layers' weights and parameters fit the buffers they are loaded once, each
  layer at its own base, and stay resident while a batch of images runs; otherwise each
  layer streams them in chunks of output groups (each chunk: load its weights and
  parameters, then convolve those groups — every row's parameters name its output
  channel, so a chunk writes its channels wherever they belong);
* the network output (16-bit logits) is written as byte pairs (``ConvDesc.wide``).

The ``QuantizedModel`` is read by attribute; ``rmsmp.generator`` does not import ``rmsmp.host``.
"""
from __future__ import annotations

import math
from dataclasses import replace

from rmsmp.rtl.engine import buffer_ports
from rmsmp.rtl.isa import Buffer

from .lower import CompileError, lower_conv, lower_vec
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
    """First-fit allocation of activation-buffer words."""

    def __init__(self, size: int):
        self.size, self.free = size, [(0, size)]

    def alloc(self, n: int, what: str) -> int:
        for i, (a, m) in enumerate(self.free):
            if m >= n:
                self.free[i] = (a + n, m - n)
                return a
        raise CompileError(f"{what}: needs {n} activation words, the {self.size}-word buffer has no room "
                           "(tiling of large tensors is not implemented yet)")

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


def compile_model(qm, cfg, input_shape, *, batch: int = 1) -> Program:
    """Compile ``qm`` for ``cfg`` and an input of ``input_shape`` ([C, H, W]); the program
    runs ``batch`` images one after another with the weights resident."""
    C = cfg.columns
    shapes = infer_shapes(qm, input_shape)
    words = {n: math.ceil(s[0] * (2 if qm[n].out.bits > 8 else 1) / C) * s[1] * s[2] for n, s in shapes.items()}
    last_use = {}
    for i, l in enumerate(qm.layers):
        for x in l.inputs:
            last_use[x] = i
    alias = {}
    for l in qm.layers:
        if l.op == "flatten":
            alias[l.name] = alias.get(l.inputs[0], l.inputs[0])

    # -- static allocation of activation regions (same for every image) ----------------------
    alloc = _Allocator(cfg.act_depth)
    region, out_name = {}, qm.output.name
    for i, l in enumerate(qm.layers):
        if l.name in alias:
            continue
        region[l.name] = alloc.alloc(words[l.name], f"tensor {l.name!r} {shapes[l.name]}")
        for x in set(l.inputs):
            src = alias.get(x, x)
            if last_use.get(x, -1) == i and src != out_name and all(
                    last_use.get(y, -1) <= i for y, a in alias.items() if a == src):
                alloc.release(region[src], words[src])
    base = lambda n: region[alias.get(n, n)]          # noqa: E731

    # -- lower every layer ------------------------------------------------------------------
    lowered = []
    for l in qm.layers[1:]:
        c, h, w = shapes[l.inputs[0]]
        if l.op in ("conv", "linear"):
            lowered.append(lower_conv(qm, l, cfg, in_hw=(h, w), in_base=base(l.inputs[0]), out_base=base(l.name)))
        elif l.op in ("add", "maxpool", "avgpool"):
            lowered.append(lower_vec(qm, l, cfg, channels=c, in_hw=(h, w), a_base=base(l.inputs[0]),
                                     b_base=base(l.inputs[1]) if l.op == "add" else 0, out_base=base(l.name)))
    convs = [low for low in lowered if low.kind == "conv"]
    per_group = lambda low: len(low.weights[cfg.lane_groups[0].scheme])      # noqa: E731
    resident = (sum(per_group(low) for low in convs) <= cfg.weight_depth
                and sum(len(low.params) for low in convs) <= cfg.acc_depth)

    ports = buffer_ports(cfg)
    wwidth = {g.scheme: _width(ports[f"wgt_w_{g.scheme}"][1]) for g in cfg.lane_groups}
    pwidth = _width(ports["par_w"][1])
    pb = ProgramBuilder(cfg)
    steps = []                       # per image: ("vec", low) | ("conv", low, [blob names] or None)
    if resident:
        # every layer at its own base, loaded once for the whole batch
        w_next = p_next = 0
        for low in lowered:
            if low.kind == "conv":
                low.desc["w_base"], low.desc["p_base"] = w_next, p_next
                w_next += per_group(low)
                p_next += len(low.params)
            steps.append((low.kind, low, None))
        for k, g in enumerate(cfg.lane_groups):
            pb.load(Buffer.WEIGHT0 + k, pb.blob(f"w_{g.scheme}", [w for low in convs for w in low.weights[g.scheme]],
                                                wwidth[g.scheme]))
        pb.load(Buffer.PARAM, pb.blob("params", [p for low in convs for p in low.params], pwidth))
    else:
        # stream: before each chunk of output groups, load its weights and parameters
        for low in lowered:
            if low.kind != "conv":
                steps.append(("vec", low, None))
                continue
            og_n = low.desc["out_groups"]
            per_og = per_group(low) // og_n
            if per_og > cfg.weight_depth:
                raise CompileError(f"layer {low.name!r}: one output group needs {per_og} weight words, the "
                                   f"buffers hold {cfg.weight_depth} (input-channel tiling is not implemented yet)")
            step = max(1, min(og_n, cfg.weight_depth // per_og, cfg.acc_depth))
            for og0 in range(0, og_n, step):
                og1 = min(og_n, og0 + step)
                chunk = replace(low, desc={**low.desc, "out_groups": og1 - og0, "w_base": 0, "p_base": 0},
                                macs=low.macs if og0 == 0 else 0, beats=low.beats * (og1 - og0) // og_n)
                blobs = [pb.blob(f"{low.name}.{og0}.w_{g.scheme}",
                                 low.weights[g.scheme][og0 * per_og:og1 * per_og], wwidth[g.scheme])
                         for g in cfg.lane_groups]
                blobs.append(pb.blob(f"{low.name}.{og0}.p", low.params[og0:og1], pwidth))
                steps.append(("conv", chunk, blobs))

    # -- per image: input, the layers, output; the first image stamps the cycle counter after
    # every layer so the device can report per-layer cycles -----------------------------------
    inp, out = qm.input.name, qm.output.name
    names = list(dict.fromkeys(low.name for _, low, _ in steps))
    pb.trace("trace", len(names) + 1)
    loaded = {n: 0 for n in names}                  # bus words the DMA brings in per layer
    for i in range(batch):
        pb.load(Buffer.ACT, pb.blob(f"x{i}", [0] * words[inp], 8 * C), base(inp))
        if i == 0:
            pb.stamp("trace", 0)
        for j, (kind, low, blobs) in enumerate(steps):
            if blobs is not None:
                for k, name in enumerate(blobs[:-1]):
                    pb.load(Buffer.WEIGHT0 + k, name)
                pb.load(Buffer.PARAM, blobs[-1])
                if i == 0:
                    loaded[low.name] += sum(pb.blob_words(b) for b in blobs)
            (pb.conv if kind == "conv" else pb.vec)(low)
            if i == 0 and (j + 1 == len(steps) or steps[j + 1][1].name != low.name):
                pb.stamp("trace", names.index(low.name) + 1)
        pb.store(f"y{i}", base(out), words[out])
    prog = pb.build()
    iq, oq = qm.input.out, qm.output.out
    prog.io = {"network": {
        "input_q": {"bits": iq.bits, "signed": iq.signed, "frac": iq.frac},
        "output_q": {"bits": oq.bits, "signed": oq.signed, "frac": oq.frac},
        "input_shape": tuple(input_shape), "output_shape": shapes[out], "batch": batch, "resident": resident,
        "trace": names, "loaded_words": [loaded[n] for n in names],
        "inputs": [pb.blob_addr[f"x{i}"] for i in range(batch)], "outputs": [f"y{i}" for i in range(batch)]}}
    return prog

