"""DMA between a generic burst memory port and the engine's buffers.

The memory port (:func:`mem_port_signature`, master side) has a read-command stream
``(addr, len)`` answered by ``len`` words on ``rd_data``, and a write-command stream
``(addr, len)`` followed by ``len`` words on ``wr_data``; addresses count bus words.
Any memory (on-chip RAM, SPRAM, an SDRAM controller, the simulation model) serves it.

A buffer entry wider than the bus takes ``ceil(width / bus_width)`` consecutive bus words,
least significant word first.

Weights pack at their own width: a load into a fixed-point lane group with
``DmaDesc.wbits = b`` reads entries of ``fields · b`` bits (``ceil(fields·b / bus)`` words,
code ``j`` at bits ``[j·b, (j+1)·b)``) and sign-extends every code to the lane's width, so a
fix4 row on a fix8 lane moves 4 bits per weight, not 8.  ``b`` is a power of two below the
lane's width (:func:`packed_widths`; a fix3 row packs at 4 bits): each further width is one
more leg of a multiplexer on every bit of the entry.

A lane group's weight entries of at most half a bus word share words (:func:`weight_slot`):
each takes a slot of the next power of two bits above the lane group's full entry width —
narrower packed entries (``wbits``) use the same slots — ``bus / slot`` slots to a word, entry
``e`` in slot ``e mod (bus/slot)`` of word ``e div (bus/slot)``, least significant slot first.
The DMA writes one entry per cycle, holding a word while it writes its later slots.  (A small
array's weight entries — 8 or 16 bits at two columns — would otherwise take a word each.)

Activation transfers with ``DmaDesc.row_w`` set walk rows across the pixel lanes' banks
(:class:`~rmsmp.rtl.isa.DmaDesc`): a load writes each entry into every lane whose columns
(with their halo) hold it, each lane at its own address; a store gathers a row's entries
from the lanes in column order.  ``row_w = 0`` moves consecutive entries of lane 0 (a load
into every lane of ``lanes``).
"""
from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .arith import one_hot_select, small_mul, stage
from .isa import ADDR_BITS, DIM_BITS, Buffer, DmaDesc
from .mac import REPLICA

__all__ = ["mem_port_signature", "mux_mem_ports", "MEM_CHANNELS", "Dma", "words_per_entry", "weight_slot",
           "packed_widths"]

LEN_BITS = 24
#: registers between a pipelined DMA's buffer-port logic and the engine's buffers
OUT_STAGES = 2
#: entry bits a copy of the weight unpacking's width select steers (pipelined)
UNPACK_COPY_BITS = 64


def mem_port_signature(bus_width: int) -> wiring.Signature:
    cmd = data.StructLayout({"addr": unsigned(32), "len": unsigned(LEN_BITS)})
    return wiring.Signature({
        "rd_cmd": Out(stream.Signature(cmd)),
        "rd_data": In(stream.Signature(bus_width)),
        "wr_cmd": Out(stream.Signature(cmd)),
        "wr_data": Out(stream.Signature(bus_width)),
    })


MEM_CHANNELS = ("rd_cmd", "rd_data", "wr_cmd", "wr_data")


def mux_mem_ports(m, sel, a, b, out, channels=MEM_CHANNELS) -> None:
    """Memory master ``out`` driven by master ``a`` when ``sel`` else by ``b``, on the given
    channels of :func:`mem_port_signature` (the other master sees no handshake)."""
    for name in channels:
        sa, sb, so = getattr(a, name), getattr(b, name), getattr(out, name)
        if name == "rd_data":                 # the slave's answer goes to the selected master
            m.d.comb += [sa.payload.eq(so.payload), sb.payload.eq(so.payload),
                         sa.valid.eq(sel & so.valid), sb.valid.eq(~sel & so.valid),
                         so.ready.eq(Mux(sel, sa.ready, sb.ready))]
        else:
            m.d.comb += [so.valid.eq(Mux(sel, sa.valid, sb.valid)), so.payload.eq(Mux(sel, sa.payload, sb.payload)),
                         sa.ready.eq(sel & so.ready), sb.ready.eq(~sel & so.ready)]


