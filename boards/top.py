"""The board top: host link (UART bridge) + core + memory backend, independent of a board.

``BoardTop`` has only pins (``rx``, ``tx``, ``led_busy``, ``led_done``) besides its clock
and reset, so the same design runs in Verilator (cocotb drives the UART pins) and under an
amaranth-boards platform (:mod:`rmsmp.boards.build` adds the PLL and pin constraints).

Memory sharing: the host link reaches the memory only while the core is idle (the bridge
answers ``BUSY`` otherwise), so the port is switched by the core's ``busy`` flag.
"""
from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from rmsmp.rtl.bridge import HostBridge
from rmsmp.rtl.burst_ram import BurstRam
from rmsmp.rtl.core import Core
from rmsmp.rtl.csr import CsrBank
from rmsmp.rtl.uart import UartRx, UartTx

__all__ = ["BoardTop"]


def _mux_port(m, sel, a, b, out):
    """Memory master ``out`` driven by master ``a`` when ``sel`` else ``b``."""
    for name in ("rd_cmd", "wr_cmd", "wr_data"):
        sa, sb, so = getattr(a, name), getattr(b, name), getattr(out, name)
        m.d.comb += [so.valid.eq(sel & sa.valid | ~sel & sb.valid),
                     so.payload.eq(sb.payload), sa.ready.eq(sel & so.ready), sb.ready.eq(~sel & so.ready)]
        with m.If(sel):
            m.d.comb += so.payload.eq(sa.payload)
    rd = out.rd_data
    m.d.comb += [a.rd_data.payload.eq(rd.payload), b.rd_data.payload.eq(rd.payload),
                 a.rd_data.valid.eq(sel & rd.valid), b.rd_data.valid.eq(~sel & rd.valid),
                 rd.ready.eq(sel & a.rd_data.ready | ~sel & b.rd_data.ready)]


class BoardTop(wiring.Component):
    """``cfg``'s core with ``mem_words`` of on-chip memory (``init``: a baked-in image) and a
    UART host link at ``clk / divisor`` baud."""

    def __init__(self, cfg, *, mem_words: int, divisor: int, init=(), max_burst: int = 256,
                 link_timeout: int = 1 << 20):
        if cfg.bus_width != 32:
            raise ValueError("the board memory backends are 32 bits wide")
        self._cfg = cfg
        self._words = mem_words
        self._div = divisor
        self._init = list(init)
        self._burst = max_burst
        self._timeout = link_timeout
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "led_busy": Out(1), "led_done": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = Core(self._cfg)
        m.submodules.csr = csr = CsrBank()
        m.submodules.bridge = br = HostBridge(max_burst=self._burst, timeout=self._timeout)
        m.submodules.urx = urx = UartRx(self._div)
        m.submodules.utx = utx = UartTx(self._div)
        m.submodules.mem = mem = BurstRam(depth=self._words, bus_width=32, init=self._init)

        wiring.connect(m, urx.data, br.rx)
        wiring.connect(m, br.tx, utx.data)
        wiring.connect(m, br.csr, csr.bus)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx), br.rx_error.eq(urx.error), br.core_busy.eq(core.busy)]
        m.d.comb += [core.start.eq(csr.start), core.prog_addr.eq(csr.prog_addr), csr.busy.eq(core.busy),
                     csr.done.eq(core.done), csr.id.eq(core.id), csr.cycles.eq(core.cycles),
                     csr.mac_beats.eq(core.mac_beats), csr.pc.eq(core.pc)]
        _mux_port(m, core.busy, core.mem, br.mem, mem.port)
        done = Signal()
        with m.If(core.done):
            m.d.sync += done.eq(1)
        with m.If(csr.start):
            m.d.sync += done.eq(0)
        m.d.comb += [self.led_busy.eq(core.busy), self.led_done.eq(done)]
        return m
