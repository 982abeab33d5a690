"""The simulation top: the core plus the Verilog burst memory (``sim/hdl/rmsmp_burst_mem.v``)."""
from __future__ import annotations

from pathlib import Path

from amaranth import ClockSignal, Instance, Module, ResetSignal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from rmsmp.rtl.core import Core

__all__ = ["SimTop", "MEM_MODEL", "MEM_WORDS"]

MEM_MODEL = Path(__file__).parent / "hdl" / "rmsmp_burst_mem.v"
MEM_WORDS = 1 << 22          # 16 MiB at 32 bits: ResNet-18 weights and activations fit


class SimTop(wiring.Component):
    def __init__(self, cfg):
        if cfg.bus_width != 32:
            raise ValueError("the simulation memory model is 32 bits wide")
        self._cfg = cfg
        super().__init__({"start": In(1), "prog_addr": In(32), "dump": In(1), "busy": Out(1), "done": Out(1),
                          "id": Out(32), "cycles": Out(32), "mac_beats": Out(32)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = Core(self._cfg)
        p = core.mem
        m.submodules.mem = Instance(
            "rmsmp_burst_mem", p_DEPTH=MEM_WORDS, p_BUS=32,
            i_clk=ClockSignal(), i_rst=ResetSignal(),
            i_rd_cmd_valid=p.rd_cmd.valid, o_rd_cmd_ready=p.rd_cmd.ready,
            i_rd_cmd_addr=p.rd_cmd.payload.addr, i_rd_cmd_len=p.rd_cmd.payload.len,
            o_rd_data_valid=p.rd_data.valid, i_rd_data_ready=p.rd_data.ready, o_rd_data=p.rd_data.payload,
            i_wr_cmd_valid=p.wr_cmd.valid, o_wr_cmd_ready=p.wr_cmd.ready,
            i_wr_cmd_addr=p.wr_cmd.payload.addr, i_wr_cmd_len=p.wr_cmd.payload.len,
            i_wr_data_valid=p.wr_data.valid, o_wr_data_ready=p.wr_data.ready, i_wr_data=p.wr_data.payload,
            i_dump=self.dump)
        m.d.comb += [core.start.eq(self.start), core.prog_addr.eq(self.prog_addr), self.busy.eq(core.busy),
                     self.done.eq(core.done), self.id.eq(core.id), self.cycles.eq(core.cycles),
                     self.mac_beats.eq(core.mac_beats)]
        return m
