"""The vector unit: residual add, max-pool and global average pool on the activation buffer.

One :class:`~rmsmp.rtl.isa.VecDesc` per ``start``.  The sequencer issues one buffer read
(a "tap") per cycle; ``read_latency`` cycles later (the engine registers the buffer's
read data: 2) each of the ``C`` lanes folds the byte into its
reduction, and on an output word's last tap the result word is written.  The arithmetic
is docs/arithmetic.md §5: the add is the residual adder's (shift, add, round half up,
clamp), max-pool skips padding taps, and the global average pool sums exactly and
requantizes with ``(M, n)`` — lane by lane on the conv engine's requantizer, while the
sequencer waits.  Tap and output addresses are running sums: no multiplier.  The add
reads two words per output word, so ``ceil(C/2)`` adders serve its ``C`` lanes in two
halves (the second half from the held words, the cycle after ``b`` arrives), each in two
stages (shifted sum, then rounding shift and clamp).

``ops`` names the operations built (``AcceleratorConfig.vector_ops``): an add-only unit
has no window walk, no plane multiplier and no wide sums.  A descriptor of an operation
the unit lacks does nothing (the compiler never emits one).

With ``pixels`` lanes every pixel lane's bank is read and written at the same address, as
the conv engine does: the add works on each lane's share of the entries, the max-pool on
each lane's columns (a tap is padding outside the row's ``in_wg`` columns); the average
pool runs in lane 0.
"""
from __future__ import annotations

from amaranth import Array, Cat, Module, Mux, Signal, signed
from amaranth import C as Const
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .arith import (
    SerialMultiplier,
    clamp,
    delay,
    lane_offsets,
    nested_address,
    nested_carries,
    round_half,
    rshift_round,
    small_mul,
    stage,
    window_inside,
    window_origin,
)
from .isa import ADDR_BITS, AVGPOOL_SUM_BITS, DIM_BITS, VECTOR_OPS, VecDesc, VecKind

__all__ = ["VectorUnit"]


