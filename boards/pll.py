"""PLLs of the supported FPGA families: divider search and the Amaranth clock domain.

``ecp5_pll(fin, fout)`` and ``ice40_pll(fin, fout)`` choose the dividers the way Project
Trellis' ``ecppll`` and IceStorm's ``icepll`` do (smallest frequency error within the
device's PFD/VCO limits; tests compare both against the YoWASP tools).  ``PllDomain`` puts
the instance in a design and drives the ``sync`` domain from it, held in reset until the
PLL reports lock.  An ECP5 PLL may also make a whole multiple of that clock on its secondary
output (``ratio``): the SDRAM controller's ``mem`` domain.
"""
from __future__ import annotations

from dataclasses import dataclass

from amaranth import ClockDomain, ClockSignal, Elaboratable, Instance, Module, ResetSignal, Signal

__all__ = ["PllError", "Ecp5Pll", "Ice40Pll", "ecp5_pll", "ice40_pll", "PllDomain"]


class PllError(ValueError):
    """No divider setting reaches the requested clock."""


@dataclass(frozen=True)
class Ecp5Pll:
    """EHXPLLL dividers: fout = fin / clki_div * clkfb_div, VCO = fout * clkop_div; with
    ``clkos_div`` the secondary output CLKOS at VCO / clkos_div (0: unused)."""
    fin_hz: float
    clki_div: int
    clkfb_div: int
    clkop_div: int
    clkos_div: int = 0

    @property
    def fout2_hz(self) -> float:
        return self.fvco_hz / self.clkos_div if self.clkos_div else 0.0

    @property
    def fout_hz(self) -> float:
        return self.fin_hz / self.clki_div * self.clkfb_div

    @property
    def fvco_hz(self) -> float:
        return self.fout_hz * self.clkop_div

    @property
    def cphase(self) -> int:
        return self.clkop_div // 2 - 1


