"""SDR SDRAM controller serving :func:`rmsmp.rtl.dma.mem_port_signature` (32-bit words on a
16-bit chip, e.g. the ULX3S's 32 MB AS4C16M16SA).

One 32-bit word is a burst of two 16-bit columns (mode register: burst length 2, sequential,
CAS latency ``cl``).  A read or write burst opens the row, issues one READ/WRITE per word
every two cycles while the row lasts, and closes it (PRECHARGE) at a row boundary, at the
end, or when a refresh is due; refreshes (PRECHARGE ALL + AUTO REFRESH) run every
``refresh_cycles``.  After reset: ``init_cycles`` of NOP with CKE high, PRECHARGE ALL, two
AUTO REFRESH, LOAD MODE REGISTER.

Word address ``w`` maps to column ``2·w mod 2^col_bits``, then bank, then row (row-major
bursts stay in one row for 2^(col_bits−1) words).  Timings are cycles at the controller's
clock (``SdramTiming.at(clock_hz)`` rounds the chip's nanoseconds up).  The pins are plain
signals (``dq_o``/``dq_oe``/``dq_i`` for the bidirectional data); the board wraps them in I/O
buffers, the test drives them from an SDRAM model that checks every timing rule.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import ceil

from amaranth import Cat, Const, Module, ShapeCastable, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.fifo import AsyncFIFOBuffered, SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .dma import LEN_BITS, mem_port_signature

__all__ = ["SdramGeometry", "SdramTiming", "SdramController", "MemPortCrossing", "Cmd", "PIN_NAMES",
           "sdram_pins_signature"]


class Cmd:
    """(ras_n, cas_n, we_n) of the SDRAM commands (cs_n low)."""
    NOP = (1, 1, 1)
    ACTIVE = (0, 1, 1)
    READ = (1, 0, 1)
    WRITE = (1, 0, 0)
    PRECHARGE = (0, 1, 0)
    REFRESH = (0, 0, 1)
    MODE = (0, 0, 0)


@dataclass(frozen=True)
class SdramGeometry:
    row_bits: int = 13
    col_bits: int = 9
    bank_bits: int = 2

    @property
    def words(self) -> int:
        """32-bit words the chip holds."""
        return 1 << (self.row_bits + self.col_bits + self.bank_bits - 1)


@dataclass(frozen=True)
class SdramTiming:
    """Cycles: tRP, tRCD, tRC (refresh to next command), tRAS, tWR, CAS latency, refresh
    interval, power-up wait."""
    rp: int = 2
    rcd: int = 2
    rc: int = 4
    ras: int = 3
    wr: int = 2
    cl: int = 2
    refresh_cycles: int = 390
    init_cycles: int = 5000

    @classmethod
    def at(cls, clock_hz: float, *, t_rp=18e-9, t_rcd=18e-9, t_rc=60e-9, t_ras=42e-9, t_wr=12e-9,
           t_refi=7.8e-6, t_init=200e-6, cl=None, t_ck_cl2=10e-9) -> "SdramTiming":
        """The datasheet's nanoseconds (AS4C16M16SA-6, the ULX3S's chip) in cycles of
        ``clock_hz``; the CAS latency the chip allows at that clock (``cl`` None: 2 down to
        a ``t_ck_cl2`` period — 10 ns, 100 MHz — else 3)."""
        c = lambda t: max(1, ceil(t * clock_hz - 1e-9))  # noqa: E731
        if cl is None:
            cl = 2 if 1 / clock_hz >= t_ck_cl2 - 1e-12 else 3
        return cls(rp=c(t_rp), rcd=c(t_rcd), rc=c(t_rc), ras=c(t_ras), wr=c(t_wr) + 1, cl=cl,
                   refresh_cycles=int(t_refi * clock_hz) - 16, init_cycles=c(t_init))


#: the chip's pins as members of :class:`SdramController` (active-low names end in ``_n``)
PIN_NAMES = ("cke", "cs_n", "ras_n", "cas_n", "we_n", "ba", "a", "dqm", "dq_o", "dq_oe", "dq_i")


def _addr_bits(g: SdramGeometry) -> int:
    return max(g.row_bits, g.col_bits + 1, 11)


def sdram_pins_signature(g: SdramGeometry = SdramGeometry()) -> wiring.Signature:
    """The chip's pins, driven by the controller side (``dq_i`` comes in)."""
    return wiring.Signature({
        "cke": Out(1), "cs_n": Out(1, init=1), "ras_n": Out(1, init=1), "cas_n": Out(1, init=1),
        "we_n": Out(1, init=1), "ba": Out(g.bank_bits), "a": Out(_addr_bits(g)), "dqm": Out(2, init=0b11),
        "dq_o": Out(16), "dq_oe": Out(1), "dq_i": In(16)})


