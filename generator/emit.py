"""Elaborate the accelerator's RTL for a config and write Verilog and RTLIL."""
from __future__ import annotations

from pathlib import Path

from amaranth.back import rtlil, verilog

from rmsmp.rtl.core import Core
from rmsmp.rtl.toplevel import flat_toplevel

from .config import AcceleratorConfig

__all__ = ["elaborate", "emit"]


def elaborate(cfg: AcceleratorConfig):
    """The top-level component for ``cfg``: the core (memory port, control, counters)."""
    return Core(cfg)


def emit(cfg: AcceleratorConfig, out_dir, name: str = "rmsmp_core") -> dict[str, Path]:
    """Write ``<name>.v``, ``<name>.il`` and ``<name>.json`` (the config) into ``out_dir``."""
    import json
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    top = flat_toplevel(elaborate(cfg))
    paths = {"verilog": out / f"{name}.v", "rtlil": out / f"{name}.il", "config": out / f"{name}.json"}
    paths["verilog"].write_text(verilog.convert(top, name=name, emit_src=False))
    paths["rtlil"].write_text(rtlil.convert(top, name=name, emit_src=False))
    paths["config"].write_text(json.dumps({**cfg.to_dict(), "config_hash": f"{cfg.config_hash:08x}"}, indent=2))
    return paths
