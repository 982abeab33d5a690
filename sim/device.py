"""``SimDevice``: the cycle-accurate Verilator model of the core behind the host device API.

The model is built once per configuration (cached by the hash of its Verilog) and runs a
program as one free-running simulation: the memory image goes in as a hex file, comes
back as one, and Python never steps the clock.  Input packing, batching and the layer
report are :class:`rmsmp.host.device.Device`'s.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from rmsmp.generator.runtime import Device, ProgramMismatchError
from rmsmp.host.errors import RmsmpError

from .top import SimTop
from .verilator import VerilatorBuild

__all__ = ["SimDevice", "ProgramMismatchError"]


class SimDevice(Device):
    """``load(program)``, ``run(x)``, ``stats`` on the Verilator model of ``cfg``: the core on
    an ideal burst memory (one word per cycle each way), or with ``board`` naming a board
    with an SDRAM, on that board's SDRAM controller and a model of its chip (the cycles
    then include the SDRAM's bandwidth, row changes and refreshes at the board clock)."""

    def __init__(self, cfg, *, build_root=None, board: str | None = None):
        super().__init__(cfg)
        sdram = None
        if board is not None:
            from rmsmp.generator.catalog import board as board_spec
            spec = board_spec(board)
            if spec.memory() == "sdram":
                sdram = (spec.sdram, spec.sdram_timing())
        top = SimTop(cfg, sdram=sdram)
        self.mem_words = top.mem_words
        self.memory = "sdram" if sdram else "ideal"
        self._model = VerilatorBuild(top, "rmsmp_sim", build_root=build_root, extra_sources=[top.mem_model])

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

    def run_image(self, image: list[int], read: list[str] | None = None) -> list[int]:
        """Run the loaded program on memory ``image``; returns the whole memory after
        ``done`` (``read`` is for devices that fetch only some regions back)."""
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
                                 "stats": str(d / "stats.json"), "max_cycles": self.budget},
                                plusargs=[f"+MEMFILE={d / 'in.hex'}", f"+DUMPFILE={d / 'out.hex'}",
                                          f"+DUMPWORDS={len(image)}"], test_dir=d, log_file=log)
            except (RuntimeError, SystemExit, AssertionError) as e:
                tail = log.read_text()[-3000:] if log.exists() else ""
                raise RmsmpError(f"simulation failed ({e}):\n{tail}") from None
            wall = time.perf_counter() - t
            stats = json.loads((d / "stats.json").read_text())
            if stats["timeout"]:
                raise self._fault(f"the program ran past its cycle budget of {self.budget:,} cycles and was "
                                  "stopped", stats["pc"], stats["cycles"])
            if stats["error"]:
                raise self._fault("the core stopped on an instruction it cannot run", stats["pc"], stats["cycles"],
                                  stopped=True)
            out = [int(line, 16) for line in (d / "out.hex").read_text().split() if not line.startswith("//")]
        stats.update({"process_s": wall,
                      "sim_cycles_per_s": stats["cycles"] / stats["wall_s"] if stats["wall_s"] else 0.0})
        self.stats = self._finish_stats(stats)
        return out