class VectorUnit(wiring.Component):
    """``rq`` drives a :class:`~rmsmp.rtl.ppu.Requantizer` (the engine shares its own).
    ``held_desc``: ``desc`` is held by the driver while ``busy`` (no copy is kept).
    ``ending`` is high in the op's last busy cycle (``busy`` falls after it)."""

    def __init__(self, *, columns: int, requantizer: wiring.Signature, sum_bits: int = AVGPOOL_SUM_BITS,
                 addr_bits: int = ADDR_BITS, ops=VECTOR_OPS, held_desc: bool = False, pixels: int = 1,
                 read_latency: int = 1, pipelined: bool = False):
        self._C, self._sum_bits, self._addr_bits = columns, sum_bits, addr_bits
        self._read_latency = read_latency
        self._pipe = pipelined
        self._P = pixels
        self._held = held_desc
        self._ops = frozenset(ops)
        unknown = self._ops - set(VECTOR_OPS)
        if unknown:
            raise ValueError(f"vector unit operations {sorted(unknown)} do not exist")
        super().__init__({
            "rq": In(requantizer),
            "start": In(1), "desc": In(VecDesc), "busy": Out(1), "done": Out(1), "ending": Out(1),
            "rd_addr": Out(ADDR_BITS), "rd_data": In(data.ArrayLayout(8 * columns, pixels)),
            "wr_addr": Out(ADDR_BITS), "wr_data": Out(data.ArrayLayout(8 * columns, pixels)), "wr_en": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        C, AB, P = self._C, self._addr_bits, self._P
        S = int(self._pipe)                          # the optional pipeline stages
        has_add, has_max, has_avg = (k.name.lower() in self._ops
                                     for k in (VecKind.ADD, VecKind.MAXPOOL, VecKind.AVGPOOL))
        window = has_max or has_avg                  # ops that walk a window of the input plane
        sum_bits = self._sum_bits if has_avg else 10
        d = self.desc if self._held else Signal(VecDesc)
        setup, running, hold = Signal(), Signal(), Signal()
        cb, oy, ox = Signal(DIM_BITS), Signal(DIM_BITS), Signal(DIM_BITS)
        ty, tx = Signal(DIM_BITS), Signal(DIM_BITS)
        is_add, is_max, is_avg = ((d.kind == k) if has else Const(0, 1) for k, has in
                                  ((VecKind.ADD, has_add), (VecKind.MAXPOOL, has_max), (VecKind.AVGPOOL, has_avg)))
        th = Mux(is_add, 1, Mux(is_max, d.kernel, d.in_h))
        tw = Mux(is_add, 2, Mux(is_max, d.kernel, d.in_w))
        known = is_add | is_max | is_avg
        first = (ty == 0) & (tx == 0)
        last = (ty == th - 1) & (tx == tw - 1)
        issue = running & ~hold
        # a max-pool whose windows overlap by one column (kernel = stride + 1: ResNet's 3×3/2)
        # walks the row column by column (pipelined units): the inner counter (``tx``) runs
        # down a column, the next (``ty``) across the row's ``(out_w - 1)·stride + kernel``
        # columns, and each column's maximum is folded once into the window(s) it belongs to —
        # the column a window ends on starts the next — so a row reads ``kernel`` taps a column
        # instead of ``kernel²`` a window: 2/3 of the taps at 3×3/2
        cols = has_max and self._pipe
        cw = (is_max & (d.kernel == d.stride + 1)) if cols else Const(0, 1)
        if cols:
            n_cols = stage(m, (small_mul(d.out_w, d.stride, DIM_BITS + 3) + 1)[:DIM_BITS + 3], S, "n_cols")
            ph = Signal.like(d.stride, name="col_phase")   # the column's place in its stride

        # the input plane in_h·in_w, bit-serially before the first tap
        if window:
            m.submodules.plane = plane = SerialMultiplier(DIM_BITS, DIM_BITS, AB)
            m.d.comb += [plane.a.eq(self.desc.in_w), plane.b.eq(self.desc.in_h)]
        with m.If(self.start & ~self.busy):
            if window:
                m.d.comb += plane.start.eq(1)
            if not self._held:
                m.d.sync += d.eq(self.desc)
            m.d.sync += [setup.eq(1), self.busy.eq(1),
                         cb.eq(0), oy.eq(0), ox.eq(0), ty.eq(0), tx.eq(0)]
        loaded = setup & ~plane.busy if window else setup
        # (pipelined: each level's "at its last value" in a register, arith.nested_carries)
        lims = ([Mux(cw, d.kernel, tw), Mux(cw, n_cols, th), Mux(cw, 1, d.out_w)] if cols
                else [tw, th, d.out_w])
        steps = nested_carries(m, issue, [(tx, lims[0]), (ty, lims[1]), (ox, lims[2]), (oy, d.out_h), (cb, d.cb)],
                               load=loaded if self._pipe else None)
        if cols:                                     # the column's phase: column index mod stride
            with m.If(loaded | steps[2]):
                m.d.sync += ph.eq(0)
            with m.Elif(steps[1]):
                m.d.sync += ph.eq(Mux(ph == d.stride - 1, 0, ph + 1))
        with m.If(steps[-1]):
            m.d.sync += running.eq(0)

        # tap address, as running sums (arith.nested_address):
        # max-pool reads a_base + cb·in_h·in_w + iy·in_w + ix with (iy, ix) = (oy·stride + ty -
        # pad_top, ox·stride + tx - pad); the average pool walks a block's plane (no padding,
        # one output pixel); the add reads a_base + ox, then b_base + ox
        with m.If(loaded):                           # an operation the unit lacks: nothing runs
            m.d.sync += [setup.eq(0), running.eq(known)]
        add_addr = Mux(tx == 0, d.a_base, d.b_base) + ox
        inside = Const(1, 1)
        if window:
            pad, pad_top = Mux(is_max, d.pad, 0), Mux(is_max, d.pad_top, 0)
            # per-op terms of the walk (pipelined: into registers while the plane size is computed (the
            # descriptor is steady from ``start``; the walk loads them at ``loaded``, 2+ cycles on))
            row_step = stage(m, small_mul(d.in_w, d.stride, AB), S, "row_step")
            a_start = stage(m, (d.a_base - small_mul(d.in_w, pad_top, AB) - pad)[:AB], S, "a_start")
            incs = [Mux(cw, d.in_w, 1), Mux(cw, 1, d.in_w)] if cols else [1, d.in_w]
            a_tap = nested_address(m, steps, [*incs, d.stride, row_step, plane.p], start=a_start,
                                   load=loaded, width=AB, name="a")
            # the window's tap (0, 0): per channel block, output row and pixel (arith.window_origin)
            iy0, ix0 = window_origin(m, restart=loaded | steps[4], next_row=steps[3], next_pixel=steps[2],
                                     pad_top=pad_top, pad=pad, stride=d.stride, width=DIM_BITS + 3)
            if has_max:
                iy, ix = Signal(signed(DIM_BITS + 4)), Signal(signed(DIM_BITS + 4))
                if cols:                             # (by columns: tx down, ty across)
                    m.d.comb += [iy.eq(iy0 + Mux(cw, tx, ty)), ix.eq(ix0 + Mux(cw, ty, tx))]
                else:
                    m.d.comb += [iy.eq(iy0 + ty), ix.eq(ix0 + tx)]
                # pixel lane p's columns start p·out_w·stride into the row
                off = lane_offsets(m, load=self.start & ~self.busy, out_w=self.desc.out_w, stride=self.desc.stride,
                                   pixels=P, width=DIM_BITS + 4)
                inside = Cat(*window_inside(iy, ix, off, in_h=d.in_h, in_w=d.in_w, in_wg=d.in_wg))
            m.d.comb += self.rd_addr.eq(Mux(is_add, add_addr, a_tap) if has_add else a_tap)
        else:
            m.d.comb += self.rd_addr.eq(add_addr)

        # ``read_latency`` cycles later: fold the data (every pixel lane; the average pool in lane 0)
        L = self._read_latency
        v1, f1, l1 = (delay(m, s, L, n) for s, n in ((issue, "v"), (first, "f"), (last, "l")))
        in1 = delay(m, Mux(is_add | is_avg, (1 << P) - 1, inside), L, "in")
        # taps read but not yet folded (the unit is busy until they are)
        in_flight = Cat(delay(m, issue, k, f"v{k}") for k in range(1, L)).any() if L > 1 else Const(0, 1)
        have = Signal(P)                             # max-pool: an inside tap was seen
        if cols:
            # by columns: a column's first and last taps, and whether its last one ends a
            # window (phase 0 past the first column) or only starts one (phase 0)
            c_first, c_last, c_start, c_ends = (delay(m, sg, L, n) for sg, n in (
                (tx == 0, "c_first"), (tx == d.kernel - 1, "c_last"), (ph == 0, "c_start"),
                ((ph == 0) & (ty >= d.stride), "c_ends")))
            col_have = Signal(P)                     # an inside tap in the column so far
            col_have_now = Mux(c_first, in1, col_have | in1)
            with m.If(v1 & cw):
                m.d.sync += col_have.eq(col_have_now)
            # a column's maximum is folded into the window's the cycle after its last tap, from
            # the registers (``col``, ``col_have``; the next column's first tap replaces them at
            # the end of that cycle): the column's compare and the window's, in one cycle, were
            # the small ULX3S design's worst path at 50 MHz (16.8 ns)
            fold, fold_start, fold_ends = (delay(m, sg, 1, n) for sg, n in (
                (v1 & cw & c_last, "fold"), (c_start, "fold_start"), (c_ends, "fold_ends")))
            with m.If(fold):
                m.d.sync += have.eq(Mux(fold_start, col_have, have | col_have))
        with m.If(v1 & f1 & ~cw):
            m.d.sync += have.eq(in1)
        with m.Elif(v1 & ~cw):
            m.d.sync += have.eq(have | in1)
        # the per-op operands of the lanes, held beside them; and (pipelined) the op's selects of
        # the output word and its write, decoded from the descriptor into registers (steady a
        # cycle after it, long before an op's first write): the descriptor's decode into the
        # write data was the 528-MAC ULX3S core's worst path at 40 MHz (21.0 ns, 16.6 of it routing)
        a_sgn, lo, hi = stage(m, d.a_signed, S, "a_signed"), stage(m, d.lo, S, "lo"), stage(m, d.hi, S, "hi")
        o_cw, o_add, o_avg = (stage(m, sel, S, name) for sel, name in
                              ((cw, "out_cw"), (is_add, "out_add"), (is_avg, "out_avg")))
        words, accs = [], []
        for p in range(P):
            rd = self.rd_data[p]
            sfx = f"_{p}" if P > 1 else ""
            ys = []
            for lane in range(C if window else 0):
                byte = rd[8 * lane:8 * lane + 8]
                # max-pool compares order keys: the byte with its sign bit flipped when the
                # input is signed (two's complement to offset binary), so an 8-bit unsigned
                # compare orders either format, and the key flipped back is the byte
                key = Signal(8, name=f"key{lane}{sfx}")
                m.d.comb += key.eq(byte ^ (a_sgn << 7))
                avg_lane = has_avg and p == 0
                acc = Signal(signed(sum_bits) if avg_lane else 8, name=f"acc{lane}{sfx}")
                if p == 0:
                    accs.append(acc)
                # the reduction including this tap (the maximum's key in the low byte)
                cur = Signal(signed(sum_bits + 1) if avg_lane else 8, name=f"cur{lane}{sfx}")
                m.d.comb += cur.eq(key)
                mx = acc[:8]
                if has_max:
                    with m.If(is_max):
                        m.d.comb += cur.eq(Mux(~in1[p], mx, Mux(~have[p] | f1, key, Mux(key > mx, key, mx))))
                if avg_lane:
                    v = Signal(signed(10), name=f"v{lane}{sfx}")
                    m.d.comb += v.eq(Mux(a_sgn, byte.as_signed(), byte.as_unsigned()))
                    with m.If(is_avg):
                        m.d.comb += cur.eq(Mux(f1, v, acc + v))
                y = mx if S else cur[:8]
                with m.If(v1 & ~cw):                 # (by columns: below)
                    m.d.sync += acc.eq(cur)
                if cols:
                    # by columns: ``col`` the column's maximum so far; at its last tap the
                    # column goes into the window's maximum (``acc``), and where it ends a
                    # window that maximum goes out (``out``) and the column starts the next
                    col = Signal(8, name=f"col{lane}{sfx}")
                    out = Signal(8, name=f"out{lane}{sfx}")
                    col_now = Signal(8, name=f"col_now{lane}{sfx}")
                    m.d.comb += col_now.eq(Mux(~in1[p], col,
                                               Mux(~col_have[p] | c_first, key, Mux(key > col, key, col))))
                    win = Mux(~col_have[p], mx, Mux(~have[p], col, Mux(col > mx, col, mx)))
                    with m.If(v1 & cw):
                        m.d.sync += col.eq(col_now)
                    with m.If(fold):
                        m.d.sync += acc.eq(Mux(fold_start, col, win))
                        with m.If(fold_ends):
                            m.d.sync += out.eq(win)
                    y = Mux(o_cw, out, y)
                # (pipelined: from the register, the cycle after the last tap).  A maximum of
                # the input's integers is in the input's format, which is the output's
                # (docs/arithmetic.md §5): no clamp (the average pool's bytes come from the
                # requantizer, the add's from its own lanes)
                ys.append(y ^ (a_sgn << 7))
            words.append(Cat(*ys))
        write = delay(m, v1 & l1, S, "wmax")         # max-pool: the window's last tap (+ S)
        if cols:                                     # by columns: a column that ends a window
            write = Mux(o_cw, delay(m, fold & fold_ends, S, "wcol"), write)

        # the add reads two words (a, then b) per output word, so ceil(C/2) adders serve the
        # C lanes: lanes [0, H) when b arrives, lanes [H, C) the cycle after (from the held
        # words), and the word is written then — one word per two cycles, as the reads allow
        if has_add:
            H = (C + 1) // 2
            # pipelined, two stages: the shifted sum of a lane's pair into a register, then its
            # rounding shift and clamp.  First half's sums when b arrives (q0), the second
            # half's the cycle after (p1, from the held words); their outputs S cycles later
            # — in compact cores too: the shifted sum, rounding shift and clamp in one cycle
            # were the iCE40 build's critical path (64 ns), for a dozen flip-flops
            # (pipelined, a third: the rounding shift into a register before the clamp — the
            # adder, variable shift and clamp in one cycle were the small ULX3S design's worst path)
            SA, SR = 1, S
            q0 = v1 & l1 & is_add
            p1 = Signal()
            m.d.sync += p1.eq(q0 & (C > 1))
            q_s, p_s = delay(m, q0, SA, "q_s"), delay(m, p1, SA, "p_s")
            q1, p2 = delay(m, q_s, SR, "q1"), delay(m, p_s, SR, "p2")
            # the add's per-op operands, held beside its lanes
            sa, sb, rs = stage(m, d.sa, SA, "add_sa"), stage(m, d.sb, SA, "add_sb"), stage(m, d.rs, SA, "add_rs")
            b_sgn = stage(m, d.b_signed, SA, "b_signed")
            half = stage(m, round_half(d.rs), SA, "add_half")
            add_words = []
            for p in range(P):
                rd = self.rd_data[p]
                sfx = f"_{p}" if P > 1 else ""
                abuf, bbuf, ylo = Signal(8 * C, name=f"abuf{sfx}"), Signal(8 * C, name=f"bbuf{sfx}"), \
                    Signal(8 * H, name=f"ylo{sfx}")
                with m.If(v1 & f1):
                    m.d.sync += abuf.eq(rd)
                with m.If(v1 & l1):
                    m.d.sync += bbuf.eq(rd)
                ys = []
                for i in range(H):
                    a_byte, b_byte = abuf.word_select(i, 8), rd.word_select(i, 8)
                    if H + i < C:
                        a_byte = Mux(p1, abuf.word_select(H + i, 8), a_byte)
                        b_byte = Mux(p1, bbuf.word_select(H + i, 8), b_byte)
                    a = Signal(signed(10), name=f"add_a{i}{sfx}")
                    b = Signal(signed(10), name=f"add_b{i}{sfx}")
                    m.d.comb += [a.eq(Mux(a_sgn, a_byte.as_signed(), a_byte.as_unsigned())),
                                 b.eq(Mux(b_sgn, b_byte.as_signed(), b_byte.as_unsigned()))]
                    total = (a << sa) + (b << sb)
                    sreg = stage(m, total, SA, f"add_s{i}{sfx}")
                    rnd = stage(m, rshift_round(sreg, rs, half), SR, f"add_r{i}{sfx}")
                    ys.append(clamp(rnd, lo, hi)[:8])
                with m.If(q1):
                    m.d.sync += ylo.eq(Cat(*ys))
                add_words.append(Cat(ylo, Cat(*ys)[:8 * (C - H)]) if C > 1 else Cat(*ys))
            add_write = p2 if C > 1 else q1
            if window:
                words = [Mux(o_add, aw, w) for aw, w in zip(add_words, words)]
                write = Mux(o_add, add_write, write)
            else:
                words, write = add_words, add_write
            settling = q_s | q1 | p1 | p_s | p2
        else:
            settling = Const(0, 1)

        # the average pool's requantization, rshift_round(sum · M, n) clamped, runs on the conv
        # engine's requantizer (idle during vector work; bias 0): the sequencer holds while the
        # C sums go in, one per cycle, and their bytes come back a latency later
        ybuf = Signal(8 * C)
        avg_done = Signal()
        draining = Const(0, 1)
        if has_avg:
            lane, got = Signal(range(C)), Signal(range(C + 1))
            rqp = self.rq.i.payload
            m.d.comb += [rqp.acc.eq(Array(accs)[lane]), rqp.bias.eq(0), rqp.mult.eq(d.mult),
                         rqp.shift.eq(d.shift), rqp.lo.eq(d.lo), rqp.hi.eq(d.hi)]
            with m.If(issue & last & is_avg):
                m.d.sync += hold.eq(1)
            with m.If(self.rq.o.valid):
                m.d.sync += [ybuf.eq(Cat(ybuf[8:], self.rq.o.payload[:8])), got.eq(got + 1)]   # lane C-1 on top
            with m.FSM() as drain:
                with m.State("IDLE"):
                    with m.If(v1 & l1 & is_avg):     # the sums are final next cycle
                        m.d.sync += [lane.eq(0), got.eq(0)]
                        m.next = "FEED"
                with m.State("FEED"):
                    m.d.comb += self.rq.i.valid.eq(1)
                    m.d.sync += lane.eq(lane + 1)
                    with m.If(lane == C - 1):
                        m.next = "COLLECT"
                with m.State("COLLECT"):
                    with m.If(got == C):
                        m.d.comb += avg_done.eq(1)
                        m.d.sync += hold.eq(0)
                        m.next = "IDLE"
            draining = ~drain.ongoing("IDLE")

        # output words are consecutive from out_base: (cb, oy, ox) in that loop order; the
        # word goes through a register to the buffer (the reduction is a cycle's work already)
        oa = Signal(AB)
        if has_avg:
            words[0], write = Mux(o_avg, ybuf, words[0]), Mux(o_avg, avg_done, write)
        with m.If(self.start & ~self.busy):
            m.d.sync += oa.eq(self.desc.out_base)
        with m.Elif(write):
            m.d.sync += oa.eq(oa + 1)
        m.d.sync += [self.wr_addr.eq(oa), self.wr_en.eq(write)] + [self.wr_data[p].eq(words[p]) for p in range(P)]

        if cols:                                     # (a column's fold, the cycle after its last tap)
            settling = settling | fold
        m.d.comb += self.ending.eq(self.busy & ~setup & ~running & ~in_flight & ~v1 & ~settling & ~draining
                                   & ~write & ~self.wr_en)
        with m.If(self.ending):
            m.d.sync += [self.busy.eq(0), self.done.eq(1)]
        with m.Else():
            m.d.sync += self.done.eq(0)
        return m
