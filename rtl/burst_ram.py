"""On-chip RAM serving :func:`rmsmp.rtl.dma.mem_port_signature`: the board memory backend
for networks that fit block RAM, and the memory of the Amaranth-simulator core tests.

One word per cycle in each direction; contents from ``init`` (a baked-in program).  The
Verilator flow uses the Verilog twin ``sim/hdl/rmsmp_burst_mem.v``, which loads and dumps
images in bulk.
"""
from __future__ import annotations

from amaranth import Module, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import Out

from .dma import LEN_BITS, mem_port_signature

__all__ = ["BurstRam"]


class BurstRam(wiring.Component):
    def __init__(self, *, depth: int, bus_width: int = 32, init=()):
        self._bus = bus_width
        self.mem = Memory(shape=unsigned(bus_width), depth=depth, init=list(init))
        super().__init__({"port": Out(mem_port_signature(bus_width).flip())})

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = self.mem
        rdp = mem.read_port(transparent_for=())
        wrp = mem.write_port()
        p = self.port
        raddr, rleft = Signal(32), Signal(LEN_BITS)
        waddr, wleft = Signal(32), Signal(LEN_BITS)
        rvalid = Signal()
        # reads: the read port answers one cycle after its address; hold while not taken
        m.d.comb += [p.rd_cmd.ready.eq(rleft == 0), p.rd_data.payload.eq(rdp.data), p.rd_data.valid.eq(rvalid)]
        advance = (rleft != 0) & (~rvalid | p.rd_data.ready)
        m.d.comb += [rdp.addr.eq(raddr), rdp.en.eq(advance)]
        with m.If(p.rd_cmd.valid & p.rd_cmd.ready):
            m.d.sync += [raddr.eq(p.rd_cmd.payload.addr), rleft.eq(p.rd_cmd.payload.len)]
        with m.If(advance):
            m.d.sync += [raddr.eq(raddr + 1), rleft.eq(rleft - 1), rvalid.eq(1)]
        with m.Elif(p.rd_data.ready):
            m.d.sync += rvalid.eq(0)
        # writes
        m.d.comb += [p.wr_cmd.ready.eq(wleft == 0), p.wr_data.ready.eq(wleft != 0),
                     wrp.addr.eq(waddr), wrp.data.eq(p.wr_data.payload), wrp.en.eq(p.wr_data.valid & (wleft != 0))]
        with m.If(p.wr_cmd.valid & p.wr_cmd.ready):
            m.d.sync += [waddr.eq(p.wr_cmd.payload.addr), wleft.eq(p.wr_cmd.payload.len)]
        with m.If(p.wr_data.valid & (wleft != 0)):
            m.d.sync += [waddr.eq(waddr + 1), wleft.eq(wleft - 1)]
        return m
