"""``SimDevice``: the cycle-accurate Verilator model of the core behind the host device API.

The model is built once per configuration (cached by the hash of its Verilog). One
simulation process serves every run of a device (:mod:`rmsmp.sim.benches.server`): the
first run sends the program's memory image, later runs only the words that changed (the
next images), and only the regions asked for come back — all in bulk through files, so
Python never steps the clock or the memory, and a run costs its simulated cycles plus a
few milliseconds.  Input packing, batching and the layer report are
:class:`rmsmp.generator.runtime.Device`'s.  ``close()`` (or leaving a ``with`` block) ends
the simulation; so does the device being garbage-collected or the process exiting.
"""
from __future__ import annotations

import json
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

from rmsmp.generator.runtime import Device, ProgramMismatchError, changed_runs
from rmsmp.host.errors import RmsmpError

from .top import MEM_MODEL, MEM_WORDS, SDRAM_MODEL, SimTop
from .verilator import VerilatorBuild, emit_verilog

__all__ = ["SimDevice", "ProgramMismatchError"]

#: seconds to wait for a new simulation to connect (it loads the model and cocotb first)
CONNECT_TIMEOUT_S = 120.0
_VERILOG: dict = {}                       # (config, board) -> the simulation top's Verilog
_VERILOG_LOCK = threading.Lock()


class _Server:
    """One running simulation of the model and the connection to its bench."""

    def __init__(self, model: VerilatorBuild, config_hash: int, mem_ratio: int = 1):
        self.dir = Path(tempfile.mkdtemp(prefix="rmsmp-sim-"))
        self.load_file, self.dump_file, self.log = self.dir / "load.hex", self.dir / "dump.hex", self.dir / "sim.log"
        self.error: BaseException | None = None
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(0.5)
        port = listener.getsockname()[1]

        def simulate():
            try:
                model.run("rmsmp.sim.benches.server", {"port": port, "dump_file": str(self.dump_file),
                                                       "mem_ratio": mem_ratio},
                          plusargs=[f"+LOADFILE={self.load_file}", f"+DUMPFILE={self.dump_file}"],
                          test_dir=self.dir, log_file=self.log)
            except BaseException as e:             # reported by the next request
                self.error = e

        self.thread = threading.Thread(target=simulate, name="rmsmp-sim", daemon=True)
        self.thread.start()
        t0 = time.perf_counter()
        try:
            while True:
                try:
                    self.sock, _ = listener.accept()
                    break
                except TimeoutError:
                    if not self.thread.is_alive() or time.perf_counter() - t0 > CONNECT_TIMEOUT_S:
                        raise self.failure("the simulation did not start") from None
        finally:
            listener.close()
        self.sock.settimeout(None)
        self.link = self.sock.makefile("rw")
        hello = self._reply()
        if hello.get("id") != config_hash:
            self.close()
            raise RmsmpError(f"the simulated core's ID {hello.get('id', 0):08x} is not the config's "
                             f"{config_hash:08x}")

    def failure(self, what: str) -> RmsmpError:
        tail = self.log.read_text()[-3000:] if self.log.exists() else ""
        why = f" ({self.error})" if self.error else ""
        return RmsmpError(f"{what}{why}; simulation log {self.log}:\n{tail}")

    def _reply(self) -> dict:
        line = self.link.readline()
        if not line:
            self.thread.join(5)
            raise self.failure("the simulation ended unexpectedly")
        return json.loads(line)

    def request(self, req: dict) -> dict:
        try:
            self.link.write(json.dumps(req) + "\n")
            self.link.flush()
        except OSError:
            raise self.failure("the simulation is gone") from None
        return self._reply()

    def close(self) -> None:
        try:
            self.link.write(json.dumps({"op": "quit"}) + "\n")
            self.link.flush()
        except (OSError, ValueError):
            pass
        for f in (self.link, self.sock):
            try:
                f.close()
            except OSError:
                pass
        self.thread.join(30)
        shutil.rmtree(self.dir, ignore_errors=True)


