"""The simulation top: the core, its CSR bank, and the Verilog burst memory
(``sim/hdl/rmsmp_burst_mem.v``: one word per cycle each way) or, with ``sdram``, the SDRAM
controller of the board top and a Verilog SDRAM chip (``sim/hdl/rmsmp_sdram_chip.v``),
wired as on the ULX3S (chip clocked on the falling edge, read data through an input
register); with ``sdram_clock`` the controller and the chip on their own clock, the ``mem``
domain (ports ``mem_clk``/``mem_rst``: the bench clocks it at a whole multiple of ``clk``),
behind :class:`~rmsmp.rtl.sdram.MemPortCrossing` as on the ULX3S board.  Ports: the CSR
bus, ``done`` (an interrupt line), ``load`` (read words into the memory from its load file)
and ``dump`` (write words ``dump_lo..dump_hi`` out)."""
from __future__ import annotations

from pathlib import Path

from amaranth import Cat, ClockDomain, ClockSignal, DomainRenamer, Instance, Module, ResetSignal, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from rmsmp.rtl.core import Core
from rmsmp.rtl.csr import CsrBank, csr_signature
from rmsmp.rtl.sdram import MemPortCrossing, SdramController

__all__ = ["SimTop", "FlashBoardTop", "MEM_MODEL", "SDRAM_MODEL", "FLASH_MODEL", "MEM_WORDS"]

MEM_MODEL = Path(__file__).parent / "hdl" / "rmsmp_burst_mem.v"
SDRAM_MODEL = Path(__file__).parent / "hdl" / "rmsmp_sdram_chip.v"
FLASH_MODEL = Path(__file__).parent / "hdl" / "rmsmp_spi_flash.v"
MEM_WORDS = 1 << 23          # 32 MiB at 32 bits, the ULX3S SDRAM's size: ResNet-18 fits with a batch of 8


