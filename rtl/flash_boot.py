"""Boot copy from the board's SPI flash: a program stored past the bitstream is read into the
board's memory after configuration, through the host-link bridge.

Flash layout at the board's program offset (written by :mod:`rmsmp.boards.flash`)::

    FlashHeader (8 bytes)   magic "RMSB", the accelerator's config hash
    frames                  host-link request frames (:mod:`rmsmp.rtl.bridge`): MEM_WRITE
                            bursts of the memory image, each with its own CRC-16, the last
                            one the program's resident record (what the memory now holds)
    FLASH_END (1 byte)      where another frame's sync byte would be

The boot unit does not write memory itself: it feeds the frames' bytes to the
:class:`~rmsmp.rtl.bridge.HostBridge` as the UART would, and watches its answers.  So the
flash image is checked exactly as an upload is — every frame's checksum, length and command —
by the gateware that is already there, and costs a SPI reader and a header check.

Outcome (``ok`` / ``bad``, sticky until reset; the STATUS register shows them): ``ok`` when
the header matched this accelerator, every frame was answered OK and the end marker followed
the last; ``bad`` when a header was found (the magic) but its config hash did not match, a
frame was refused (bad CRC, bad length, unknown command), or a byte between frames was
neither a frame's sync byte nor the end (a damaged sync byte; a cut-off frame swallows the
bytes after it and fails its CRC); neither when the flash holds no program there (erased:
all ones).  While ``booting`` the bridge listens to the flash, not the UART.

SPI: mode 0, the READ command (0x03, 24-bit address) after a release from deep power-down
(0xAB, then ``wake_cycles`` with the chip deselected: tRES1), one bit per ``2·half`` clock
cycles; the clock stops (low, chip selected) whenever a byte waits to be taken.  Data from
the flash, which changes after each falling edge of SCK, is sampled at the clock edge that
ends the high half of a bit — a full SCK period after it changed.
"""
import enum as _pyenum

from amaranth import Const, Module, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .bridge import SYNC_REQ

__all__ = ["FLASH_MAGIC", "FlashHeader", "SpiCmd", "spi_signature", "FlashBoot", "HEADER_BYTES", "FLASH_END",
           "FLASH_SCK_MAX_HZ", "FLASH_WAKE_S", "boot_timing"]

#: the header's first four bytes
FLASH_MAGIC = b"RMSB"
#: the byte after the last frame (where the next frame's sync byte would be)
FLASH_END = 0x00
#: the READ command's SCK limit on the boards' flashes (W25Q128JV, IS25LP128: 50 MHz), halved
FLASH_SCK_MAX_HZ = 25e6
#: tRES1, release from deep power-down to the next command (3 µs on both parts), with margin
FLASH_WAKE_S = 10e-6


class SpiCmd(_pyenum.IntEnum):
    READ = 0x03
    RELEASE_POWER_DOWN = 0xAB


class FlashHeader(data.Struct):
    magic: unsigned(32)          # FLASH_MAGIC, little-endian
    config_hash: unsigned(32)


HEADER_BYTES = FlashHeader.as_shape().size // 8


def boot_timing(clock_hz: float) -> tuple[int, int]:
    """(half, wake_cycles) of the SPI reader at ``clock_hz``: clock cycles per half SCK period
    (SCK ≤ :data:`FLASH_SCK_MAX_HZ`) and cycles of the wake-up wait."""
    import math
    half = max(1, math.ceil(clock_hz / (2 * FLASH_SCK_MAX_HZ) - 1e-9))
    return half, max(1, math.ceil(clock_hz * FLASH_WAKE_S - 1e-6))


def spi_signature() -> wiring.Signature:
    """The flash's pins, controller side (``cs`` active high: the board's buffers invert)."""
    return wiring.Signature({"sck": Out(1), "cs": Out(1), "copi": Out(1), "cipo": In(1)})