def ecp5_pll(fin_hz: float, fout_hz: float, ratio: int = 1) -> Ecp5Pll:
    """ECP5 PLL for ``fout_hz`` from ``fin_hz`` (PFD 3.125–400 MHz, VCO 400–800 MHz); with
    ``ratio`` > 1 also ``ratio`` × its output on CLKOS (the VCO a multiple of both)."""
    if not 8e6 <= fin_hz <= 400e6 or not 10e6 <= fout_hz <= 400e6:
        raise PllError(f"ECP5 PLL: input {fin_hz / 1e6:g} MHz must be in 8..400, output "
                       f"{fout_hz / 1e6:g} MHz in 10..400")
    best, best_key = None, None
    for ci in range(1, 129):
        fpfd = fin_hz / ci
        if fpfd < 3.125e6 or fpfd > 400e6:
            continue
        for fb in range(1, 81):
            fout = fpfd * fb
            for op in range(ratio, 129, ratio):
                fvco = fout * op
                if not 400e6 <= fvco <= 800e6:
                    continue
                key = (abs(fout - fout_hz), abs(fvco - 600e6))
                if best_key is None or key < best_key:
                    best, best_key = Ecp5Pll(fin_hz, ci, fb, op, op // ratio if ratio > 1 else 0), key
    if best is None:
        raise PllError(f"ECP5 PLL: no divider setting gives {fout_hz / 1e6:g} MHz"
                       + (f" and {ratio}× it" if ratio > 1 else "") + f" from {fin_hz / 1e6:g} MHz")
    return best


@dataclass(frozen=True)
class Ice40Pll:
    """SB_PLL40 (SIMPLE feedback): fout = fin * (divf + 1) / (divr + 1) / 2**divq."""
    fin_hz: float
    divr: int
    divf: int
    divq: int

    @property
    def fpfd_hz(self) -> float:
        return self.fin_hz / (self.divr + 1)

    @property
    def fvco_hz(self) -> float:
        return self.fpfd_hz * (self.divf + 1)

    @property
    def fout_hz(self) -> float:
        return self.fvco_hz / 2 ** self.divq

    @property
    def filter_range(self) -> int:
        f = self.fpfd_hz / 1e6
        for k, lim in enumerate((17, 26, 44, 66, 101), start=1):
            if f < lim:
                return k
        return 6


def ice40_pll(fin_hz: float, fout_hz: float) -> Ice40Pll:
    """iCE40 PLL for ``fout_hz`` from ``fin_hz`` (PFD 10–133 MHz, VCO 533–1066 MHz)."""
    if not 10e6 <= fin_hz <= 133e6 or not 16e6 <= fout_hz <= 275e6:
        raise PllError(f"iCE40 PLL: input {fin_hz / 1e6:g} MHz must be in 10..133, output "
                       f"{fout_hz / 1e6:g} MHz in 16..275")
    best, best_err = None, None
    for r in range(16):
        fpfd = fin_hz / (r + 1)
        if not 10e6 <= fpfd <= 133e6:
            continue
        for f in range(128):
            fvco = fpfd * (f + 1)
            if not 533e6 <= fvco <= 1066e6:
                continue
            for q in range(1, 7):
                err = abs(fvco / 2 ** q - fout_hz)
                if best_err is None or err < best_err:
                    best, best_err = Ice40Pll(fin_hz, r, f, q), err
    if best is None:
        raise PllError(f"iCE40 PLL: no divider setting gives {fout_hz / 1e6:g} MHz from {fin_hz / 1e6:g} MHz")
    return best


def _released(m: Module, domain: str, clk, busy):
    """A reset in ``clk`` (a reset-less domain of that name) released two cycles after
    ``busy`` (the PLL not locked) falls, synchronously."""
    hold = Signal(2, init=0b11, name=f"{domain}_hold")
    m.domains += (raw := ClockDomain(domain, reset_less=True))
    m.d.comb += raw.clk.eq(clk)
    with m.If(busy):
        m.d[domain] += hold.eq(0b11)
    with m.Else():
        m.d[domain] += hold.eq(hold >> 1)
    return hold[0]


class PllDomain(Elaboratable):
    """Drives the ``sync`` domain (defined by the design's top) at ``pll.fout_hz`` from the
    board clock ``clk_in`` (a signal on ECP5; the clock pin's I/O port on iCE40, whose PLL
    takes the pad directly); reset is held until the PLL locks (and while ``rst_in`` is high).
    An ECP5 PLL with a secondary output also gives that clock, ``clk2`` at ``pll.fout2_hz``,
    and a reset for it, ``rst2``, released likewise in its own clock."""

    def __init__(self, pll, clk_in, rst_in=None):
        self.pll = pll
        self.clk_in = clk_in
        self.rst_in = rst_in
        self.clk = Signal()          # the PLL output (for the clock constraint)
        self.clk2 = Signal()         # the secondary output (ECP5, ``clkos_div``)
        self.rst2 = Signal(init=1)   # its reset
        self.locked = Signal()

    def elaborate(self, platform):
        m = Module()
        clk, locked = self.clk, self.locked
        p = self.pll
        if isinstance(p, Ecp5Pll):
            m.submodules.pll = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=f"{p.fin_hz / 1e6:g}", a_FREQUENCY_PIN_CLKOP=f"{p.fout_hz / 1e6:g}",
                a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
                p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
                p_CLKI_DIV=p.clki_div, p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=p.clkop_div,
                p_CLKOP_CPHASE=p.cphase, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP", p_CLKFB_DIV=p.clkfb_div,
                **({"a_FREQUENCY_PIN_CLKOS": f"{p.fout2_hz / 1e6:g}", "p_CLKOS_ENABLE": "ENABLED",
                    "p_CLKOS_DIV": p.clkos_div, "p_CLKOS_CPHASE": p.cphase, "p_CLKOS_FPHASE": 0,
                    "o_CLKOS": self.clk2, "i_ENCLKOS": 0} if p.clkos_div else {}),
                i_RST=0, i_STDBY=0, i_CLKI=self.clk_in, o_CLKOP=clk, i_CLKFB=clk,
                i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
                i_PLLWAKESYNC=0, i_ENCLKOP=0, o_LOCK=locked)
        elif isinstance(p, Ice40Pll):
            # the UP5K's PLL sits on the clock pin's I/O site: it takes the pad itself
            m.submodules.pll = Instance(
                "SB_PLL40_PAD",
                p_FEEDBACK_PATH="SIMPLE", p_DIVR=p.divr, p_DIVF=p.divf, p_DIVQ=p.divq,
                p_FILTER_RANGE=p.filter_range,
                i_PACKAGEPIN=self.clk_in, o_PLLOUTGLOBAL=clk, i_RESETB=1, i_BYPASS=0, o_LOCK=locked)
        else:
            raise TypeError(f"not a PLL setting: {p!r}")
        busy = ~locked if self.rst_in is None else (~locked | self.rst_in)
        m.d.comb += [ClockSignal("sync").eq(clk), ResetSignal("sync").eq(_released(m, "pll_raw", clk, busy))]
        if isinstance(p, Ecp5Pll) and p.clkos_div:
            m.d.comb += self.rst2.eq(_released(m, "pll_raw2", self.clk2, busy))
        return m
