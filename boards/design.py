"""A board design: the board top (:class:`~rmsmp.boards.top.BoardTop`: UART host link, core,
memory backend) under the board's amaranth-boards platform, clocked through a PLL to the
target clock (or straight from the oscillator when that is the target)."""
from __future__ import annotations

import importlib
from dataclasses import replace

from amaranth import ClockDomain, ClockSignal, Elaboratable, Instance, Module, ResetSignal, Signal
from amaranth.lib import io

from rmsmp.generator.catalog import BoardError, BoardSpec
from rmsmp.generator.config import AcceleratorConfig

from .pll import PllDomain, ecp5_pll, ice40_pll
from .top import BoardTop

__all__ = ["BoardDesign", "platform"]


def platform(spec: BoardSpec):
    """A fresh amaranth-boards platform instance for ``spec``."""
    module, cls = spec.platform.split(":")
    return getattr(importlib.import_module(module), cls)()


class BoardDesign(Elaboratable):
    """``cfg``'s board top on ``spec``'s pins: clock through the PLL, UART, two LEDs, and the
    memory backend ``memory`` ("sdram": the board's SDRAM chip; "bram": on-chip memory of
    ``mem_words``, holding ``init``).  Default: on-chip when an image is baked in, else the
    board's default backend."""

    def __init__(self, spec: BoardSpec, cfg: AcceleratorConfig, *, init=(), mem_words: int | None = None,
                 memory: str | None = None, flash_boot: bool | None = None):
        # the design runs at the config's clock (the PLL, the link divisor, the SDRAM timings)
        self.spec, self.cfg = replace(spec, clock_hz=cfg.clock_hz), cfg
        spec = self.spec
        try:
            self.memory, self.mem_words = self.check(spec, init=init, mem_words=mem_words, memory=memory)
        except BoardError:
            self._MustUse__silence = True          # refused: never to be elaborated
            raise
        # with the flash boot unit where asked (default: the board's)
        self.flash = flash = spec.flash_boot() if spec.boots_from_flash(flash_boot) else None
        if self.memory == "sdram":
            self.top = BoardTop(cfg, divisor=spec.divisor(), sdram=(spec.sdram, spec.sdram_timing()), flash=flash,
                                sdram_clock=spec.sdram_own_clock("sdram"))
        else:
            self.top = BoardTop(cfg, mem_words=self.mem_words, divisor=spec.divisor(), init=init,
                                single_port=self.memory == "spram", flash=flash)

    @staticmethod
    def check(spec: BoardSpec, *, init=(), mem_words: int | None = None, memory: str | None = None):
        """(memory backend, memory words) of a design, or :class:`BoardError` if the backend
        or the baked-in image does not suit the board."""
        memory = spec.memory(memory or ("bram" if len(init) else None))
        if memory in ("sdram", "spram"):
            if len(init):
                raise BoardError(f"{spec.name}'s {memory.upper()} cannot hold a baked-in image; build with the "
                                 f"block-RAM memory (MEMORY=bram) or upload the program at run time "
                                 f"(open_device … load)")
            return memory, spec.memory_words(memory)
        mem_words = mem_words or spec.mem_words
        if len(init) > mem_words:
            raise BoardError(f"the baked-in image has {len(init):,} words; {spec.name}'s on-chip memory "
                             f"holds {mem_words:,}")
        return memory, mem_words

    def pll(self):
        return self.pll_for(self.spec, self.memory)

    @staticmethod
    def pll_for(spec: BoardSpec, memory: str | None = None):
        """The PLL from ``spec``'s oscillator to its target clock (:class:`PllError` if none);
        with the SDRAM backend (``memory``, default: the board's) on a clock of its own
        (:meth:`~rmsmp.generator.catalog.BoardSpec.sdram_ratio`), also the controller's clock."""
        if spec.sdram_own_clock(memory):
            return ecp5_pll(spec.clk_in_hz, spec.clock_hz, spec.sdram_ratio())
        return (ecp5_pll if spec.family == "ecp5" else ice40_pll)(spec.clk_in_hz, spec.clock_hz)

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = ClockDomain("sync")
        pin = platform.request(platform.default_clk, dir="-")
        if self.spec.clock_hz == self.spec.clk_in_hz and not self.top._own_clock:
            # the board's oscillator is the core clock: no PLL; reset for 15 cycles after configuration
            m.submodules.clk_in = buf = io.Buffer("i", pin)
            m.domains.por = ClockDomain("por", reset_less=True)
            por = Signal(4)
            with m.If(~por.all()):
                m.d.por += por.eq(por + 1)
            m.d.comb += [ClockSignal("por").eq(buf.i), ClockSignal("sync").eq(buf.i),
                         ResetSignal("sync").eq(~por.all())]
            return self._board_io(m, platform)
        pll = self.pll()
        if self.spec.family == "ice40":
            clk_in = pin.io
        else:
            m.submodules.clk_in = buf = io.Buffer("i", pin)
            clk_in = buf.i
        # nextpnr derives the core clock's constraint from the PLL's dividers
        m.submodules.clocking = clocking = PllDomain(pll, clk_in)
        if self.top._own_clock:                      # the SDRAM controller's clock: the PLL's second output
            m.d.comb += [self.top.mem_clk.eq(clocking.clk2), self.top.mem_rst.eq(clocking.rst2)]
            # (the same clock for the SDRAM's clock pin here: the top's ``mem`` domain is its own)
            m.domains.sdram_io = ClockDomain("sdram_io", reset_less=True)
            m.d.comb += ClockSignal("sdram_io").eq(clocking.clk2)
        return self._board_io(m, platform)

    def _board_io(self, m, platform):
        m.submodules.top = top = self.top
        uart = platform.request("uart", 0, dir="-")
        m.submodules.rx = rx = io.Buffer("i", uart.rx)
        m.submodules.tx = tx = io.Buffer("o", uart.tx)
        m.submodules.led0 = led0 = io.Buffer("o", platform.request("led", 0, dir="-"))
        m.submodules.led1 = led1 = io.Buffer("o", platform.request("led", 1, dir="-"))
        m.d.comb += [top.rx.eq(rx.i), tx.o.eq(top.tx), led0.o.eq(top.led_busy), led1.o.eq(top.led_done)]
        if self.memory == "sdram":
            self._sdram_pins(m, platform.request("sdram", 0, dir="-"), top.sdram,
                             "sdram_io" if top._own_clock else "sync")
        if self.flash:
            self._flash_pins(m, platform, top.flash)
        return m

    def _flash_pins(self, m, platform, pins):
        """The configuration flash on the board top's ``flash`` pins, in single-bit SPI (the
        write-protect and hold pins held inactive).  On ECP5 its clock pin is the
        configuration clock, reached after configuration through the ``USRMCLK`` primitive."""
        if self.spec.family == "ecp5":
            res = platform.request("spi_flash", 0, dir="-")
            m.submodules.flash_clk = Instance("USRMCLK", i_USRMCLKI=pins.sck, i_USRMCLKTS=0)
        else:
            res = platform.request("spi_flash_1x", 0, dir="-")
            m.submodules.flash_sck = sck = io.Buffer("o", res.clk)
            m.d.comb += sck.o.eq(pins.sck)
        bufs = {"cs": ("o", pins.cs), "copi": ("o", pins.copi), "wp": ("o", 0), "hold": ("o", 0)}
        for name, (d, value) in bufs.items():             # (cs, wp, hold: active-low pins, inverted by the buffers)
            m.submodules[f"flash_{name}"] = buf = io.Buffer(d, getattr(res, name))
            m.d.comb += buf.o.eq(value)
        m.submodules.flash_cipo = cipo = io.Buffer("i", res.cipo)
        m.d.comb += pins.cipo.eq(cipo.i)

    @staticmethod
    def _sdram_pins(m, res, pins, domain="sync"):
        """The SDRAM chip on the board top's ``sdram`` pins.  Its clock is the design clock
        inverted (a DDR output: low in the first half of a cycle, high in the second), so
        commands and write data registered at a rising edge are taken by the chip half a cycle
        later; read data goes through the board top's input register.  ``domain``: one on the
        controller's clock (``sdram_io`` when it has its own clock)."""
        m.submodules.sdram_clk = clk = io.DDRBuffer("o", res.clk, o_domain=domain)
        m.d.comb += [clk.o[0].eq(0), clk.o[1].eq(1)]
        # the platform's cs/we/ras/cas are active-low pins (PinsN): the buffers invert
        outs = {"clk_en": pins.cke, "cs": ~pins.cs_n, "we": ~pins.we_n, "ras": ~pins.ras_n, "cas": ~pins.cas_n,
                "ba": pins.ba, "a": pins.a, "dqm": pins.dqm}
        for name, value in outs.items():
            buf = io.Buffer("o", getattr(res, name))
            m.submodules[f"sdram_{name}"] = buf
            m.d.comb += buf.o.eq(value[:len(buf.o)])
        m.submodules.sdram_dq = dq = io.Buffer("io", res.dq)
        m.d.comb += [dq.o.eq(pins.dq_o), dq.oe.eq(pins.dq_oe), pins.dq_i.eq(dq.i)]
