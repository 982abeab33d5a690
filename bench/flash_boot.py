"""Boot from flash vs upload over the UART: how long a board takes before its first image.

    python bench/flash_boot.py [--board ulx3s-85f] [--model resnet18|digits] [--size 224]
                               [--clock-mhz MHz]

Quantizes the model (ResNet-18: torchvision layout, random init, seed 0, RMSMP 10:5:1; digits:
the trained digits CNN), compiles it for ``AcceleratorConfig.for_board(board, flash_boot=True)``
and prints, for the board at its clock (or ``--clock-mhz``): the memory image, the boot image
written into the flash (``make bitstream PROGRAM=…``), the boot time — from the boot unit's
schedule (:func:`rmsmp.boards.flash.boot_cycles`, which the Verilator test checks against the
simulated board within 3 %) — and the upload time of the same image over the host link at the
board's UART rate (frames of 256 words, 11 bytes of framing each, 7-byte answers; 10 bits a
byte).  (The boot copy itself is measured in Verilator by tests/rtl/test_flash_boot_verilator.py:
18.25 cycles a byte at SCK = clock / 2, within 0.2 % of the schedule.)
"""
from __future__ import annotations

import argparse
import math
import time

import torch

from rmsmp.boards.flash import boot_cycles, boot_image
from rmsmp.generator.catalog import board
from rmsmp.host import AcceleratorConfig, compile_model, quantize
from rmsmp.rtl.bridge import MAX_BURST, REQUEST_BYTES


def upload_seconds(words: int, baud: int) -> float:
    """The link's upload of ``words``: MEM_WRITE frames of MAX_BURST words (sync, header, CRC)
    and their answers (sync, 4-byte header, CRC), 10 bits a byte on the wire each way."""
    frames = math.ceil(words / MAX_BURST)
    out = words * 4 + frames * (1 + REQUEST_BYTES + 2)
    back = frames * (1 + 4 + 2)
    return (out + back) * 10 / baud


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--board", default="ulx3s-85f")
    ap.add_argument("--model", choices=("resnet18", "digits"), default="resnet18")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--clock-mhz", type=float, help="the design's clock (default: the board's target)")
    a = ap.parse_args(argv)
    spec = board(a.board)
    clock = round(a.clock_mhz * 1e6) if a.clock_mhz else spec.clock_hz
    cfg = AcceleratorConfig.for_board(spec.name, flash_boot=True, clock_hz=clock)
    torch.manual_seed(0)
    t = time.perf_counter()
    if a.model == "resnet18":
        from rmsmp.host.models import resnet18
        x = torch.randn(2, 3, a.size, a.size)
        qm = quantize(resnet18().eval(), x, hessian_images=1, hessian_samples=1, edge_scheme="fix8")
        shape = (3, a.size, a.size)
    else:
        from rmsmp.host.models import DigitsNet
        from rmsmp.host.models.digits import load_digits, train_digits
        xtr, ytr, _, _ = load_digits()
        qm = quantize(train_digits(DigitsNet(width=16), xtr, ytr, epochs=20), [(xtr[:64], ytr[:64])])
        shape = (1, 8, 8)
    prog = compile_model(qm, cfg, shape)
    t_prep = time.perf_counter() - t
    mem_words = spec.memory_words()
    boot = boot_image(prog, mem_words)
    flash = spec.flash_boot(clock)
    frames = math.ceil(len(prog.image) / MAX_BURST) + 1
    cyc = boot_cycles(len(boot), flash, frames=frames, words=len(prog.image) + 8)
    baud = spec.link_baud(clock)
    up = upload_seconds(len(prog.image), baud)
    print(f"{a.model} ({shape}) for {spec.name}: {cfg.describe()}  (quantized and compiled in {t_prep:.0f} s)")
    print(f"memory image {len(prog.image):,} words ({len(prog.image) * 4 / 2**20:.2f} MiB); boot image "
          f"{len(boot):,} bytes at flash offset {spec.flash_offset:#x} (fits the {spec.flash_bytes >> 20} MiB flash: "
          f"{spec.flash_offset + len(boot) <= spec.flash_bytes})")
    print(f"at {clock / 1e6:g} MHz, SCK = clock/{2 * flash['half']} = {clock / 2 / flash['half'] / 1e6:g} MHz: "
          f"boot {cyc:,} cycles = {cyc / clock:.2f} s ({cyc / len(boot):.2f} cycles/byte)")
    print(f"upload over the UART at {baud / 1e6:g} Mbaud: {up:.1f} s  →  boot is {up / (cyc / clock):.1f}× faster")


if __name__ == "__main__":
    main()
