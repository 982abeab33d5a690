"""The convolution engine: buffers, im2col address generation, MAC array, requantization.

One :class:`~rmsmp.rtl.isa.ConvDesc` runs a whole conv/linear layer out of the on-chip
buffers.  Per output pixel and output group of ``R`` channels, the sequencer walks
``(cb, ky, kx)`` and reads one activation word (``C`` channels) and one weight word per
lane group each cycle — the im2col is done by the addressing, so an input tensor is
stored once, never expanded ``k²`` times; taps in the zero padding feed zeros.  Finished
dot products queue (``R`` accumulators each) for the requantizer, which writes one
output byte per cycle into the activation buffer.  The sequencer stalls only when the
queue is full.

Host ports (``act_w``/``act_r``/``wgt_w_<scheme>``/``par_w``) load and read the buffers
(the DMA engine drives them in the full core).  The activation buffer has ``ACT_BANKS``
banks; a running op owns the banks its descriptor names (``banks``) and the host ports
reach the others, so the next band streams in while the engine works.  Weight and
parameter writes go through at any time, so the next chunk's weights can stream into
another region while a layer runs.  The compiler keeps the regions apart; the core
checks the bank masks before it issues.
"""
from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .arith import (
    SerialMultiplier,
    delay,
    lane_offsets,
    nested_address,
    nested_carries,
    one_hot_select,
    small_mul,
    stage,
    window_inside,
    window_origin,
)
from .isa import (
    ACT_BANKS,
    ADDR_BITS,
    CH_BITS,
    DIM_BITS,
    Buffer,
    ConvDesc,
    VecDesc,
    VecKind,
    param_entry_bits,
    param_layout,
    param_slots,
)
from .mac import REPLICA, MacArray
from .ppu import Requantizer
from .vector import VectorUnit

__all__ = ["ConvEngine", "buffer_ports"]


def _wr_sig(addr_bits, width, en_bits=1):
    return wiring.Signature({"addr": Out(addr_bits), "data": Out(width), "en": Out(en_bits)})


def buffer_ports(cfg) -> dict:
    """The engine's buffer access ports: name -> (DMA buffer code, signature as a writer sees it).

    The activation buffer has a bank per pixel lane: ``act_w`` writes one entry into any of
    them, each at its own address (``addr[p]``, byte enables ``en[p]``); ``act_r`` reads an
    entry of lane ``lane``; ``par_w`` one row's parameters (or a group's mask of enabled rows,
    :func:`~rmsmp.rtl.isa.param_entries`)."""
    R, C, P = cfg.rows, cfg.columns, cfg.pixels
    ports = {
        "act_w": (Buffer.ACT, wiring.Signature({"addr": Out(data.ArrayLayout(ADDR_BITS, P)), "data": Out(8 * C),
                                                "en": Out(data.ArrayLayout(C, P))})),
        "act_r": (Buffer.ACT, wiring.Signature({"addr": Out(ADDR_BITS), "lane": Out(range(max(P, 2))),
                                                "data": In(8 * C)})),
        "par_w": (Buffer.PARAM, _wr_sig(ADDR_BITS, param_entry_bits(cfg.acc_bits, cfg.mult_bits, cfg.shift_bits,
                                                                      R))),
    }
    for k, g in enumerate(cfg.lane_groups):
        ports[f"wgt_w_{g.scheme}"] = (Buffer.WEIGHT0.value + k, _wr_sig(ADDR_BITS, g.rows * C * g.format.bits))
    return ports


