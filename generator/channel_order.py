"""Compiler pass: the order of a conv's output channels where no one outside sees it.

A conv whose output only the next conv reads (ResNet's ``layerX.Y.conv1``) may store its
channels in any order, so long as that conv reads its input channels in the same order: the
network computes the same integers.  The order matters when a layer runs in output parts of
whole channel blocks (:func:`~.lower.part_cuts`, the parts a batch runs each weight set of
over every image): each part's channels are dealt to output groups of its own, one scheme's
channels to the rows that run it, so a part whose blocks hold more of one scheme than its
share needs a group more.  Quantized by Hessian and variance, a layer's schemes cluster
(ResNet-18's ``layer4.1.conv1`` on the ULX3S: 21 output groups in parts where 17 hold the
layer whole).  :func:`balance_channels` interleaves each such conv's schemes in proportion,
so that any run of blocks holds each scheme in its share (within a channel).

The permutation is the compiler's: the program's traced tensors record it
(``ProgramIO.tensors[name]["channels"]``) and readers put the channels back.
"""
from __future__ import annotations

from dataclasses import replace

import torch

__all__ = ["balance_channels", "interleave", "permutable_pairs"]


def permutable_pairs(qm) -> list[tuple[str, str]]:
    """``(producer, reader)`` of every conv whose output only one dense conv reads, and which
    is not the network's output: the pairs whose shared channels may be reordered."""
    readers: dict = {}
    for l in qm.layers[1:]:
        for i in set(l.inputs):
            readers.setdefault(i, []).append(l)
    pairs = []
    for l in qm.layers[1:]:
        users = readers.get(l.name, [])
        if l.op != "conv" or l.attrs.get("groups", 1) != 1 or l is qm.output or len(users) != 1:
            continue
        b = users[0]
        if (b.op == "conv" and b.attrs.get("groups", 1) == 1 and tuple(b.inputs) == (l.name,)
                and b.weight.shape[1] == l.rows):
            pairs.append((l.name, b.name))
    return pairs


def interleave(schemes) -> list[int]:
    """Channel order (``order[i]``: the channel stored at ``i``) that spreads each scheme
    evenly: the ``r``-th of a scheme's ``n`` channels goes at ``(r + ½)/n`` of the way, ties
    to the scheme met first; each scheme's channels keep their order."""
    seen: dict = {}
    keys = []
    for c, s in enumerate(schemes):
        rank = seen.setdefault(s, [])
        keys.append((s, len(rank), c))
        rank.append(c)
    first = {s: k for k, s in enumerate(seen)}
    n = {s: len(v) for s, v in seen.items()}
    return [c for _, _, c in sorted((((2 * r + 1) / (2 * n[s]), first[s], c) for s, r, c in keys))]


def balance_channels(qm):
    """``(model, orders)``: ``qm`` with the output channels of every permutable producer
    (:func:`permutable_pairs`) of more than one scheme interleaved (:func:`interleave`) and
    its reader's input channels to match, and ``{producer: order}`` for those it changed
    (``qm`` itself and ``{}`` when none)."""
    layers = {l.name: l for l in qm.layers}
    orders = {}
    for a, b in permutable_pairs(qm):
        la, lb = layers[a], layers[b]
        if len(set(la.schemes or ())) < 2:
            continue
        order = interleave(la.schemes)
        if order == sorted(order):
            continue
        idx = torch.tensor(order)
        layers[a] = replace(la, weight=la.weight[idx], bias=la.bias[idx], qweight=la.qweight[idx],
                            scale=la.scale[idx], schemes=tuple(la.schemes[i] for i in order))
        layers[b] = replace(lb, weight=lb.weight[:, idx], qweight=lb.qweight[:, idx])
        orders[a] = order
    if not orders:
        return qm, {}
    return qm.with_layers([layers[l.name] for l in qm.layers]), orders
