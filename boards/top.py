"""The board top: host link (UART bridge) + core + memory backend, independent of a board.

``BoardTop`` has only pins (``rx``, ``tx``, ``led_busy``, ``led_done``, and with the SDRAM
backend the chip's pins ``sdram``) besides its clock and reset, so the same design runs in
Verilator (cocotb drives the UART pins and models the SDRAM chip) and under an
amaranth-boards platform (:mod:`rmsmp.boards.build` adds the PLL, I/O buffers and pin
constraints).

Memory backends: on-chip RAM of ``mem_words`` (optionally initialised: a baked-in image;
``single_port``: the iCE40 UltraPlus SPRAM, see :class:`~rmsmp.rtl.burst_ram.BurstRam`),
or an SDR SDRAM (:class:`rmsmp.rtl.sdram.SdramController`).  The SDRAM's clock is the
inverse of the design clock (the board drives its pin from a DDR output), so the chip
takes commands and write data in the middle of the cycle they are on the pins, and its
read data is captured by an input register here: the controller's read latency is then
the CAS latency.  With ``sdram_clock`` the controller, its pins and that input register run
on a clock of their own, the ``mem`` domain (its clock and reset are the ports ``mem_clk``
and ``mem_rst``: the board design drives them from its PLL, a testbench from its own
clock), and the memory port crosses to it through :class:`~rmsmp.rtl.sdram.MemPortCrossing`.

Boot from flash (``flash``: the program's offset and the SPI reader's timing): after reset
:class:`~rmsmp.rtl.flash_boot.FlashBoot` feeds the program stored in the board's SPI flash
(``flash`` pins) to the bridge as if it came over the UART, and the bridge writes it to
memory; the UART is cut off from the bridge until the copy ends (the host's requests meanwhile
go unanswered: it retries), and STATUS tells how it went.

Memory sharing: the host link reaches the memory only while the core is idle (the bridge
answers ``BUSY`` otherwise), so the port is switched by the core's ``busy`` flag.
"""
from __future__ import annotations

from amaranth import ClockDomain, ClockSignal, Const, DomainRenamer, Module, ResetSignal, Signal
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from rmsmp.rtl.bridge import MAX_BURST, HostBridge
from rmsmp.rtl.burst_ram import BurstRam
from rmsmp.rtl.core import Core
from rmsmp.rtl.csr import CsrBank
from rmsmp.rtl.dma import mem_port_signature, mux_mem_ports
from rmsmp.rtl.flash_boot import FlashBoot, spi_signature
from rmsmp.rtl.sdram import (
    PIN_NAMES,
    MemPortCrossing,
    SdramController,
    SdramGeometry,
    SdramTiming,
    sdram_pins_signature,
)
from rmsmp.rtl.uart import UartRx, UartTx

__all__ = ["BoardTop", "CROSSING"]

#: the submodule that carries the memory port to the SDRAM controller's own clock (yosys
#: scripts name its FIFOs: ``boards.toolchain.NO_COLLISION_BYPASS``)
CROSSING = "crossing"

#: words of memory read data in flight between the memory controller and the units
READ_FIFO_DEPTH = 3
#: words of write data waiting between the units and the memory controller
WRITE_FIFO_DEPTH = 3


