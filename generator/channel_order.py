"""Compiler pass: the order of the channels no one outside the network sees.

Inside a network a set of channels may be stored in any order, so long as every layer that
writes them writes in that order and every layer that reads them reads in it: the network
computes the same integers.  Such a set is a *channel space* (:func:`channel_spaces`): the
output of a conv read only by the next conv (ResNet's ``layerX.Y.conv1``), or a whole
residual stage (its blocks' ``conv2``, the downsample, the adds, the max-pool or average
pool, and the convs and classifier that read them).

The order matters when a layer runs in output parts of whole channel blocks
(:func:`~.lower.part_cuts`: the parts a batch runs each weight set of over every image, and
the parts :func:`~.compiler.split_outputs` chooses): each part's channels are dealt to output
groups of its own, one scheme's channels to the rows that run it, so a part whose blocks hold
more of one scheme than its share needs a group more.  Quantized by Hessian and variance, a
layer's schemes cluster (ResNet-18's ``layer4.1.conv2`` on the ULX3S: 20 output groups in
parts where 16 hold the layer whole).  :func:`balance_channels` orders each space so that
every layer writing it has its schemes spread in proportion (:func:`interleave`).

The order is the compiler's: the program's traced tensors record it
(``ProgramIO.tensors[name]["channels"]``) and readers put the channels back.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

import torch

__all__ = ["ChannelSpace", "balance_channels", "channel_spaces", "interleave"]

#: ops that pass each channel through on its own: their output is their inputs' channels
_PER_CHANNEL = ("add", "relu", "maxpool", "avgpool", "flatten")


@dataclass(frozen=True)
class ChannelSpace:
    """Channels the network may store in any order: the ``tensors`` (layer outputs) that hold
    them, the dense convs/linears that write them (``writers``, their rows) and those that
    read them (``readers``, their input channels)."""

    tensors: tuple
    writers: tuple
    readers: tuple


def channel_spaces(qm) -> list[ChannelSpace]:
    """The spaces whose order the compiler may choose: joined through per-channel ops (adds,
    pools, ReLU, flatten), written and read only by dense (ungrouped) convs and linears, and
    holding neither the network's input nor its output."""
    parent = {l.name: l.name for l in qm.layers}

    def root(n):
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n
    for l in qm.layers[1:]:
        if l.op in _PER_CHANNEL:
            for i in l.inputs:
                parent[root(i)] = root(l.name)
    fixed = {root(qm.input.name), root(qm.output.name)}
    members: dict = {}
    for l in qm.layers:
        members.setdefault(root(l.name), []).append(l)
    read_by: dict = {}                  # space -> the dense layers reading it
    for u in qm.layers[1:]:
        if u.op in ("conv", "linear"):
            for r in dict.fromkeys(root(i) for i in u.inputs):
                read_by.setdefault(r, []).append(u)
    spaces = []
    for r, ls in members.items():
        writers = [l for l in ls if l.op in ("conv", "linear")]
        if r in fixed or len(writers) + sum(l.op in _PER_CHANNEL for l in ls) != len(ls):
            continue                     # (the input, or an op this pass does not know)
        readers = read_by.get(r, [])
        if any(l.attrs.get("groups", 1) != 1 for l in writers + readers):
            continue                     # a grouped conv ties its channels to its input's
        widths = {l.rows for l in writers}
        if len(widths) != 1:
            continue                     # (shapes that disagree: the compiler's shape pass names them)
        (c,) = widths
        if any(u.weight.shape[1] % c or (u.op == "conv" and u.weight.shape[1] != c) for u in readers):
            continue
        spaces.append(ChannelSpace(tuple(l.name for l in ls), tuple(l.name for l in writers),
                                   tuple(u.name for u in readers)))
    return spaces


def interleave(*schemes) -> list[int]:
    """A channel order (``order[i]``: the channel stored at ``i``) spreading the schemes of
    each writer (``schemes``: one per-channel list each) evenly over the channels.  One
    writer: the ``r``-th of a scheme's ``n`` channels goes at ``(r + ½)/n`` of the way (ties
    to the scheme met first), so any run of channels holds each scheme's share within one.
    Several: channel by channel, the one whose schemes keep every writer's counts nearest
    their shares (least squares); a scheme's channels keep their order."""
    if len(schemes) == 1:
        n, seen = Counter(schemes[0]), Counter()
        first = {s: k for k, s in enumerate(n)}       # (a Counter keeps the order met)
        keys = []
        for c, s in enumerate(schemes[0]):
            keys.append(((2 * seen[s] + 1) / (2 * n[s]), first[s], c))
            seen[s] += 1
        return [c for *_, c in sorted(keys)]
    n = len(schemes[0])
    kinds: dict = {}
    for c in range(n):
        kinds.setdefault(tuple(v[c] for v in schemes), []).append(c)
    share = {(j, s): v.count(s) / n for j, v in enumerate(schemes) for s in set(v)}
    count = dict.fromkeys(share, 0)
    order = []
    for t in range(1, n + 1):
        kind = min((k for k, v in kinds.items() if v),
                   key=lambda k: sum((count[j, s] + (k[j] == s) - t * p) ** 2 for (j, s), p in share.items()))
        order.append(kinds[kind].pop(0))
        for j, s in enumerate(kind):
            count[j, s] += 1
    return order


def balance_channels(qm):
    """``(model, orders)``: ``qm`` with each channel space (:func:`channel_spaces`) whose
    writers mix schemes stored in :func:`interleave`'s order — the writers' rows and the
    readers' input channels permuted to match — and ``{tensor: order}`` for every layer output
    it reordered (``qm`` itself and ``{}`` when none)."""
    layers = {l.name: l for l in qm.layers}
    orders = {}
    for sp in channel_spaces(qm):
        mixed = [layers[w].schemes for w in sp.writers if len(set(layers[w].schemes)) > 1]
        if not mixed:
            continue
        order = interleave(*mixed)
        if order == sorted(order):
            continue
        idx = torch.tensor(order)
        for w in sp.writers:
            lw = layers[w]
            layers[w] = replace(lw, weight=lw.weight[idx], bias=lw.bias[idx], qweight=lw.qweight[idx],
                                scale=lw.scale[idx], schemes=tuple(lw.schemes[i] for i in order))
        for r in sp.readers:
            lr = layers[r]
            cols = [t.reshape(t.shape[0], len(order), -1)[:, idx].reshape(t.shape) for t in (lr.weight, lr.qweight)]
            layers[r] = replace(lr, weight=cols[0], qweight=cols[1])    # (a linear over c×h×w: whole maps)
        orders.update(dict.fromkeys(sp.tensors, order))
    if not orders:
        return qm, {}
    return qm.with_layers([layers[l.name] for l in qm.layers]), orders
