"""Host link bridge: a framed, checksummed byte protocol → memory bursts and CSR accesses.

The protocol is defined once here (the header layouts, constants and CRC) and spoken by
:mod:`rmsmp.host.link`.  Every multi-byte field is little-endian; ``crc`` is
CRC-16/IBM-3740 (``amaranth.lib.crc.catalog``; poly 0x1021, init 0xFFFF, also known as
CCITT-FALSE, Python's ``binascii.crc_hqx``) over every byte after the sync byte, sent most
significant byte first — so the CRC over a whole frame with its CRC is zero.

Request  (host → board): ``0xA5``, :class:`RequestHeader` (cmd, seq, addr, len),
``payload[4·len], crc[2]``
Response (board → host): ``0x5A``, :class:`ResponseHeader` (status, seq, len),
``payload[4·len], crc[2]``

========== ============================================= ===============================
cmd        request                                       response payload
========== ============================================= ===============================
MEM_WRITE  ``len`` words (≤ ``max_burst``) to word ``addr``  none
MEM_READ   ``len`` words from word ``addr``                 the words
CSR_WRITE  one word to CSR ``addr`` (:class:`CsrAddr`)      none
CSR_READ   CSR ``addr``                                     one word
========== ============================================= ===============================

Nothing is written unless the whole frame arrived with a good CRC.  A bad CRC, an unknown
command, a burst longer than the buffer, a memory access while the core runs, or a UART
framing error is answered with its status (a framing error abandons the frame; its
response carries seq 0), and a frame that stops arriving mid-way is dropped after
``timeout`` cycles of silence — the host retries all of these.

(No ``from __future__ import annotations`` here: ``data.Struct`` reads its annotations.)
"""
import binascii
import enum as _pyenum
import struct

from amaranth import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import crc, data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .csr import csr_signature
from .dma import mem_port_signature

__all__ = ["Cmd", "Status", "SYNC_REQ", "SYNC_RESP", "MAX_BURST", "RequestHeader", "ResponseHeader", "LINK_CRC",
           "HostBridge", "REQUEST_BYTES", "crc16", "encode_request"]

SYNC_REQ = 0xA5
SYNC_RESP = 0x5A
#: words one MEM_WRITE/MEM_READ moves at most (the bridge's buffer; the host splits longer transfers)
MAX_BURST = 256
#: the frames' CRC (CRC-16/IBM-3740 over bytes)
LINK_CRC = crc.catalog.CRC16_IBM_3740(data_width=8)


class RequestHeader(data.Struct):
    cmd: unsigned(8)
    seq: unsigned(8)
    addr: unsigned(32)       # memory word address, or a CSR address
    len: unsigned(16)        # payload words (MEM_WRITE/CSR_WRITE) or words to read


class ResponseHeader(data.Struct):
    status: unsigned(8)
    seq: unsigned(8)         # the request's (0 after a framing error)
    len: unsigned(16)        # payload words


class Cmd(_pyenum.IntEnum):
    MEM_WRITE = 1
    MEM_READ = 2
    CSR_WRITE = 3
    CSR_READ = 4


class Status(_pyenum.IntEnum):
    OK = 0
    BAD_CRC = 1
    BAD_CMD = 2
    BAD_LEN = 3
    BUSY = 4          # memory access while the core runs a program
    FRAMING = 5       # UART stop bit missing: the frame was abandoned


REQUEST_BYTES = RequestHeader.as_shape().size // 8


def crc16(data: bytes) -> int:
    """The link's CRC (:data:`LINK_CRC`, CRC-16/IBM-3740), computed by ``binascii.crc_hqx`` —
    the same function, in C (tests/test_link.py checks they agree)."""
    return binascii.crc_hqx(bytes(data), 0xFFFF)


def encode_request(cmd: Cmd, seq: int, addr: int, length: int, words=()) -> bytes:
    """One request frame, as the host sends it (and a flash image stores it)."""
    head = RequestHeader.const({"cmd": int(cmd), "seq": seq & 0xFF, "addr": addr, "len": length})
    body = head.as_bits().to_bytes(REQUEST_BYTES, "little") + b"".join(struct.pack("<I", w) for w in words)
    return bytes([SYNC_REQ]) + body + struct.pack(">H", crc16(body))


