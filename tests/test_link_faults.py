"""Link faults: dropped, corrupted and duplicated frames each way, and a board reset during a
run or between runs.  The board is a fake that speaks the bridge's frames (rmsmp.rtl.bridge
layouts, the link's CRC) over the memory of a real compiled program, and "runs" it as a
deterministic function of its memory — so a run whose upload was lost, stale or partial
returns different words.  Every run either returns exactly the fault-free result or raises
LinkError; none returns wrong data."""
import hashlib
import random
import struct

import pytest

from rmsmp.generator.config import AcceleratorConfig
from rmsmp.generator.program import RESIDENT_WORDS
from rmsmp.host.link import LinkClient, LinkError, crc16
from rmsmp.host.serial_device import SerialDevice
from rmsmp.rtl.bridge import REQUEST_BYTES, SYNC_REQ, SYNC_RESP, Cmd, RequestHeader, ResponseHeader, Status
from rmsmp.rtl.csr import CsrAddr
from rmsmp.rtl.dma import words_per_entry

CFG = AcceleratorConfig()
MEM_WORDS = 1 << 16


class FakeBoard:
    """Answers request frames like the bridge; ``start`` runs for ``run_polls`` STATUS reads,
    then writes every output region from a digest of the rest of the memory."""

    def __init__(self, prog, *, run_polls: int = 2):
        self.outputs = [(a, n * words_per_entry(w, prog.bus_width)) for a, n, w in prog.outputs.values()]
        self.run_polls = run_polls
        self.reset()

    def reset(self):
        self.mem = [0] * MEM_WORDS
        self.csr = {r: 0 for r in CsrAddr}
        self.csr[CsrAddr.ID] = CFG.config_hash
        self.running = 0

    def _compute(self):
        skip = set()
        for a, n in self.outputs:
            skip.update(range(a, a + n))
        # (a program reads below the resident record the host keeps at the top of the memory)
        h = hashlib.sha256(b"".join(struct.pack("<I", w) for i, w in enumerate(self.mem[:-RESIDENT_WORDS])
                                    if i not in skip)).digest()
        for a, n in self.outputs:
            for i in range(n):
                self.mem[a + i] = int.from_bytes(hashlib.sha256(h + struct.pack("<I", a + i)).digest()[:4], "little")

    def handle(self, frame: bytes) -> bytes | None:
        if len(frame) < 1 + REQUEST_BYTES + 2 or frame[0] != SYNC_REQ:
            return None                                   # incomplete: the bridge waits (host times out)
        body = frame[1:-2]
        if struct.unpack(">H", frame[-2:])[0] != crc16(body):
            return self._resp(Status.BAD_CRC, 0, [])
        h = RequestHeader.from_bits(int.from_bytes(body[:REQUEST_BYTES], "little"))
        cmd, seq, addr, n = Cmd(int(h.cmd)), int(h.seq), int(h.addr), int(h.len)
        words = list(struct.unpack(f"<{(len(body) - REQUEST_BYTES) // 4}I", body[REQUEST_BYTES:]))
        if cmd in (Cmd.MEM_WRITE, Cmd.CSR_WRITE) and len(words) != n:
            return None
        if cmd == Cmd.MEM_WRITE:
            self.mem[addr:addr + n] = words
            return self._resp(Status.OK, seq, [])
        if cmd == Cmd.MEM_READ:
            return self._resp(Status.OK, seq, self.mem[addr:addr + n])
        reg = CsrAddr(addr)
        if cmd == Cmd.CSR_WRITE:
            if reg == CsrAddr.CTRL and words[0] & 1:
                self.running = self.run_polls + 1
                self.csr[CsrAddr.STATUS] = 0b001              # busy
            else:
                self.csr[reg] = words[0]
            return self._resp(Status.OK, seq, [])
        if reg == CsrAddr.STATUS and self.running:
            self.running -= 1
            if not self.running:
                self._compute()
                self.csr[CsrAddr.STATUS] = 0b010              # done
                self.csr[CsrAddr.CYCLES] = 1000
        return self._resp(Status.OK, seq, [self.csr[reg]])

    @staticmethod
    def _resp(status, seq, words) -> bytes:
        head = ResponseHeader.const({"status": int(status), "seq": seq, "len": len(words)}).as_bits()
        body = head.to_bytes(4, "little") + b"".join(struct.pack("<I", w) for w in words)
        return bytes([SYNC_RESP]) + body + struct.pack(">H", crc16(body))


