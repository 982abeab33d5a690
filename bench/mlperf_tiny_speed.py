"""MLPerf Tiny models on the boards' cores: images/s simulated cycle-accurately behind each
board's memory at the board's clock, bit-exact against golden.

    python bench/mlperf_tiny_speed.py [--boards ulx3s-85f icebreaker] [--models resnet8 mobilenet_v1_vww]

For each board, ``AcceleratorConfig.for_board(board)`` (the hardware-chosen ratio) and the
model RMSMP-quantized with that ratio (calibrated on the real sample images); the program
runs two images on ``open_device("sim", cfg, board=board)`` (the ULX3S: its SDRAM; the
iCEBreaker: its SPRAM, modelled as on-chip memory).  A model the board cannot hold is
reported with the compiler's reason.
"""
from __future__ import annotations

import argparse

import torch

from rmsmp.host import AcceleratorConfig, compile_model, open_device, quantize
from rmsmp.host.datasets import samples
from rmsmp.host.errors import RmsmpError
from rmsmp.host.models import mlperf_tiny
from rmsmp.sim import golden


def images_for(m, name):
    x, _ = samples("cifar10" if name == "resnet8" else "imagenet")
    if tuple(x.shape[2:]) != tuple(m.input_shape[1:]):
        x = torch.nn.functional.interpolate(x, size=m.input_shape[1:], mode="bilinear", antialias=True)
    return m.preprocess(x)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boards", nargs="+", default=["ulx3s-85f", "icebreaker"])
    ap.add_argument("--models", nargs="+", default=["resnet8", "mobilenet_v1_vww"])
    a = ap.parse_args(argv)
    rows = []
    for board in a.boards:
        cfg = AcceleratorConfig.for_board(board)
        for name in a.models:
            m = mlperf_tiny(name)
            x = images_for(m, name)
            try:
                qm = quantize(m, [x[:16]], ratio=cfg.ratio, hessian_images=4)
                prog = compile_model(qm, cfg, list(m.input_shape), batch=2)
            except RmsmpError as e:
                rows.append((board, name, cfg, None, str(e).splitlines()[0]))
                continue
            with open_device("sim", cfg, board=board) as dev:
                dev.load(prog)
                y = dev.run(x[:2])
                exact = torch.equal(y, golden(qm, x[:2]))
                rows.append((board, name, cfg, dev.stats, "bit-exact" if exact else "DIFFERS FROM GOLDEN"))
    print("| board | model | core | cycles/image | MAC utilization | images/s at the clock | check |")
    print("|---|---|---|---|---|---|---|")
    for board, name, cfg, st, note in rows:
        if st is None:
            print(f"| {board} | {name} | {cfg.describe()} | — | — | — | refused: {note} |")
            continue
        ips = cfg.clock_hz / st["cycles_per_image"]
        print(f"| {board} | {name} | {cfg.describe()} | {st['cycles_per_image']:,.0f} | {st['mac_utilization']:.1%} "
              f"| {ips:,.1f} at {cfg.clock_hz / 1e6:g} MHz | {note} |")


if __name__ == "__main__":
    main()
