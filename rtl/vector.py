"""The vector unit: residual add, max-pool and global average pool on the activation buffer.

One :class:`~rmsmp.rtl.isa.VecDesc` per ``start``.  The sequencer issues one buffer read
(a "tap") per cycle; a cycle later each of the ``C`` lanes folds the byte into its
reduction, and on an output word's last tap the result word is written.  The arithmetic
is docs/arithmetic.md §5: the add is the residual adder's (shift, add, round half up,
clamp), max-pool skips padding taps, and the global average pool sums exactly and
requantizes with ``(M, n)``.
"""
from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .arith import clamp, nested_count, rshift_round
from .isa import ADDR_BITS, DIM_BITS, VecDesc, VecKind

__all__ = ["VectorUnit"]


class VectorUnit(wiring.Component):
    def __init__(self, *, columns: int, sum_bits: int = 24):
        self._C, self._sum_bits = columns, sum_bits
        super().__init__({
            "start": In(1), "desc": In(VecDesc), "busy": Out(1), "done": Out(1),
            "rd_addr": Out(ADDR_BITS), "rd_data": In(8 * columns),
            "wr_addr": Out(ADDR_BITS), "wr_data": Out(8 * columns), "wr_en": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        C = self._C
        d = Signal(VecDesc)
        running = Signal()
        cb, oy, ox = Signal(DIM_BITS), Signal(DIM_BITS), Signal(DIM_BITS)
        ty, tx = Signal(DIM_BITS), Signal(DIM_BITS)
        is_add, is_max, is_avg = (d.kind == VecKind.ADD), (d.kind == VecKind.MAXPOOL), (d.kind == VecKind.AVGPOOL)
        th = Mux(is_add, 1, Mux(is_max, d.kernel, d.in_h))
        tw = Mux(is_add, 2, Mux(is_max, d.kernel, d.in_w))
        first = (ty == 0) & (tx == 0)
        last = (ty == th - 1) & (tx == tw - 1)

        with m.If(self.start & ~self.busy):
            m.d.sync += [d.eq(self.desc), running.eq(1), self.busy.eq(1),
                         cb.eq(0), oy.eq(0), ox.eq(0), ty.eq(0), tx.eq(0)]
        with m.If(nested_count(m, running, [(tx, tw), (ty, th), (ox, d.out_w), (oy, d.out_h), (cb, d.cb)])):
            m.d.sync += running.eq(0)

        # tap address
        iy = Signal(signed(DIM_BITS + 6))
        ix = Signal(signed(DIM_BITS + 6))
        m.d.comb += [iy.eq(Mux(is_max, oy * d.stride + ty - d.pad_top, ty)),
                     ix.eq(Mux(is_max, ox * d.stride + tx - d.pad, tx))]
        inside = (iy >= 0) & (iy < d.in_h) & (ix >= 0) & (ix < d.in_w)
        pix = d.a_base + (cb * d.in_h + iy.as_unsigned()[:DIM_BITS]) * d.in_w + ix.as_unsigned()[:DIM_BITS]
        m.d.comb += self.rd_addr.eq(Mux(is_add, Mux(tx == 0, d.a_base, d.b_base) + ox, pix))
        out_addr = d.out_base + (cb * d.out_h + oy) * d.out_w + ox

        # one cycle later: fold the data
        v1, f1, l1, in1, b1 = Signal(), Signal(), Signal(), Signal(), Signal()
        oa1 = Signal(ADDR_BITS)
        m.d.sync += [v1.eq(running), f1.eq(first), l1.eq(last), in1.eq(is_add | is_avg | inside),
                     b1.eq(is_add & (tx == 1)), oa1.eq(out_addr)]
        have = Signal()
        with m.If(v1 & f1):
            m.d.sync += have.eq(in1)
        with m.Elif(v1 & in1):
            m.d.sync += have.eq(1)
        ys = []
        for lane in range(C):
            byte = self.rd_data[8 * lane:8 * lane + 8]
            sgn = Mux(b1, d.b_signed, d.a_signed)
            v = Signal(signed(10), name=f"v{lane}")
            m.d.comb += v.eq(Mux(sgn, byte.as_signed(), byte.as_unsigned()))
            acc = Signal(signed(self._sum_bits), name=f"acc{lane}")
            # the reduction including this tap
            cur = Signal(signed(self._sum_bits + 1), name=f"cur{lane}")
            with m.Switch(d.kind):
                with m.Case(VecKind.ADD):
                    m.d.comb += cur.eq(v)
                with m.Case(VecKind.MAXPOOL):
                    m.d.comb += cur.eq(Mux(~in1, acc, Mux(~have | f1, v, Mux(v > acc, v, acc))))
                with m.Default():
                    m.d.comb += cur.eq(Mux(f1, v, acc + v))
            with m.If(v1):
                m.d.sync += acc.eq(cur)
            add = rshift_round((acc << d.sa) + (v << d.sb), d.rs)
            avg = rshift_round(cur * d.mult, d.shift)
            y = Mux(is_add, add, Mux(is_avg, avg, cur))
            ys.append(clamp(y, d.lo, d.hi)[:8])
        m.d.comb += [self.wr_addr.eq(oa1), self.wr_data.eq(Cat(*ys)), self.wr_en.eq(v1 & l1)]

        with m.If(self.busy & ~running & ~v1):
            m.d.sync += [self.busy.eq(0), self.done.eq(1)]
        with m.Else():
            m.d.sync += self.done.eq(0)
        return m