class FlashBoot(wiring.Component):
    """Reads the program at ``offset`` of the SPI flash into the bridge (``byte``/``valid``,
    offered only while the bridge ``listening``), checks it against ``config_hash``.

    ``listening``: the bridge takes a byte this cycle; ``at_sync``: it waits for a frame's
    first byte; ``answered``/``answer_ok``: it is answering a frame (the status is OK)."""

    def __init__(self, *, offset: int, config_hash: int, half: int = 1, wake_cycles: int = 64):
        if not 0 <= offset < 1 << 24:
            raise ValueError(f"flash offset {offset:#x} is past the 24-bit address space")
        if half < 1 or wake_cycles < 1:
            raise ValueError("half and wake_cycles must be at least 1")
        self._offset, self._hash, self._half, self._wake = offset, config_hash, half, wake_cycles
        super().__init__({
            "spi": Out(spi_signature()),
            "byte": Out(8), "valid": Out(1),
            "listening": In(1), "at_sync": In(1), "answered": In(1), "answer_ok": In(1),
            "booting": Out(1, init=1), "ok": Out(1), "bad": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        spi = self.spi
        half, wake = self._half, self._wake
        # -- the bit engine: ``nbits`` bits; out the commands' bits (a constant sequence, ``pos``
        # its next bit), in through ``rd`` ------------------------------------------------------
        cmds = [(SpiCmd.RELEASE_POWER_DOWN, 8), (SpiCmd.READ << 24 | self._offset, 32)]
        seq = [(v >> (n - 1 - i)) & 1 for v, n in cmds for i in range(n)] + [0]
        rom = Const(sum(b << i for i, b in enumerate(seq)), len(seq))
        pos = Signal(range(len(seq)))
        rd = Signal(8)
        nbits = Signal(range(33))
        timer = Signal(range(max(half, wake) + 1))
        high = Signal()                                  # SCK's level (second half of a bit)
        m.d.comb += [spi.sck.eq(high), spi.copi.eq(rom.bit_select(pos, 1))]
        running = nbits != 0
        with m.If(running):
            with m.If(timer != 0):
                m.d.sync += timer.eq(timer - 1)
            with m.Elif(~high):
                m.d.sync += [high.eq(1), timer.eq(half - 1)]
            with m.Else():                               # end of the bit: sample, next bit
                m.d.sync += [high.eq(0), timer.eq(half - 1), rd.eq(rd << 1 | spi.cipo), nbits.eq(nbits - 1)]
                with m.If(pos != len(seq) - 1):
                    m.d.sync += pos.eq(pos + 1)

        def shift(bits: int):
            m.d.sync += [nbits.eq(bits), timer.eq(half - 1), high.eq(0)]

        # -- the sequence ---------------------------------------------------------------------
        hidx = Signal(range(HEADER_BYTES))
        refused = Signal()                               # a frame was answered with an error
        with m.If(self.answered & ~self.answer_ok):
            m.d.sync += refused.eq(1)
        m.d.comb += self.byte.eq(rd)
        expect = FLASH_MAGIC + self._hash.to_bytes(4, "little")
        header = Const(int.from_bytes(expect, "little"), 8 * HEADER_BYTES)
        with m.FSM():
            with m.State("RESET"):
                m.d.sync += spi.cs.eq(1)
                shift(8)
                m.next = "WAKE"
            with m.State("WAKE"):
                with m.If(~running):
                    m.d.sync += [spi.cs.eq(0), timer.eq(wake - 1)]
                    m.next = "WAIT"
            with m.State("WAIT"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += spi.cs.eq(1)
                    shift(32)
                    m.next = "ADDR"
            with m.State("ADDR"):
                with m.If(~running):
                    shift(8)
                    m.next = "HEADER"
            with m.State("HEADER"):                      # checked byte by byte as it arrives
                with m.If(~running):
                    m.d.sync += hidx.eq(hidx + 1)
                    with m.If(rd != header.word_select(hidx, 8)):
                        m.next = "REJECT"
                        with m.If(hidx < len(FLASH_MAGIC)):
                            m.next = "EMPTY"             # no program here
                    with m.Elif(hidx == HEADER_BYTES - 1):
                        shift(8)
                        m.next = "FETCH"
                    with m.Else():
                        shift(8)
            with m.State("FETCH"):                       # the next byte of frames
                with m.If(~running):
                    m.next = "OFFER"
            with m.State("OFFER"):                       # to the bridge when it listens
                with m.If(refused):
                    m.next = "REJECT"
                with m.Elif(self.listening):
                    with m.If(~self.at_sync | (rd == SYNC_REQ)):
                        m.d.comb += self.valid.eq(1)     # (taken: the bridge listens)
                        shift(8)
                        m.next = "FETCH"
                    with m.Elif(rd == FLASH_END):        # every frame answered, none refused
                        m.d.sync += [spi.cs.eq(0), self.ok.eq(1), self.booting.eq(0)]
                        m.next = "DONE"
                    with m.Else():                       # neither a frame nor the end
                        m.next = "REJECT"
            with m.State("REJECT"):
                m.d.sync += [spi.cs.eq(0), self.bad.eq(1), self.booting.eq(0), nbits.eq(0)]
                m.next = "DONE"
            with m.State("EMPTY"):
                m.d.sync += [spi.cs.eq(0), self.booting.eq(0), nbits.eq(0)]
                m.next = "DONE"
            with m.State("DONE"):
                pass
        return m
