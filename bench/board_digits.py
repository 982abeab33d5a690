"""The digits network on a board's ``for_board`` accelerator, cycle-accurate: images/s.

    python bench/board_digits.py [--board icebreaker] [--width 16] [--images 64] [--report build/icebreaker/report.json]

Trains the digits CNN (DigitsNet of ``--width``, seed 0), quantizes it with RMSMP (10:5:1),
compiles it for ``AcceleratorConfig.for_board(board)`` in the largest batch (≤ 16) whose
program fits the board's memory (the width-32 network of the tests needs 29,809 words for
one image, the iCEBreaker's SPRAM holds 32,768), runs ``--images`` held-out images in
Verilator (behind the board's SDRAM model where it has one, else the one-word-per-cycle
memory, which the single-port SPRAM matches except when a fetch meets a store), checks the logits
against the golden model bit for bit and prints cycles/image, MAC utilization, accuracy and
images/s at the board clock and at the Fmax of a build report (``make bitstream`` writes
``build/<board>/report.json``).  The figure for a board too small for ResNet-18.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from rmsmp.generator.catalog import board as board_spec
from rmsmp.host import AcceleratorConfig, compile_model, open_device, quantize
from rmsmp.host.models import DigitsNet, load_digits, train_digits
from rmsmp.sim import golden


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--board", default="icebreaker")
    ap.add_argument("--width", type=int, default=16, help="DigitsNet width (the tests use 32)")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--report", help="a build's report.json, for images/s at its Fmax")
    a = ap.parse_args(argv)
    spec = board_spec(a.board)
    xtr, ytr, xte, yte = load_digits()
    torch.manual_seed(0)
    fp = train_digits(DigitsNet(width=a.width), xtr, ytr, epochs=20)
    qm = quantize(fp, [(xtr[i:i + 64], ytr[i:i + 64]) for i in range(0, 256, 64)])
    cfg = AcceleratorConfig.for_board(a.board)
    n = min(a.images, len(yte))
    words = spec.memory_words()
    for batch in (16, 8, 4, 2, 1):
        prog = compile_model(qm, cfg, batch=min(batch, n))
        if len(prog.image) <= words:
            break
    else:
        raise SystemExit(f"the width-{a.width} network needs {len(prog.image):,} memory words for one "
                         f"image; {a.board}'s memory holds {words:,}")
    dev = open_device("sim", cfg, board=a.board)
    dev.load(prog)
    y = dev.run(xte[:n])
    exact = torch.equal(y, golden(qm, xte[:n]))
    s = dev.stats
    per_image = s["cycles_per_image"]
    print(f"# digits CNN (width {a.width}) on {a.board}: {cfg.describe()}, memory in the simulation: "
          f"{dev.memory}\n")
    print(dev.layer_table())
    print(f"\n{n} images: {per_image:,.0f} cycles/image, MAC utilization {s['mac_utilization']:.1%} "
          f"of {cfg.peak_macs_per_cycle} MACs/cycle; batches of {prog.io.batch}, program "
          f"{len(prog.image):,} of {words:,} memory words")
    print(f"accuracy on these images: {float((y.argmax(1) == yte[:n]).double().mean()):.1%}")
    line = f"images/s: {cfg.clock_hz / per_image:,.0f} at the {cfg.clock_hz / 1e6:g} MHz board clock"
    if a.report:
        fmax = json.loads(Path(a.report).read_text()).get("fmax_mhz")
        if fmax:
            line += f", {fmax * 1e6 / per_image:,.0f} at the build's Fmax {fmax:.1f} MHz"
    print(line)
    print(f"bit-exact vs golden: {exact}")
    return 0 if exact else 1


if __name__ == "__main__":
    raise SystemExit(main())