class SimTop(wiring.Component):
    """``cfg``'s core on the burst memory, or on ``sdram=(geometry, timing)`` (``sdram_clock``:
    on the ``mem`` clock, the timings in its cycles)."""

    def __init__(self, cfg, *, sdram=None, sdram_clock: bool = False):
        if cfg.bus_width != 32:
            raise ValueError("the simulation memory model is 32 bits wide")
        self._cfg = cfg
        self._sdram = sdram
        self._own_clock = bool(sdram) and sdram_clock
        self.mem_words = sdram[0].words if sdram else MEM_WORDS
        self.mem_model = SDRAM_MODEL if sdram else MEM_MODEL
        super().__init__({"csr": In(csr_signature()), "load": In(1), "dump": In(1), "dump_lo": In(32),
                          "dump_hi": In(32), "done": Out(1),
                          **({"mem_clk": In(1), "mem_rst": In(1)} if self._own_clock else {})})

    def _sdram_chip(self, m, port):
        g, t = self._sdram
        dom = "mem" if self._own_clock else "sync"
        load, dump = self.load, self.dump
        if self._own_clock:
            m.domains.mem = ClockDomain("mem")
            m.d.comb += [ClockSignal("mem").eq(self.mem_clk), ResetSignal("mem").eq(self.mem_rst)]
            m.submodules.crossing = cross = MemPortCrossing(32, mem_domain="mem")
            wiring.connect(m, port, cross.up)
            port = cross.down
            # the bench's load/dump pulses last a core cycle: the chip sees each for one of its own
            seen = Signal(2)
            m.d.mem += seen.eq(Cat(self.load, self.dump))
            load, dump = self.load & ~seen[0], self.dump & ~seen[1]
        ctl = SdramController(g, t)
        m.submodules.ctl = ctl = DomainRenamer({"sync": "mem"})(ctl) if self._own_clock else ctl
        wiring.connect(m, port, ctl.port)
        dq_i = Signal(16)
        m.d[dom] += ctl.dq_i.eq(dq_i)            # the board top's input register
        m.submodules.chip = Instance(
            "rmsmp_sdram_chip", p_ROW_BITS=g.row_bits, p_COL_BITS=g.col_bits, p_BANK_BITS=g.bank_bits,
            p_ABITS=len(ctl.a), p_CL=t.cl, i_clk=ClockSignal(dom), i_cs_n=ctl.cs_n, i_ras_n=ctl.ras_n,
            i_cas_n=ctl.cas_n, i_we_n=ctl.we_n, i_ba=ctl.ba, i_a=ctl.a, i_dq_o=ctl.dq_o, i_dq_oe=ctl.dq_oe,
            o_dq_i=dq_i, i_load=load, i_dump=dump, i_dump_lo=self.dump_lo, i_dump_hi=self.dump_hi)

    def _burst_mem(self, m, p):
        m.submodules.mem = Instance(
            "rmsmp_burst_mem", p_DEPTH=MEM_WORDS, p_BUS=32,
            i_clk=ClockSignal(), i_rst=ResetSignal(),
            i_rd_cmd_valid=p.rd_cmd.valid, o_rd_cmd_ready=p.rd_cmd.ready,
            i_rd_cmd_addr=p.rd_cmd.payload.addr, i_rd_cmd_len=p.rd_cmd.payload.len,
            o_rd_data_valid=p.rd_data.valid, i_rd_data_ready=p.rd_data.ready, o_rd_data=p.rd_data.payload,
            i_wr_cmd_valid=p.wr_cmd.valid, o_wr_cmd_ready=p.wr_cmd.ready,
            i_wr_cmd_addr=p.wr_cmd.payload.addr, i_wr_cmd_len=p.wr_cmd.payload.len,
            i_wr_data_valid=p.wr_data.valid, o_wr_data_ready=p.wr_data.ready, i_wr_data=p.wr_data.payload,
            i_load=self.load, i_dump=self.dump, i_dump_lo=self.dump_lo, i_dump_hi=self.dump_hi)

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = Core(self._cfg)
        (self._sdram_chip if self._sdram else self._burst_mem)(m, core.mem)
        m.submodules.csr = csr = CsrBank()
        wiring.connect(m, wiring.flipped(self.csr), csr.bus)
        m.d.comb += [core.start.eq(csr.start), core.prog_addr.eq(csr.prog_addr), csr.busy.eq(core.busy),
                     csr.done.eq(core.done), csr.id.eq(core.id), csr.cycles.eq(core.cycles),
                     csr.mac_beats.eq(core.mac_beats), csr.pc.eq(core.pc), csr.error.eq(core.error),
                     self.done.eq(core.done)]
        return m


class FlashBoardTop(wiring.Component):
    """A board top (:class:`rmsmp.boards.top.BoardTop`, built with ``flash``) with the Verilog
    SPI flash (``sim/hdl/rmsmp_spi_flash.v``, its contents from the plusarg ``+flash=<file>``)
    on its flash pins, the chip's timing checked at a ``clk_ns`` clock.  Ports: the board top's
    UART and LEDs, and the flash model's ``flash_errors`` and ``flash_reads``."""

    def __init__(self, top, *, clk_ns: int = 10, flash_bytes: int = 1 << 20):
        self._top, self._clk_ns, self._bytes = top, clk_ns, flash_bytes
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "led_busy": Out(1), "led_done": Out(1),
                          "flash_errors": Out(4), "flash_reads": Out(32)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.top = top = self._top
        m.d.comb += [top.rx.eq(self.rx), self.tx.eq(top.tx), self.led_busy.eq(top.led_busy),
                     self.led_done.eq(top.led_done)]
        m.submodules.flash = Instance(
            "rmsmp_spi_flash", p_BYTES=self._bytes, p_CLK_NS=self._clk_ns,
            i_clk=ClockSignal(), i_sck=top.flash.sck, i_cs_n=~top.flash.cs, i_copi=top.flash.copi,
            o_cipo=top.flash.cipo, o_errors=self.flash_errors, o_reads=self.flash_reads)
        return m
