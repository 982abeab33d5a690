"""What a host checks in a program before it runs it: every instruction decoded and held
against the accelerator it is for, and the cycle budget a run may take.

:func:`check_program` walks the instruction stream from ``prog_addr`` to ``END`` and refuses,
naming the instruction, an opcode the core does not have, a transfer into a buffer the
config lacks, or a descriptor whose addresses fall outside the on-chip buffers or the
program's memory image — what a corrupted or hand-edited image would do on the board.
:func:`cycle_budget` bounds the cycles of a run from the instructions themselves (array
beats, taps, words moved): a run past it has gone wrong (the devices stop and raise).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from amaranth import Shape

from rmsmp.host.errors import RmsmpError
from rmsmp.rtl.dma import packed_widths, words_per_entry
from rmsmp.rtl.engine import buffer_ports
from rmsmp.rtl.isa import (
    INSTR_BITS,
    STAMP_COUNTERS,
    Buffer,
    ConvDesc,
    DmaDesc,
    Instruction,
    Opcode,
    VecDesc,
    VecKind,
    param_slots,
    stamp_words,
)

__all__ = ["ProgramError", "Step", "decode", "check_program", "cycle_estimate", "cycle_budget",
           "describe_instruction"]

#: a run may take this many times the estimate (plus the constant below) before it is stopped
BUDGET_MARGIN = 4
BUDGET_SLACK = 100_000
#: cycles a memory word costs in the estimate: an ideal memory moves one per cycle, the
#: board SDRAMs with row changes and refreshes fewer (measured ≤ 3 on the SDRAM model)
WORD_CYCLES = {"ideal": 1, "sdram": 4}
ARG_OFFSET = dict((name, f.offset) for name, f in Instruction.as_shape())["arg"]
#: fetch and issue of one instruction (its words over the bus, decode)
ISSUE_CYCLES = 32


class ProgramError(RmsmpError):
    """A program whose instructions the accelerator cannot run (corrupt or not for it)."""


@dataclass(frozen=True)
class Step:
    """One decoded instruction: its index, word address, opcode and descriptor fields."""

    index: int
    addr: int
    op: str
    fields: dict

    def __str__(self) -> str:
        return f"instruction {self.index} ({self.op}) at word {self.addr:#x}"


def _word_bits(image, addr: int, bus: int) -> int:
    return sum(int(image[addr + i]) << (bus * i) for i in range(INSTR_BITS // bus))


def describe_instruction(program, addr: int) -> str:
    """``instruction k (OP) at word a`` for the instruction at word ``addr``."""
    ipw = INSTR_BITS // program.bus_width
    k = (addr - program.prog_addr) // ipw
    if not 0 <= addr <= len(program.image) - ipw:
        return f"word {addr:#x} (outside the {len(program.image):,}-word image)"
    code = _word_bits(program.image, addr, program.bus_width) & ((1 << Opcode.as_shape().width) - 1)
    name = Opcode(code).name if code in {o.value for o in Opcode} else f"illegal opcode {code}"
    return f"instruction {k} ({name}) at word {addr:#x}"


@lru_cache(maxsize=None)
def _field_map(struct) -> dict:
    """name -> (offset, width, signed) of ``struct``'s fields (read once: Amaranth's layout
    lookups per field would cost milliseconds per instruction)."""
    out = {}
    for name, fld in struct.as_shape():
        sh = Shape.cast(fld.shape)
        out[name] = (fld.offset, sh.width, sh.signed)
    return out


def _unpack(bits: int, struct, names) -> dict:
    fm, out = _field_map(struct), {}
    for n in names:
        off, w, signed = fm[n]
        v = (bits >> off) & ((1 << w) - 1)
        out[n] = v - (1 << w) if signed and v >> (w - 1) else v
    return out


def decode(program) -> list[Step]:
    """The instructions from ``prog_addr`` to the first ``END`` (included)."""
    bus = program.bus_width
    ipw = INSTR_BITS // bus
    ops = {o.value: o for o in Opcode}
    steps, addr = [], program.prog_addr
    while True:
        k = len(steps)
        if addr + ipw > len(program.image):
            raise ProgramError(f"instruction {k} at word {addr:#x} lies past the end of the "
                               f"{len(program.image):,}-word image: the program has no END (truncated or corrupt)")
        bits = _word_bits(program.image, addr, bus)
        code = bits & ((1 << Opcode.as_shape().width) - 1)
        if code not in ops:
            raise ProgramError(f"instruction {k} at word {addr:#x}: illegal opcode {code} (the core has "
                               f"{', '.join(o.name for o in Opcode)}): the program is corrupt")
        op = ops[code]
        arg = bits >> ARG_OFFSET
        if op in (Opcode.LOAD, Opcode.STORE, Opcode.STAMP):
            f = _unpack(arg, DmaDesc, ("buf", "ext_addr", "buf_addr", "count", "banks", "wbits", "row_w", "pitch",
                                       "step", "lo", "hi", "lanes", "nib", "reps", "ext_step", "buf_step"))
        elif op == Opcode.CONV:
            f = _unpack(arg, ConvDesc, ("in_base", "out_base", "w_base", "p_base", "in_h", "in_w", "in_cb", "out_h",
                                        "out_w", "out_groups", "kernel", "stride", "pad", "in_wg"))
        elif op == Opcode.VEC:
            f = _unpack(arg, VecDesc, ("a_base", "b_base", "out_base", "cb", "in_h", "in_w", "out_h", "out_w",
                                       "kernel", "stride", "in_wg"))
            f["kind"] = int(arg & ((1 << VecKind.as_shape().width) - 1))    # may be no VecKind
        else:
            f = {}
        steps.append(Step(k, addr, op.name, f))
        if op == Opcode.END:
            return steps
        addr += ipw


def _buffer_depths(cfg) -> dict:
    """Entries of each DMA buffer code (the activation buffer: per pixel lane)."""
    depths = {Buffer.ACT.value: cfg.act_depth, Buffer.PARAM.value: cfg.acc_depth * param_slots(cfg.rows)}
    for code, _sig in buffer_ports(cfg).values():
        if code >= Buffer.WEIGHT0:
            depths[int(code)] = cfg.weight_depth
    return depths


def _entry_bits(cfg) -> dict:
    """Bits of one entry of each DMA buffer code."""
    return {int(code): Shape.cast(sig.members["data"].shape).width
            for name, (code, sig) in buffer_ports(cfg).items() if name != "act_r"}


def check_program(program, cfg) -> list[Step]:
    """Decode ``program`` and check every instruction against ``cfg``; returns the steps.
    Raises :class:`ProgramError` naming the first instruction the core could not run as
    compiled: an illegal opcode, a transfer into a buffer ``cfg`` lacks or outside it, a
    memory address outside the image, a layer whose buffers or shape are out of range."""
    steps = decode(program)
    depths = _buffer_depths(cfg)
    n_words = len(program.image)
    # weight buffer code -> the packed widths its DMA port unpacks (rtl/core.py's ``unpack``)
    unpacks = {Buffer.WEIGHT0 + k: packed_widths(g.format.bits) for k, g in enumerate(cfg.lane_groups)
               if cfg.packed_weights and g.format.kind == "fix" and g.format.bits > 2}

    def bad(step, why):
        raise ProgramError(f"{step}: {why}: the program is corrupt or not for this accelerator")

    for s in steps:
        f = s.fields
        if s.op in ("LOAD", "STORE"):
            if f["buf"] not in depths:
                bad(s, f"buffer code {f['buf']} (this accelerator has {len(depths)}: activation, parameter and "
                       f"{len(depths) - 2} weight buffer(s))")
            if s.op == "STORE" and f["buf"] != Buffer.ACT:
                bad(s, f"a store from buffer {f['buf']} (only the activation buffer stores)")
            depth = depths[f["buf"]]
            for r in (0, f["reps"]):                     # the first block and the last
                at, ext = f["buf_addr"] + r * f["buf_step"], f["ext_addr"] + r * f["ext_step"]
                if at >= depth or (f["row_w"] == 0 and at + f["count"] > depth):
                    bad(s, f"entries {at}..{at + f['count'] - 1} of a {depth}-entry buffer"
                           + (f" (block {r + 1} of {r + 1})" if r else ""))
                if ext >= n_words or ext + (f["count"] > 0) > n_words:
                    bad(s, f"memory word {ext:#x} outside the {n_words:,}-word image"
                           + (f" (block {r + 1} of {r + 1})" if r else ""))
            if f["wbits"] and f["wbits"] not in unpacks.get(f["buf"], ()):
                bad(s, f"weights packed at {f['wbits']} bits into buffer {f['buf']}, which unpacks "
                       f"{', '.join(map(str, unpacks.get(f['buf'], ()))) or 'no packed width'}")
        elif s.op == "STAMP":
            n = stamp_words(cfg.pipelined)
            if f["count"] != n:
                bad(s, f"a stamp of {f['count']} words; this core writes {n} ({', '.join(STAMP_COUNTERS[:n])})")
            if f["ext_addr"] + n > n_words:
                bad(s, f"memory words {f['ext_addr']:#x}..{f['ext_addr'] + n - 1:#x} outside the "
                       f"{n_words:,}-word image")
        elif s.op == "CONV":
            for name, depth in (("in_base", cfg.act_depth), ("out_base", cfg.act_depth),
                                ("w_base", cfg.weight_depth), ("p_base", cfg.acc_depth)):
                if f[name] >= depth:
                    bad(s, f"{name} {f[name]} outside its {depth}-entry buffer")
            if not (f["kernel"] and f["stride"] and f["out_h"] and f["out_w"] and f["out_groups"] and f["in_cb"]):
                bad(s, "a layer with a zero kernel, stride or dimension")
        elif s.op == "VEC":
            for name in ("a_base", "b_base", "out_base"):
                if f[name] >= cfg.act_depth:
                    bad(s, f"{name} {f[name]} outside the {cfg.act_depth}-entry activation buffer")
            if f["kind"] not in {k.value for k in VecKind} or VecKind(f["kind"]).name.lower() not in cfg.vector_ops:
                bad(s, f"vector operation {f['kind']} (this accelerator has {', '.join(cfg.vector_ops)})")
    _check_io(program, steps, cfg)
    return steps


def _check_io(program, steps, cfg) -> None:
    """Every input slot is loaded and every output slot stored by some instruction (a program
    whose transfers were overwritten would return the memory's zeros as results)."""
    io = program.io
    if io is None:
        return
    bus = program.bus_width
    entry = max(words_per_entry(bits, bus) for bits in _entry_bits(cfg).values())

    def touched(op, addr, n):            # some transfer overlaps words addr .. addr + n - 1
        return any(f["count"] and f["ext_addr"] + r * f["ext_step"] < addr + n
                   and addr < f["ext_addr"] + r * f["ext_step"] + f["count"] * entry
                   for s in steps if s.op == op for f in (s.fields,) for r in range(f["reps"] + 1))

    for slot in io.inputs:
        if slot.addr is not None and not touched("LOAD", slot.addr, 1):
            raise ProgramError(f"no instruction loads input {slot.name!r} (word {slot.addr:#x}): the program is "
                               "corrupt")
    for slot in io.outputs:
        addr, n, width = program.outputs[slot.name]
        if not touched("STORE", addr, n * words_per_entry(width, bus)):
            raise ProgramError(f"no instruction stores output {slot.name!r} (words {addr:#x}..): the program is "
                               "corrupt")


def cycle_estimate(program, cfg, memory: str = "ideal") -> int:
    """Cycles the program's instructions take if nothing overlaps: array beats of each
    ``CONV``, buffer taps of each ``VEC``, memory words of each transfer (at
    ``WORD_CYCLES[memory]`` each) and the issue of every instruction."""
    bus = program.bus_width
    entry_words = {code: words_per_entry(bits, bus) for code, bits in _entry_bits(cfg).items()}
    total = 0
    for s in decode(program):
        f = s.fields
        total += ISSUE_CYCLES
        if s.op in ("LOAD", "STORE"):
            total += (f["reps"] + 1) * (WORD_CYCLES[memory] * f["count"] * entry_words.get(f["buf"], 1) + ISSUE_CYCLES)
        elif s.op == "CONV":
            total += (f["out_groups"] * f["out_h"] * max(f["out_w"], 1) * f["in_cb"] * f["kernel"] ** 2
                      + f["out_groups"] * f["out_h"] * 64)     # a row's pipeline fill and drain
        elif s.op == "VEC":
            total += (f["cb"] * max(f["out_h"], 1) * f["out_w"] * (2 + f["kernel"] ** 2)
                      + f["cb"] * f["in_h"] * f["in_w"])
    return total


def cycle_budget(program, cfg, memory: str = "ideal") -> int:
    """The cycles a run of ``program`` may take before a device stops it and raises."""
    return BUDGET_MARGIN * cycle_estimate(program, cfg, memory) + BUDGET_SLACK