class HostBridge(wiring.Component):
    """``rx``/``tx`` byte streams (from/to the UART) → ``mem`` (burst master) and ``csr``."""

    def __init__(self, *, bus_width: int = 32, max_burst: int = MAX_BURST, timeout: int = 1 << 20):
        if bus_width != 32:
            raise ValueError("the host link moves 32-bit words")
        self._max = max_burst
        self._timeout = timeout
        super().__init__({
            "rx": In(stream.Signature(8, always_ready=True)), "rx_error": In(1),
            "tx": Out(stream.Signature(8)),
            "mem": Out(mem_port_signature(bus_width)), "csr": Out(csr_signature()),
            "core_busy": In(1),
            # where the frame parser is (a boot unit feeding it frames needs to know):
            # ``listening``: a byte on ``rx`` is taken this cycle; ``at_sync``: between frames;
            # ``answered``: a frame is being answered, ``answer_ok`` with status OK
            "listening": Out(1), "at_sync": Out(1), "answered": Out(1), "answer_ok": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        mx = self._max
        m.submodules.buf = buf = Memory(shape=32, depth=mx, init=[])
        bw = buf.write_port(granularity=8)            # payload bytes go straight in
        br = buf.read_port()                          # synchronous: maps to block RAM

        hdr = Signal(RequestHeader)
        cmd, seq, addr, length = hdr.cmd, hdr.seq, hdr.addr, hdr.len
        hdr_bytes = RequestHeader.as_shape().size // 8
        idx = Signal(range(10))                       # byte index within a field group
        nbytes = Signal(18)                           # payload bytes left
        widx = Signal(range(mx + 1))                  # payload words stored / sent
        status = Signal(8)
        idle = Signal(range(self._timeout + 1))
        rdata = Signal(32)                            # CSR read value / word being sent
        rlen = Signal(16)

        rx = self.rx
        byte = rx.payload
        # the buffer's read address leads by one cycle: word 0 waits from CHECK on, WDATA
        # presents the next word as soon as the current one is taken
        m.d.comb += br.addr.eq(0)
        m.d.comb += self.csr.addr.eq(addr[:4])

        # -- response byte source ------------------------------------------------------
        tx = self.tx
        send_byte = Signal(8)
        m.d.comb += tx.payload.eq(send_byte)
        # one CRC unit: over the request's bytes and its CRC while receiving (a good frame
        # leaves the residue, 0), then (restarted at the response's sync byte) over the
        # response's bytes as they are sent
        m.submodules.crc = crcu = LINK_CRC.create()
        sending = Signal()
        m.d.comb += crcu.data.eq(Mux(sending, send_byte, byte))
        crc_byte = Mux(idx == 0, crcu.crc[8:], crcu.crc[:8])    # a CRC goes on the wire high byte first

        def guard(receiving: bool):
            """Last in a receive state: a framing error abandons the frame (reported);
            ``timeout`` cycles of silence mid-frame drop it."""
            if receiving:
                with m.If(~rx.valid):
                    m.d.sync += idle.eq(idle + 1)
                    with m.If(idle == self._timeout):
                        m.next = "SYNC"
            with m.If(self.rx_error):
                m.d.sync += [status.eq(Status.FRAMING), seq.eq(0), rlen.eq(0), idx.eq(0)]
                m.next = "RESP"

        with m.FSM():
            # ------------------------------------------------------------ receive
            with m.State("SYNC"):
                m.d.comb += [crcu.start.eq(1), self.listening.eq(1), self.at_sync.eq(1)]
                m.d.sync += [idx.eq(0), idle.eq(0)]
                with m.If(rx.valid & (byte == SYNC_REQ)):
                    m.next = "HDR"
                guard(False)
            with m.State("HDR"):
                m.d.comb += self.listening.eq(1)
                with m.If(rx.valid):
                    m.d.comb += crcu.valid.eq(1)
                    m.d.sync += [hdr.as_value().word_select(idx, 8).eq(byte), idx.eq(idx + 1), idle.eq(0)]
                    with m.If(idx == hdr_bytes - 1):          # the length's high byte
                        m.d.sync += [idx.eq(0), widx.eq(0)]
                        is_wr = (cmd == Cmd.MEM_WRITE) | (cmd == Cmd.CSR_WRITE)
                        n = Cat(length[:8], byte)
                        m.d.sync += nbytes.eq(Mux(is_wr, n << 2, 0))
                        with m.If(is_wr & (n != 0)):
                            m.next = "PAYLOAD"
                        with m.Else():
                            m.next = "CRC"
                guard(True)
            with m.State("PAYLOAD"):
                m.d.comb += self.listening.eq(1)
                with m.If(rx.valid):
                    m.d.comb += crcu.valid.eq(1)
                    m.d.sync += [idle.eq(0), nbytes.eq(nbytes - 1),
                                 idx.eq(Mux(idx == 3, 0, idx + 1))]
                    m.d.comb += [bw.addr.eq(widx), bw.data.eq(byte.replicate(4)),
                                 bw.en.eq(Mux(widx < mx, Const(1, 4) << idx[:2], 0))]
                    with m.If(idx == 3):
                        m.d.sync += widx.eq(widx + 1)
                    with m.If(nbytes == 1):
                        m.d.sync += idx.eq(0)
                        m.next = "CRC"
                guard(True)
            with m.State("CRC"):
                m.d.comb += self.listening.eq(1)
                with m.If(rx.valid):          # the request's CRC bytes go through the CRC too
                    m.d.comb += crcu.valid.eq(1)
                    m.d.sync += [idx.eq(idx + 1), idle.eq(0)]
                    with m.If(idx == 1):
                        m.next = "CHECK"
                guard(True)
            with m.State("CHECK"):
                ok_len = Signal()
                m.d.comb += ok_len.eq(Mux((cmd == Cmd.CSR_WRITE) | (cmd == Cmd.CSR_READ), length == 1,
                                          (length != 0) & ((cmd != Cmd.MEM_WRITE) | (length <= mx))))
                m.d.sync += [widx.eq(0), rlen.eq(0), idx.eq(0)]
                with m.If(~crcu.match_detected):
                    m.d.sync += status.eq(Status.BAD_CRC)
                    m.next = "RESP"
                with m.Elif((cmd < Cmd.MEM_WRITE) | (cmd > Cmd.CSR_READ)):
                    m.d.sync += status.eq(Status.BAD_CMD)
                    m.next = "RESP"
                with m.Elif(~ok_len):
                    m.d.sync += status.eq(Status.BAD_LEN)
                    m.next = "RESP"
                with m.Elif(((cmd == Cmd.MEM_WRITE) | (cmd == Cmd.MEM_READ)) & self.core_busy):
                    m.d.sync += status.eq(Status.BUSY)
                    m.next = "RESP"
                with m.Else():
                    m.d.sync += status.eq(Status.OK)
                    with m.Switch(cmd):
                        with m.Case(Cmd.MEM_WRITE):
                            m.next = "WCMD"
                        with m.Case(Cmd.MEM_READ):
                            m.d.sync += rlen.eq(length)
                            m.next = "RCMD"
                        with m.Case(Cmd.CSR_WRITE):
                            m.d.comb += [self.csr.wdata.eq(br.data), self.csr.we.eq(1)]
                            m.next = "RESP"
                        with m.Case(Cmd.CSR_READ):
                            m.d.sync += [rdata.eq(self.csr.rdata), rlen.eq(1)]
                            m.next = "RESP"
            # ------------------------------------------------------------ memory
            def burst_cmd(state, stream, then):
                """Offer the burst (addr, length) on a command stream, then go on."""
                with m.State(state):
                    m.d.comb += [stream.valid.eq(1), stream.payload.addr.eq(addr), stream.payload.len.eq(length)]
                    with m.If(stream.ready):
                        m.next = then

            burst_cmd("WCMD", self.mem.wr_cmd, "WDATA")
            with m.State("WDATA"):
                wd = self.mem.wr_data
                m.d.comb += [br.addr.eq(Mux(wd.ready, widx + 1, widx)), wd.payload.eq(br.data), wd.valid.eq(1)]
                with m.If(wd.ready):
                    m.d.sync += widx.eq(widx + 1)
                    with m.If(widx == length - 1):
                        m.next = "RESP"
            burst_cmd("RCMD", self.mem.rd_cmd, "RESP")
            # ------------------------------------------------------------ respond
            with m.State("RESP"):
                # the sync byte, then the header's bytes (the CRC starts after the sync byte)
                resp = Signal(ResponseHeader)
                m.d.comb += [resp.status.eq(status), resp.seq.eq(seq), resp.len.eq(rlen)]
                resp_bytes = ResponseHeader.as_shape().size // 8
                m.d.comb += [send_byte.eq(Mux(idx == 0, SYNC_RESP, resp.as_value().word_select((idx - 1)[:2], 8))),
                             tx.valid.eq(1), sending.eq(1)]
                with m.If(idx == 0):
                    m.d.comb += [crcu.start.eq(1), self.answered.eq(1), self.answer_ok.eq(status == Status.OK)]
                with m.If(tx.ready):
                    with m.If(idx != 0):
                        m.d.comb += crcu.valid.eq(1)
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == resp_bytes):
                        m.d.sync += [idx.eq(0), widx.eq(0)]
                        with m.If(rlen == 0):
                            m.next = "RCRC"
                        with m.Elif(cmd == Cmd.MEM_READ):
                            m.next = "RWORD"
                        with m.Else():
                            m.next = "RBYTES"
            with m.State("RWORD"):                       # take one word from memory
                rd = self.mem.rd_data
                m.d.comb += rd.ready.eq(1)
                with m.If(rd.valid):
                    m.d.sync += rdata.eq(rd.payload)
                    m.next = "RBYTES"
            with m.State("RBYTES"):
                m.d.comb += [send_byte.eq(rdata.word_select(idx[:2], 8)), tx.valid.eq(1), sending.eq(1)]
                with m.If(tx.ready):
                    m.d.comb += crcu.valid.eq(1)
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == 3):
                        m.d.sync += [idx.eq(0), widx.eq(widx + 1)]
                        with m.If(widx == rlen - 1):
                            m.next = "RCRC"
                        with m.Elif(cmd == Cmd.MEM_READ):
                            m.next = "RWORD"
            with m.State("RCRC"):
                m.d.comb += [send_byte.eq(crc_byte), tx.valid.eq(1)]
                with m.If(tx.ready):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == 1):
                        m.d.sync += idx.eq(0)
                        m.next = "SYNC"

        return m
