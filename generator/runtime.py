"""The runtime side of a compiled program: the device API every backend shares —
``load(program)``, ``run(x)``, ``stats``.

It lives beside the compiler because it is the other half of the program's contract
(:class:`~rmsmp.generator.program.ProgramIO` and :mod:`~rmsmp.generator.layout`: where
inputs go and how outputs read back).  A backend (:class:`rmsmp.sim.device.SimDevice`: the Verilator model;
:class:`rmsmp.host.serial_device.SerialDevice`: a board over its UART link) implements
``run_image(image, read)``: run the loaded program on a memory image and return the memory
afterwards — at least the regions named in ``read`` — setting ``stats`` (``cycles``,
``mac_beats``, ``wall_s``, ``process_s``).  Packing inputs, unpacking outputs, batching and
the per-layer report are the same for all of them and live here.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from rmsmp.host.errors import RmsmpError
from rmsmp.host.quant.layer import as_images, quantize_input
from rmsmp.rtl.isa import INSTR_BITS, STAMP_COUNTERS, stamp_words

from .layout import network_input, pack_activation_words, unpack_activations
from .program import Program
from .validate import ProgramError, check_program, cycle_budget, describe_instruction

__all__ = ["Device", "ProgramMismatchError", "ProgramError", "RunError", "changed_runs"]


def changed_runs(old: list, new: list[int], gap: int = 8) -> list[tuple[int, int]]:
    """(start, end) ranges where ``new`` differs from ``old`` (``None`` in ``old``: unknown,
    so different; runs closer than ``gap`` words merged, since sending a run has a cost of
    about that much) — what a device holding ``old`` must be sent to hold ``new``."""
    n = len(new)
    if n == 0:
        return []
    a = np.full(n, -1, dtype=np.int64)
    m = min(n, len(old))
    a[:m] = [-1 if v is None else v for v in old[:m]]
    diff = np.flatnonzero(a != np.asarray(new, dtype=np.int64))
    if len(diff) == 0:
        return []
    cuts = np.flatnonzero(np.diff(diff) > gap)         # differences more than ``gap`` apart
    starts = np.concatenate(([diff[0]], diff[cuts + 1]))
    ends = np.concatenate((diff[cuts], [diff[-1]])) + 1
    return [(int(s), int(e)) for s, e in zip(starts, ends)]


class ProgramMismatchError(RmsmpError):
    """A program compiled for another accelerator configuration."""


class RunError(RmsmpError):
    """A run that did not finish as compiled: the core flagged an error, or it ran past its
    cycle budget."""


class Device:
    """Base of the devices: ``cfg`` is the accelerator the device runs, ``mem_words`` its memory."""

    mem_words: int = 0

    def __init__(self, cfg):
        self.cfg = cfg
        self.program = None
        self.stats: dict = {}
        self.budget = 0              # cycles a run of the loaded program may take

    def _fault(self, what: str, pc: int, cycles: int, *, stopped: bool = False) -> RunError:
        """The error of a run that stopped after ``cycles`` with ``pc``: on the instruction
        before it when the core ``stopped`` itself (``error``), else the one it fetches."""
        where = describe_instruction(self.program, pc - INSTR_BITS // self.program.bus_width if stopped else pc)
        return RunError(f"{what} at {where} after {cycles:,} cycles; nothing was read back")

    #: the memory behind the device, for the cycle budget (:data:`~rmsmp.generator.validate.WORD_CYCLES`)
    memory: str = "ideal"

    def _check_program(self, program) -> None:
        """Refuse a program that is not for this device or not intact: another config, a
        changed image (checksum), an instruction the core cannot run (``check_program``)."""
        if program.config_hash != self.cfg.config_hash:
            raise ProgramMismatchError(
                f"program was compiled for accelerator {program.config_hash:08x}, this device is "
                f"{self.cfg.config_hash:08x} ({self.cfg.describe()}); recompile for this config")
        if self.mem_words and len(program.image) > self.mem_words:
            raise RmsmpError(f"program image of {len(program.image):,} words exceeds the device's "
                             f"{self.mem_words:,}-word memory")
        if program.checksum is None:           # assembled by hand (ProgramBuilder): trusted as it is
            program.seal()
        program.verify()
        check_program(program, self.cfg)
        self.budget = cycle_budget(program, self.cfg, self.memory)

    def load(self, program: Program) -> None:
        self._check_program(program)
        self.program = program

    def run_image(self, image: list[int], read: list[str] | None = None) -> list[int]:   # pragma: no cover
        raise NotImplementedError

    def _finish_stats(self, stats: dict) -> dict:
        peak = self.cfg.peak_macs_per_cycle
        macs = sum(l.macs for l in self.program.layers)
        cyc = stats["cycles"]
        stats.update({"macs": macs, "mac_utilization": macs / (cyc * peak) if cyc else 0.0,
                      "beat_utilization": stats["mac_beats"] / cyc if cyc else 0.0,
                      "time_at_clock_s": cyc / self.cfg.clock_hz})
        return stats

    def run(self, *xs: torch.Tensor) -> torch.Tensor:
        """Run the loaded program: a compiled network takes one batch of real images
        [N, C, H, W] and returns the real outputs [N, O]; a layer program (``layer_program``/
        ``vec_program``) takes its integer input tensor(s) and returns the output integers
        [channels, H, W]."""
        if self.program is None:
            raise RmsmpError("no program loaded: call load(program) first")
        io = self.program.io
        if io is None:
            raise RmsmpError("the loaded program does not declare its input and output tensors")
        xs = tuple(as_images(x, "input" if len(xs) == 1 else f"input {k}") for k, x in enumerate(xs))
        if io.is_network:
            if len(xs) != 1:
                raise RmsmpError("a network program takes one batch of images")
            return self._run_network(xs[0], io)
        if len(xs) != len(io.inputs):
            raise RmsmpError(f"program takes {len(io.inputs)} input tensor(s), got {len(xs)}")
        image = list(self.program.image)
        C, bus = self.cfg.columns, self.program.bus_width
        for x, slot in zip(xs, io.inputs):
            xin = x if x.dim() == 3 else x.reshape(-1, 1, 1)
            if tuple(xin.shape) != tuple(slot.shape):
                raise RmsmpError(f"input shape {tuple(xin.shape)} != program's {tuple(slot.shape)}")
            flat = pack_activation_words(xin, C, bus)
            image[slot.addr:slot.addr + len(flat)] = flat
        o = io.outputs[0]
        out = self.run_image(image, read=[o.name])
        return torch.tensor(self._unpack(out, o), dtype=torch.int64)

    def _unpack(self, mem, slot):
        return unpack_activations(self.program.read_entries(mem, slot.name), *slot.shape, self.cfg.columns,
                                  slot.signed, wide=slot.wide)

    def _run_network(self, images: torch.Tensor, io) -> torch.Tensor:
        """Real images [N, C, H, W] → real outputs [N, O] (== ``golden(qm, images)``).

        Images run in chunks of the program's batch; per-layer stats accumulate in
        ``stats`` over all chunks."""
        if images.dim() != 1 + len(io.input_shape) or tuple(images.shape[1:]) != tuple(io.input_shape):
            raise RmsmpError(f"images of shape {list(images.shape)}; the program takes a batch [N, "
                             f"{', '.join(map(str, io.input_shape))}]")
        if len(images) == 0:                  # nothing to run: an empty batch of outputs
            self.stats = {"images": 0, "cycles": 0, "cycles_per_image": 0.0}
            return torch.zeros(0, math.prod(io.output_shape), dtype=torch.float64)
        B = io.batch
        xi = quantize_input(images, io.input_q)
        outs, total = [], {}
        for start in range(0, len(xi), B):
            chunk = xi[start:start + B]
            image = self.network_image(chunk)
            slots = io.outputs[:len(chunk)]
            mem = self.run_image(image, read=[s.name for s in slots] + (["trace"] if io.trace else []))
            outs += [torch.tensor(self._unpack(mem, s), dtype=torch.int64).reshape(-1) for s in slots]
            for key in ("cycles", "mac_beats", "wall_s", "process_s", "uploaded_words"):
                if key in self.stats:                 # (uploaded_words: devices that send only changes)
                    total[key] = total.get(key, 0) + self.stats[key]
            if start == 0 and io.trace:
                total["layers"] = self._layer_report(mem, io)
        n = len(xi)
        macs = sum(l.macs for l in self.program.layers) // B
        total.update({"images": n, "cycles_per_image": total["cycles"] / n,
                      "mac_utilization": macs * n / (total["cycles"] * self.cfg.peak_macs_per_cycle),
                      "time_per_image_at_clock_s": total["cycles"] / n / self.cfg.clock_hz,
                      "sim_cycles_per_s": total["cycles"] / total["wall_s"]})
        self.stats = total
        return torch.stack(outs).double() * io.output_q.step

    def network_image(self, xi: torch.Tensor) -> list[int]:
        """The loaded network program's memory image with quantized images ``xi`` (at most
        its batch, integers [n, C, H, W]) in its input slots."""
        io, C, bus = self.program.io, self.cfg.columns, self.program.bus_width
        image = list(self.program.image)
        for x, slot in zip(xi, io.inputs):
            flat = pack_activation_words(network_input(x, io), C, bus)
            image[slot.addr:slot.addr + len(flat)] = flat
        return image

    def _layer_report(self, mem, io) -> list[dict]:
        """Per-layer cycles from the first image's STAMPs (a batch run layer by layer: the
        batch's, per image), with MACs, utilization, bytes moved, and on a pipelined core the
        cycles the DMA, the engine and both were busy and the array's beats (``dma_busy``,
        ``engine_busy``, ``both_busy``, ``mac_beats``: where the cycles went)."""
        words = self.program.read_entries(mem, "trace")
        n = stamp_words(self.cfg.pipelined)
        stamps = [words[i:i + n] for i in range(0, len(words), n)]
        macs = {}
        for l in self.program.layers:
            macs[l.name] = macs.get(l.name, 0) + l.macs
        B = io.batch
        rows = []
        for k, name in enumerate(io.trace):
            # each counter's difference over the layer (32-bit counters), per image of a
            # batch run layer by layer
            diff = {c: ((b - a) & 0xFFFF_FFFF) / (B if io.layer_major else 1)
                    for c, a, b in zip(STAMP_COUNTERS, stamps[k], stamps[k + 1])}
            cyc = round(diff.pop("cycles"))
            m = macs.get(name, 0) // B
            fused = {"run_by": io.fused[name]} if name in io.fused else {}
            rows.append({"layer": name, **fused, "cycles": cyc, "macs": m,
                         "mac_utilization": m / (cyc * self.cfg.peak_macs_per_cycle) if cyc else 0.0,
                         "bytes_moved": io.moved_words[k] * self.program.bus_width // 8,
                         **{c: round(v) for c, v in diff.items()}})
        return rows

    def layer_table(self) -> str:
        """The per-layer report of the last network run, as a Markdown table."""
        rows = self.stats.get("layers")
        if not rows:
            return "(no per-layer report: run a compiled network first)"
        busy = "engine_busy" in rows[0]
        out = ["| layer | MACs | cycles | MAC utilization | bytes moved |"
               + (" engine busy | array beats | DMA busy | both idle |" if busy else ""),
               "|---|---|---|---|---|" + ("---|---|---|---|" if busy else "")]
        for r in rows:
            name = f"{r['layer']} (run by {r['run_by']})" if r.get("run_by") else r["layer"]
            line = (f"| {name} | {r['macs']:,} | {r['cycles']:,} | {r['mac_utilization']:.1%} | "
                    f"{r['bytes_moved']:,} |")
            if busy:
                line += " " + " | ".join(f"{v:.0%}" for v in busy_shares(r)) + " |"
            out.append(line)
        return "\n".join(out)


def busy_shares(row: dict) -> tuple[float, float, float, float]:
    """A per-layer report row's (engine busy, array beats, DMA busy, both idle) from a
    pipelined core's STAMP counters: the engine's, the DMA's and neither's busy cycles as
    shares of the layer's, and the array's beats as a share of the engine's busy cycles.  A
    layer near 100 % engine is compute-bound (at its beats' share of the engine's time: the
    rest is the ops' setup and drain, the requantizer, the vector unit), near 100 % DMA bound
    by its transfers, and with neither, by how they take turns."""
    c = row["cycles"] or 1
    idle = row["cycles"] - row["engine_busy"] - row["dma_busy"] + row["both_busy"]
    return row["engine_busy"] / c, row["mac_beats"] / (row["engine_busy"] or 1), row["dma_busy"] / c, idle / c
