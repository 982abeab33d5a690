"""The accelerator core: instruction fetch and sequencing over the DMA and the conv engine.

The host writes a program and its data into memory, sets ``prog_addr`` and pulses
``start``; the core fetches :class:`~rmsmp.rtl.isa.Instruction` words (``INSTR_BITS``
each, least significant bus word first), runs them one after another, and raises
``done`` at ``END``.  ``id`` is the configuration hash, so a host can refuse a program
built for another config; ``cycles`` and ``mac_beats`` count the whole program.  A ``STAMP``
writes the cycle counter to memory and, on a pipelined core, after it the cycles the DMA,
the engine, and both were busy and the MAC beats (:data:`~rmsmp.rtl.isa.STAMP_COUNTERS`):
the program's per-layer profile.

Each fetched instruction is checked before it issues: an opcode the core does not have, a
transfer naming a buffer the config lacks (or a store from one other than the activation
buffer), or a descriptor whose first buffer address lies outside its buffer stops the core
once the units are idle (compact cores, to fit the iCE40, leave all of it to the host), with
``done`` and ``error`` set and ``pc`` just past that instruction (as after ``END``) — a
corrupted image never runs on.
(The host checks every instruction in full before upload:
:func:`rmsmp.generator.validate.check_program`.)

The DMA and the engine run concurrently.  An instruction issues once its hazards are
clear, then the core fetches the next one:

* ``LOAD`` into a weight or parameter buffer waits only for the DMA, so the next chunk's
  weights stream in while the engine works on the current one (the compiler places them
  in another region of the buffers);
* ``LOAD``/``STORE`` of the activation buffer wait for the DMA, and for the engine if its
  op owns one of the transfer's banks (descriptors name their banks);
* ``CONV``/``VEC`` wait for the engine, and for the DMA unless it is moving activations in
  banks the op does not touch (what the op reads may still be arriving);
* ``STAMP``, ``SYNC`` and ``END`` wait for both to finish.

A ``LOAD``/``STORE`` with ``reps`` runs again for each further block from the same fetch
register, its addresses stepped (``ext_step``, ``buf_step``) once the previous block is done:
a tensor's channel blocks cost one instruction fetch, not one a block.

Instruction fetch shares the read channel with the DMA, so it waits for the DMA too.
Descriptors are fetched straight into the register the unit runs from — one for the engine
(``CONV``/``VEC``), one for the rest (the DMA is idle during a fetch) — so there is no
separate instruction buffer and no unit keeps a copy; a ``CONV``/``VEC`` fetch holds the
read data until the engine has finished the op its register still describes.
"""
from __future__ import annotations

from amaranth import Array, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .arith import stage
from .dma import Dma, mem_port_signature, mux_mem_ports
from .engine import ConvEngine, buffer_ports
from .isa import ACT_BANKS, INSTR_BITS, Buffer, Instruction, Opcode, VecKind, param_slots, stamp_words

__all__ = ["Core"]