class SimDevice(Device):
    """``load(program)``, ``run(x)``, ``stats`` on the Verilator model of ``cfg``: the core on
    an ideal burst memory (one word per cycle each way), or with ``board`` naming a board
    with an SDRAM, on that board's SDRAM controller and a model of its chip (the cycles
    then include the SDRAM's bandwidth, row changes and refreshes at the config's clock,
    ``cfg.clock_hz``, as a board build derives them)."""

    def __init__(self, cfg, *, build_root=None, board: str | None = None):
        super().__init__(cfg)
        sdram, self.mem_ratio = None, 1
        if board is not None:
            from rmsmp.generator.catalog import board as board_spec
            spec = board_spec(board)
            if spec.memory() == "sdram":
                # the timings at the design's clock, or at the SDRAM controller's own (a whole
                # multiple of it), as a build derives them (boards/design.py)
                spec = replace(spec, clock_hz=cfg.clock_hz)
                sdram, self.mem_ratio = (spec.sdram, spec.sdram_timing()), spec.sdram_ratio()
        self.mem_words = sdram[0].words if sdram else MEM_WORDS
        self.memory = "sdram" if sdram else "ideal"
        key = (cfg, board)
        with _VERILOG_LOCK:                   # several devices of one config elaborate it once
            if key not in _VERILOG:
                _VERILOG[key] = emit_verilog(SimTop(cfg, sdram=sdram, sdram_clock=self.mem_ratio > 1), "rmsmp_sim")
        self._model = VerilatorBuild(None, "rmsmp_sim", build_root=build_root,
                                     extra_sources=[SDRAM_MODEL if sdram else MEM_MODEL], verilog=_VERILOG[key])
        self._server: _Server | None = None
        self._held: list | None = None        # what the simulated memory holds (None: unknown words)

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
        super().load(program)
        self._held = None                     # the next run sends the whole image

    def close(self) -> None:
        """End the simulation (a later run starts a new one)."""
        if self._server is not None:
            self._server.close()
            self._server, self._held = None, None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def run_image(self, image: list[int], read: list[str] | None = None) -> list[int]:
        """Run the loaded program on memory ``image``; returns ``image`` with the regions named
        in ``read`` (default: every region the program writes) as the run left them."""
        if self.program is None:
            raise RmsmpError("no program loaded: call load(program) first")
        t0 = time.perf_counter()
        if self._server is None:
            if self._model._runner is None:
                self.build()
            self._server, self._held = _Server(self._model, self.cfg.config_hash, self.mem_ratio), None
        held, self._held = self._held, None    # unknown until the run has answered
        runs = changed_runs(held, image) if held is not None else [(0, len(image))]
        if runs:
            with open(self._server.load_file, "w") as f:
                for a, b in runs:
                    f.write(f"@{a:x}\n" + "\n".join(f"{w:08x}" for w in image[a:b]) + "\n")
        regions = self.program.regions(read if read is not None else self.program.outputs)
        res = self._server.request({"op": "run", "load": bool(runs), "prog_addr": self.program.prog_addr,
                                    "max_cycles": self.budget, "dumps": [[a, a + n - 1] for a, n in regions if n]})
        if res["timeout"] or res["error"] or not res["done"]:
            self.close()                       # the core is stopped mid-program: a new simulation next time
            if res["timeout"]:
                raise self._fault(f"the program ran past its cycle budget of {self.budget:,} cycles and was "
                                  "stopped", res["pc"], res["cycles"])
            if res["error"]:
                raise self._fault("the core stopped on an instruction it cannot run", res["pc"], res["cycles"],
                                  stopped=True)
            raise RmsmpError(f"the simulated core is neither done nor busy after the run (pc {res['pc']:#x})")
        held = list(image)
        for addr, n in self.program.regions(self.program.outputs):    # the run wrote these: unknown unless read
            held[addr:addr + n] = [None] * n
        out = list(image)
        for (addr, n), words in zip([r for r in regions if r[1]], res["dumps"]):
            if len(words) != n:
                raise self._server.failure(f"the memory dump of {n} words at {addr:#x} came back with {len(words)}")
            vals = [int(w, 16) for w in words]
            out[addr:addr + n] = held[addr:addr + n] = vals
        self._held = held
        stats = {"cycles": res["cycles"], "mac_beats": res["mac_beats"], "wall_s": res["wall_s"],
                 "process_s": time.perf_counter() - t0, "uploaded_words": sum(b - a for a, b in runs),
                 "sim_cycles_per_s": res["cycles"] / res["wall_s"] if res["wall_s"] else 0.0}
        self.stats = self._finish_stats(stats)
        return out
