"""The arithmetic behind the pixel-lane dataflow (docs/hardware.md): weight storage and
bandwidth per MAC for every ResNet-18 layer shape, on an array of R rows × C columns × P
pixel lanes.

    python bench/dataflow_table.py [--rows 24] [--columns 8] [--pixels 1,2,4] [--bits 4]

Per layer: the on-chip weight bits one output group (R output channels) needs — R·cin·k²·b,
independent of P — and per peak MAC (÷ R·C·P); the weight-buffer read bits per MAC, b/P
(one weight word of R·C codes serves P pixels); the activation-buffer read bits per MAC,
8/R (P words of C bytes serve R·C·P MACs); the lane occupancy of the last column chunk
(ceil(W/P) columns a lane); and the weight bytes an image moves from memory per MAC.
"""
from __future__ import annotations

import argparse
import math

#: ResNet-18 at 224×224: (name, cin, cout, kernel, stride, output width) of each distinct conv
LAYERS = [("conv1 (im2col 147)", 147, 64, 1, 1, 112), ("layer1 3×3", 64, 64, 3, 1, 56),
          ("layer2.0.conv1 3×3/2", 64, 128, 3, 2, 28), ("layer2 3×3", 128, 128, 3, 1, 28),
          ("layer2.0.downsample 1×1/2", 64, 128, 1, 2, 28), ("layer3.0.conv1 3×3/2", 128, 256, 3, 2, 14),
          ("layer3 3×3", 256, 256, 3, 1, 14), ("layer3.0.downsample 1×1/2", 128, 256, 1, 2, 14),
          ("layer4.0.conv1 3×3/2", 256, 512, 3, 2, 7), ("layer4 3×3", 512, 512, 3, 1, 7),
          ("layer4.0.downsample 1×1/2", 256, 512, 1, 2, 7), ("fc", 512, 1000, 1, 1, 1)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=24)
    ap.add_argument("--columns", type=int, default=8)
    ap.add_argument("--pixels", default="1,2,4")
    ap.add_argument("--bits", type=float, default=4.0, help="mean weight bits (pot4/fix4 4, fix8 8)")
    a = ap.parse_args(argv)
    R, C, b = a.rows, a.columns, a.bits
    for P in (int(p) for p in a.pixels.split(",")):
        peak = R * C * P
        print(f"\n### R = {R}, C = {C}, P = {P}: {peak} MACs/cycle; weight-buffer reads {b / P:.2f} bits/MAC, "
              f"activation reads {8 / R:.2f} bits/MAC\n")
        print("| layer | MACs (M) | weight bits of an output group | per peak MAC | lane occupancy | "
              "weight bytes from memory per 1k MACs |")
        print("|---|---|---|---|---|---|")
        for name, cin, cout, k, _, ow in LAYERS:
            macs = cin * cout * k * k * ow * ow
            group = R * cin * k * k * b
            G = math.ceil(ow / P)
            occ = ow / (G * P)
            wbytes = cin * cout * k * k * b / 8
            print(f"| {name} | {macs / 1e6:.1f} | {group / 1024:.0f} Kib | {group / peak:.0f} | {occ:.0%} | "
                  f"{1000 * wbytes / macs:.2f} |")


if __name__ == "__main__":
    main()
