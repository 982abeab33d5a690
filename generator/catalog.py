"""The supported boards: device, clocks, resource budget and memory backends of each.

``board(name)`` looks one up; an unknown name raises :class:`BoardError` listing the
supported ones.  The budgets are the devices' datasheet totals in the cells yosys and
nextpnr report (LUT4, flip-flops, DSP blocks, block RAMs).  The catalog is data the sizing
(:meth:`AcceleratorConfig.for_board`), the simulator (a board's SDRAM) and the board
builds (:mod:`rmsmp.boards`, which turns ``platform`` into an amaranth-boards platform)
all read, so it sits here, below all three.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from rmsmp.host.errors import RmsmpError
from rmsmp.rtl.bridge import MAX_BURST
from rmsmp.rtl.flash_boot import boot_timing
from rmsmp.rtl.sdram import SdramGeometry, SdramTiming

from .cost import memory_blocks

__all__ = ["BoardError", "Budget", "BoardSpec", "BOARDS", "board"]


class BoardError(RmsmpError):
    """Unknown board, or a design/board combination that cannot be built."""


@dataclass(frozen=True)
class Budget:
    """Device resources, named as in the utilization report."""
    luts: int
    ffs: int
    dsps: int
    brams: int
    #: cell names of the report: nextpnr's bel type per resource
    cells: dict = field(default_factory=dict, compare=False)

    def as_dict(self) -> dict:
        return {"LUT": self.luts, "FF": self.ffs, "DSP": self.dsps, "BRAM": self.brams}


@dataclass(frozen=True)
class BoardSpec:
    name: str
    title: str
    family: str              # "ecp5" | "ice40"
    device: str
    budget: Budget
    clk_in_hz: float         # board oscillator
    clock_hz: int            # target clock of the design (PLL output)
    max_baud: int            # the board's USB-UART's fastest rate (host link: see link_baud)
    mem_words: int           # on-chip memory of the board top (32-bit words)
    platform: str            # amaranth-boards platform class, "module:Class"
    programmer: str          # tool named by the platform's env variable
    programmer_env: str
    #: share of the device's LUTs a design may take and still place and route at the
    #: target clock, and the LUTs of the board top around the core (link, memory control)
    lut_share: float = 0.6
    top_luts: int = 4_000
    #: the board's SDR SDRAM (x16), if any: then the default memory backend
    sdram: SdramGeometry | None = None
    #: the SDRAM controller's own clock, at most this (0: the core's clock): the whole multiple
    #: of the core clock at or under it (:meth:`sdram_ratio`).  A 16-bit SDR bus moves a 32-bit
    #: word in two of its cycles; at two core cycles or more a word it keeps up with the DMA
    sdram_max_hz: int = 0
    #: 32-bit words of the device's single-port RAM (iCE40 UltraPlus SPRAM), if any: then
    #: the default backend where there is no SDRAM (no block RAM, no baked-in image)
    spram_words: int = 0
    #: the SPI flash that configures the device: its size, and the byte offset past the
    #: bitstream where a program to boot with is stored (0: the board does not boot programs)
    flash_bytes: int = 0
    flash_offset: int = 0
    #: whether the board top boots from the flash unless told (``flash_boot=``), and the LUTs
    #: its boot unit takes (measured: the iCEBreaker's 2×fix8 × 2 core with and without it,
    #: 4,287 and 4,133 SB_LUT4, 5,071 and 4,900 cells)
    flash_boot_default: bool = True
    flash_boot_luts: int = 160
    #: nextpnr placement seeds a build tries in turn when none is given (``--seeds`` /
    #: ``SEEDS=``), until one routes and meets the clock; empty: nextpnr's own default, once
    seeds: tuple = ()

    def boots_from_flash(self, flash_boot: bool | None = None) -> bool:
        """``flash_boot`` checked against the board (None: its default)."""
        if flash_boot and not self.flash_offset:
            raise BoardError(f"{self.name} cannot boot a program from its flash (no program offset in it)")
        return bool(self.flash_offset) and (self.flash_boot_default if flash_boot is None else flash_boot)

    def flash_boot(self, clock_hz: float | None = None) -> dict | None:
        """The board top's flash boot parameters at ``clock_hz`` (default: the target):
        {"offset", "half", "wake_cycles"} (:class:`rmsmp.rtl.flash_boot.FlashBoot`)."""
        if not self.flash_offset:
            return None
        half, wake = boot_timing(clock_hz or self.clock_hz)
        return {"offset": self.flash_offset, "half": half, "wake_cycles": wake}

    @property
    def memories(self) -> tuple:
        """Memory backends of this board, the default first."""
        return tuple(n for n, has in (("sdram", self.sdram), ("spram", self.spram_words), ("bram", True)) if has)

    def memory(self, name: str | None = None) -> str:
        """``name`` checked against this board's backends (``None``: the default)."""
        if name is None:
            return self.memories[0]
        if name not in self.memories:
            raise BoardError(f"{self.name} has no {name!r} memory backend; it has: {', '.join(self.memories)}")
        return name

    def memory_words(self, memory: str | None = None) -> int:
        """32-bit words of the memory the core and the host link see."""
        return {"sdram": lambda: self.sdram.words, "spram": lambda: self.spram_words,
                "bram": lambda: self.mem_words}[self.memory(memory)]()

    def sdram_ratio(self, clock_hz: float | None = None) -> int:
        """SDRAM controller cycles per core cycle at core clock ``clock_hz`` (default: the
        target): 1 (one clock) without ``sdram_max_hz``, else the largest whole number that
        keeps the controller at or under it."""
        clock = clock_hz or self.clock_hz
        return max(1, int(self.sdram_max_hz // clock)) if self.sdram_max_hz else 1

    def sdram_clock_hz(self, clock_hz: float | None = None) -> float:
        """The SDRAM controller's clock for a core at ``clock_hz`` (default: the target)."""
        clock = clock_hz or self.clock_hz
        return clock * self.sdram_ratio(clock)

    def sdram_own_clock(self, memory: str | None = None) -> bool:
        """Whether a design on ``memory`` (default: the board's) runs its SDRAM controller on a
        clock of its own (then the PLL makes it, even where the core runs on the oscillator)."""
        return self.memory(memory) == "sdram" and self.sdram_ratio() > 1

    def sdram_timing(self) -> SdramTiming:
        """The SDRAM's timings in cycles of its controller's clock (datasheet nanoseconds)."""
        return SdramTiming.at(self.sdram_clock_hz())

    def core_budget(self, memory: str | None = None, flash_boot: bool | None = None) -> dict:
        """{"LUT", "DSP", "BRAM"} left for the core beside the board top: the bridge's burst
        buffer, and with on-chip block-RAM memory the memory itself, take block RAMs; the
        flash boot unit (``flash_boot``, default: the board's) takes LUTs."""
        mem = memory_blocks(32, MAX_BURST, self.family)
        if self.memory(memory) == "bram":
            mem += memory_blocks(32, self.mem_words, self.family)
        top = self.top_luts + (self.flash_boot_luts if self.boots_from_flash(flash_boot) else 0)
        return {"LUT": int(self.budget.luts * self.lut_share) - top, "DSP": self.budget.dsps,
                "BRAM": self.budget.brams - mem}

    def link_baud(self, clock_hz: float | None = None) -> int:
        """The host link's rate for a design clocked at ``clock_hz`` (default: the target):
        the fastest rate the USB-UART makes exactly (an FTDI chip divides 24 MHz by an integer
        ``m``, eighths of its 3 MHz bit clock; below ``m = 16`` only 3 and 2 Mbaud) up to
        ``max_baud``, whose clock divisor ``round(clock / baud)`` the design's UART runs
        within ``MAX_BAUD_ERROR`` of it."""
        clock = clock_hz or self.clock_hz
        for m in (8, 12, *range(16, 24_000_000 // 9_600 + 1)):
            baud = 24_000_000 // m
            if 24_000_000 % m or baud > self.max_baud:
                continue
            div = round(clock / baud)
            if div >= MIN_DIVISOR and abs(clock / div - baud) <= MAX_BAUD_ERROR * baud:
                return baud
        raise BoardError(f"no host-link rate of {self.name}'s USB-UART fits a {clock / 1e6:g} MHz clock")

    def divisor(self, clock_hz: float | None = None) -> int:
        """UART clock divisor of the host link (:meth:`link_baud`) at ``clock_hz``."""
        clock = clock_hz or self.clock_hz
        return round(clock / self.link_baud(clock))


#: the largest error of the host link's rate the design's UART may make (its clock divided by
#: an integer) against the USB-UART's exact rate: a frame's stop bit, sampled mid-bit, then
#: drifts by 10 × 2 % = 20 % of a bit
MAX_BAUD_ERROR = 0.02
#: fewest clock cycles per bit the host link is built with (the receiver samples mid-bit, two
#: cycles behind its synchronizer: 8 keeps that within a quarter of a bit)
MIN_DIVISOR = 8

ECP5_CELLS = {"LUT": "TRELLIS_COMB", "FF": "TRELLIS_FF", "DSP": "MULT18X18D", "BRAM": "DP16KD"}
ICE40_CELLS = {"LUT": "ICESTORM_LC", "FF": "ICESTORM_LC", "DSP": "ICESTORM_DSP", "BRAM": "ICESTORM_RAM"}

BOARDS: dict[str, BoardSpec] = {b.name: b for b in (
    BoardSpec("ulx3s-85f", "Radiona ULX3S (LFE5U-85F, 32 MB SDRAM, FTDI USB-UART)", "ecp5", "LFE5U-85F-6BG381C",
              Budget(luts=83_640, ffs=83_640, dsps=156, brams=208, cells=ECP5_CELLS),
              # 40 MHz: the 528-MAC for_board core's build met it (Fmax 43.6 MHz, 2026-12-06; at a
              # 50 MHz target it routed at 46.9); 12.5 MHz until its reset and weight unpacking routed.
              # The whole design with the SDRAM crossing (b1d9600): Fmax 42.9 at 40; at 45 it did not route.
              # 2026-12-07 (the queue's load copies, the SDRAM's registered room, the max-pool fold): at
              # 50 MHz the placer estimated 48.8 (SDRAM clock 111.2 against 100); not routed (stopped).
              # 50 MHz since 2026-12-08: the 560-MAC core of 3021545's RTL met it on seed 3, Fmax
              # 56.3 MHz, SDRAM clock 110.7 against 100 (48,475 TRELLIS_COMB, 2,373 s)
              clk_in_hz=25e6, clock_hz=50_000_000, max_baud=3_000_000, mem_words=16_384,   # FT231X
              platform="amaranth_boards.ulx3s:ULX3S_85F_Platform",
              programmer="openFPGALoader", programmer_env="OPENFPGALOADER",
              sdram=SdramGeometry(row_bits=13, col_bits=9, bank_bits=2),      # AS4C16M16SA, 32 MB
              # its controller on a clock of its own up to 100 MHz (the chip's CAS latency 2 limit):
              # 100 MHz beside a 50 MHz core
              sdram_max_hz=100_000_000,
              # 16 MB SPI flash (IS25LP128); the 85F's bitstream is under 3 MiB.  The board top's
              # 4,000-LUT allowance (an estimate with margin) is split: 160 for the flash boot
              # unit (as measured on the iCE40), the rest for the link and SDRAM control
              flash_bytes=16 << 20, flash_offset=0x300000, top_luts=3_840,
              # LUTs by what has routed.  2026-12-06 (RTL of b1d9600, 32-bit accumulators):
              # 24×pot4 + 9×fix8 × 8 × 2 (placed 52,185 TRELLIS_COMB, 62 %, 200 of 208 block
              # RAMs) routed and met 40 MHz; a 25th pot row (53,125 placed, 203 block RAMs) did
              # not.  2026-12-07, with the 25-bit accumulators (cost data of that day): the same
              # 528-MAC array (est. 42,442 + the top) routed on the first placement and met 40 MHz
              # at 44.8 (49,292 placed, 59 %; 190 block RAMs); 25×pot4 (est. 43,383; 50,373
              # placed) did not route (router2 overuse 151 at iteration 41, then rising), nor
              # did 26×pot4 (est. 44,325; 51,383 placed, 61 %) on three placements (lowest
              # overuse 217, 1,763, 4,078).  0.56 (a core budget of 42,998) keeps the first and
              # leaves out the others, with room either side for the fit's drift.  2026-12-07,
              # RTL of e741749 (the queue held beside its blocks, 1,400 fewer cells): 26×pot4
              # (49,916 placed, 59.7 %, 197 block RAMs) routed on seed 1 but at 37.2 MHz, and
              # diverged on seed 2 (overuse 3,103 at iteration 19, 3,790 at 22); 0.58 would
              # admit it (3.68× the fix4 core).  RTL of 3021545 (max-pool order keys, the vector
              # unit's output selects in registers; 1,392 fewer cells): 26×pot4 (48,524 placed,
              # 58.0 %, 197 block RAMs) routed and met 40 MHz on seed 3, Fmax 50.1 MHz (SDRAM clock
              # 104.8 against 80, 2,161 s), so 0.58: for_board's core is 560 MACs
              lut_share=0.58,
              # placements at 40 MHz.  e741749's 528-MAC core: seed 1 (nextpnr's default) diverged
              # (overuse 1,005 at iteration 25, then rising); seed 2 routed and met, Fmax 47.6 MHz,
              # SDRAM clock 101.6 against 80 (47,916 TRELLIS_COMB, 1,821 s).  3021545's 560-MAC
              # core: seed 3 above; seed 2 was at overuse 3,962 at iteration 13 when stopped
              seeds=(3, 2)),
    BoardSpec("icebreaker", "1BitSquared iCEBreaker (iCE40UP5K)", "ice40", "iCE40UP5K-SG48",
              Budget(luts=5_280, ffs=5_280, dsps=8, brams=30, cells=ICE40_CELLS),
              # the core at 20 MHz from the 12 MHz oscillator through the PLL (the default core's
              # build: Fmax 20.7 MHz, met; 16.0 MHz before the vector add's sum was registered)
              clk_in_hz=12e6, clock_hz=20_000_000, max_baud=3_000_000, mem_words=2_048,    # FT2232H
              platform="amaranth_boards.icebreaker:ICEBreakerPlatform",
              programmer="iceprog", programmer_env="ICEPROG", spram_words=32_768,    # 4 × SB_SPRAM256KA
              # measured (yosys + nextpnr) on the 4-MAC core's build: 4,416 LUTs in all, 3,478
              # of them the core's (bench/calibrate_cost.py), so the board top takes ~940; an
              # iCE40 logic cell holds one LUT and one FF, and the build packed the 4,416 LUTs
              # into 5,136 cells (0.86 LUT per cell, 97.3 % of the device), Fmax 16.0 MHz
              # against 12.  A build of that core at 98.6 % of the cells (5,205) also routed
              # and met timing (16.2 MHz), so LUTs may take up to 0.86 × 0.986 = 0.848 of them
              lut_share=0.848, top_luts=940,
              # 16 MB SPI flash (W25Q128JV); the UP5K's bitstream is 104 KB.  The boot unit is
              # built when asked (flash_boot=True, or a build with a program to boot): the
              # default core fills the device (5,223 of 5,280 cells), so a core that leaves room
              # for the unit has 4 MACs a cycle instead of 6
              flash_bytes=16 << 20, flash_offset=0x100000, flash_boot_default=False),
)}


def board(name: str) -> BoardSpec:
    try:
        return BOARDS[name.lower()]
    except KeyError:
        raise BoardError(f"unknown board {name!r}; supported boards: {', '.join(sorted(BOARDS))}") from None
