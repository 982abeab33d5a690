"""Per-unit synthesis of a config's core and board top (yosys via YoWASP): where the cells go.

    python bench/synth_units.py [--family ice40|ecp5] [--config cfg.json] [units ...]

Each unit (top, core, engine, dma, vec, rq, array, bridge, csr, uart) is synthesized alone
(``synth_ice40 -dsp`` / ``synth_ecp5``, after the build's ``NO_COLLISION_BYPASS``), its ports as top-level
ports, and its LUT, flip-flop,
carry, DSP and block-RAM counts printed.  Default config: the smallest iCE40 core that runs
the digits network (1×pot4 + 1×fix8 × 2 columns, ``FAMILY_PARAMS["ice40"]``).  A unit alone
is not its share of the whole design (optimisation across its ports is lost), but the
ranking says where to cut.  ``top`` is the board top with the SPRAM memory on iCE40.
``--hier`` keeps the hierarchy (``-noflatten``) and lists each submodule's own cells; yosys
0.70's ABC9 fails on that netlist, so its LUTs are mapped without ABC (``-noabc`` on iCE40:
LUT counts run high, flip-flops are exact).
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from amaranth.back import rtlil

sys.path.insert(0, str(Path(__file__).parent))
from synth_ecp5 import yosys  # noqa: E402

from rmsmp.boards.toolchain import NO_COLLISION_BYPASS  # noqa: E402
from rmsmp.generator.config import AcceleratorConfig  # noqa: E402
from rmsmp.generator.cost import FAMILY_PARAMS  # noqa: E402
from rmsmp.rtl.toplevel import flat_toplevel  # noqa: E402

UNITS = ("top", "core", "engine", "dma", "vec", "rq", "array", "bridge", "csr", "uart")
SYNTH = {"ice40": "synth_ice40 -dsp", "ecp5": "synth_ecp5"}
COLS = {"ice40": ("SB_LUT4", "SB_CARRY", "SB_MAC16", "SB_RAM40_4K", "SB_DFF"),
        "ecp5": ("LUT4", "CCU2C", "MULT18X18D", "DP16KD", "TRELLIS_FF")}


def synth(comp, family: str, hier: bool = False) -> dict:
    """Cell counts by type of ``comp`` (``hier``: {module: its own cell counts})."""
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "t.il").write_text(rtlil.convert(flat_toplevel(comp), name="t", emit_src=False))
        flags = (" -noflatten -noabc" if family == "ice40" else " -noflatten") if hier else ""
        out = subprocess.run([yosys(), "-q", "-p",
                              f"read_rtlil t.il; {NO_COLLISION_BYPASS}; {SYNTH[family]}{flags} -top t; "
                              "tee -o s.json stat -json"],
                             capture_output=True, text=True, cwd=d)
        if out.returncode:
            raise RuntimeError(f"yosys failed:\n{(out.stdout + out.stderr)[-2000:]}")
        stat = json.loads((Path(d) / "s.json").read_text())
        if hier:
            return {name: mod.get("num_cells_by_type", {}) for name, mod in stat["modules"].items()}
        return stat["design"]["num_cells_by_type"]


def _row(c: dict, family: str) -> str:
    lut, carry, dsp, ram, ff = COLS[family]
    ffs = sum(v for k, v in c.items() if k.startswith(ff))
    return (f"LUT {c.get(lut, 0):6,} FF {ffs:6,} carry {c.get(carry, 0):5,} DSP {c.get(dsp, 0):3} "
            f"BRAM {c.get(ram, 0):3}")


def _silenced(elaboratable):
    """An elaboratable used only for its signature: no never-elaborated warning."""
    elaboratable._MustUse__silence = True
    return elaboratable


def units(cfg, family: str):
    from rmsmp.boards.top import BoardTop
    from rmsmp.rtl.bridge import HostBridge
    from rmsmp.rtl.burst_ram import SPRAM_WORDS
    from rmsmp.rtl.core import Core
    from rmsmp.rtl.csr import CsrBank
    from rmsmp.rtl.dma import Dma
    from rmsmp.rtl.engine import ConvEngine, buffer_ports
    from rmsmp.rtl.mac import MacArray
    from rmsmp.rtl.ppu import Requantizer
    from rmsmp.rtl.uart import UartRx, UartTx
    from rmsmp.rtl.vector import VectorUnit

    def rq():
        return Requantizer(acc_bits=cfg.acc_bits, mult_bits=cfg.mult_bits, shift_bits=cfg.shift_bits,
                           out_bits=cfg.out_bits, held_bounds=True)
    unpack = {f"wgt_w_{g.scheme}": g.format.bits for g in cfg.lane_groups
              if cfg.packed_weights and g.format.kind == "fix" and g.format.bits > 2}
    return {
        "top": lambda: BoardTop(cfg, mem_words=SPRAM_WORDS, divisor=24, single_port=family == "ice40"),
        "core": lambda: Core(cfg), "engine": lambda: ConvEngine(cfg),
        "dma": lambda: Dma(bus_width=cfg.bus_width, buffer_ports=buffer_ports(cfg), act_width=8 * cfg.columns,
                           unpack=unpack),
        # (as the engine builds it: its pixel lanes, pipeline and read latency)
        "vec": lambda: VectorUnit(columns=cfg.columns, requantizer=_silenced(rq()).signature,
                                  addr_bits=(cfg.act_depth - 1).bit_length(), ops=cfg.vector_ops,
                                  held_desc=True, pixels=cfg.pixels, pipelined=cfg.pipelined,
                                  read_latency=ConvEngine.READ_LATENCY + 1 if cfg.pipelined else 1),
        "rq": rq, "array": lambda: MacArray.for_config(cfg),
        "bridge": lambda: HostBridge(max_burst=256), "csr": lambda: CsrBank(),
        "uart": lambda: UartRx(24), "uart_tx": lambda: UartTx(24),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", choices=tuple(SYNTH), default="ice40")
    ap.add_argument("--config", help="AcceleratorConfig JSON")
    ap.add_argument("--hier", action="store_true", help="per submodule (yosys -noflatten)")
    ap.add_argument("units", nargs="*", help=f"any of {', '.join(UNITS)} (default: all)")
    a = ap.parse_args()
    if a.config:
        cfg = AcceleratorConfig.load(a.config)
    else:
        cfg = AcceleratorConfig(lane_groups=(("pot4", 1), ("fix8", 1)), columns=2, clock_hz=12_000_000,
                                **FAMILY_PARAMS[a.family])
    print(f"{cfg.describe()} — {a.family}")
    make = units(cfg, a.family)
    bad = [u for u in a.units if u not in UNITS]
    if bad:
        ap.error(f"unknown unit(s) {', '.join(bad)}; choose from {', '.join(UNITS)}")
    for name in a.units or UNITS:
        for key in ([name, "uart_tx"] if name == "uart" else [name]):
            if a.hier:
                for mod, c in sorted(synth(make[key](), a.family, hier=True).items()):
                    print(f"{key}: {mod.lstrip(chr(92)):40s} {_row(c, a.family)}", flush=True)
            else:
                print(f"{key:8s} {_row(synth(make[key](), a.family), a.family)}", flush=True)


if __name__ == "__main__":
    main()
