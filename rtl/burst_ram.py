"""On-chip RAM serving :func:`rmsmp.rtl.dma.mem_port_signature`: the board memory backend
for networks that fit block RAM, and the memory of the Amaranth-simulator core tests.

One word per cycle in each direction; contents from ``init`` (a baked-in program).  The
Verilator flow uses the Verilog twin ``sim/hdl/rmsmp_burst_mem.v``, which loads and dumps
images in bulk.

``single_port=True`` gives the memory one address for reads and writes (a write beat
takes the cycle, a read waits): the shape of the iCE40 UltraPlus SPRAM (``SB_SPRAM256KA``,
16K × 16, one address, read data held while the block is not selected).  Under an iCE40
UltraPlus platform the storage is then those blocks, instantiated (two per 16K words,
four at most: 128 KB, no block RAM, no initial contents); elsewhere (simulation) an
Amaranth memory driven the same way.  yosys does not infer SPRAM from a memory with a
read enable, so the blocks are named directly.
"""
from __future__ import annotations

from types import SimpleNamespace

from amaranth import ClockSignal, Instance, Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import Out

from .dma import LEN_BITS, mem_port_signature

__all__ = ["BurstRam", "SPRAM_WORDS"]

#: 32-bit words of one pair of iCE40 UltraPlus SPRAM blocks (16K × 16 each)
SPRAM_WORDS = 16384


def _is_ice40up(platform) -> bool:
    return str(getattr(platform, "device", "")).startswith("iCE40UP")


class BurstRam(wiring.Component):
    def __init__(self, *, depth: int, bus_width: int = 32, init=(), single_port: bool = False):
        if single_port and len(init):
            raise ValueError("a single-port (SPRAM) memory has no initial contents")
        if single_port and (bus_width != 32 or depth not in (SPRAM_WORDS, 2 * SPRAM_WORDS)):
            raise ValueError(f"a single-port (SPRAM) memory is 32 bits × {SPRAM_WORDS} or {2 * SPRAM_WORDS} words")
        self._bus = bus_width
        self._single = single_port
        self.mem = Memory(shape=unsigned(bus_width), depth=depth, init=list(init))
        super().__init__({"port": Out(mem_port_signature(bus_width).flip())})

    def elaborate(self, platform):
        m = Module()
        if self._single and _is_ice40up(platform):
            self.mem._MustUse__silence = True       # the SPRAM blocks stand in for it
            rdp, wrp = self._spram(m)
        else:
            m.submodules.mem = mem = self.mem
            rdp = mem.read_port(transparent_for=())
            wrp = mem.write_port()
        p = self.port
        raddr, rleft = Signal(32), Signal(LEN_BITS)
        waddr, wleft = Signal(32), Signal(LEN_BITS)
        rvalid = Signal()
        writing = p.wr_data.valid & (wleft != 0)
        # reads: the read port answers one cycle after its address; hold while not taken
        m.d.comb += [p.rd_cmd.ready.eq(rleft == 0), p.rd_data.payload.eq(rdp.data), p.rd_data.valid.eq(rvalid)]
        advance = (rleft != 0) & (~rvalid | p.rd_data.ready)
        if self._single:                      # one address: a write beat has the port
            advance &= ~writing
            addr = Signal(range(self.mem.depth))
            m.d.comb += [addr.eq(Mux(writing, waddr, raddr)), rdp.addr.eq(addr), wrp.addr.eq(addr)]
        else:
            m.d.comb += [rdp.addr.eq(raddr), wrp.addr.eq(waddr)]
        m.d.comb += rdp.en.eq(advance)
        with m.If(p.rd_cmd.valid & p.rd_cmd.ready):
            m.d.sync += [raddr.eq(p.rd_cmd.payload.addr), rleft.eq(p.rd_cmd.payload.len)]
        with m.If(advance):
            m.d.sync += [raddr.eq(raddr + 1), rleft.eq(rleft - 1), rvalid.eq(1)]
        with m.Elif(p.rd_data.ready):
            m.d.sync += rvalid.eq(0)
        # writes
        m.d.comb += [p.wr_cmd.ready.eq(wleft == 0), p.wr_data.ready.eq(wleft != 0),
                     wrp.data.eq(p.wr_data.payload), wrp.en.eq(writing)]
        with m.If(p.wr_cmd.valid & p.wr_cmd.ready):
            m.d.sync += [waddr.eq(p.wr_cmd.payload.addr), wleft.eq(p.wr_cmd.payload.len)]
        with m.If(writing):
            m.d.sync += [waddr.eq(waddr + 1), wleft.eq(wleft - 1)]
        return m

    def _spram(self, m):
        """SB_SPRAM256KA blocks behind look-alikes of a read and a write port (one address)."""
        depth = self.mem.depth
        rdp = SimpleNamespace(addr=Signal(range(depth)), en=Signal(), data=Signal(32))
        wrp = SimpleNamespace(addr=Signal(range(depth)), en=Signal(), data=Signal(32))
        banks = depth // SPRAM_WORDS
        sel = Signal(range(banks))                  # the bank the last read came from
        bank = rdp.addr[14:] if banks > 1 else 0
        if banks > 1:
            with m.If(rdp.en):
                m.d.sync += sel.eq(bank)
        outs = []
        for b in range(banks):
            out = Signal(32, name=f"spram_q{b}")
            outs.append(out)
            cs = (rdp.en | wrp.en) & (bank == b)    # not selected: the block holds its output
            for h in range(2):
                m.submodules[f"spram{b}_{h}"] = Instance(
                    "SB_SPRAM256KA", i_ADDRESS=rdp.addr[:14], i_DATAIN=wrp.data[16 * h:16 * h + 16],
                    i_MASKWREN=0b1111, i_WREN=wrp.en, i_CHIPSELECT=cs, i_CLOCK=ClockSignal(),
                    i_STANDBY=0, i_SLEEP=0, i_POWEROFF=1, o_DATAOUT=out[16 * h:16 * h + 16])
        m.d.comb += rdp.data.eq(outs[0] if banks == 1 else Mux(sel, outs[1], outs[0]))
        return rdp, wrp
