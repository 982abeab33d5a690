"""``AcceleratorConfig``: the one frozen description every generated artefact derives from.

The RTL generators, the compiler and the host runtime all read the same config; its
:attr:`~AcceleratorConfig.config_hash` is also readable from the hardware (ID register),
so a host refuses a program compiled for another config.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields

from rmsmp.host.errors import RmsmpError
from rmsmp.host.quant.formats import FormatError, WeightFormat, parse_weight_format
from rmsmp.rtl.isa import ACT_BANKS, ISA_REVISION, MAX_PIXELS, VECTOR_OPS

__all__ = ["LaneGroup", "AcceleratorConfig", "ConfigError", "DEFAULT_LANE_GROUPS", "VECTOR_OPS"]


class ConfigError(RmsmpError):
    """An accelerator configuration that cannot be built."""


@dataclass(frozen=True)
class LaneGroup:
    """``rows`` MAC rows whose lanes implement weight format ``scheme`` (e.g. ``"pot4"``)."""

    scheme: str
    rows: int

    def __post_init__(self):
        try:
            fmt = parse_weight_format(self.scheme)
        except FormatError as e:
            raise ConfigError(f"lane group: {e}") from None
        object.__setattr__(self, "scheme", fmt.name)
        if not isinstance(self.rows, int) or self.rows < 1:
            raise ConfigError(f"lane group {self.scheme}: rows must be a positive integer, got {self.rows!r}")

    @property
    def format(self) -> WeightFormat:
        return parse_weight_format(self.scheme)


#: A 16-row array for the RMSMP paper's 10:5:1 (pot4:fix4:fix8) models: 10 shift-only
#: power-of-two rows and 6 fixed-point rows.  The fixed rows are 8-bit: on ECP5 a 4×9 and an
#: 8×9 product each take one MULT18X18D (bench/synth_ecp5.py: a fix4 and a fix8 row both use
#: 8 DSPs), and an 8-bit lane runs fix4 rows as well, so every fix row of a 10:5:1 layer and
#: all-fix8 edge layers (6 rows instead of 1) keep the array busy.
DEFAULT_LANE_GROUPS = (LaneGroup("pot4", 10), LaneGroup("fix8", 6))


def _check_int(name, v, lo, hi):
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ConfigError(f"{name} must be an integer in {lo}..{hi}, got {v!r}")


@dataclass(frozen=True)
class AcceleratorConfig:
    """Parameters of one generated accelerator.

    Attributes:
        lane_groups: rows per weight format, in array order (row 0 first).
        columns: ``C``, lanes per row = activations consumed per row per cycle.
        act_bits: activation magnitude bits; lanes take signed ``act_bits + 1``-bit
            inputs, which hold unsigned ``act_bits`` and signed ``act_bits`` values.
        acc_bits: signed accumulator width (docs/arithmetic.md §3: 32 holds every
            ResNet-18 layer with its bias).
        mult_bits / shift_bits: requantizer multiplier and shift widths.
        out_bits: widest output tensor (signed) the post-processing unit produces.
        weight_depth / act_depth / acc_depth: on-chip buffer depths: weight and
            activation entries, and the output groups whose requantization parameters the
            parameter buffer holds (``param_slots(rows)`` entries of one row each a group).
        bus_width: memory port data width in bits.
        clock_hz: target clock.
        packed_weights: the DMA unpacks fixed-point weights stored at their own width
            (a fix4 row on a fix8 lane group moves 4 bits per weight); ``False`` stores
            every code at its lane's width and saves the unpacking multiplexers.
        vector_ops: the operations the vector unit is built with (a subset of
            :data:`VECTOR_OPS`).  Without ``avgpool`` the compiler runs a global average
            pool on the conv engine (a ones kernel; at most 15×15 pixels); a network that
            needs a missing ``add`` or ``maxpool`` is refused.  Small FPGAs drop them.
        pot_act_bits: activation magnitude bits the power-of-two lanes take (0: ``act_bits``).
            A shift lane for 4-bit activations is ~40 % smaller than one for 8-bit ones; a
            layer whose input does not fit runs its power-of-two rows on the fixed-point
            lanes (ResNet-18 as quantized feeds 8-bit tensors only to fix8 edge layers and
            to the vector unit).
        pixels: ``P``, pixel lanes: the array computes ``P`` output pixels of a row at once
            (lane ``p`` a chunk of the row's columns, from an activation bank of its own),
            every row's weights shared by the ``P`` lanes, so on-chip weight storage does
            not grow with them.  Peak ``rows · columns · pixels`` MACs per cycle.
            ``act_depth`` is per lane.
        lut_schemes: fixed-point lane groups built from LUTs (shift-and-add lanes, no DSP
            block) instead of multipliers — a core that spends its LUTs on more
            fixed-point lanes (the DSP + LUT baseline the mixed-scheme array is compared
            with).  Their lanes, like the power-of-two ones, take ``pot_act_bits``-bit
            activations; a layer whose input does not fit runs on the other groups.
        pipelined: registers on the long paths — buffer reads and writes, the row select
            and six stages of the requantizer, two of the residual add — for a fast clock
            on a large part (ECP5: the paths run across the chip).  ``False`` builds the
            compact core the iCE40 gets (a register costs a logic cell per bit there).
    """

    lane_groups: tuple = DEFAULT_LANE_GROUPS
    columns: int = 8
    act_bits: int = 8
    acc_bits: int = 32
    mult_bits: int = 16
    shift_bits: int = 6
    out_bits: int = 16
    weight_depth: int = 2048
    act_depth: int = 8192
    acc_depth: int = 64
    bus_width: int = 32
    clock_hz: int = 50_000_000
    packed_weights: bool = True
    vector_ops: tuple = VECTOR_OPS
    pixels: int = 1
    pot_act_bits: int = 0
    lut_schemes: tuple = ()
    pipelined: bool = True

    def __post_init__(self):
        groups = tuple(g if isinstance(g, LaneGroup) else LaneGroup(*g) for g in self.lane_groups)
        if not groups:
            raise ConfigError("an accelerator needs at least one lane group")
        names = [g.scheme for g in groups]
        if len(set(names)) != len(names):
            raise ConfigError(f"lane groups name a scheme twice: {names}")
        object.__setattr__(self, "lane_groups", groups)
        _check_int("columns", self.columns, 1, 256)
        _check_int("pixels", self.pixels, 1, MAX_PIXELS)
        if self.pot_act_bits:
            _check_int("pot_act_bits", self.pot_act_bits, 2, self.act_bits)
        _check_int("act_bits", self.act_bits, 2, 16)
        _check_int("acc_bits", self.acc_bits, 8, 48)
        _check_int("mult_bits", self.mult_bits, 1, 24)
        _check_int("shift_bits", self.shift_bits, 1, 7)
        _check_int("out_bits", self.out_bits, 2, 32)
        for n in ("weight_depth", "act_depth", "acc_depth"):
            _check_int(n, getattr(self, n), 2, 1 << 24)
        if self.act_depth & (self.act_depth - 1) or self.act_depth < 2 * ACT_BANKS:
            # the engine's buffer addresses wrap modulo the depth, a bank each half
            raise ConfigError(f"act_depth must be a power of two of at least {2 * ACT_BANKS} (entries a pixel "
                              f"lane), got {self.act_depth}")
        _check_int("bus_width", self.bus_width, 8, 512)
        if self.bus_width & (self.bus_width - 1):
            raise ConfigError(f"bus_width must be a power of two, got {self.bus_width}")
        _check_int("clock_hz", self.clock_hz, 1, 10 ** 10)
        if not isinstance(self.packed_weights, bool):
            raise ConfigError(f"packed_weights must be True or False, got {self.packed_weights!r}")
        ops = (self.vector_ops,) if isinstance(self.vector_ops, str) else tuple(self.vector_ops)
        bad = [o for o in ops if o not in VECTOR_OPS]
        if bad:
            raise ConfigError(f"vector_ops: unknown operation(s) {', '.join(map(repr, bad))}; "
                              f"the vector unit has: {', '.join(VECTOR_OPS)}")
        object.__setattr__(self, "vector_ops", tuple(o for o in VECTOR_OPS if o in ops))
        luts = (self.lut_schemes,) if isinstance(self.lut_schemes, str) else tuple(self.lut_schemes)
        try:
            luts = tuple(parse_weight_format(s).name for s in luts)
        except FormatError as e:
            raise ConfigError(f"lut_schemes: {e}") from None
        fixed = [g.scheme for g in groups if g.format.kind == "fix"]
        bad = [s for s in luts if s not in fixed]
        if bad:
            raise ConfigError(f"lut_schemes: {', '.join(bad)} is not a fixed-point lane group of this config "
                              f"(fixed-point groups: {', '.join(fixed) or 'none'})")
        object.__setattr__(self, "lut_schemes", tuple(s for s in names if s in luts))

    @classmethod
    def for_board(cls, board: str, ratio: dict | None = None, *, memory: str | None = None,
                  split_fix: bool = False, act_bits: int = 4, lut_fix: bool = False,
                  edge_fraction: float = 0.0, clock_hz: int | None = None,
                  flash_boot: bool | None = None, acc_bits: int | None = None) -> "AcceleratorConfig":
        """The accelerator with the most MACs/cycle that fits ``board``'s LUT/DSP/block-RAM
        budget beside the board top (host link, and with ``memory="bram"`` the on-chip
        memory; default: the board's SDRAM if it has one), by the synthesis-calibrated cost
        model (:mod:`rmsmp.generator.cost`), at the board's target clock, over column and
        pixel-lane counts.  ``make bitstream BOARD=…`` builds and checks it.

        Without ``ratio`` the hardware chooses it: pot4 rows on shift lanes (LUTs) beside
        fix8 rows on multiplier lanes (DSP blocks), as many of each as the part holds —
        ``cfg.ratio`` is then the ratio to quantize for (``quantize(model, …,
        ratio=cfg.ratio)``).  With a ``ratio`` (e.g. 10:5:1 pot4:fix4:fix8) the array keeps
        its proportions: fixed-point rows on lanes of the widest fixed-point scheme, which
        also run a network's all-fix8 edge layers; ``split_fix=True`` also tries each fix
        scheme's rows on lanes of its own (for networks without wide edge layers).

        ``act_bits``: the activation bits of the networks it will run (the quantizer's
        default, 4): the power-of-two lanes are built for them where the cost model has
        data for such lanes (``pot_act_bits``; a layer with wider inputs runs its pot rows
        on the fixed-point lanes).  8 builds them for full-width activations.

        ``lut_fix=True`` (with an all-fixed-point ``ratio`` such as ``{"fix4": 1}``): the
        strongest fixed-point core — fix8 rows on the DSP blocks beside rows of the ratio's
        narrowest scheme on LUT-built lanes for ``act_bits``-bit activations
        (``lut_schemes``), the baseline that also spends the LUTs on multipliers.

        ``edge_fraction``: the share of the target network's MACs in all-fix8 edge layers,
        which only fix8 rows taking 8-bit inputs can run (ResNet-18 224×224: 0.065, its
        ``conv1`` and ``fc``); the choice then maximizes the MACs/cycle on that mix
        (:func:`~rmsmp.generator.sizing.effective_macs`) instead of the peak — more fix8
        rows, fewer MACs in peak, more images/s.

        ``clock_hz``: the design's clock (default: the board's target clock,
        ``board(name).clock_hz``); a build runs its PLL there and derives the host link's
        rate and divisor and the SDRAM's timings from it.

        ``flash_boot``: leave room for the board top's flash boot unit (a board that copies a
        program from its flash at power-up: ``make bitstream PROGRAM=…``); default: the
        board's (the ULX3S has it, the iCEBreaker only when asked — it halves its core).

        ``acc_bits``: the accumulator width (default: the family's, :data:`~rmsmp.generator.cost.
        FAMILY_PARAMS` — 25 bits on ECP5, ResNet-18's widest sum, 24 on iCE40).  The compiler
        refuses a layer whose worst-case sum needs more and names the width it needs; a wider
        accumulator costs LUTs a row (32 bits instead of 25: 2,033 LUT-equivalents more on the
        ULX3S's 24×pot4 + 9×fix8 × 8 × 2 core, two of its pot rows)."""
        from .catalog import BoardError
        from .catalog import board as board_spec
        from .cost import COLUMNS, PIXELS, calibrated_lut_fix, calibrated_narrow_pot, family_params
        from .sizing import best_fit, dsp_lut_layouts, hardware_layouts, lane_layouts
        spec = board_spec(board)
        if split_fix and not ratio:
            raise ConfigError("for_board: split_fix places a given ratio's fix rows; the hardware-chosen "
                              "ratio (no ratio given) has fix8 rows only")
        try:
            for k in ratio or ():
                parse_weight_format(k)
        except FormatError as e:
            raise ConfigError(f"for_board ratio: {e}") from None
        if not isinstance(edge_fraction, (int, float)) or not 0 <= edge_fraction < 1:
            raise ConfigError(f"for_board: edge_fraction must be a number in [0, 1), got {edge_fraction!r}")
        avail = spec.core_budget(memory, flash_boot)
        _check_int("act_bits", act_bits, 2, 8)
        width = {} if acc_bits is None else {"acc_bits": acc_bits}      # (checked by the constructor)
        lut = ()
        if lut_fix:
            fmts = [parse_weight_format(k) for k, v in (ratio or {}).items() if v > 0]
            if not fmts or any(f.kind != "fix" for f in fmts) or split_fix:
                raise ConfigError(f"for_board: lut_fix builds a fixed-point core (DSP and LUT multipliers) and needs "
                                  f"an all-fixed-point ratio without split_fix, got ratio {ratio}")
            narrowest = min(fmts, key=lambda f: f.bits)
            if narrowest.bits > 4 or act_bits > 4 or not calibrated_lut_fix(spec.family):
                raise ConfigError(f"for_board: no synthesis data for LUT-built {narrowest.name} lanes at "
                                  f"{act_bits}-bit activations on {spec.family} (the cost model has LUT-built "
                                  "fix lanes of at most 4 bits for 4-bit activations; bench/calibrate_cost.py)")
            lut = (narrowest.name,)
            layouts = dsp_lut_layouts(narrowest.name)
        else:
            layouts = lane_layouts(dict(ratio), split_fix=split_fix) if ratio else hardware_layouts()
        pab = act_bits if act_bits < 8 and (lut or calibrated_narrow_pot(spec.family)) else 0

        def narrow(groups):         # LUT lanes (pot, or LUT-built fix) take the narrow activations
            return any(parse_weight_format(s).kind == "pot" or s in lut for s, _ in groups)

        clock = int(clock_hz or spec.clock_hz)
        candidates = (cls(lane_groups=groups, columns=C, clock_hz=clock, **{**family_params(spec.family, P), **width},
                          pot_act_bits=pab if narrow(groups) else 0,
                          lut_schemes=tuple(s for s, _ in groups if s in lut))
                      for P in PIXELS[spec.family] for C in COLUMNS[spec.family] for groups in layouts)
        cfg, est = best_fit(candidates, spec.family, avail, edge_fraction)
        if cfg is None:
            small_cfg, small = est
            over = ", ".join(f"{k} {small[k]:,} > {avail[k]:,}" for k in ("LUT", "DSP", "BRAM") if small[k] > avail[k])
            raise BoardError(f"no accelerator fits {spec.name} ({spec.device}): the smallest core "
                             f"({small_cfg.describe().split(',')[0]}) needs {over} (estimates from the "
                             f"synthesis-calibrated cost model; budget left beside the host link and memory)")
        return cfg

    # -- derived ---------------------------------------------------------------------------
    @property
    def rows(self) -> int:
        """``R``: MAC rows in the array."""
        return sum(g.rows for g in self.lane_groups)

    @property
    def peak_macs_per_cycle(self) -> int:
        return self.rows * self.columns * self.pixels

    @property
    def act_width(self) -> int:
        """Signed width of a lane's activation input."""
        return self.act_bits + 1

    @property
    def pot_act_width(self) -> int:
        """Signed width of a LUT lane's (power-of-two, or fixed-point in ``lut_schemes``)
        activation input."""
        return (self.pot_act_bits or self.act_bits) + 1

    @property
    def row_chains(self) -> bool:
        """Whether the requantizer sums chains of rows (a row's ``chain`` parameter: its sum
        goes into the next enabled row's instead of out) — built on a pipelined core with
        power-of-two lanes for full-width activations.  A fixed-point layer the pot lanes
        cannot run (an all-fix8 edge layer) then spreads some output channels over several
        pot rows, a power-of-two term of every weight a row (:func:`~rmsmp.generator.lower.
        pot_terms`), beside the fixed-point rows that run it whole."""
        return self.pipelined and any(g.format.kind == "pot" and not self.narrow_lanes(g.scheme)
                                      for g in self.lane_groups)

    def narrow_lanes(self, scheme: str) -> bool:
        """Whether the lanes of group ``scheme`` take ``pot_act_width``-bit activations
        (power-of-two lanes and LUT-built fixed-point lanes) rather than ``act_width``."""
        g = self.group_of(scheme)
        return g is not None and (g.format.kind == "pot" or g.scheme in self.lut_schemes) \
            and self.pot_act_width < self.act_width

    @property
    def ratio(self) -> dict[str, float]:
        return {g.scheme: g.rows / self.rows for g in self.lane_groups}

    def row_formats(self) -> list[WeightFormat]:
        """Weight format of each array row, row 0 first."""
        return [g.format for g in self.lane_groups for _ in range(g.rows)]

    def group_of(self, scheme: str) -> LaneGroup | None:
        name = parse_weight_format(scheme).name
        return next((g for g in self.lane_groups if g.scheme == name), None)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lane_groups"] = [[g.scheme, g.rows] for g in self.lane_groups]
        d["vector_ops"] = list(self.vector_ops)
        d["lut_schemes"] = list(self.lut_schemes)
        # fields added later are left out at their defaults: earlier configs keep their hashes
        for k, default in (("pixels", 1), ("pot_act_bits", 0), ("lut_schemes", []), ("pipelined", True)):
            if d[k] == default:
                del d[k]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "AcceleratorConfig":
        """The config of ``to_dict``'s output; a missing ``lane_groups`` or an unknown key is a
        :class:`ConfigError` naming it (other keys default)."""
        if not isinstance(d, dict):
            raise ConfigError(f"an accelerator config is a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config key(s) {', '.join(map(repr, unknown))}; "
                              f"known: {', '.join(sorted(known))}")
        if "lane_groups" not in d:
            raise ConfigError("the config has no 'lane_groups' (a list of [scheme, rows])")
        d = dict(d)
        try:
            d["lane_groups"] = tuple(LaneGroup(s, r) for s, r in d["lane_groups"])
        except (TypeError, ValueError) as e:
            raise ConfigError(f"lane_groups {d['lane_groups']!r}: expected a list of [scheme, rows] ({e})") from None
        for k in ("vector_ops", "lut_schemes"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)

    @classmethod
    def load(cls, path) -> "AcceleratorConfig":
        """The config of a JSON file (as ``rmsmp config -o`` writes it)."""
        try:
            with open(path) as f:
                d = json.load(f)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not a JSON config ({e})") from None
        try:
            return cls.from_dict(d)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    @property
    def config_hash(self) -> int:
        """32-bit identifier of this config and the program format its core reads (SHA-256
        of the canonical JSON of the config and :data:`ISA_REVISION`)."""
        text = json.dumps({**self.to_dict(), "isa": ISA_REVISION}, sort_keys=True, separators=(",", ":"))
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")

    def describe(self) -> str:
        groups = " + ".join(f"{g.rows}×{g.scheme}" + (" (LUT)" if g.scheme in self.lut_schemes else "")
                            for g in self.lane_groups)
        vec = "" if self.vector_ops == VECTOR_OPS else f", vector {'+'.join(self.vector_ops) or 'none'}"
        pix = f" × {self.pixels} pixels" if self.pixels > 1 else ""
        lanes = "LUT lanes" if self.lut_schemes else "pot lanes"
        pix += f", {lanes} {self.pot_act_bits}-bit activations" if self.pot_act_bits else ""
        pix += "" if self.pipelined else ", compact"
        return (f"{groups} rows × {self.columns} columns{pix} = {self.peak_macs_per_cycle} MACs/cycle, "
                f"acc {self.acc_bits} b{vec}, {self.clock_hz / 1e6:g} MHz, id {self.config_hash:08x}")
