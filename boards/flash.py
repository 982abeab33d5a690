"""Flash images: the bitstream, and past it a compiled program the board copies into its memory
after configuration (:mod:`rmsmp.rtl.flash_boot`), so a board boots with its network.

``make bitstream BOARD=… PROGRAM=net.prog`` writes, beside the bitstream,

- ``program.bin``: the boot image — a :class:`~rmsmp.rtl.flash_boot.FlashHeader`, the
  host-link MEM_WRITE frames of the program's memory image, then of its resident record
  (:meth:`~rmsmp.generator.program.Program.resident_record`, which tells a host what the
  memory holds), and the end marker — to be written at the board's ``flash_offset``;
- ``flash.bin``: the bitstream at 0, erased bytes (0xFF) up to the offset, the boot image:
  one file for the whole flash (docs/boards.md: openFPGALoader, iceprog).
"""
from __future__ import annotations

from rmsmp.generator.catalog import BoardError, BoardSpec
from rmsmp.generator.program import Program
from rmsmp.rtl.bridge import MAX_BURST, Cmd, encode_request
from rmsmp.rtl.flash_boot import FLASH_END, FLASH_MAGIC, HEADER_BYTES, FlashHeader

__all__ = ["boot_image", "flash_image", "boot_cycles", "boot_seconds"]


def boot_image(program: Program, mem_words: int, *, max_burst: int = MAX_BURST) -> bytes:
    """The boot image of ``program`` for a board memory of ``mem_words`` (header, frames, end)."""
    record = program.resident_record(mem_words)       # (refuses an image that leaves no room)
    image = [int(w) for w in program.image]
    frames = bytearray()
    seq = 0
    for i in range(0, len(image), max_burst):
        chunk = image[i:i + max_burst]
        seq = (seq + 1) & 0xFF
        frames += encode_request(Cmd.MEM_WRITE, seq, i, len(chunk), chunk)
    frames += encode_request(Cmd.MEM_WRITE, seq + 1, Program.resident_addr(mem_words), len(record), record)
    head = FlashHeader.const({"magic": int.from_bytes(FLASH_MAGIC, "little"), "config_hash": program.config_hash})
    return head.as_bits().to_bytes(HEADER_BYTES, "little") + bytes(frames) + bytes([FLASH_END])


def flash_image(spec: BoardSpec, bitstream: bytes, boot: bytes) -> bytes:
    """The whole flash: ``bitstream`` at 0, ``boot`` at ``spec.flash_offset``."""
    if not spec.flash_offset:
        raise BoardError(f"{spec.name} has no program offset in its flash: it cannot boot a program from it")
    if len(bitstream) > spec.flash_offset:
        raise BoardError(f"the {spec.name} bitstream ({len(bitstream):,} bytes) runs past the program's flash "
                         f"offset {spec.flash_offset:#x}")
    end = spec.flash_offset + len(boot)
    if end > spec.flash_bytes:
        raise BoardError(f"the program's boot image ({len(boot):,} bytes at {spec.flash_offset:#x}) does not fit "
                         f"{spec.name}'s {spec.flash_bytes >> 20} MiB flash")
    return bytes(bitstream) + b"\xff" * (spec.flash_offset - len(bitstream)) + bytes(boot)


def boot_cycles(boot_bytes: int, flash: dict, *, frames: int = 0, words: int = 0) -> int:
    """Clock cycles the boot copy of ``boot_bytes`` takes with the reader's parameters
    ``flash`` (:meth:`BoardSpec.flash_boot`): an estimate from its schedule — the wake-up, the
    command, 16·half + 2 cycles a byte, a cycle per memory word written and a dozen per frame
    answered — which tests/rtl/test_flash_boot_verilator.py checks against the simulated board."""
    half, wake = flash["half"], flash["wake_cycles"]
    return wake + (8 + 32) * 2 * half + boot_bytes * (16 * half + 2) + words + 12 * frames


def boot_seconds(program: Program, spec: BoardSpec, boot: bytes | None = None) -> float:
    """Seconds ``spec``'s board takes at its clock to boot ``program`` (its boot image
    ``boot``, default: for the board's default memory) from its flash, by :func:`boot_cycles`
    (the memory taking a word a cycle)."""
    n = len(boot if boot is not None else boot_image(program, spec.memory_words()))
    frames = -(-len(program.image) // MAX_BURST) + 1
    return boot_cycles(n, spec.flash_boot(), frames=frames, words=len(program.image)) / spec.clock_hz