class Core(wiring.Component):
    def __init__(self, cfg, *, addr_bits: int = 32):
        """``addr_bits``: width of the program counter, enough for the memory it runs from (a
        board with a small on-chip memory saves the counter's upper cells; its upper bits of ``pc`` read 0)."""
        if not 1 <= addr_bits <= 32:
            raise ValueError(f"addr_bits must be 1..32, not {addr_bits}")
        self._cfg = cfg
        self._addr_bits = addr_bits
        super().__init__({
            "mem": Out(mem_port_signature(cfg.bus_width)),
            "start": In(1), "prog_addr": In(32),
            "busy": Out(1), "done": Out(1), "error": Out(1), "id": Out(32, init=cfg.config_hash),
            "cycles": Out(32), "mac_beats": Out(32), "pc": Out(32),
        })

    @property
    def config(self):
        return self._cfg

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        bus = cfg.bus_width
        m.submodules.engine = engine = ConvEngine(cfg, held_desc=True)
        unpack = {f"wgt_w_{g.scheme}": g.format.bits for g in cfg.lane_groups
                  if cfg.packed_weights and g.format.kind == "fix" and g.format.bits > 2}
        m.submodules.dma = dma = Dma(bus_width=bus, buffer_ports=buffer_ports(cfg), act_width=8 * cfg.columns,
                                     unpack=unpack, held_desc=True, pixels=cfg.pixels,
                                     pipelined=cfg.pipelined)
        assert dma.act_read_latency == engine.act_read_latency
        for name in buffer_ports(cfg):
            wiring.connect(m, getattr(dma, name), getattr(engine, name))

        words = INSTR_BITS // bus
        pc = Signal(self._addr_bits)      # address of the next instruction
        m.d.comb += self.pc.eq(pc)
        op_bits = Opcode.as_shape().width
        op = Signal(op_bits)              # the fetched instruction's opcode
        ereg, dreg = Signal(INSTR_BITS), Signal(INSTR_BITS)   # yosys keeps the bits a unit reads
        # (pipelined: a vector op runs beside a conv in other banks, so it has a register of its
        # own; a compact core runs one op at a time from ``ereg``)
        concurrent = engine.concurrent
        vreg = Signal(INSTR_BITS, name="vreg") if concurrent else ereg
        ei, di, vi = Instruction(ereg), Instruction(dreg), Instruction(vreg)
        k = Signal(range(words + 1))
        # the core's own memory master: the fetcher reads, a STAMP writes.  The read channel
        # belongs to the fetcher while it fetches, the write channel to a STAMP while it
        # writes; else both are the DMA's
        own = mem_port_signature(bus).create(path=("own",))
        rd, rdd, wc, wd = own.rd_cmd, own.rd_data, own.wr_cmd, own.wr_data
        fetching, stamping = Signal(), Signal()
        mux_mem_ports(m, fetching, own, dma.mem, self.mem, ("rd_cmd", "rd_data"))
        mux_mem_ports(m, stamping, own, dma.mem, self.mem, ("wr_cmd", "wr_data"))

        with m.If(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        dma_banks = Signal(ACT_BANKS)     # activation banks of the running transfer (0: weights)
        eng_banks = Signal(ACT_BANKS)     # activation banks of the running op (concurrent: the conv's)
        vec_banks = Signal(ACT_BANKS)     # (concurrent) activation banks of the running vector op

        with m.If(engine.beat):
            m.d.sync += self.mac_beats.eq(self.mac_beats + 1)
        # what a STAMP writes (isa.STAMP_COUNTERS): the cycle counter, and on a pipelined core
        # the cycles the DMA, the engine and both were busy (their flags through a register,
        # off the units' paths: each count is a cycle late, which a layer's difference cancels)
        # and the MAC beats
        counters = [self.cycles]
        if cfg.pipelined:
            d_busy, e_busy = stage(m, dma.busy, True, "dma_busy_q"), stage(m, engine.busy, True, "eng_busy_q")
            counters += [Signal(32, name=n) for n in ("dma_busy_cycles", "eng_busy_cycles", "both_busy_cycles")]
            with m.If(self.busy):
                m.d.sync += [c.eq(c + f) for c, f in zip(counters[1:], (d_busy, e_busy, d_busy & e_busy))]
            counters.append(self.mac_beats)
        assert len(counters) == stamp_words(cfg.pipelined)
        n_stamp = len(counters)
        s_word = Signal(range(max(n_stamp, 2)))        # the STAMP's word being written

        # what makes an instruction one the core cannot run (registered in CHECK).  Compact
        # cores (iCE40: every cell counts) have no CHECK and take an unknown opcode for END;
        # the host's check_program is their guard
        fault = Signal()
        if cfg.pipelined:
            n_bufs = Buffer.WEIGHT0 + len(cfg.lane_groups)
            dd, cd, vd = di.arg.dma, ei.arg.conv, vi.arg.vec
            par_depth = cfg.acc_depth * param_slots(cfg.rows)      # parameter entries: a row each
            depth = Signal(range(max(cfg.act_depth, par_depth, cfg.weight_depth) + 1))
            m.d.comb += depth.eq(Mux(dd.buf == Buffer.ACT, cfg.act_depth,
                                     Mux(dd.buf == Buffer.PARAM, par_depth, cfg.weight_depth)))
            with m.Switch(op):
                with m.Case(Opcode.LOAD):
                    m.d.comb += fault.eq((dd.buf >= n_bufs) | (dd.buf_addr >= depth))
                with m.Case(Opcode.STORE):
                    m.d.comb += fault.eq((dd.buf != Buffer.ACT) | (dd.buf_addr >= cfg.act_depth))
                with m.Case(Opcode.CONV):
                    m.d.comb += fault.eq((cd.in_base >= cfg.act_depth) | (cd.out_base >= cfg.act_depth)
                                         | (cd.w_base >= cfg.weight_depth) | (cd.p_base >= cfg.acc_depth))
                with m.Case(Opcode.VEC):
                    m.d.comb += fault.eq((vd.a_base >= cfg.act_depth) | (vd.b_base >= cfg.act_depth)
                                         | (vd.out_base >= cfg.act_depth) | (vd.kind.as_value() >= len(VecKind)))
                with m.Case(Opcode.END, Opcode.STAMP, Opcode.SYNC):
                    pass
                with m.Default():
                    m.d.comb += fault.eq(1)

        # the units run from the fetch registers, which hold while they are busy
        m.d.comb += [dma.desc.eq(di.arg.dma), dma.store.eq(op == Opcode.STORE),
                     engine.desc.eq(ei.arg.conv), engine.vec_desc.eq(vi.arg.vec)]
        # whether the decoded instruction may start: the units are idle, or (activation
        # transfers and ops) their banks are apart
        idle = ~dma.busy & ~engine.busy      # both raise busy the cycle after start
        act_dma = (op == Opcode.STORE) | (di.arg.dma.buf == Buffer.ACT)
        # an activation transfer may run beside an op that owns other banks ...
        op_banks = Mux(op == Opcode.CONV, ei.arg.conv.banks, vi.arg.vec.banks)
        # ... and an op may start beside an activation transfer in other banks (the DMA
        # runs in order, so every weight load before that transfer has finished)
        dma_apart = ~dma.busy | ((dma_banks != 0) & ((dma_banks & op_banks) == 0))
        if concurrent:
            # ... and (pipelined) a conv and a vector op beside each other in other banks (the
            # band after a band's residual add, or a max-pool's), but an average pool alone: it
            # borrows the conv's requantizer
            busy_banks = Mux(engine.conv_busy, eng_banks, 0) | Mux(engine.vec_busy, vec_banks, 0)
            dma_ok = ~dma.busy & ((busy_banks & di.arg.dma.banks) == 0)
            is_avg = vi.arg.vec.kind == VecKind.AVGPOOL
            conv_ok = ~engine.conv_busy & (~engine.vec_busy | (((vec_banks & op_banks) == 0) & ~engine.vec_avg))
            vec_ok = ~engine.vec_busy & (~engine.conv_busy | (((eng_banks & op_banks) == 0) & ~is_avg))
            op_ok = Mux(op == Opcode.CONV, conv_ok, vec_ok) & dma_apart
        else:
            dma_ok = ~dma.busy & (~engine.busy | ((eng_banks & di.arg.dma.banks) == 0))
            op_ok = ~engine.busy & dma_apart
        if cfg.pipelined:
            # (pipelined: the three decisions into registers, a cycle late: the units' busy
            # flags and the bank checks sat before the DMA's and engine's start logic across
            # the chip.  Late is safe: a unit's busy rises only on a start from DECODE, three or
            # more cycles (FETCH, RECV, CHECK) before the next DECODE, so a late flag can only
            # say busy a cycle longer; the instruction's registers are complete in CHECK)
            idle, dma_ok, op_ok = (stage(m, v, True, n) for v, n in ((idle, "idle_q"), (dma_ok, "dma_ok_q"),
                                                                      (op_ok, "op_ok_q")))
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [pc.eq(self.prog_addr), self.busy.eq(1), self.done.eq(0),
                                 self.cycles.eq(0), self.mac_beats.eq(0)] + [c.eq(0) for c in counters[1:-1]]
                    if cfg.pipelined:                 # compact cores never set it: a constant 0
                        m.d.sync += self.error.eq(0)
                    m.next = "FETCH"
            with m.State("FETCH"):
                m.d.comb += fetching.eq(~dma.busy)
                with m.If(~dma.busy):
                    m.d.comb += [rd.valid.eq(1), rd.payload.addr.eq(pc), rd.payload.len.eq(words)]
                    with m.If(rd.ready):
                        m.d.sync += k.eq(0)
                        m.next = "RECV"
            with m.State("RECV"):
                # word 0 carries the opcode, which names the register the words go to
                w_op = Mux(k == 0, rdd.payload[:op_bits], op)
                to_conv, to_vec = w_op == Opcode.CONV, w_op == Opcode.VEC
                to_engine = to_conv | to_vec
                # (a unit's register holds while its op runs)
                held = ((to_conv & engine.conv_busy) | (to_vec & engine.vec_busy)) if concurrent \
                    else to_engine & engine.busy
                m.d.comb += [fetching.eq(1), rdd.ready.eq(~held)]
                with m.If(rdd.valid & rdd.ready):
                    m.d.sync += [op.eq(w_op), k.eq(k + 1)]
                    with m.If(to_vec):
                        m.d.sync += vreg.word_select(k, bus).eq(rdd.payload)
                    with m.Elif(to_conv):
                        m.d.sync += ereg.word_select(k, bus).eq(rdd.payload)
                    with m.Else():
                        m.d.sync += dreg.word_select(k, bus).eq(rdd.payload)
                    with m.If(k == words - 1):
                        m.next = "CHECK" if cfg.pipelined else "DECODE"
            with m.State("CHECK"):
                with m.If(fault):
                    m.next = "FAULT"
                with m.Else():
                    m.next = "DECODE"
            with m.State("FAULT"):               # stop on this instruction once the units are idle
                with m.If(~dma.busy & ~engine.busy):
                    m.d.sync += [pc.eq(pc + words), self.busy.eq(0), self.done.eq(1), self.error.eq(1)]
                    m.next = "IDLE"
            with m.State("DECODE"):
                with m.Switch(op):
                    with m.Case(Opcode.LOAD, Opcode.STORE):
                        with m.If(Mux(act_dma, dma_ok, ~dma.busy)):
                            m.d.comb += dma.start.eq(1)
                            m.d.sync += dma_banks.eq(Mux(act_dma, di.arg.dma.banks, 0))
                            with m.If(di.arg.dma.reps == 0):
                                m.d.sync += pc.eq(pc + words)
                                m.next = "FETCH"
                            with m.Else():
                                m.next = "REPEAT"
                    with m.Case(Opcode.CONV):
                        with m.If(op_ok):
                            m.d.comb += engine.start.eq(1)
                            m.d.sync += [pc.eq(pc + words), eng_banks.eq(op_banks)]
                            m.next = "FETCH"
                    with m.Case(Opcode.VEC):
                        with m.If(op_ok):
                            if concurrent:
                                m.d.sync += vec_banks.eq(op_banks)
                            else:
                                m.d.sync += eng_banks.eq(op_banks)
                            m.d.comb += engine.vec_start.eq(1)
                            m.d.sync += pc.eq(pc + words)
                            m.next = "FETCH"
                    with m.Case(Opcode.STAMP):
                        with m.If(idle):
                            m.d.sync += pc.eq(pc + words)
                            m.next = "STAMP_CMD"
                    with m.Case(Opcode.SYNC):
                        with m.If(idle):
                            m.d.sync += pc.eq(pc + words)
                            m.next = "FETCH"
                    with m.Default():                     # END (CHECK stopped any other opcode)
                        with m.If(idle):
                            m.d.sync += [pc.eq(pc + words), self.busy.eq(0), self.done.eq(1)]
                            m.next = "IDLE"
            with m.State("REPEAT"):          # the transfer's next block once this one is done
                dd = di.arg.dma
                with m.If(~dma.busy):            # (busy rose the cycle after the start)
                    m.d.sync += [dd.ext_addr.eq(dd.ext_addr + dd.ext_step), dd.buf_addr.eq(dd.buf_addr + dd.buf_step),
                                 dd.reps.eq(dd.reps - 1)]
                    m.next = "DECODE"
            with m.State("STAMP_CMD"):       # the STAMP's address is in the DMA's fetch register
                m.d.comb += [stamping.eq(1), wc.valid.eq(1), wc.payload.addr.eq(di.arg.dma.ext_addr),
                             wc.payload.len.eq(n_stamp)]
                with m.If(wc.ready):
                    m.d.sync += s_word.eq(0)
                    m.next = "STAMP_DATA"
            with m.State("STAMP_DATA"):
                m.d.comb += [stamping.eq(1), wd.valid.eq(1),
                             wd.payload.eq(Array(counters)[s_word] if n_stamp > 1 else self.cycles)]
                with m.If(wd.ready):
                    m.d.sync += s_word.eq(s_word + 1)
                    with m.If(s_word == n_stamp - 1):
                        m.next = "FETCH"
        return m