class BoardTop(wiring.Component):
    """``cfg``'s core and a UART host link at ``clk / divisor`` baud, with ``mem_words`` of
    on-chip memory (``init``: a baked-in image) or, given ``sdram=(geometry, timing)``, an
    SDR SDRAM (``mem_words`` is then the chip's size; ``sdram_clock``: its controller on the
    ``mem`` clock domain, ``sdram``'s timings in its cycles); ``flash`` ({"offset", "half",
    "wake_cycles"} of :class:`~rmsmp.rtl.flash_boot.FlashBoot`): boot from the SPI flash."""

    def __init__(self, cfg, *, mem_words: int | None = None, divisor: int, init=(), max_burst: int = MAX_BURST,
                 link_timeout: int = 1 << 20, sdram: tuple[SdramGeometry, SdramTiming] | None = None,
                 single_port: bool = False, flash: dict | None = None, sdram_clock: bool = False):
        if cfg.bus_width != 32:
            raise ValueError("the board memory backends are 32 bits wide")
        if sdram is not None and init:
            raise ValueError("an SDRAM cannot hold a baked-in image: upload it through the host link")
        if sdram is None and not mem_words:
            raise ValueError("give the on-chip memory size (mem_words) or an SDRAM")
        self._cfg = cfg
        if sdram_clock and sdram is None:
            raise ValueError("sdram_clock: the SDRAM controller's own clock needs an SDRAM")
        self._sdram = sdram
        self._own_clock = sdram_clock
        self.mem_words = sdram[0].words if sdram else mem_words
        self._div = divisor
        self._init = list(init)
        self._burst = max_burst
        self._timeout = link_timeout
        self._single = single_port
        self._flash = flash
        members = {"rx": In(1, init=1), "tx": Out(1, init=1), "led_busy": Out(1), "led_done": Out(1)}
        if sdram:
            members["sdram"] = Out(sdram_pins_signature(sdram[0]))
        if flash:
            members["flash"] = Out(spi_signature())
        if sdram_clock:
            members |= {"mem_clk": In(1), "mem_rst": In(1)}
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        addr_bits = max(1, (self.mem_words - 1).bit_length())    # addresses past the memory mean nothing
        m.submodules.core = core = Core(self._cfg, addr_bits=addr_bits)
        m.submodules.csr = csr = CsrBank(addr_bits=addr_bits)
        m.submodules.bridge = br = HostBridge(max_burst=self._burst, timeout=self._timeout)
        m.submodules.urx = urx = UartRx(self._div)
        m.submodules.utx = utx = UartTx(self._div)
        mem_dom = "mem" if self._own_clock else "sync"
        if self._own_clock:
            m.domains.mem = ClockDomain("mem")
            m.d.comb += [ClockSignal("mem").eq(self.mem_clk), ResetSignal("mem").eq(self.mem_rst)]
        if self._sdram:
            ctl = SdramController(*self._sdram)
            m.submodules.mem = mem = DomainRenamer({"sync": "mem"})(ctl) if self._own_clock else ctl
            for name in PIN_NAMES:
                if name == "dq_i":          # read data through an input register
                    m.d[mem_dom] += mem.dq_i.eq(self.sdram.dq_i)
                else:
                    m.d.comb += getattr(self.sdram, name).eq(getattr(mem, name))
        else:
            m.submodules.mem = mem = BurstRam(depth=self.mem_words, bus_width=32, init=self._init,
                                              single_port=self._single)

        wiring.connect(m, br.csr, csr.bus)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx), br.core_busy.eq(core.busy)]
        if self._flash:
            # the bridge takes the flash's frames while booting (its answers go nowhere), then the UART's
            m.submodules.boot = boot = FlashBoot(config_hash=self._cfg.config_hash, **self._flash)
            wiring.connect(m, boot.spi, wiring.flipped(self.flash))
            booting = boot.booting
            m.d.comb += [boot.listening.eq(br.listening), boot.at_sync.eq(br.at_sync),
                         boot.answered.eq(br.answered), boot.answer_ok.eq(br.answer_ok),
                         csr.boot_ok.eq(boot.ok), csr.boot_bad.eq(boot.bad)]
            with m.If(booting):
                m.d.comb += [br.rx.valid.eq(boot.valid), br.rx.payload.eq(boot.byte), br.tx.ready.eq(1)]
            with m.Else():
                m.d.comb += [br.rx.valid.eq(urx.data.valid), br.rx.payload.eq(urx.data.payload),
                             br.rx_error.eq(urx.error), utx.data.valid.eq(br.tx.valid),
                             utx.data.payload.eq(br.tx.payload), br.tx.ready.eq(utx.data.ready)]
        else:
            booting = Const(0)
            wiring.connect(m, urx.data, br.rx)
            wiring.connect(m, br.tx, utx.data)
            m.d.comb += br.rx_error.eq(urx.error)
        m.d.comb += [core.start.eq(csr.start), core.prog_addr.eq(csr.prog_addr), csr.busy.eq(core.busy),
                     csr.done.eq(core.done), csr.id.eq(core.id), csr.cycles.eq(core.cycles),
                     csr.mac_beats.eq(core.mac_beats), csr.pc.eq(core.pc), csr.error.eq(core.error)]
        # the memory's read and write data through small FIFOs (registered on both sides): the
        # memory controller sits by its pins, the units that give and take the words across the
        # chip, so neither side's ready reaches the other's logic in the same cycle (a pipelined
        # core's board: the compact one is wired straight).  Commands pass straight: the
        # controller serves one burst at a time, taking a write burst's words from the FIFO, so
        # a later command cannot overtake words still waiting in it.  (The on-chip memory reads
        # and writes at once, so its write data goes straight: a load right after a store
        # could read a word still in the FIFO.)
        port = mem.port
        if self._own_clock:
            # (the crossing's FIFOs register both sides, as the FIFOs below do on one clock)
            m.submodules[CROSSING] = cross = MemPortCrossing(32, mem_domain="mem")
            wiring.connect(m, cross.down, mem.port)
            port = cross.up
        elif self._cfg.pipelined:
            port = mem_port_signature(32).create(path=("mem_port",))
            m.submodules.read_ahead = rq = SyncFIFOBuffered(width=32, depth=READ_FIFO_DEPTH)
            straight = ("rd_cmd", "wr_cmd") if self._sdram else ("rd_cmd", "wr_cmd", "wr_data")
            for name in straight:
                src, dst = getattr(port, name), getattr(mem.port, name)
                m.d.comb += [dst.valid.eq(src.valid), dst.payload.eq(src.payload), src.ready.eq(dst.ready)]
            m.d.comb += [rq.w_en.eq(mem.port.rd_data.valid), rq.w_data.eq(mem.port.rd_data.payload),
                         mem.port.rd_data.ready.eq(rq.w_rdy),
                         port.rd_data.valid.eq(rq.r_rdy), port.rd_data.payload.eq(rq.r_data),
                         rq.r_en.eq(port.rd_data.ready)]
            if self._sdram:
                m.submodules.write_behind = wq = SyncFIFOBuffered(width=32, depth=WRITE_FIFO_DEPTH)
                m.d.comb += [wq.w_en.eq(port.wr_data.valid), wq.w_data.eq(port.wr_data.payload),
                             port.wr_data.ready.eq(wq.w_rdy),
                             mem.port.wr_data.valid.eq(wq.r_rdy), mem.port.wr_data.payload.eq(wq.r_data),
                             wq.r_en.eq(mem.port.wr_data.ready)]
        mux_mem_ports(m, core.busy, core.mem, br.mem, port)
        done = Signal()
        with m.If(core.done):
            m.d.sync += done.eq(1)
        with m.If(csr.start):
            m.d.sync += done.eq(0)
        m.d.comb += [self.led_busy.eq(core.busy | booting), self.led_done.eq(done)]
        return m