class FaultyTransport:
    """Between the host and the fake board: each frame each way may be dropped, have a byte
    dropped or flipped, or be duplicated; ``reset_on_poll``: the board resets at that STATUS
    read while it runs."""

    def __init__(self, board: FakeBoard, rate: float = 0.0, seed: int = 0):
        self.board, self.rate, self.rnd = board, rate, random.Random(seed)
        self.out = bytearray()
        self.faults = 0
        self.reset_on_poll = None

    def _mangle(self, frame: bytes) -> list[bytes]:
        if self.rnd.random() >= self.rate:
            return [frame]
        self.faults += 1
        kind = self.rnd.choice(["drop", "drop_byte", "flip", "dup"])
        if kind == "drop":
            return []
        i = self.rnd.randrange(len(frame))
        if kind == "drop_byte":
            return [frame[:i] + frame[i + 1:]]
        if kind == "flip":
            return [frame[:i] + bytes([frame[i] ^ (1 << self.rnd.randrange(8))]) + frame[i + 1:]]
        return [frame, frame]

    def write(self, data: bytes) -> None:
        if self.reset_on_poll is not None and self.board.running and data[1:2] == bytes([Cmd.CSR_READ]):
            self.reset_on_poll -= 1
            if self.reset_on_poll == 0:
                self.board.reset()
                self.reset_on_poll = None
        for f in self._mangle(bytes(data)):
            r = self.board.handle(f)
            if r is not None:
                for g in self._mangle(r):
                    self.out += g

    def read(self, n: int, timeout: float) -> bytes:
        b, self.out = bytes(self.out[:n]), self.out[n:]
        return b


def _device(prog, rate=0.0, seed=0):
    t = FaultyTransport(FakeBoard(prog), rate, seed)
    link = LinkClient(t, timeout=0.0, retries=6)
    return SerialDevice(link, CFG, mem_words=MEM_WORDS, progress=False, poll_s=0.0, run_timeout=5.0), t


def _images(prog, k, seed):
    rnd = random.Random(seed)
    a, n = prog.io.inputs[0].addr, 16                     # the first words of the network's input
    out = []
    for _ in range(k):
        img = list(prog.image)
        img[a:a + n] = [rnd.getrandbits(32) for _ in range(n)]
        out.append(img)
    return out


def _expected(prog, images):
    dev, _ = _device(prog)
    dev.load(prog)
    return [dev.run_image(img) for img in images]


def test_faulty_links_give_the_exact_result_or_raise(prog):
    images = _images(prog, 3, 0)
    want = _expected(prog, images)
    ok = raised = faults = 0
    for seed in range(12):
        dev, t = _device(prog, rate=0.08, seed=seed)
        try:
            dev.load(prog)
        except LinkError:
            raised += 1
            continue
        for img, w in zip(images, want):
            try:
                got = dev.run_image(img)
            except LinkError:
                raised += 1
                continue
            assert got == w, f"seed {seed}: wrong data returned after {t.faults} faults"
            ok += 1
        faults += t.faults
    assert faults > 50 and ok > 20, (faults, ok, raised)


def _after_one_run(prog, seed):
    """A device and its transport after one exact run, the second image and its result."""
    images = _images(prog, 2, seed)
    want = _expected(prog, images)
    dev, t = _device(prog)
    dev.load(prog)
    assert dev.run_image(images[0]) == want[0]
    return dev, t, images[1], want[1]


def test_a_reset_during_a_run_raises_and_the_next_run_is_exact(prog):
    dev, t, image, want = _after_one_run(prog, 1)
    t.reset_on_poll = 1
    with pytest.raises(LinkError, match="reset during the run"):
        dev.run_image(image)
    assert dev.run_image(image) == want                   # the whole image went up again


def test_a_reset_between_runs_is_noticed(prog):
    dev, t, image, want = _after_one_run(prog, 2)
    t.board.reset()                                        # power cycle: memory and STATUS gone
    assert dev.run_image(image) == want