def _one_ahead(m: Module, src, name: str):
    """``src`` (a stream the controller takes) through a one-entry :class:`SyncFIFOBuffered` (a
    register, not a memory: yosys's opt_mem asserts on SyncFIFO's depth-1 memory): its ``ready``
    then comes from the FIFO's level register.  Returns (an entry is held, its
    payload, the signal that takes it)."""
    m.submodules[f"{name}_ahead"] = fifo = SyncFIFOBuffered(width=len(Value.cast(src.payload)), depth=1)
    m.d.comb += [fifo.w_en.eq(src.valid), fifo.w_data.eq(src.payload), src.ready.eq(fifo.w_rdy)]
    shape = src.payload.shape()                         # (a command's layout: a view of the entry)
    return fifo.r_rdy, shape(fifo.r_data) if isinstance(shape, ShapeCastable) else fifo.r_data, fifo.r_en


class SdramController(wiring.Component):
    """``port``: the memory port the core (or the host link) masters; the other members are
    the chip's pins."""

    def __init__(self, geometry: SdramGeometry = SdramGeometry(), timing: SdramTiming = SdramTiming(),
                 *, read_latency: int | None = None):
        self.g, self.t = geometry, timing
        # cycles from the edge a READ is registered by the chip to the edge its first half
        # is captured here (CL; boards add their input register stages)
        self.read_latency = timing.cl if read_latency is None else read_latency
        super().__init__({"port": Out(mem_port_signature(32).flip()),
                          **sdram_pins_signature(geometry).members})

    def elaborate(self, platform):
        m = Module()
        g, t = self.g, self.t
        p = self.port
        wpr = 1 << (g.col_bits - 1)                 # words per row

        # -- command outputs (registered) --------------------------------------------------
        cmd = Signal(3, init=0b111)
        m.d.comb += [self.cs_n.eq(0), Cat(self.we_n, self.cas_n, self.ras_n).eq(cmd)]
        m.d.sync += [cmd.eq(0b111), self.dq_oe.eq(0)]

        def issue(c, *, a=None, ba=None):
            ras, cas, we = c
            m.d.sync += cmd.eq((ras << 2) | (cas << 1) | we)
            if a is not None:
                m.d.sync += self.a.eq(a)
            if ba is not None:
                m.d.sync += self.ba.eq(ba)

        # -- burst state -----------------------------------------------------------------
        addr = Signal(32)                              # next word
        left = Signal(LEN_BITS)
        # ``left == 0`` in a register, set with ``left``: the 24-bit compare steering the FSM,
        # then ``left``'s own multiplexer, was the controller's path at 100 MHz (10.0 ns)
        none_left = Signal(init=1)      # (no burst after reset: a refresh then resumes none)
        writing = Signal()
        col = addr[:g.col_bits - 1]
        bank = addr[g.col_bits - 1:g.col_bits - 1 + g.bank_bits]
        row = addr[g.col_bits - 1 + g.bank_bits:g.col_bits - 1 + g.bank_bits + g.row_bits]
        wait = Signal(range(max(t.init_cycles, t.rc, 64) + 1))
        ras_wait = Signal(range(t.ras + 1))           # tRAS since ACTIVE
        wr_wait = Signal(range(t.wr + 1))             # tWR since the last write half
        wr_high = Signal(16)
        m.d.sync += wait.eq(wait - (wait != 0))
        m.d.sync += ras_wait.eq(ras_wait - (ras_wait != 0))
        m.d.sync += wr_wait.eq(wr_wait - (wr_wait != 0))

        # -- refresh timer ---------------------------------------------------------------
        ref_cnt = Signal(range(t.refresh_cycles + 1), init=t.refresh_cycles)
        ref_due = Signal()
        ref_ack = Signal()
        with m.If(ref_cnt == 0):
            m.d.sync += [ref_cnt.eq(t.refresh_cycles), ref_due.eq(1)]
        with m.Else():
            m.d.sync += ref_cnt.eq(ref_cnt - 1)
        with m.If(ref_ack):
            m.d.sync += ref_due.eq(0)

        # -- read data: halves arrive read_latency cycles after the READ -----------------
        # issue_rd is the cycle before the READ is on the pins; the chip registers it at the
        # end of the next cycle, and its first half is captured read_latency edges later
        lat = self.read_latency
        inflight = Signal(lat + 2)                      # bit k: a READ issued k cycles ago
        issue_rd = Signal()
        m.d.sync += inflight.eq(Cat(issue_rd, inflight[:-1]))
        m.submodules.rfifo = rfifo = SyncFIFOBuffered(width=32, depth=8)
        low, have_low = Signal(16), Signal()
        m.d.comb += rfifo.w_en.eq(0)
        with m.If(inflight[lat]):
            m.d.sync += [low.eq(self.dq_i), have_low.eq(1)]
        with m.If(have_low):
            m.d.comb += [rfifo.w_data.eq(Cat(low, self.dq_i)), rfifo.w_en.eq(1)]
            m.d.sync += have_low.eq(0)
        m.d.comb += [p.rd_data.payload.eq(rfifo.r_data), p.rd_data.valid.eq(rfifo.r_rdy),
                     rfifo.r_en.eq(p.rd_data.ready)]
        # words issued but not yet in the FIFO
        pending = Signal(range(lat + 4))
        m.d.comb += pending.eq(sum(inflight[i] for i in range(len(inflight))) + have_low)
        # room for one more word, in a register: computed a cycle before it is read, which is
        # safe because READs are two or more cycles apart — in a cycle where one may issue,
        # none issued in the one before, so the words held and pending have not grown since.
        # (Computed at once, the FIFO's level, the count and the compare steered the command
        # and address registers: the controller's worst path in the 528-MAC ULX3S core at
        # 90 MHz, 12.0 ns, from the read FIFO's write enable to the address pins' register)
        room = Signal()
        m.d.sync += room.eq(rfifo.level + pending + 1 < rfifo.depth)

        # -- commands, and the write data one word ahead, each through a one-entry FIFO of
        # its own, so the port's ``ready`` is a flip-flop: the FSM's decision (its wait
        # counter, the refresh, the other command) no longer drives the read enable of the
        # FIFO across the clock crossing — the controller's paths at 100 MHz (12.7 ns: ``wait``
        # → ``rd_cmd.ready`` → the crossing's read data register; then 12.8 ns through
        # ``wr_data``).  Both commands take the same extra cycle, so their order is as before;
        # a word is written every two cycles, and the one after enters in the cycle between
        ahead = {name: _one_ahead(m, getattr(p, name), name) for name in ("wr_cmd", "rd_cmd", "wr_data")}
        wd_held, wd_q, wd_take = ahead["wr_data"]
        dqm = Signal(2, init=0b11)
        m.d.comb += self.dqm.eq(dqm)
        m.d.comb += self.cke.eq(1)

        with m.FSM():
            with m.State("POWERUP"):
                m.d.sync += wait.eq(t.init_cycles)
                m.next = "INIT_WAIT"
            # after the power-up wait: PRECHARGE ALL, two AUTO REFRESH, then the mode register
            steps = [("INIT_WAIT", Cmd.PRECHARGE, 1 << 10, t.rp), ("INIT_REF1", Cmd.REFRESH, None, t.rc),
                     ("INIT_REF2", Cmd.REFRESH, None, t.rc)]
            for k, (state, c, a, after) in enumerate(steps):
                with m.State(state):
                    with m.If(wait == 0):
                        issue(c, a=a)
                        m.d.sync += wait.eq(after)
                        m.next = steps[k + 1][0] if k + 1 < len(steps) else "INIT_MODE"
            with m.State("INIT_MODE"):
                with m.If(wait == 0):
                    # burst length 2, sequential, CAS latency cl, write burst = programmed
                    issue(Cmd.MODE, a=(t.cl << 4) | 0b001, ba=0)
                    m.d.sync += [wait.eq(3), dqm.eq(0)]
                    m.next = "IDLE"
            with m.State("IDLE"):
                with m.If(wait == 0):
                    with m.If(ref_due):
                        m.d.comb += ref_ack.eq(1)
                        issue(Cmd.PRECHARGE, a=1 << 10)       # all banks are closed here anyway
                        m.d.sync += wait.eq(t.rp)
                        m.next = "REFRESH"
                    for name, wr in (("wr_cmd", 1), ("rd_cmd", 0)):
                        held, q, take = ahead[name]
                        with m.Elif(held):
                            m.d.comb += take.eq(1)
                            m.d.sync += [addr.eq(q.addr), left.eq(q.len), writing.eq(wr),
                                         none_left.eq(q.len == 0)]
                            m.next = "OPEN"
            with m.State("REFRESH"):
                with m.If(wait == 0):
                    issue(Cmd.REFRESH)
                    m.d.sync += wait.eq(t.rc)
                    m.next = "RESUME"
            with m.State("RESUME"):                          # back to a burst cut by a refresh
                with m.If(wait == 0):
                    m.next = "IDLE"
                    with m.If(~none_left):
                        m.next = "OPEN"
            with m.State("OPEN"):
                with m.If(none_left):
                    m.next = "IDLE"
                with m.Elif(wait == 0):
                    issue(Cmd.ACTIVE, a=row, ba=bank)
                    m.d.sync += [wait.eq(t.rcd), ras_wait.eq(t.ras)]
                    m.next = "BURST"
            with m.State("BURST"):
                # one READ/WRITE per word, every two cycles, while the row lasts
                last_in_row = col == wpr - 1
                with m.If(wait == 0):
                    with m.If(none_left | ref_due):
                        m.next = "CLOSE"
                    with m.Elif(writing):
                        with m.If(wd_held):
                            m.d.comb += wd_take.eq(1)
                            issue(Cmd.WRITE, a=Cat(Const(0, 1), col), ba=bank)
                            m.d.sync += [self.dq_o.eq(wd_q[:16]), self.dq_oe.eq(1),
                                         wr_high.eq(wd_q[16:]),
                                         addr.eq(addr + 1), left.eq(left - 1), none_left.eq(left == 1)]
                            m.next = "WHIGH"
                    with m.Elif(room):
                        m.d.comb += issue_rd.eq(1)
                        issue(Cmd.READ, a=Cat(Const(0, 1), col), ba=bank)
                        m.d.sync += [addr.eq(addr + 1), left.eq(left - 1), wait.eq(1), none_left.eq(left == 1)]
                        with m.If(last_in_row):
                            m.next = "ROWEND"
            with m.State("WHIGH"):
                m.d.sync += [self.dq_o.eq(wr_high), self.dq_oe.eq(1), wr_wait.eq(t.wr)]
                with m.If(col == 0):                          # crossed into the next row
                    m.next = "CLOSE"
                with m.Else():
                    m.next = "BURST"
            with m.State("ROWEND"):
                with m.If(wait == 0):
                    m.next = "CLOSE"
            with m.State("CLOSE"):
                # writes wait tWR after their last half; tRAS since ACTIVE.  PRECHARGE ALL:
                # ``bank`` already names the next word's bank
                with m.If((wait == 0) & (ras_wait == 0) & (wr_wait == 0)):
                    issue(Cmd.PRECHARGE, a=1 << 10)
                    m.d.sync += wait.eq(t.rp)
                    with m.If(ref_due):
                        m.d.comb += ref_ack.eq(1)
                        m.next = "REFRESH"
                    with m.Else():
                        m.next = "OPEN"
        return m


