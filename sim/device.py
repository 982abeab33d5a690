"""``SimDevice``: the cycle-accurate Verilator model of the core behind the host device API.

The model is built once per configuration (cached by the hash of its Verilog) and runs a
program as one free-running simulation: the memory image goes in as a hex file, comes
back as one, and Python never steps the clock.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch

from rmsmp.generator.lower import im2col_input, pack_activation_words, unpack_activations
from rmsmp.host.errors import RmsmpError

from .top import MEM_MODEL, MEM_WORDS, SimTop
from .verilator import VerilatorBuild

__all__ = ["SimDevice", "ProgramMismatchError", "network_input"]


def network_input(x: torch.Tensor, net: dict) -> torch.Tensor:
    """One quantized image [C, H, W] laid out as the program's input tensor (the first
    layer's im2col columns when the compiler chose that transform)."""
    t = net.get("input_transform")
    if t and "im2col" in t:
        return im2col_input(x, *t["im2col"])
    return x


class ProgramMismatchError(RmsmpError):
    """A program compiled for another accelerator configuration."""


class SimDevice:
    """``load(program)``, ``run(x)``, ``stats`` on the Verilator model of ``cfg``."""

    def __init__(self, cfg, *, build_root=None):
        self.cfg = cfg
        self._model = VerilatorBuild(SimTop(cfg), "rmsmp_sim", build_root=build_root, extra_sources=[MEM_MODEL])
        self.program = None
        self.stats: dict = {}

    def build(self) -> float:
        """Build (or reuse) the Verilator model; returns seconds spent.  The build log is
        ``build.log`` in the model's build directory."""
        t = time.perf_counter()
        self._model.build_dir.mkdir(parents=True, exist_ok=True)
        log = self._model.build_dir / "build.log"
        try:
            self._model.build(log_file=log)
        except (RuntimeError, SystemExit) as e:
            raise RmsmpError(f"building the Verilator model failed ({e}); log: {log}") from None
        return time.perf_counter() - t

    def load(self, program) -> None:
        if program.config_hash != self.cfg.config_hash:
            raise ProgramMismatchError(
                f"program was compiled for accelerator {program.config_hash:08x}, this device is "
                f"{self.cfg.config_hash:08x} ({self.cfg.describe()}); recompile for this config")
        if len(program.image) > MEM_WORDS:
            raise RmsmpError(f"program image of {len(program.image)} words exceeds the {MEM_WORDS}-word memory")
        self.program = program

    def run_image(self, image: list[int]) -> list[int]:
        """Run the loaded program on memory ``image``; returns memory after ``done``."""
        if self.program is None:
            raise RmsmpError("no program loaded: call load(program) first")
        with tempfile.TemporaryDirectory(prefix="rmsmp-sim-") as d:
            d = Path(d)
            (d / "in.hex").write_text("\n".join(f"{w:08x}" for w in image) + "\n")
            if self._model._runner is None:
                self.build()
            t = time.perf_counter()
            log = d / "sim.log"
            try:
                self._model.run("rmsmp.sim.benches.program",
                                {"config_hash": self.program.config_hash, "prog_addr": self.program.prog_addr,
                                 "stats": str(d / "stats.json")},
                                plusargs=[f"+MEMFILE={d / 'in.hex'}", f"+DUMPFILE={d / 'out.hex'}",
                                          f"+DUMPWORDS={len(image)}"], test_dir=d, log_file=log)
            except (RuntimeError, SystemExit, AssertionError) as e:
                tail = log.read_text()[-3000:] if log.exists() else ""
                raise RmsmpError(f"simulation failed ({e}):\n{tail}") from None
            wall = time.perf_counter() - t
            stats = json.loads((d / "stats.json").read_text())
            out = [int(line, 16) for line in (d / "out.hex").read_text().split() if not line.startswith("//")]
        peak = self.cfg.peak_macs_per_cycle
        macs = sum(l.macs for l in self.program.layers)
        stats.update({"process_s": wall, "macs": macs,
                      "mac_utilization": macs / (stats["cycles"] * peak) if stats["cycles"] else 0.0,
                      "beat_utilization": stats["mac_beats"] / stats["cycles"] if stats["cycles"] else 0.0,
                      "time_at_clock_s": stats["cycles"] / self.cfg.clock_hz,
                      "sim_cycles_per_s": stats["cycles"] / stats["wall_s"] if stats["wall_s"] else 0.0})
        self.stats = stats
        return out

    def run(self, *xs: torch.Tensor) -> torch.Tensor:
        """Run a program built by ``layer_program``/``vec_program`` on its integer input
        tensor(s); returns the output integers [channels, H, W]."""
        io = self.program.io if self.program is not None else {}
        if "network" in io:
            if len(xs) != 1:
                raise RmsmpError("a network program takes one batch of images")
            return self._run_network(xs[0], io["network"])
        if "inputs" not in io:
            raise RmsmpError("the loaded program does not declare its input and output tensors")
        if len(xs) != len(io["inputs"]):
            raise RmsmpError(f"program takes {len(io['inputs'])} input tensor(s), got {len(xs)}")
        image = list(self.program.image)
        C, bus = self.cfg.columns, self.program.bus_width
        for x, spec in zip(xs, io["inputs"]):
            xin = x if x.dim() == 3 else x.reshape(-1, 1, 1)
            if tuple(xin.shape) != tuple(spec["shape"]):
                raise RmsmpError(f"input shape {tuple(xin.shape)} != program's {tuple(spec['shape'])}")
            flat = pack_activation_words(xin, C, bus)
            image[spec["addr"]:spec["addr"] + len(flat)] = flat
        out = self.run_image(image)
        o = io["output"]
        y = unpack_activations(self.program.read_entries(out, o["name"]), o["channels"], o["H"], o["W"], C,
                               o["signed"])
        return torch.tensor(y, dtype=torch.int64)

    def _run_network(self, images: torch.Tensor, net: dict) -> torch.Tensor:
        """Real images [N, C, H, W] → real outputs [N, O] (== ``golden(qm, images)``).

        Images run in chunks of the program's batch; per-layer stats accumulate in
        ``stats`` over all chunks."""
        from rmsmp.host.quant.qmodel import TensorQ
        from rmsmp.sim.golden import quantize_input
        if tuple(images.shape[1:]) != tuple(net["input_shape"]):
            raise RmsmpError(f"images of shape {tuple(images.shape[1:])}; the program was compiled for "
                             f"{tuple(net['input_shape'])}")
        iq, oq = TensorQ(**net["input_q"]), TensorQ(**net["output_q"])
        C, bus, B = self.cfg.columns, self.program.bus_width, net["batch"]
        O, oh, ow = net["output_shape"]
        xi = quantize_input(images, iq)
        outs, total = [], {}
        for start in range(0, len(xi), B):
            chunk = xi[start:start + B]
            image = list(self.program.image)
            for k, x in enumerate(chunk):
                flat = pack_activation_words(network_input(x, net), C, bus)
                a = net["inputs"][k]
                image[a:a + len(flat)] = flat
            mem = self.run_image(image)
            for k in range(len(chunk)):
                y = unpack_activations(self.program.read_entries(mem, net["outputs"][k]), O, oh, ow, C,
                                       oq.signed, wide=oq.bits > 8)
                outs.append(torch.tensor(y, dtype=torch.int64).reshape(-1))
            for key in ("cycles", "mac_beats", "wall_s", "process_s"):
                total[key] = total.get(key, 0) + self.stats[key]
            if start == 0 and net.get("trace"):
                total["layers"] = self._layer_report(mem, net)
        n = len(xi)
        macs = sum(l.macs for l in self.program.layers) // B
        total.update({"images": n, "cycles_per_image": total["cycles"] / n,
                      "mac_utilization": macs * n / (total["cycles"] * self.cfg.peak_macs_per_cycle),
                      "time_per_image_at_clock_s": total["cycles"] / n / self.cfg.clock_hz,
                      "sim_cycles_per_s": total["cycles"] / total["wall_s"]})
        self.stats = total
        return torch.stack(outs).double() * oq.step

    def _layer_report(self, mem, net) -> list[dict]:
        """Per-layer cycles from the first image's STAMPs, with MACs, utilization, bytes moved."""
        stamps = self.program.read_entries(mem, "trace")
        macs = {}
        for l in self.program.layers:
            macs[l.name] = macs.get(l.name, 0) + l.macs
        B = net["batch"]
        rows = []
        for k, name in enumerate(net["trace"]):
            cyc = stamps[k + 1] - stamps[k]
            m = macs.get(name, 0) // B
            rows.append({"layer": name, "cycles": cyc, "macs": m,
                         "mac_utilization": m / (cyc * self.cfg.peak_macs_per_cycle) if cyc else 0.0,
                         "bytes_moved": net["moved_words"][k] * self.program.bus_width // 8})
        return rows

    def layer_table(self) -> str:
        """The per-layer report of the last network run, as a Markdown table."""
        rows = self.stats.get("layers")
        if not rows:
            return "(no per-layer report: run a compiled network first)"
        out = ["| layer | MACs | cycles | MAC utilization | bytes moved |", "|---|---|---|---|---|"]
        for r in rows:
            out.append(f"| {r['layer']} | {r['macs']:,} | {r['cycles']:,} | {r['mac_utilization']:.1%} | "
                       f"{r['bytes_moved']:,} |")
        return "\n".join(out)
