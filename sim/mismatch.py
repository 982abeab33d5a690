"""The mismatch localizer: when a program's result differs from golden, the first layer whose
output differs, with the channel, the pixel and both values.

:func:`localize` runs the program on a device stopped after one traced layer at a time (the
instruction after that layer's ``STAMP`` becomes ``END``; every layer's output is then
complete in external memory, :attr:`ProgramIO.tensors` says where) and compares the tensor
with :func:`~rmsmp.sim.golden.golden_trace`'s.  It bisects over the traced layers, then
checks that the layer it names read inputs equal to golden's — so the layer it reports
computed a wrong output from right inputs (a planted fault, a compiler or RTL bug, or a
program compiled from another model).
"""
from __future__ import annotations

from copy import deepcopy
from dataclasses import dataclass

import torch

from rmsmp.generator.layout import unpack_activations
from rmsmp.generator.program import split_words
from rmsmp.generator.validate import decode
from rmsmp.host.errors import RmsmpError
from rmsmp.host.quant.layer import as_images, quantize_input
from rmsmp.rtl.isa import INSTR_BITS, Instruction, Opcode

from .golden import golden_trace

__all__ = ["Mismatch", "localize", "read_tensor"]


@dataclass(frozen=True)
class Mismatch:
    """The first layer (in program order) whose output differs from golden."""

    layer: str
    channel: int
    y: int
    x: int
    golden: int
    device: int
    differing: int           # values of the layer's output that differ
    total: int
    runs: int                # device runs the search took
    #: the conv that runs this residual add on its output on chip (``ProgramIO.fused``): its own
    #: output is never in memory, so the fault lies in either
    fused_with: str | None = None

    def __str__(self) -> str:
        what = f"layer {self.layer!r}" + (f" (run on chip by {self.fused_with!r}, whose output is not traced)"
                                          if self.fused_with else "")
        return (f"{what} is the first to differ from golden ({self.differing:,} of {self.total:,} "
                f"values; its inputs match): first at channel {self.channel}, pixel (y={self.y}, x={self.x}): "
                f"golden {self.golden}, device {self.device}")


def read_tensor(program, mem, name: str) -> torch.Tensor:
    """Layer ``name``'s output [C, H, W] (integers, codes as stored; channels in the model's
    order) from memory ``mem`` of a run stopped after its ``STAMP``."""
    t = program.io.tensors[name]
    C = program.config["columns"]
    bus, wpe = program.bus_width, t["wpe"]
    ch, H, W = t["shape"]
    blocks = -(-ch * (2 if t["wide"] else 1) // C)
    entries = []
    for e in range(blocks * H * W):
        v = 0
        for i in range(wpe):
            v |= mem[t["addr"] + e * wpe + i] << (bus * i)
        if t["nib"]:                  # C nibbles -> C bytes, sign-extended as the DMA widens them
            nibs = [(v >> (4 * j)) & 0xF for j in range(C)]
            v = sum(((n - 16 if t["signed"] and n >= 8 else n) & 0xFF) << (8 * j) for j, n in enumerate(nibs))
        entries.append(v)
    got = torch.tensor(unpack_activations(entries, ch, H, W, C, t["signed"], wide=t["wide"]), dtype=torch.int64)
    if "channels" in t:                # stored in the compiler's order: the model's channels back in theirs
        out = torch.empty_like(got)
        out[torch.tensor(t["channels"])] = got
        return out
    return got


def _stopped_after(program, layer_index: int):
    """A copy of ``program`` that ends after traced layer ``layer_index``'s STAMP."""
    trace_addr = program.outputs["trace"][0]
    steps = decode(program)
    at = next(i for i, s in enumerate(steps)
              if s.op == "STAMP" and s.fields["ext_addr"] == trace_addr + (layer_index + 1) * s.fields["count"])
    nxt = steps[at + 1]
    p = deepcopy(program)
    end = Instruction.const({"op": Opcode.END}).as_bits()
    p.image[nxt.addr:nxt.addr + INSTR_BITS // p.bus_width] = split_words(end, INSTR_BITS, p.bus_width)
    p.io = None                        # outputs are not stored yet: read the tensors instead
    return p.seal(), nxt.addr


def localize(qm, program, x, *, device=None, image: int = 0) -> Mismatch | None:
    """Run ``program`` on image ``image`` of ``x`` layer by layer against ``golden(qm)``'s
    intermediate tensors; the first layer whose output differs (see :class:`Mismatch`), or
    ``None`` when every traced layer matches.  ``device``: a loaded-or-not device for the
    program's config (default: the Verilator model)."""
    io = program.io
    if io is None or not io.is_network or not io.tensors:
        raise RmsmpError("localize needs a compiled network program (compile_model) of this rmsmp version")
    x = as_images(x, "localize input")
    x = x[image:image + 1] if x.dim() == 4 else x[None]
    if device is None:
        from rmsmp.generator.config import AcceleratorConfig

        from .device import SimDevice
        device = SimDevice(AcceleratorConfig.from_dict(program.config))
    device.load(program)                   # the full program's checks
    ref = {k: v[0] for k, v in golden_trace(qm, x).items()}
    mem_image = device.network_image(quantize_input(x, io.input_q))
    names = [n for n in io.trace if n in io.tensors]    # (a conv whose add ran on chip has no tensor)
    runs = 0
    cache = {}

    def run_to(k):
        nonlocal runs
        if k not in cache:
            stopped, at = _stopped_after(program, io.trace.index(names[k]))
            device.load(stopped)
            image = list(mem_image)            # the inputs in place, and END after layer k
            n = INSTR_BITS // program.bus_width
            image[at:at + n] = stopped.image[at:at + n]
            cache[k] = device.run_image(image, read=["work", *[s.name for s in io.outputs]])
            runs += 1
            device.program = program
        return cache[k]

    def differs(k, name=None):
        name = name or names[k]
        got = read_tensor(program, run_to(k), name)
        want = ref[name].reshape(got.shape)
        return got, want, not torch.equal(got, want)

    try:
        # bisect: lo matches (or is before the first layer), hi differs
        lo, hi = -1, len(names) - 1
        if not differs(hi)[2]:
            first = next((k for k in range(len(names) - 1) if differs(k)[2]), None)
            if first is None:
                return None
            hi = first
        while True:
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if differs(mid)[2]:
                    hi = mid
                else:
                    lo = mid
            # the inputs of layer hi, read in the same stopped run, must match golden
            ins = _producers(qm, names[hi])
            if names[hi] in io.fused:                  # the conv's inputs are the pair's
                ins = [i for i in ins if i != io.fused[names[hi]]] + _producers(qm, io.fused[names[hi]])
            bad_inputs = [names.index(i) for i in ins if i in names and differs(hi, i)[2]]
            if not bad_inputs:
                break
            lo, hi = -1, min(bad_inputs)
        got, want, _ = differs(hi)
        diff = (got != want).nonzero()
        c, yy, xx = (int(v) for v in diff[0])
        return Mismatch(names[hi], c, yy, xx, int(want[c, yy, xx]), int(got[c, yy, xx]), len(diff), got.numel(), runs,
                        io.fused.get(names[hi]))
    finally:
        device.program = program


def _producers(qm, name: str) -> list[str]:
    """The traced tensors layer ``name`` reads (through flattens)."""
    out = []
    for i in qm[name].inputs:
        while qm[i].op == "flatten":
            i = qm[i].inputs[0]
        out.append(i)
    return out