def words_per_entry(width: int, bus_width: int) -> int:
    return -(-width // bus_width)


def packed_widths(lane_bits: int) -> tuple:
    """The packed code widths (``DmaDesc.wbits``) the DMA unpacks into a fix lane group of
    ``lane_bits``-bit lanes: the powers of two from 2 below the lane's width (a code of
    another width packs at the next of them, or at the lane's width)."""
    return tuple(1 << e for e in range(1, max(1, lane_bits - 1).bit_length()) if 1 << e < lane_bits)


def weight_slot(width: int, bus_width: int) -> int:
    """Bits of the slot an entry of a lane group whose full weight entry is ``width`` bits
    takes in a shared bus word: the next power of two, if two or more fit a word; 0 if its
    entries take whole words."""
    slot = 1 << max(0, width - 1).bit_length()
    return slot if 2 * slot <= bus_width else 0


#: entries a streaming store reads ahead of the memory's write channel
STORE_AHEAD = 6
#: words of a load's read data waiting for the assembly register (pipelined)
LOAD_IN = 3


class Dma(wiring.Component):
    """Runs one :class:`DmaDesc` per ``start`` (``store=0``: load into ``buf``; ``store=1``:
    activation buffer → memory).  ``buffers`` maps port names to ``(Buffer code, width)``.
    ``held_desc``: the driver holds ``desc`` while ``busy`` (the core fetches descriptors
    into a register of its own), so the DMA keeps no copy."""

    def __init__(self, *, bus_width: int, buffer_ports: dict, act_width: int, unpack: dict | None = None,
                 held_desc: bool = False, pixels: int = 1, pipelined: bool = True):
        self._bus = bus_width
        self._pipelined = pipelined
        #: cycles from ``act_r.addr`` to its data that the store logic is built for
        self.act_read_latency = 1 + 2 * int(pipelined)
        self._pixels = pixels
        self._held = held_desc
        self._ports = buffer_ports            # name -> (code, signature as the engine sees it)
        self._act_width = act_width
        self._unpack = dict(unpack or {})     # weight port name -> field width (fix lanes)
        members = {"start": In(1), "store": In(1), "desc": In(DmaDesc), "busy": Out(1),
                   "mem": Out(mem_port_signature(bus_width))}
        for name, (_, sig) in buffer_ports.items():
            members[name] = Out(sig)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        bus = self._bus
        L = self.act_read_latency
        d = self.desc if self._held else Signal(DmaDesc)
        writers = {n: (code, getattr(self, n)) for n, (code, _) in self._ports.items() if n != "act_r"}
        busy = self.busy
        if self._pipelined:
            # (pipelined) the buffer ports' address, data and enables leave through registers
            # (``OUT_STAGES``): the unpacking (``wbits``, nibbles, slots) is logic beside this
            # unit, the first register beside it and the last beside the engine's buffers, so
            # neither the logic nor the route across the chip shares a cycle with the other (with
            # one register, placement put it by the buffers and the unpacking's path was mostly
            # route).  ``busy`` stays high as many cycles longer, so an entry lands in its buffer
            # as many cycles before ``busy`` falls as without the registers
            busy, tail = Signal(name="busy_walk"), []
            for s in range(OUT_STAGES):
                tail.append(stage(m, tail[-1] if tail else busy, True, f"busy_tail{s}"))
            m.d.comb += self.busy.eq(busy | Cat(*tail).any())
            for n, (code, port) in list(writers.items()):
                fields = {k: mb.shape for k, mb in port.signature.members.items()}
                shadow = Signal(data.StructLayout(fields), name=f"{n}_next")
                # (the entry's data in registers of their own, off the reset: arith.stage)
                for k in fields:
                    v = getattr(shadow, k)
                    for s in range(OUT_STAGES - 1):
                        v = stage(m, v, True, f"{n}_mid_{k}" if s == 0 else f"{n}_mid{s}_{k}", reset_less=k == "data")
                    if k == "data":
                        v = stage(m, v, True, f"{n}_out_data", reset_less=True)
                        m.d.comb += port.data.eq(v)
                    else:
                        m.d.sync += getattr(port, k).eq(v)
                writers[n] = (code, shadow)
        wpe = {n: words_per_entry(len(p.data), bus) for n, (_, p) in writers.items()}
        max_wpe = max(wpe.values())
        sr = Signal(max_wpe * bus, reset_less=True)       # (data: off the reset, arith.stage)
        k = Signal(range(max(max_wpe, words_per_entry(self._act_width, bus)) + 1))
        i = Signal(ADDR_BITS + 1)
        n_wpe = Signal(range(max_wpe + 1))
        # narrow widths per unpacking port: b -> (bus words per entry, fields)
        narrow = {}
        for n, lane in self._unpack.items():
            fields = len(writers[n][1].data) // lane
            narrow[n] = {b: (words_per_entry(fields * b, bus), fields) for b in packed_widths(lane)}
        # lane groups whose weight entries share words: port -> log2(slots per word)
        shares = {n: (bus // weight_slot(len(port.data), bus)).bit_length() - 1
                  for n, (code, port) in writers.items()
                  if code >= Buffer.WEIGHT0 and weight_slot(len(port.data), bus)}
        max_lg = max(shares.values(), default=0)
        lg = Signal(range(max_lg + 1))                   # log2(slots per word), 0: none
        m.d.comb += n_wpe.eq(1)
        with m.Switch(d.buf):
            for n, (code, _) in writers.items():
                with m.Case(code):
                    m.d.comb += [n_wpe.eq(wpe[n]), lg.eq(shares.get(n, 0))]
                    if n in narrow:
                        with m.Switch(d.wbits):
                            for b, (w, _) in narrow[n].items():
                                with m.Case(b):
                                    m.d.comb += n_wpe.eq(w)
        act_wpe = words_per_entry(self._act_width, bus)
        # 4-bit activations move as nibbles when an entry's nibbles fill whole bus words
        nib_ok = self._act_width // 2 >= bus and (self._act_width // 2) % bus == 0
        nib_wpe = words_per_entry(self._act_width // 2, bus)
        nib = d.nib if nib_ok else Const(0, 1)
        s_wpe = Mux(nib, nib_wpe, act_wpe) if nib_ok else Const(act_wpe)
        if nib_ok:
            with m.If((d.buf == Buffer.ACT) & nib):
                m.d.comb += n_wpe.eq(nib_wpe)
        rd, wr = self.mem.rd_cmd, self.mem.wr_cmd
        # the last entry and the last bus word of an entry, as the walk's comparisons take them
        # (pipelined: in registers, valid from the cycle after ``start`` on — the descriptor is
        # steady by then and no comparison is made before — so no subtractor or decode of the
        # descriptor sits before the decisions that steer the assembly register and the buffers)
        last_i, last_nk, last_sk = d.count - 1, n_wpe - 1, s_wpe - 1
        if self._pipelined:
            last_i = Signal.like(d.count, name="last_entry")
            last_nk, last_sk = Signal.like(n_wpe, name="last_load_word"), Signal.like(k, name="last_store_word")
            m.d.sync += [last_i.eq(d.count - 1), last_nk.eq(n_wpe - 1), last_sk.eq(s_wpe - 1)]

        # -- the activation walker: entry i's row base, column x, and per pixel lane its
        # column in the lane (loads) / the lane and column an entry is read from (stores).
        # One pixel lane: entries consecutive from buf_addr (the compiler never sets row_w)
        P = self._pixels
        act_w = writers["act_w"][1]
        entry_done = Signal()                          # a load's entry is written this cycle
        if P == 1:
            m.d.comb += [act_w.addr[0].eq(d.buf_addr + i),
                         act_w.en[0].eq((entry_done & (d.buf == Buffer.ACT)).replicate(len(act_w.en[0])))]
            cur_addr, next_addr, cur_lane, next_lane = d.buf_addr + i, d.buf_addr + i + 1, 0, 0
            x = rbase = s_lane = s_lx = n_x = n_rbase = n_lane = n_lx = None
        else:
            rows = d.row_w != 0
            x, rbase = Signal(DIM_BITS), Signal(ADDR_BITS)
            off = [Signal(DIM_BITS + 4, name=f"off{p}") for p in range(P)]        # p·step
            lx = [Signal(signed(DIM_BITS + 5), name=f"lx{p}") for p in range(P)]  # x - p·step
            s_lane, s_lx = Signal(range(P)), Signal(DIM_BITS)
            row_end = x == d.row_w - 1
            lanes = Mux(d.lanes == 0, 1, d.lanes)
            with m.If(self.start):
                m.d.sync += [x.eq(0), rbase.eq(self.desc.buf_addr), s_lane.eq(0), s_lx.eq(0)]
                m.d.sync += [off[p].eq(p * self.desc.step) for p in range(1, P)]
                m.d.sync += [lx[p].eq(-(p * self.desc.step)) for p in range(P)]
            with m.Elif(entry_done & rows):
                with m.If(row_end):
                    m.d.sync += [x.eq(0), rbase.eq(rbase + d.pitch)] + [lx[p].eq(-off[p]) for p in range(P)]
                with m.Else():
                    m.d.sync += [x.eq(x + 1)] + [lx[p].eq(lx[p] + 1) for p in range(P)]
            for p in range(P):
                ok = Mux(rows, lanes[p] & (lx[p] >= d.lo) & (lx[p] < d.hi), lanes[p])
                m.d.comb += [act_w.addr[p].eq(Mux(rows, rbase + lx[p], d.buf_addr + i)),
                             act_w.en[p].eq((entry_done & (d.buf == Buffer.ACT) & ok)
                                                 .replicate(len(act_w.en[p])))]
            # a store's next entry: the next column of the lane, the next lane, or the next row
            n_x, n_rbase, n_lane, n_lx = Signal.like(x), Signal.like(rbase), Signal.like(s_lane), Signal.like(s_lx)
            m.d.comb += [n_x.eq(x + 1), n_rbase.eq(rbase), n_lane.eq(s_lane), n_lx.eq(s_lx + 1)]
            with m.If(row_end):
                m.d.comb += [n_x.eq(0), n_rbase.eq(rbase + d.pitch), n_lane.eq(0), n_lx.eq(0)]
            with m.Elif(s_lx == d.step - 1):
                m.d.comb += [n_lane.eq(s_lane + 1), n_lx.eq(0)]
            cur_addr = Mux(rows, rbase + s_lx, d.buf_addr + i)
            next_addr = Mux(rows, n_rbase + n_lx, d.buf_addr + i + 1)
            cur_lane, next_lane = Mux(rows, s_lane, 0), Mux(rows, n_lane, 0)

        # a store reads the buffer at registered addresses: ``ra``/``rl`` the entry being read,
        # ``na``/``nl`` the one after it, and the walker one entry ahead of ``ra`` (primed as the
        # write command is taken) — no adder or descriptor decode between a register here and
        # the banks' read address across the chip
        ra, na = Signal(ADDR_BITS, name="st_addr"), Signal(ADDR_BITS, name="st_next_addr")
        rl, nl = Signal(range(max(P, 2)), name="st_lane"), Signal(range(max(P, 2)), name="st_next_lane")

        # (pipelined) what the DMA presents to the banks is itself a register, ``pa``/``pl``, set
        # with the walk as the state that presents it is entered: no state decode or
        # multiplexer before the route across the chip to the banks
        pa, pl = Signal(ADDR_BITS, name="st_read_addr"), Signal(range(max(P, 2)), name="st_read_lane")
        m.d.comb += [self.act_r.addr.eq(pa), self.act_r.lane.eq(pl)] if self._pipelined else []

        def present(addr, lane):
            return [pa.eq(addr), pl.eq(lane)] if self._pipelined else []

        def store_prime():
            walk = [] if P == 1 else [x.eq(n_x), rbase.eq(n_rbase), s_lane.eq(n_lane), s_lx.eq(n_lx)]
            return ([ra.eq(cur_addr), rl.eq(cur_lane), na.eq(next_addr), nl.eq(next_lane)] + walk
                    + present(cur_addr, cur_lane))

        def store_advance(then_next=False):
            """The walk one entry on; ``then_next``: the state entered presents the new next entry
            (else the new current one)."""
            if P == 1:
                na_new, nl_new, walk = na + 1, 0, []        # (one lane: always lane 0)
            else:
                na_new, nl_new = Mux(rows, n_rbase + n_lx, na + 1), Mux(rows, n_lane, 0)
                walk = [rl.eq(nl), nl.eq(nl_new), x.eq(n_x), rbase.eq(n_rbase), s_lane.eq(n_lane), s_lx.eq(n_lx)]
            shown = present(na_new, nl_new) if then_next else present(na, nl)
            return [ra.eq(na), na.eq(na_new)] + walk + shown

        # a buffer port's address and data follow the entry being assembled; only its
        # enable is gated (the entry is written the cycle its last bus word arrives).  A
        # shared word's later slots come from ``hold``, shifted down a slot per entry
        spill = Signal()
        hold = Signal(bus)
        j = Signal(range(max(2, 1 << max_lg)))          # the slot being written
        # (pipelined) the memory's read data lands in a small FIFO first: what steers the
        # assembly register — a word is here — is then a register of this unit, not the
        # memory's valid through the core's and the board's port multiplexers
        if self._pipelined:
            m.submodules.load_in = lfifo = SyncFIFOBuffered(width=bus, depth=LOAD_IN)
            m.d.comb += [lfifo.w_en.eq(self.mem.rd_data.valid), lfifo.w_data.eq(self.mem.rd_data.payload),
                         self.mem.rd_data.ready.eq(lfifo.w_rdy)]
            word, word_valid, take_word = lfifo.r_data, lfifo.r_rdy, lfifo.r_en
        else:
            word, word_valid, take_word = self.mem.rd_data.payload, self.mem.rd_data.valid, self.mem.rd_data.ready
        top = Mux(spill, hold, word)
        after = Signal(bus)                              # ``top`` without its lowest slot
        last_j = Signal.like(j)                          # a shared word's last slot
        len_words = Signal(LEN_BITS, name="len_words_next")   # bus words a load reads
        m.d.comb += len_words.eq(small_mul(d.count, n_wpe, LEN_BITS))
        with m.Switch(lg):
            for lgv in sorted(set(shares.values())):
                with m.Case(lgv):
                    m.d.comb += [after.eq(top >> (bus >> lgv)), last_j.eq((1 << lgv) - 1),
                                 len_words.eq((d.count + (1 << lgv) - 1) >> lgv)]
        store_len = small_mul(d.count, s_wpe, LEN_BITS)   # bus words a store writes
        if self._pipelined:
            # (pipelined) the commands' lengths in registers, set in the cycle after ``start``
            # (``SETUP``) from the then steady descriptor: no multiplier or ``wbits`` decode
            # sits before the memory controller's burst counter across the chip
            len_q, store_len_q = Signal(LEN_BITS, name="len_words"), Signal(LEN_BITS, name="store_len")
            m.d.sync += [len_q.eq(len_words), store_len_q.eq(store_len)]
            len_words, store_len = len_q, store_len_q
        nxt = Signal(max_wpe * bus)
        m.d.comb += nxt.eq(Cat(sr[bus:], top))
        for n, (_, port) in writers.items():
            m.d.comb += port.data.eq(nxt[(max_wpe - wpe[n]) * bus:])
            if n != "act_w":
                m.d.comb += port.addr.eq(d.buf_addr + i)
            elif nib_ok:                                 # widen the nibbles of a 4-bit tensor
                src = nxt[(max_wpe - nib_wpe) * bus:]
                with m.If(nib):
                    m.d.comb += port.data.eq(Cat(Cat(src[4 * j:4 * j + 4], (src[4 * j + 3] & d.nib_signed).replicate(4))
                                                 for j in range(self._act_width // 8)))
            if n in narrow:
                # the entry at the lane's width or sign-extended from a packed width, selected
                # by one-hot registers that follow ``wbits`` (steady from the cycle after
                # ``start``, before the first word arrives), a copy per ``UNPACK_COPY_BITS``
                # of the entry: the unpacking of a wide lane group (576 bits for 9 fix8 rows of
                # 8 columns) had the ``wbits`` decode fanning out to every bit, and congested
                # the routing around it
                lane = self._unpack[n]
                full = nxt[(max_wpe - wpe[n]) * bus:]
                cands = [[full[j * lane:(j + 1) * lane] for j in range(len(port.data) // lane)]]
                for b, (w, fields) in narrow[n].items():
                    src = nxt[(max_wpe - w) * bus:]
                    cands.append([Cat(src[j * b:(j + 1) * b], src[(j + 1) * b - 1].replicate(lane - b))
                                  for j in range(fields)])
                per = max(1, UNPACK_COPY_BITS // lane)          # fields a select copy steers
                parts = []
                for c0 in range(0, len(cands[0]), per):
                    packed = Cat(d.wbits == b for b in narrow[n])
                    sel = Cat(~packed.any(), packed)              # another ``wbits``: the lane's width
                    if self._pipelined:
                        sel = stage(m, sel, True, f"{n}_wsel{c0 // per}_{REPLICA}")
                    parts += [one_hot_select(sel, [c[j] for c in cands])
                              for j in range(c0, min(c0 + per, len(cands[0])))]
                m.d.comb += port.data.eq(Cat(parts))

        storing = Signal()                               # (pipelined) the op is a store
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    if not self._held:
                        m.d.sync += d.eq(self.desc)
                    m.d.sync += [i.eq(0), k.eq(0), busy.eq(1)]
                    if self._pipelined:
                        m.d.sync += storing.eq(self.store)
                        m.next = "SETUP"
                    else:
                        with m.If(self.store):
                            m.next = "WCMD"
                        with m.Else():
                            m.next = "RCMD"
            if self._pipelined:
                with m.State("SETUP"):          # the command lengths are being registered
                    with m.If(storing):
                        m.next = "WCMD"
                    with m.Else():
                        m.next = "RCMD"
            # -- load: one burst, entries assembled from bus words ------------------------
            with m.State("RCMD"):
                m.d.comb += [rd.valid.eq(1), rd.payload.addr.eq(d.ext_addr), rd.payload.len.eq(len_words)]
                with m.If(d.count == 0):
                    m.d.sync += busy.eq(0)
                    m.next = "IDLE"
                with m.Elif(rd.ready):
                    m.next = "RECV"
            with m.State("RECV"):
                # an entry is written the cycle its last bus word arrives: one word per cycle
                m.d.comb += take_word.eq(1)
                with m.If(word_valid):
                    m.d.sync += sr.eq(nxt)
                    with m.If(k == last_nk):
                        m.d.comb += entry_done.eq(1)
                        for n, (code, port) in writers.items():
                            if n != "act_w":
                                m.d.comb += port.en.eq(((d.buf == code).replicate(len(port.en))))
                        m.d.sync += [k.eq(0), i.eq(i + 1)]
                        with m.If(i == last_i):
                            m.d.sync += busy.eq(0)
                            m.next = "IDLE"
                        if shares:
                            with m.Elif(lg != 0):
                                m.d.sync += [hold.eq(after), j.eq(1)]
                                m.next = "SPILL"
                    with m.Else():
                        m.d.sync += k.eq(k + 1)
            if shares:
                # -- a shared word's slots 1 … 2^lg - 1, one entry per cycle ----------------
                with m.State("SPILL"):              # (weight buffers only)
                    m.d.comb += spill.eq(1)
                    for n, (code, port) in writers.items():
                        if n != "act_w":
                            m.d.comb += port.en.eq(((d.buf == code).replicate(len(port.en))))
                    m.d.sync += [hold.eq(after), j.eq(j + 1), i.eq(i + 1)]
                    with m.If(i == last_i):
                        m.d.sync += busy.eq(0)
                        m.next = "IDLE"
                    with m.Elif(j == last_j):
                        m.next = "RECV"
            # -- store: activation entries split into bus words ----------------------------
            streams = act_wpe == 1 or (nib_ok and nib_wpe == 1)     # some stores move a word an entry
            ahead_fifo = streams and self._pipelined                  # (a compact core: no FIFO)
            if self._pipelined:
                # (pipelined) every store's words leave through a small FIFO: the memory's ready
                # steers only the FIFO's read side, the assembly register and the buffer's read
                # address follow the FIFO's room, a register of this unit
                ahead = STORE_AHEAD
                m.submodules.store_ahead = sfifo = SyncFIFOBuffered(width=bus, depth=ahead)
                m.d.comb += [self.mem.wr_data.valid.eq(sfifo.r_rdy), self.mem.wr_data.payload.eq(sfifo.r_data),
                             sfifo.r_en.eq(self.mem.wr_data.ready)]
            if ahead_fifo:
                # s_inflight bit n: an entry was read n + 1 cycles ago (the buffer answers in L)
                sent, s_inflight = Signal(ADDR_BITS + 1), Signal(L)
            # a 4-bit tensor's entry leaves as its bytes' low nibbles
            packed = Cat(self.act_r.data[8 * j:8 * j + 4] for j in range(self._act_width // 8))
            entry = Mux(nib, packed, self.act_r.data) if nib_ok else self.act_r.data
            with m.State("WCMD"):
                m.d.comb += [wr.valid.eq(1), wr.payload.addr.eq(d.ext_addr),
                             wr.payload.len.eq(store_len)]
                with m.If(d.count == 0):
                    m.d.sync += busy.eq(0)
                    m.next = "IDLE"
                with m.Elif(wr.ready):
                    m.d.sync += store_prime()
                    m.next = "READ"
                    if ahead_fifo:                  # one word an entry: straight to the read-ahead
                        m.d.sync += [sent.eq(0), s_inflight.eq(0)]
                        with m.If(s_wpe == 1):
                            m.next = "STREAM"
            # the entry's address, held until the buffer answers (act_read_latency cycles on)
            reads = ["READ"] + [f"READ{n}" for n in range(2, L + 1)]
            for n, name in enumerate(reads):
                with m.State(name):
                    if not self._pipelined:
                        m.d.comb += [self.act_r.addr.eq(ra), self.act_r.lane.eq(rl)]
                    if n + 1 < L:
                        m.next = reads[n + 1]
                    else:
                        m.d.sync += present(na, nl)     # (pipelined) the next entry's, from LATCH on
                        m.next = "LATCH"
            with m.State("LATCH"):
                m.d.sync += [sr.eq(entry), k.eq(0)]
                m.next = "SEND"
            # one bus word an entry: entries are read ahead into a small FIFO while it has
            # room, and the memory's write channel takes them from it — the memory's ready
            # never reaches the buffer's read address in the same cycle
            if ahead_fifo:
                with m.State("STREAM"):
                    # (one entry short of full: the FIFO's inner part takes a write whatever
                    # its output register holds)
                    room = (sfifo.level + sum(s_inflight[n] for n in range(L))) < ahead - 1
                    issue = room & (i != d.count)
                    m.d.comb += [sfifo.w_en.eq(s_inflight[L - 1]), sfifo.w_data.eq(entry[:bus])]
                    m.d.sync += s_inflight.eq(Cat(issue, s_inflight[:L - 1]))
                    with m.If(issue):
                        m.d.sync += [i.eq(i + 1)] + store_advance()
                    with m.If(sfifo.r_rdy & self.mem.wr_data.ready):
                        m.d.sync += sent.eq(sent + 1)
                        with m.If(sent == last_i):
                            m.d.sync += busy.eq(0)
                            m.next = "IDLE"
            elif streams:
                # (compact) the read port answers the address of the cycle before, so the next
                # entry's address is presented as this one is taken (else held)
                with m.State("STREAM"):
                    take = self.mem.wr_data.ready
                    m.d.comb += [self.mem.wr_data.valid.eq(1), self.mem.wr_data.payload.eq(entry[:bus]),
                                 self.act_r.addr.eq(Mux(take, na, ra)), self.act_r.lane.eq(Mux(take, nl, rl))]
                    with m.If(take):
                        m.d.sync += [i.eq(i + 1)] + store_advance()
                        with m.If(i == last_i):
                            m.d.sync += busy.eq(0)
                            m.next = "IDLE"
            with m.State("SEND"):
                # the next entry's address is presented while this one is sent, so with two
                # or more bus words per entry the store streams one word per cycle
                if self._pipelined:
                    m.d.comb += [sfifo.w_en.eq(1), sfifo.w_data.eq(sr[:bus])]
                    take = sfifo.w_rdy
                else:
                    m.d.comb += [self.act_r.addr.eq(na), self.act_r.lane.eq(nl),
                                 self.mem.wr_data.valid.eq(1), self.mem.wr_data.payload.eq(sr[:bus])]
                    take = self.mem.wr_data.ready
                with m.If(take):
                    m.d.sync += [sr.eq(sr >> bus), k.eq(k + 1)]
                    with m.If(k == last_sk):
                        m.d.sync += [i.eq(i + 1), k.eq(0)] + store_advance(then_next=True)
                        with m.If(i == last_i):
                            if self._pipelined:         # done when the FIFO has passed it all on
                                m.next = "DRAIN"
                            else:
                                m.d.sync += busy.eq(0)
                                m.next = "IDLE"
                        with m.Else():
                            if self._pipelined:
                                # the next entry's address has been presented since the
                                # latch before this entry's words (three or more cycles): its
                                # data is there a cycle from now
                                m.next = "LATCH"
                            elif act_wpe >= 2:
                                m.d.sync += sr.eq(entry)
                            else:
                                m.next = "READ"
            if self._pipelined:
                with m.State("DRAIN"):
                    with m.If(sfifo.level == 0):
                        m.d.sync += busy.eq(0)
                        m.next = "IDLE"
        return m