class ConvEngine(wiring.Component):
    """Runs one :class:`ConvDesc` per ``start`` pulse; ``done`` pulses when the layer is written.

    ``held_desc``: the driver holds ``desc``/``vec_desc`` while ``busy`` (the core fetches
    them into a register of its own), so the engine and vector unit keep no copies.
    ``beat`` is high in each cycle a MAC beat issues (``mac_beats`` counts them per op)."""

    #: dot products waiting for the requantizer.  Eight fits a 16-deep LUT RAM (ECP5) and,
    #: unlike four, is worth a block RAM to yosys on iCE40 (no flip-flops for the entries)
    QUEUE_DEPTH = 8
    #: with several pixel lanes an entry is ``pixels`` times wider and the lanes' requantizers
    #: drain it together; two entries let the array run one dot product ahead
    WIDE_QUEUE_DEPTH = 2
    #: rows of a pixel lane per block of a pipelined core's queue (a read address and a load
    #: enable each)
    QUEUE_BLOCK_ROWS = 8
    #: cycles from a buffer read's address to its data in the registers the array and the
    #: vector unit take it from, in a pipelined core (the block RAM's cycle, then flip-flops
    #: beside it, so no logic follows a block RAM output in the cycle it appears: ECP5's is
    #: 5.8 ns clock-to-out); a compact core takes the data from the block RAM (1)
    READ_LATENCY = 2

    def __init__(self, cfg, *, held_desc: bool = False):
        self._held = held_desc
        #: cycles from ``act_r.addr`` to its ``act_r.data`` (pipelined: through two registers)
        self.act_read_latency = 1 + 2 * int(cfg.pipelined)
        if cfg.act_bits != 8:
            raise ValueError(f"ConvEngine stores 8-bit activations; config has act_bits={cfg.act_bits}")
        if cfg.columns & (cfg.columns - 1):
            raise ValueError(f"ConvEngine needs a power-of-two column count, got {cfg.columns}")
        if cfg.act_depth & (cfg.act_depth - 1) or cfg.act_depth < 2 * ACT_BANKS:
            raise ValueError(f"ConvEngine needs a power-of-two activation depth, got {cfg.act_depth}")
        self._cfg = cfg
        #: a vector op runs beside a conv in other banks (pipelined cores; the core issues them so)
        self.concurrent = cfg.pipelined
        self._groups = [(g.format, g.rows) for g in cfg.lane_groups]
        self._plo = param_layout(cfg.acc_bits, cfg.mult_bits, cfg.shift_bits)
        members = {"start": In(1), "desc": In(ConvDesc), "vec_start": In(1), "vec_desc": In(VecDesc),
                   "busy": Out(1), "done": Out(1), "cycles": Out(32), "mac_beats": Out(32), "beat": Out(1),
                   "conv_busy": Out(1), "vec_busy": Out(1), "vec_avg": Out(1)}
        for name, (_, sig) in buffer_ports(cfg).items():
            members[name] = In(sig)
        super().__init__(members)

    @property
    def config(self):
        return self._cfg

    def elaborate(self, platform):
        m = Module()
        cfg, R, C, P = self._cfg, self._cfg.rows, self._cfg.columns, self._cfg.pixels
        AB = (cfg.act_depth - 1).bit_length()           # activation addresses, mod the buffer
        WB = (cfg.weight_depth - 1).bit_length()
        d = self.desc if self._held else Signal(ConvDesc)    # the running layer
        cbusy, cdone = Signal(), Signal()            # the conv datapath's own busy/done
        # one requantizer per pixel lane; lane 0's also serves the vector unit's average pool.
        # The output bounds are per op (conv layer or average pool), held while it runs
        rqs = []
        for p in range(P):
            rqs.append(Requantizer(acc_bits=cfg.acc_bits, mult_bits=cfg.mult_bits, shift_bits=cfg.shift_bits,
                                   out_bits=cfg.out_bits, held_bounds=True, pipelined=cfg.pipelined))
            m.submodules["rq" if p == 0 else f"rq{p}"] = rqs[-1]
        rq = rqs[0]
        S = int(cfg.pipelined)                       # the optional pipeline stages
        read_latency = self.READ_LATENCY if S else 1
        m.submodules.vec = vec = VectorUnit(columns=C, requantizer=rq.signature, addr_bits=AB,
                                             ops=cfg.vector_ops, held_desc=self._held, pixels=P,
                                             read_latency=read_latency + S, pipelined=cfg.pipelined)
        # (pipelined: the vector unit's read address through a register on its way to the banks
        # — its walk's counters, muxes and adders were the critical path — so it reads a cycle later)
        vec_rd_addr = stage(m, vec.rd_addr, S, "vec_rd_addr")
        # a pipelined core runs a vector op beside a conv in other banks (``concurrent``: the
        # core starts each unit when it is idle and their banks are apart; a compact core, one
        # op at a time).  The average pool borrows lane 0's requantizer, so the core runs it
        # alone (``vec_avg``: the running vector op is one)
        concurrent = self.concurrent
        c_go = self.start & ~(cbusy if concurrent else self.busy)
        v_go = self.vec_start & ~(vec.busy if concurrent else self.busy)
        vec_avg_r = Signal()
        with m.If(v_go):
            m.d.sync += vec_avg_r.eq(self.vec_desc.kind == VecKind.AVGPOOL)
        vec_avg = vec.busy & vec_avg_r
        m.d.comb += [vec.start.eq(v_go), vec.desc.eq(self.vec_desc),
                     self.busy.eq(cbusy | vec.busy), self.done.eq(cdone | vec.done),
                     self.conv_busy.eq(cbusy), self.vec_busy.eq(vec.busy), self.vec_avg.eq(vec_avg)]

        # -- buffers ------------------------------------------------------------------------
        # the engine's side of the activation buffer (every pixel lane at one address); the
        # banks are wired at the end
        rd_layout = data.StructLayout({"addr": ADDR_BITS, "data": data.ArrayLayout(8 * C, P)})
        wr_layout = data.StructLayout({"addr": ADDR_BITS, "data": data.ArrayLayout(8 * C, P),
                                       "en": data.ArrayLayout(C, P)})
        act_rd, act_wr = Signal(rd_layout), Signal(wr_layout)
        # (concurrent: the vector unit's side of its own, to the banks its op owns)
        vact_rd, vact_wr = (Signal(rd_layout, name="vact_rd"), Signal(wr_layout, name="vact_wr")) if concurrent \
            else (act_rd, act_wr)
        # the read data, registered: a block RAM's output goes straight into flip-flops
        act_q = stage(m, act_rd.data, S, "act_q")
        vact_q = stage(m, vact_rd.data, S, "vact_q") if concurrent else act_q
        # the host ports' writes (the DMA's, from the memory far across the chip) through a
        # register: they land a cycle later, long before an op can read them (an op starts
        # with two or more cycles of setup after the transfer has finished)
        host_w = {}
        for name in ("act_w", "par_w", *(f"wgt_w_{g.scheme}" for g in cfg.lane_groups)):
            port = getattr(self, name)
            fields = {k: mb.shape for k, mb in port.signature.members.items()}
            if not S:
                host_w[name] = port
                continue
            reg = data.StructLayout(fields)(Cat(stage(m, getattr(port, k), True, f"{name}_q_{k}",
                                                      reset_less=k == "data") for k in fields))
            host_w[name] = reg
        wmems = {}
        for f, n in self._groups:
            mem = Memory(shape=unsigned(n * C * f.bits), depth=cfg.weight_depth, init=[])
            m.submodules[f"wgt_{f.name}"] = mem
            wr = mem.write_port()
            hw = host_w[f"wgt_w_{f.name}"]
            m.d.comb += [wr.addr.eq(hw.addr), wr.data.eq(hw.data), wr.en.eq(hw.en)]
            wmems[f.name] = mem.read_port()
        # the parameters, a row an entry (output group g's row r at g·slots + r: the
        # requantizer reads the row it emits, so the buffer is one row wide, not R), and
        # beside them each group's mask of enabled rows (the group's last slot, also written
        # into a memory of its own that the walk reads at once)
        slots = param_slots(R)
        sb = slots.bit_length() - 1
        hp = host_w["par_w"]
        m.submodules.par = par = Memory(shape=unsigned(len(hp.data)), depth=cfg.acc_depth * slots, init=[])
        par_wr = par.write_port()
        par_rd = par.read_port()        # the parameters of the row being emitted
        m.d.comb += [par_wr.addr.eq(hp.addr), par_wr.data.eq(hp.data), par_wr.en.eq(hp.en)]
        m.submodules.par_en = par_en = Memory(shape=unsigned(R), depth=cfg.acc_depth, init=[])
        en_wr = par_en.write_port()
        en_rd = par_en.read_port()      # the mask of the next dot product to pop
        m.d.comb += [en_wr.addr.eq(hp.addr[sb:]), en_wr.data.eq(hp.data[:R]),
                     en_wr.en.eq(hp.en & (hp.addr[:sb] == slots - 1))]

        m.submodules.array = array = MacArray.for_config(cfg)
        # the queue of finished dot products (R accumulators of every pixel lane), in issue
        # order: the k-th one is output group k // (out_h·out_w), pixel k % (out_h·out_w), so no
        # indices travel with it.  The popped entry is held while its rows are requantized (by
        # the read port, or pipelined by registers beside the queue's blocks, below)
        Q = self.QUEUE_DEPTH if P == 1 else self.WIDE_QUEUE_DEPTH
        wptr, rptr, queued = Signal(range(Q)), Signal(range(Q)), Signal(range(Q + 1))
        if not S:
            m.submodules.queue = queue = Memory(shape=data.ArrayLayout(data.ArrayLayout(signed(cfg.acc_bits), R),
                                                                       P), depth=Q, init=[])
            q_wr, q_rd = queue.write_port(), queue.read_port()

        # -- control ------------------------------------------------------------------------
        running = Signal()          # sequencer issuing beats
        inflight = Signal(range(Q + 1))
        og, oy, ox = (Signal(DIM_BITS, name=n) for n in ("og", "oy", "ox"))
        cb, ky, kx = Signal(DIM_BITS), Signal(4), Signal(4)
        # the first tap of a dot product (pipelined: a register, set below as the walk moves)
        first = Signal(name="first") if S else (cb == 0) & (ky == 0) & (kx == 0)
        last = (cb == d.in_cb - 1) & (ky == d.kernel - 1) & (kx == d.kernel - 1)
        stall = first & (inflight == Q)
        issue = running & ~stall

        # -- setup: the input and output plane sizes (in_h·in_w, out_h·out_w), bit-serially,
        # before the first beat; the address generators below only add ----------------------
        setup = Signal()
        m.submodules.in_plane = in_plane = SerialMultiplier(DIM_BITS, DIM_BITS, AB)
        m.submodules.out_plane = out_plane = SerialMultiplier(DIM_BITS, DIM_BITS, AB)
        m.d.comb += [in_plane.a.eq(self.desc.in_w), in_plane.b.eq(self.desc.in_h),
                     out_plane.a.eq(self.desc.out_w), out_plane.b.eq(self.desc.out_h)]
        # pixel lane p's first input column in the global row: p·out_w·stride
        in_off = lane_offsets(m, load=c_go, out_w=self.desc.out_w, stride=self.desc.stride,
                              pixels=P, width=DIM_BITS + 4, name="in_off")

        with m.If(c_go | v_go):
            m.d.sync += [self.cycles.eq(0), self.mac_beats.eq(0)]
        with m.If(c_go):
            m.d.comb += [in_plane.start.eq(1), out_plane.start.eq(1)]
            if not self._held:
                m.d.sync += d.eq(self.desc)
            m.d.sync += [setup.eq(1), cbusy.eq(1), self.cycles.eq(0),
                         self.mac_beats.eq(0), og.eq(0), oy.eq(0), ox.eq(0), cb.eq(0), ky.eq(0), kx.eq(0)]
        with m.If(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)

        # -- sequencer: nested counters kx < ky < cb < ox < oy < og -------------------------------
        m.d.comb += self.beat.eq(issue)
        with m.If(issue):
            m.d.sync += self.mac_beats.eq(self.mac_beats + 1)
        loaded = setup & ~in_plane.busy & ~out_plane.busy
        # (pipelined: each level's "at its last value" in a register, arith.nested_carries)
        steps = nested_carries(m, issue, [(kx, d.kernel), (ky, d.kernel), (cb, d.in_cb),
                                          (ox, d.out_w), (oy, d.out_h), (og, d.out_groups)],
                               load=loaded if S else None)
        if S:                                       # the three inner counters all wrap: tap 0
            with m.If(loaded):
                m.d.sync += first.eq(1)
            with m.Elif(issue):
                m.d.sync += first.eq(steps[3])
        with m.If(steps[-1]):
            m.d.sync += running.eq(0)

        # address generation (im2col by addressing), as running sums: the tap's input pixel
        # (iy, ix) = (oy·stride + ky - pad_top, ox·stride + kx - pad), its activation word
        # in_base + cb·in_h·in_w + iy·in_w + ix (mod the buffer: padding taps may wrap, they
        # read nothing) and its weight word w_base + ((og·in_cb + cb)·k + ky)·k + kx.  Every
        # pixel lane reads the same word of its own bank: its columns are stored from its
        # first input column on
        w_tap, w_og = Signal(WB), Signal(WB)
        iy0, ix0 = window_origin(m, restart=loaded | steps[5], next_row=steps[4], next_pixel=steps[3],
                                 pad_top=d.pad_top, pad=d.pad, stride=d.stride, width=DIM_BITS + 3)
        iy, ix = Signal(signed(DIM_BITS + 4)), Signal(signed(DIM_BITS + 4))
        m.d.comb += [iy.eq(iy0 + ky), ix.eq(ix0 + kx)]
        # a lane's tap is padding outside the plane (several lanes: outside the global row)
        inside = window_inside(iy, ix, in_off, in_h=d.in_h, in_w=d.in_w, in_wg=d.in_wg)
        # per-layer terms of the walk (pipelined: into registers while the plane sizes are computed (the
        # descriptor is steady from ``start`` on; the walk loads them at ``loaded``, 2+ cycles on))
        row_step = stage(m, small_mul(d.in_w, d.stride, AB), S, "row_step")
        a_start = stage(m, (d.in_base - small_mul(d.in_w, d.pad_top, AB) - d.pad)[:AB], S, "a_start")
        act_addr = nested_address(m, steps, [1, d.in_w, in_plane.p, d.stride, row_step, None],
                                  start=a_start, load=loaded, width=AB, name="a")
        with m.If(loaded):
            m.d.sync += [setup.eq(0), running.eq(1), w_tap.eq(d.w_base), w_og.eq(d.w_base)]
        with m.If(steps[5]):                        # the next group's weights follow this one's
            m.d.sync += [w_tap.eq(w_tap + 1), w_og.eq(w_tap + 1)]
        with m.Elif(steps[3]):                      # the same group's weights for the next pixel
            m.d.sync += w_tap.eq(w_og)
        with m.Elif(steps[0]):
            m.d.sync += w_tap.eq(w_tap + 1)
        # the weights are read a cycle after the activations: both reach the array together,
        # the activations through one more register (below)
        w_tap_d = delay(m, w_tap, S, "w_tap")
        for rd in wmems.values():
            m.d.comb += rd.addr.eq(w_tap_d)

        # the buffers answer a cycle later into registers (READ_LATENCY); the activations,
        # masked where a tap is padding, go through one more register that drives the whole
        # array (every row takes every activation: the widest fan-out of the design)
        v3, f3, l3 = (delay(m, s, read_latency + S, n) for s, n in ((issue, "v"), (first, "f"), (last, "l")))
        in2 = delay(m, Cat(*inside), read_latency, "in")
        pa = array.i.payload
        in_signed = stage(m, d.in_signed, S, "in_signed")
        a_in = Signal.like(pa.a, name="a_in")
        for p in range(P):
            for c in range(C):
                byte = act_q[p][8 * c:8 * c + 8]
                ext = Mux(in_signed, byte.as_signed(), byte.as_unsigned())
                m.d.comb += a_in[p][c].eq(Mux(in2[p], ext, 0))
        m.d.comb += pa.a.eq(stage(m, a_in, S, "a_in_q", reset_less=True))
        for f, _ in self._groups:
            m.d.comb += pa.w[f.name].eq(stage(m, wmems[f.name].data, S, f"wgt_q_{f.name}", reset_less=True))
        m.d.comb += [array.i.valid.eq(v3), pa.first.eq(f3), pa.last.eq(l3)]

        # the queue never overflows: the sequencer stalls with Q dot products in flight
        pop = Signal()
        if S:
            # (pipelined: the queue in blocks of ``QUEUE_BLOCK_ROWS`` rows of a pixel lane, each
            # a memory read without a register, into a register of its own that takes the
            # popped entry the cycle after the pop — ``acc`` is first read in the cycle after
            # that, the first EMIT.  Each block's read address and load are a copy of their
            # own (``REPLICA``): the pop is decided by the requantizer's state machine, and as
            # the enable of one read register it fanned out to every accumulator of the array
            # (33 rows × 2 lanes × 25 bits), the 528-MAC ULX3S core's worst path at 45 MHz.
            # The popped slot is not written again before the load: the pop frees it, and the
            # next dot product into it issues afterwards, the array's pipeline behind it)
            acc = [[None] * R for _ in range(P)]
            BR = self.QUEUE_BLOCK_ROWS
            for p in range(P):
                for b0 in range(0, R, BR):
                    rows = range(b0, min(R, b0 + BR))
                    blk = Memory(shape=unsigned(len(rows) * cfg.acc_bits), depth=Q, init=[])
                    m.submodules[f"queue{p}_{b0 // BR}"] = blk
                    wr, rd = blk.write_port(), blk.read_port(domain="comb")
                    m.d.comb += [wr.addr.eq(wptr), wr.en.eq(array.o.valid),
                                 wr.data.eq(Cat(array.o.payload[p][i] for i in rows))]
                    slot = Signal(range(Q), name=f"q_slot{p}_{b0 // BR}_{REPLICA}")
                    load = Signal(name=f"q_load{p}_{b0 // BR}_{REPLICA}")
                    held = Signal(len(rows) * cfg.acc_bits, name=f"q_held{p}_{b0 // BR}", reset_less=True)
                    m.d.sync += load.eq(pop)
                    with m.If(pop):
                        m.d.sync += slot.eq(rptr)
                    with m.If(load):
                        m.d.sync += held.eq(rd.data)
                    m.d.comb += rd.addr.eq(slot)
                    for k, i in enumerate(rows):
                        acc[p][i] = held[k * cfg.acc_bits:(k + 1) * cfg.acc_bits].as_signed()
        else:
            m.d.comb += [q_wr.addr.eq(wptr), q_wr.data.eq(array.o.payload), q_wr.en.eq(array.o.valid),
                         q_rd.addr.eq(rptr), q_rd.en.eq(pop)]
            acc = q_rd.data             # the popped dot product (held by the read port)
        with m.If(array.o.valid):
            m.d.sync += wptr.eq(Mux(wptr == Q - 1, 0, wptr + 1))
        with m.If(pop):
            m.d.sync += rptr.eq(Mux(rptr == Q - 1, 0, rptr + 1))
        with m.If(array.o.valid & ~pop):
            m.d.sync += queued.eq(queued + 1)
        with m.Elif(pop & ~array.o.valid):
            m.d.sync += queued.eq(queued - 1)

        # -- requantize and write, one row per cycle (all pixel lanes at once) ------------------
        # (output group, pixel) of the next dot product to pop, and the pixel of the popped one
        nog, npix, cpix = Signal(DIM_BITS), Signal(AB), Signal(AB)
        with m.If(c_go):
            m.d.sync += [nog.eq(0), npix.eq(0)]
        with m.Elif(pop):
            m.d.sync += cpix.eq(npix)
            with m.If(npix == out_plane.p - 1):
                m.d.sync += [npix.eq(0), nog.eq(nog + 1)]
            with m.Else():
                m.d.sync += npix.eq(npix + 1)
        # the popped dot product's output group (its parameters' entries start at cgrp·slots)
        cgrp = Signal(ADDR_BITS - sb)
        with m.If(pop):
            m.d.sync += cgrp.eq(d.p_base + nog)
        if S:
            # (pipelined: the mask is read continuously at the next pop's group — ``nog`` moves
            # only at a pop, and pops are two or more cycles apart, so the mask at the port
            # when a pop happens is that pop's — and latched into a register then)
            cur_en = Signal(R, name="en_q")
            with m.If(pop):
                m.d.sync += cur_en.eq(en_rd.data)
        else:
            cur_en = en_rd.data         # (held: read at pop)
        emit = Signal()
        any_en = cur_en.any()
        m.d.comb += [en_rd.addr.eq(d.p_base + nog), en_rd.en.eq(1 if S else pop)]
        if S:
            # (pipelined: the rows are walked as a mask of those still to come, ``rest``: the
            # next row is its lowest set bit, taken off by ``rest & (rest - 1)`` — a carry
            # chain beside its register, where a row number and a priority encoder over
            # ``later`` rows made a loop through the net that also selects every row's
            # accumulators.  The row being emitted is one-hot, in copies: one for the
            # parameters and one per pixel lane, each kept apart in board builds, ``REPLICA``)
            def lowest(v):
                return v & ~(v - 1)[:R]

            def rest_of(v):
                return v & (v - 1)[:R]
            rest = Signal(R, name="row_rest")
            sels = [Signal(R, name=f"row_sel{k}_{REPLICA}") for k in range(P + 1)]
            sel_from = Signal(R)                   # the mask whose lowest row is emitted next
        else:
            r = Signal(range(R))
            # enabled rows: the first of the word being read, and the next after r of the latched one
            later = cur_en & ~((Const(2, R + 1) << r) - 1)[:R]
            first_en, next_en = Signal(range(R)), Signal(range(R))
            more = later.any()
            for i in reversed(range(R)):             # lowest set bit wins
                with m.If(cur_en[i]):
                    m.d.comb += first_en.eq(i)
                with m.If(later[i]):
                    m.d.comb += next_en.eq(i)
        with m.FSM() as ser:
            with m.State("IDLE"):
                with m.If(queued != 0):
                    m.d.comb += pop.eq(1)
                    m.next = "PARAM"
            with m.State("PARAM"):              # the parameter word read at pop is here now
                if S:
                    m.d.comb += sel_from.eq(cur_en)
                else:
                    m.d.sync += r.eq(first_en)
                with m.If(any_en):
                    m.next = "EMIT"
                with m.Else():
                    m.next = "IDLE"
            with m.State("EMIT"):               # only enabled rows: all-fix8 layers use one row
                m.d.comb += emit.eq(1)
                if S:
                    # (pipelined: the last row's cycle pops the next dot product, if one is
                    # queued — the row's accumulators, parameter address and pixel are taken
                    # at this edge, before the pop's read data and counters move)
                    m.d.comb += sel_from.eq(rest)
                    with m.If(rest == 0):
                        with m.If(queued != 0):
                            m.d.comb += pop.eq(1)
                            m.next = "PARAM"
                        with m.Else():
                            m.next = "IDLE"
                else:
                    m.d.sync += r.eq(next_en)
                    with m.If(~more):
                        m.next = "IDLE"
        if S:
            m.d.sync += [rest.eq(rest_of(sel_from))] + [sel.eq(lowest(sel_from)) for sel in sels]
        with m.If(issue & last & ~pop):
            m.d.sync += inflight.eq(inflight + 1)
        with m.Elif(pop & ~(issue & last)):
            m.d.sync += inflight.eq(inflight - 1)

        # the emitted row's accumulators, selected (pipelined: by the one-hot copies, into
        # registers), and its parameters, read from the buffer at the row's slot (pipelined: the
        # slot's address into a register — the one-hot row encoded — then the block RAM's
        # cycle, then a register: the requantizers start from flip-flops).  The accumulators,
        # the emit flag and the pixel wait for the parameters: ``lat`` cycles from the emit
        row_acc = Signal(data.ArrayLayout(signed(cfg.acc_bits), P))
        if S:
            m.d.comb += [row_acc[p].eq(one_hot_select(sels[p], [acc[p][i] for i in range(R)])) for p in range(P)]
            row_idx = one_hot_select(sels[P], [Const(i, sb) for i in range(R)])
            m.d.comb += par_rd.addr.eq(stage(m, Cat(row_idx, cgrp), S, "par_addr"))
        else:
            m.d.comb += [row_acc[p].eq(acc[p][r]) for p in range(P)]
            m.d.comb += par_rd.addr.eq(Cat(r, Const(0, sb - len(r)), cgrp))
        chains = cfg.row_chains
        lat = (3 + int(chains)) if S else 1
        rp = Signal(self._plo, name="rp")
        m.d.comb += rp.eq(stage(m, par_rd.data[:self._plo.size], S, "rp_q"))
        racc = Signal.like(row_acc, name="racc")
        emit_line = Signal(lat, name="emit_line")      # emitted rows on their way to the requantizers
        m.d.sync += emit_line.eq(Cat(emit, emit_line[:-1]))
        if chains:
            # (row chains: one more stage sums a chain's rows — a row whose ``chain`` is set
            # adds into the next emitted row's sum instead of going to the requantizers, so
            # the chain's last row, which holds the channel's parameters, carries the whole
            # sum; rows are emitted in row order, a chain's rows one after another)
            early = delay(m, row_acc.as_value(), lat - 1, "racc")
            early_acc = data.ArrayLayout(signed(cfg.acc_bits), P)(early)
            rp_early, rp = rp, Signal(self._plo, name="rp_c")
            carry = Signal(name="chain_carry")      # the row emitted before this one chained into it
            with m.If(emit_line[lat - 2]):
                m.d.sync += carry.eq(rp_early.chain)
                for p in range(P):
                    m.d.sync += racc[p].eq(early_acc[p] + Mux(carry, racc[p], 0))
            m.d.sync += rp.eq(rp_early)
            emit_q = emit_line[-1] & ~rp.chain
        else:
            m.d.comb += racc.eq(delay(m, row_acc.as_value(), lat, "racc"))
            emit_q = emit_line[-1]
        cpix_q = delay(m, cpix, lat, "cpix")            # the emitted row's pixel
        # the requantizers: the conv rows, or (lane 0's) the vector unit's average pool while it runs
        m.d.comb += [vec.rq.o.valid.eq(rq.o.valid & vec_avg), vec.rq.o.payload.eq(rq.o.payload)]
        out_lo, out_hi = stage(m, d.out_lo, S, "out_lo"), stage(m, d.out_hi, S, "out_hi")
        for p, rqp in enumerate(rqs):
            conv_in = [rqp.i.valid.eq(emit_q), rqp.i.payload.acc.eq(racc[p]), rqp.i.payload.bias.eq(rp.bias),
                       rqp.i.payload.mult.eq(rp.mult), rqp.i.payload.shift.eq(rp.shift),
                       rqp.i.payload.lo.eq(out_lo), rqp.i.payload.hi.eq(out_hi)]
            if p == 0:
                with m.If(vec_avg):
                    m.d.comb += [rq.i.valid.eq(vec.rq.i.valid), rq.i.payload.eq(vec.rq.i.payload)]
                with m.Else():
                    m.d.comb += conv_in
            else:
                m.d.comb += conv_in
        # the row's output channel (from its parameters) -> word block, byte lane; a wide
        # (16-bit) output puts channel ch at bytes 2ch and 2ch+1.  C is a power of two.
        lb = (C - 1).bit_length()
        bpos = Signal(CH_BITS + 1)
        m.d.comb += bpos.eq(Mux(d.wide, rp.ch << 1, rp.ch))
        block = (bpos >> lb)[:AB]                    # the row's channel block: one product per row
        # the block's offset (a product) into a register, then the address: the sum
        boff, bpix = stage(m, (block * out_plane.p)[:AB], S, "boff"), stage(m, cpix_q, S, "bpix")
        waddr = Signal(ADDR_BITS)
        m.d.comb += waddr.eq((d.out_base + boff + bpix)[:AB])
        # (a pixel lane's columns past the row's end are written too, into its own output
        # region, which the gathering store never reads)
        wmeta = delay(m, Cat(waddr, delay(m, Cat(bpos[:lb], rp.en, d.wide), S, "wpos")), rq.latency - S, "wmeta")
        o_addr, o_lane, o_en, o_wide = (wmeta[:ADDR_BITS], wmeta[ADDR_BITS:ADDR_BITS + lb],
                                        wmeta[ADDR_BITS + lb], wmeta[ADDR_BITS + lb + 1])
        pending = Signal(range(rq.latency + 2))       # values inside the requantizer
        with m.If(rq.i.valid & ~rq.o.valid):
            m.d.sync += pending.eq(pending + 1)
        with m.Elif(rq.o.valid & ~rq.i.valid):
            m.d.sync += pending.eq(pending - 1)

        # -- activation buffer: two banks (per pixel lane); the engine drives a bank its running
        # op owns, the host port (the DMA) every other bank, so tensors stream in and out of one
        # bank while the engine works in the other ------------------------------------------
        wen = Mux(o_wide, Const(3, C + 1), Const(1, C)) << o_lane
        m.d.comb += vec.rd_data.eq(vact_q)
        vec_side = [vact_rd.addr.eq(vec_rd_addr), vact_wr.addr.eq(vec.wr_addr), vact_wr.data.eq(vec.wr_data),
                    *(vact_wr.en[p].eq(vec.wr_en.replicate(C)) for p in range(P))]
        conv_side = [act_rd.addr.eq(act_addr[:ADDR_BITS]), act_wr.addr.eq(o_addr)]
        for p, rqp in enumerate(rqs):
            half = rqp.o.payload[:16]
            conv_side += [act_wr.data[p].eq(Mux(o_wide, half.replicate(C // 2 if C > 1 else 1), half[:8].replicate(C))),
                          act_wr.en[p].eq(Mux(rqp.o.valid & o_en, wen, 0))]
        if concurrent:
            m.d.comb += vec_side + conv_side
        else:
            with m.If(vec.busy):
                m.d.comb += vec_side
            with m.Else():
                m.d.comb += conv_side
        # the conv op's last busy cycle: nothing issuing, queued, in the requantizers or writing
        c_ending = cbusy & ~setup & ~running & (inflight == 0) & (queued == 0) & ser.ongoing("IDLE") \
            & (emit_line == 0) & (pending == 0) & ~rq.o.valid
        own = Signal(ACT_BANKS)
        start_c, start_v = c_go, v_go
        # (pipelined: whether the running op owns bank b is a register per bank, set from the
        # next cycle's busy and owner — the same value as busy & own[b] every cycle — so no
        # single busy flag fans out to the address, data and enable multiplexers of every bank
        # across the chip; the copies are kept apart in board builds: ``REPLICA``)
        if concurrent:
            # (the conv and the vector unit each own their op's banks: ``own`` the conv's,
            # ``vown`` the vector op's; the core keeps them apart)
            vown = Signal(ACT_BANKS)
            busy_next = start_c | (cbusy & ~c_ending)
            vbusy_next = start_v | (vec.busy & ~vec.ending)
            own_next = Mux(start_c, self.desc.banks, own)
            vown_next = Mux(start_v, self.vec_desc.banks, vown)
            m.d.sync += vown.eq(vown_next)
        else:
            busy_next = start_c | start_v | (self.busy & ~(c_ending | vec.ending))
            own_next = Mux(start_c, self.desc.banks, Mux(start_v, self.vec_desc.banks, own))
        m.d.sync += own.eq(own_next)
        lb = (cfg.act_depth // ACT_BANKS - 1).bit_length()
        e_rbank, v_rbank, h_rbank = Signal(range(ACT_BANKS)), Signal(range(ACT_BANKS)), Signal(range(ACT_BANKS))
        h_lane = Signal(range(max(P, 2)))
        act_r_data = Signal.like(self.act_r.data)
        picks, banks_q = [], []
        m.d.sync += [e_rbank.eq(act_rd.addr[lb:]), v_rbank.eq(vact_rd.addr[lb:]),
                     h_rbank.eq(self.act_r.addr[lb:]), h_lane.eq(self.act_r.lane)]
        for p in range(P):
            for b in range(ACT_BANKS):
                mem = Memory(shape=unsigned(8 * C), depth=cfg.act_depth // ACT_BANKS, init=[])
                m.submodules[f"act{b}" if P == 1 else f"act{p}_{b}"] = mem
                rdp, wp = mem.read_port(), mem.write_port(granularity=8)
                if S:
                    mine = Signal(name=f"mine{p}_{b}_{REPLICA}")
                    m.d.sync += mine.eq(busy_next & own_next[b])
                else:
                    mine = self.busy & own[b]
                hw_addr = host_w["act_w"].addr[p]

                def engine_port(rd, wr, rdp=rdp, wp=wp, p=p, b=b):
                    return [rdp.addr.eq(rd.addr[:lb]), wp.addr.eq(wr.addr[:lb]), wp.data.eq(wr.data[p]),
                            wp.en.eq(Mux(wr.addr[lb:] == b, wr.en[p], 0))]
                if concurrent:
                    vmine = Signal(name=f"vmine{p}_{b}_{REPLICA}")
                    m.d.sync += vmine.eq(vbusy_next & vown_next[b])
                with m.If(mine):
                    m.d.comb += engine_port(act_rd, act_wr)
                if concurrent:
                    with m.Elif(vmine):
                        m.d.comb += engine_port(vact_rd, vact_wr)
                with m.Else():
                    m.d.comb += [rdp.addr.eq(self.act_r.addr[:lb]), wp.addr.eq(hw_addr[:lb]),
                                 wp.data.eq(host_w["act_w"].data),
                                 wp.en.eq(Mux(hw_addr[lb:] == b, host_w["act_w"].en[p], 0))]
                with m.If(e_rbank == b):
                    m.d.comb += act_rd.data[p].eq(rdp.data)
                if concurrent:
                    with m.If(v_rbank == b):
                        m.d.comb += vact_rd.data[p].eq(rdp.data)
                if S:
                    # (pipelined: the DMA's read data through a register beside each bank — a
                    # block RAM's output is slow (5.8 ns) — then selected by a one-hot register
                    # into one more register, whose route to the DMA (by the memory, across the
                    # chip) starts from flip-flops: ``act_r`` answers three cycles after its
                    # address, Dma.act_read_latency)
                    banks_q.append(stage(m, rdp.data, S, f"act_r_q{p}_{b}"))
                    picks.append(stage(m, (h_rbank == b) & (h_lane == p), S, f"act_r_pick{p}_{b}"))
                else:
                    with m.If((h_rbank == b) & (h_lane == p)):
                        m.d.comb += act_r_data.eq(rdp.data)
        m.d.comb += self.act_r.data.eq(stage(m, one_hot_select(picks, banks_q), 1, "act_r_q") if S else act_r_data)

        # -- completion -------------------------------------------------------------------------
        with m.If(c_ending):
            m.d.sync += [cbusy.eq(0), cdone.eq(1)]
        with m.Else():
            m.d.sync += cdone.eq(0)
        return m