class MemPortCrossing(wiring.Component):
    """A memory port carried from the core's clock domain (``core_domain``) to a memory
    controller on a clock of its own (``mem_domain``): an SDR SDRAM's 16-bit bus moves a
    32-bit word in two of its cycles, so at twice the core's clock it keeps up with a DMA
    that moves a word a core cycle.  ``up`` is the port the core side masters, ``down`` the
    one the controller serves; each of the four streams passes through an
    :class:`~amaranth.lib.fifo.AsyncFIFOBuffered` (Gray-coded pointers, two-register
    synchronizers, and a register on its read side: with the unbuffered FIFO the
    controller's write path ran from its wait counter through the FIFO's read pointer and
    storage to the chip's data register, 10.2 ns, short of 100 MHz).

    Order: the controller serves one burst at a time and a write burst before a read that
    waits beside it; a write command enters its FIFO before any command the core issues
    after it, and both command FIFOs take the same number of ``mem_domain`` cycles to show
    an entry, so a read issued after a write is served after it, as on one clock."""

    #: entries of the command FIFOs and of the data FIFOs (a power of two and the read
    #: side's register: AsyncFIFOBuffered)
    CMD_DEPTH = 5
    DATA_DEPTH = 17

    def __init__(self, bus_width: int = 32, *, core_domain: str = "sync", mem_domain: str = "mem"):
        self._bus, self._cd, self._md = bus_width, core_domain, mem_domain
        sig = mem_port_signature(bus_width)
        super().__init__({"up": Out(sig.flip()), "down": Out(sig)})

    def elaborate(self, platform):
        m = Module()
        up, down = self.up, self.down
        for name in ("rd_cmd", "wr_cmd", "wr_data", "rd_data"):
            src, dst = (getattr(down, name), getattr(up, name)) if name == "rd_data" else \
                (getattr(up, name), getattr(down, name))
            wd, rd = (self._md, self._cd) if name == "rd_data" else (self._cd, self._md)
            depth = self.DATA_DEPTH if name.endswith("data") else self.CMD_DEPTH
            m.submodules[name] = fifo = AsyncFIFOBuffered(width=len(Value.cast(src.payload)), depth=depth,
                                                          w_domain=wd, r_domain=rd)
            m.d.comb += [fifo.w_en.eq(src.valid), fifo.w_data.eq(src.payload), src.ready.eq(fifo.w_rdy),
                         dst.valid.eq(fifo.r_rdy), dst.payload.eq(fifo.r_data), fifo.r_en.eq(dst.ready)]
        return m
