"""Compiler pass: where every activation tensor of a network lives in external memory.

Tensors other than the network input and output share one ``work`` region, allocated
first-fit by liveness (a skip tensor stays as long as its add needs it) — one copy an image
when a batch runs layer by layer (``images``); the network input and output have regions of
their own per image (``x{i}``, ``y{i}``).  A flatten is an alias
of its input.  Sizes are in activation-buffer entries of ``C`` channels (16-bit tensors take
two bytes a channel) and in bus words.  A work tensor of at most 4-bit values is stored as
nibbles (``packed``: the DMA packs and widens them) when the core can.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from rmsmp.rtl.dma import words_per_entry

from .lower import CompileError

__all__ = ["Allocator", "TensorPlan", "plan_tensors", "fusable_adds"]


class Allocator:
    """First-fit allocation of words in a region (``size=None``: unbounded)."""

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

    def release(self, a: int, n: int) -> None:
        self.free.append((a, n))
        self.free.sort()
        merged: list[tuple[int, int]] = []
        for s, m in self.free:
            if merged and merged[-1][0] + merged[-1][1] == s:
                merged[-1] = (merged[-1][0], merged[-1][1] + m)
            else:
                merged.append((s, m))
        self.free = merged


@dataclass
class TensorPlan:
    """The external-memory plan of a network's tensors."""

    inp: str                     # the network input's name
    out: str                     # the network output's name
    wpe: int                     # bus words per activation entry
    blocks: dict                 # tensor -> channel blocks of C (a 16-bit tensor counts twice)
    entries: dict                # tensor -> activation entries (blocks · H · W)
    alias: dict                  # flatten -> the tensor it views
    offset: dict                 # tensor -> word offset in the work region
    work_words: int              # size of the work region
    packed: dict = field(default_factory=dict)     # tensor -> (signed,) when stored as nibbles
    nib_wpe: int = 0             # bus words per packed entry
    images: int = 1              # work regions, one an image (a batch run layer by layer), else shared

    def source(self, name: str) -> str:
        """The tensor ``name`` is stored as (a flatten is its input)."""
        return self.alias.get(name, name)

    def words_per_entry(self, name: str) -> int:
        return self.nib_wpe if self.source(name) in self.packed else self.wpe

    def locate(self, name: str, img: int) -> tuple[str, int]:
        """(memory region, word offset) of tensor ``name`` for image ``img``."""
        name = self.source(name)
        if name == self.inp:
            return f"x{img}", 0
        if name == self.out:
            return f"y{img}", 0
        return "work", (img % self.images) * self.work_words + self.offset[name]


def fusable_adds(qm) -> dict:
    """conv layer -> the residual ``add`` that follows it and alone reads its output: the
    schedule may run the add band by band on the conv's output while it is on chip
    (:meth:`~.schedule._LayerScheduler.windowed`), so the add's output must not share memory
    with the conv's inputs, nor the conv's output with the add's other operand."""
    readers: dict[str, list] = {}
    alias: dict[str, str] = {}
    for l in qm.layers:
        if l.op == "flatten":
            alias[l.name] = alias.get(l.inputs[0], l.inputs[0])
        for x in l.inputs:
            readers.setdefault(alias.get(x, x), []).append(l)
    out = {}
    for a, b in zip(qm.layers, qm.layers[1:]):
        if (a.op == "conv" and b.op == "add" and [r.name for r in readers.get(a.name, [])] == [b.name]
                and a.name != qm.output.name and len({alias.get(x, x) for x in b.inputs}) == 2):
            out[a.name] = b
    return out


def plan_tensors(qm, cfg, shapes: dict) -> TensorPlan:
    """Sizes of every tensor in ``shapes`` and the work region's first-fit allocation."""
    C = cfg.columns
    wpe = words_per_entry(8 * C, cfg.bus_width)
    nib_wpe = words_per_entry(4 * C, cfg.bus_width) if (4 * C) % cfg.bus_width == 0 else 0
    blocks = {n: math.ceil(s[0] * (2 if qm[n].out.bits > 8 else 1) / C) for n, s in shapes.items()}
    entries = {n: blocks[n] * s[1] * s[2] for n, s in shapes.items()}
    inp, out = qm.input.name, qm.output.name
    alias: dict[str, str] = {}
    last_use: dict[str, int] = {}
    for i, l in enumerate(qm.layers):
        if l.op == "flatten":
            alias[l.name] = alias.get(l.inputs[0], l.inputs[0])
        for x in l.inputs:
            last_use[alias.get(x, x)] = i
    packed = {l.name: (l.out.signed,) for l in qm.layers if nib_wpe and l.name not in alias
              and l.name not in (inp, out) and l.out.bits <= 4 and not l.out.is_log}

    def size(n):
        return entries[n] * (nib_wpe if n in packed else wpe)

    work = Allocator(None, "workspace")
    offset: dict[str, int] = {}
    held: list[str] = []            # inputs of a layer whose add may be fused into it, released after the add
    adds = fusable_adds(qm)
    for i, l in enumerate(qm.layers):
        if l.name in alias or l.name in (inp, out):
            continue
        offset[l.name] = work.alloc(size(l.name), f"tensor {l.name!r}")
        ends = [src for src in {alias.get(x, x) for x in l.inputs} if last_use.get(src) == i and src in offset]
        if l.name in adds:
            held += ends
            continue
        for src in [*ends, *held]:
            work.release(offset[src], size(src))
        held = []
        if last_use.get(l.name, -1) < i:          # never read (cannot happen in a checked graph)
            work.release(offset[l.name], size(l.name))
    return TensorPlan(inp, out, wpe, blocks, entries, alias, offset, max(work.top, 1), packed, nib_wpe)
