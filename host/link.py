"""Host side of the board link: the framed, checksummed protocol of :mod:`rmsmp.rtl.bridge`.

:class:`LinkClient` speaks it over any byte transport with ``write(bytes)`` and
``read(n, timeout) -> bytes`` (fewer bytes on timeout): pyserial for a board
(:class:`SerialTransport`), the cocotb UART pins in the board-top test.  Each transaction
is retried on a bad checksum, a reported error (bad CRC, UART framing) or a timeout; a
response for another sequence number is discarded.  What cannot be recovered raises
:class:`LinkError` naming the command, the address and the last failure.
"""
from __future__ import annotations

import struct

from rmsmp.rtl.bridge import MAX_BURST, SYNC_RESP, Cmd, ResponseHeader, Status, crc16, encode_request
from rmsmp.rtl.csr import CsrAddr

from .errors import RmsmpError

__all__ = ["LinkError", "LinkClient", "SerialTransport", "crc16", "encode_request"]


class LinkError(RmsmpError):
    """The board link failed (no answer, persistent errors, refused request)."""


RESPONSE_BYTES = ResponseHeader.as_shape().size // 8


#: statuses worth another try: the frame was damaged on the way
RETRY = (Status.BAD_CRC, Status.FRAMING)


class LinkClient:
    """Memory and CSR access to a board over ``transport``."""

    def __init__(self, transport, *, max_burst: int = MAX_BURST, retries: int = 4, timeout: float = 1.0):
        self.t = transport
        self.max_burst = max_burst
        self.retries = retries
        self.timeout = timeout
        self._seq = 0
        self.retried = 0                    # transactions that needed another try

    # -- one transaction -------------------------------------------------------------
    def _read_response(self, seq: int):
        """(status, payload words) of the response to ``seq``; None on timeout/bad frame."""
        while True:
            b = self.t.read(1, self.timeout)
            if not b:
                return None
            if b[0] != SYNC_RESP:
                continue                                    # resynchronise on the sync byte
            head = self.t.read(RESPONSE_BYTES, self.timeout)
            if len(head) < RESPONSE_BYTES:
                return None
            h = ResponseHeader.from_bits(int.from_bytes(head, "little"))
            status, rseq, n = int(h.status), int(h.seq), int(h.len)
            rest = self.t.read(4 * n + 2, self.timeout)
            if len(rest) < 4 * n + 2:
                return None
            body = head + rest[:-2]
            if struct.unpack(">H", rest[-2:])[0] != crc16(body):
                return ("corrupt", [])
            if status != Status.FRAMING and rseq != seq:
                continue                                    # a stale answer to an earlier try
            words = list(struct.unpack(f"<{n}I", rest[:-2]))
            return (Status(status) if status in Status._value2member_map_ else status, words)

    def transact(self, cmd: Cmd, addr: int, length: int, words=()) -> list[int]:
        last = "no answer"
        for _ in range(self.retries + 1):
            self._seq = (self._seq + 1) & 0xFF
            self.t.write(encode_request(cmd, self._seq, addr, length, words))
            r = self._read_response(self._seq)
            if r is None:
                last = f"no answer within {self.timeout} s"
            elif r[0] == "corrupt":
                last = "response failed its checksum"
            elif r[0] in RETRY:
                last = f"board reported {r[0].name}"
            elif r[0] != Status.OK:
                raise LinkError(f"{cmd.name} at {addr:#x} (len {length}): board answered "
                                f"{getattr(r[0], 'name', r[0])}")
            else:
                return r[1]
            self.retried += 1
            self._drain()
        raise LinkError(f"{cmd.name} at {addr:#x} (len {length}) failed after {self.retries + 1} tries: {last}")

    def _drain(self):
        """Drop what is left of a damaged exchange before trying again."""
        while self.t.read(64, min(self.timeout, 0.05)):
            pass

    # -- the API --------------------------------------------------------------------
    def read_csr(self, reg: CsrAddr) -> int:
        return self.transact(Cmd.CSR_READ, int(CsrAddr(reg).value), 1)[0]

    def write_csr(self, reg: CsrAddr, value: int) -> None:
        self.transact(Cmd.CSR_WRITE, int(CsrAddr(reg).value), 1, [value & 0xFFFFFFFF])

    def write_mem(self, addr: int, words, progress=None) -> None:
        words = list(words)
        for i in range(0, len(words), self.max_burst):
            chunk = words[i:i + self.max_burst]
            self.transact(Cmd.MEM_WRITE, addr + i, len(chunk), chunk)
            if progress:
                progress(len(chunk))

    def read_mem(self, addr: int, n: int) -> list[int]:
        out = []
        for i in range(0, n, self.max_burst):
            k = min(self.max_burst, n - i)
            out += self.transact(Cmd.MEM_READ, addr + i, k)
        return out


class SerialTransport:
    """pyserial port as a link transport."""

    def __init__(self, port: str, baud: int):
        try:
            import serial
        except ImportError as e:              # pragma: no cover - pyserial is a dependency
            raise LinkError("pyserial is needed for serial devices") from e
        try:
            self.s = serial.Serial(port, baud, timeout=0.1)
        except (serial.SerialException, OSError) as e:
            raise LinkError(f"board not found: cannot open {port} ({e})") from None

    def write(self, data: bytes) -> None:
        self.s.write(data)

    def read(self, n: int, timeout: float) -> bytes:
        self.s.timeout = timeout
        return self.s.read(n)

    def close(self):
        self.s.close()
