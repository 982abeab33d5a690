"""ResNet-18 end to end on the cycle-accurate simulator: cycles, MAC utilization, wall time.

    python bench/resnet18_sim.py [--size 224] [--images 1] [--batch 1] [--config cfg.json] [--edge-scheme fix8|ratio]
                                 [--board ulx3s-85f [--memory sdram|ideal] [--fmax MHz]] [--ratio pot4=10/16,...]

Builds the torchvision-layout ResNet-18 (random init, seed 0), quantizes it with RMSMP
(default 10:5:1, edge layers fix8; ``--edge-scheme ratio``: they follow the ratio too),
compiles it for the default accelerator, runs it in Verilator, checks the logits against the
golden model bit for bit, and prints the per-layer table (cycles measured by the hardware's
STAMPs), the totals and the peak memory of this process and of the simulator.  ``--board``
compiles for ``AcceleratorConfig.for_board(board)`` — the array and ratio the board's
resources choose, the model quantized for that ratio (``cfg.ratio``; a model of another ratio
runs bound by the rows of its scarcest scheme), or with ``--ratio`` the array sized for that
ratio — and reports images/s at the board clock and at ``--fmax`` (nextpnr's, from the build
report); on a board with an SDRAM the core runs behind that board's SDRAM controller and a
model of the chip (``--memory ideal``: the one-word-per-cycle memory instead, the bound
without the SDRAM's bandwidth).  ``--config`` runs another configuration (e.g. one ``rmsmp
config`` wrote) instead of ``for_board``'s.  ``--batch B`` compiles the program for batches of
``B`` images (``--images`` defaults to one batch): with streamed weights each weight set loads
once a batch; the per-layer table is then the batch's cycles per image.
"""
from __future__ import annotations

import argparse
import resource
import time

import torch

from rmsmp.host import AcceleratorConfig, compile_model, open_device, quantize
from rmsmp.host.cli import parse_ratio_arg
from rmsmp.host.models import resnet18
from rmsmp.sim import golden


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--images", type=int, help="images to run (default: one batch)")
    ap.add_argument("--batch", type=int, default=1, help="images a program runs at once (weights once a batch)")
    ap.add_argument("--board", help="size the accelerator for this board (AcceleratorConfig.for_board)")
    ap.add_argument("--config", help="an AcceleratorConfig JSON to run instead (with --board: on that board's memory)")
    ap.add_argument("--fmax", type=float, help="the board build's Fmax in MHz, for images/s")
    ap.add_argument("--edge-scheme", default="fix8",
                    help="scheme of every row of the first and last layers (default fix8); 'ratio': those "
                         "layers' rows follow the ratio like the others (then they run on every lane group)")
    ap.add_argument("--ratio", help="quantize for this ratio (e.g. pot4=10/16,fix4=5/16,fix8=1/16; with --board the "
                                    "array is sized for it); default: 10:5:1; with --board the board's chosen ratio, "
                                    "with --config the config's")
    ap.add_argument("--memory", choices=("sdram", "ideal"), default="sdram",
                    help="with --board: the board's SDRAM (default) or the ideal burst memory")
    a = ap.parse_args(argv)
    a.images = a.images or a.batch
    torch.manual_seed(0)
    model = resnet18().eval()
    x = torch.randn(max(2, a.images), 3, a.size, a.size)
    ratio = parse_ratio_arg(a.ratio) if a.ratio else None
    if a.config:
        cfg = AcceleratorConfig.load(a.config)
        ratio = ratio or cfg.ratio          # quantized for the rows the config has
    elif a.board:
        cfg = AcceleratorConfig.for_board(a.board, ratio=ratio)
        ratio = ratio or cfg.ratio
    else:
        cfg = AcceleratorConfig()
    t = time.perf_counter()
    edge = None if a.edge_scheme == "ratio" else a.edge_scheme
    qm = quantize(model, x[:2], hessian_images=1, hessian_samples=1, edge_scheme=edge, ratio=ratio)
    t_q = time.perf_counter() - t
    dev = open_device("sim", cfg, board=a.board if a.memory == "sdram" else None)
    t = time.perf_counter()
    prog = compile_model(qm, cfg, (3, a.size, a.size), batch=a.batch, memory_words=dev.mem_words)
    t_c = time.perf_counter() - t
    t_b = dev.build()
    dev.load(prog)
    t = time.perf_counter()
    y = dev.run(x[:a.images])
    t_run = time.perf_counter() - t
    exact = torch.equal(y, golden(qm, x[:a.images]))
    s = dev.stats
    rows = ", ".join(f"{k} {v:.3f}" for k, v in qm.ratio.items())
    print(f"# ResNet-18 {a.size}×{a.size} on {cfg.describe()}, memory: {dev.memory}; quantized for {rows}, "
          f"edge layers {a.edge_scheme}\n")
    print(dev.layer_table())
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2 ** 20
    print(f"\nquantize {t_q:.1f} s, compile {t_c:.1f} s ({len(prog.image):,} memory words), "
          f"Verilator build {t_b:.1f} s (cached when 0)")
    print(f"{a.images} image(s) in batches of {a.batch}: {s['cycles_per_image']:,.0f} cycles/image, MAC utilization "
          f"{s['mac_utilization']:.1%} of {cfg.peak_macs_per_cycle} MACs/cycle, "
          f"{s['time_per_image_at_clock_s'] * 1e3:.1f} ms/image at {cfg.clock_hz / 1e6:g} MHz")
    print(f"simulation: {s['wall_s']:.1f} s in Verilator ({s['sim_cycles_per_s'] / 1e3:.0f} kcycles/s), "
          f"{t_run:.1f} s for run() including the memory image in and out")
    print(f"peak memory: {me:.2f} GiB this process, {kids:.2f} GiB largest child (the simulator)")
    per_image = s["cycles_per_image"]
    print(f"images/s: {cfg.clock_hz / per_image:.2f} at the {cfg.clock_hz / 1e6:g} MHz target clock"
          + (f", {a.fmax * 1e6 / per_image:.2f} at Fmax {a.fmax:g} MHz" if a.fmax else ""))
    print(f"bit-exact vs golden: {exact}")
    return 0 if exact else 1


if __name__ == "__main__":
    raise SystemExit(main())
