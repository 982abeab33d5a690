"""The main job: ResNet-18 → RMSMP quantization → compile → the cycle-accurate simulator.

    python -m rmsmp.host.demo [--size 224] [--weights resnet18.pth] [--image img.pt]

Prints the top-5 classes, checks the simulator's logits against the golden model bit for
bit, and reports the per-layer table, cycles, MAC utilization and the latency at the
config's clock; writes the same as an HTML page with plots (``--report``, default
``build/demo/report.html``).
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from . import AcceleratorConfig, RmsmpError, compile_model, open_device, quantize
from .models import resnet18


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rmsmp.host.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224, help="input height/width (default 224)")
    ap.add_argument("--weights", help="torchvision resnet18 state_dict file (default: random init)")
    ap.add_argument("--image", help="input image as a saved tensor [3, H, W], normalised (default: random)")
    ap.add_argument("--calib", type=int, default=8, help="calibration images (random unless --image)")
    ap.add_argument("--report", default="build/demo/report.html", help="the HTML report (default %(default)s)")
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    model = resnet18(weights=a.weights).eval()
    if a.image:
        x = torch.load(a.image, weights_only=True).float()
        if x.dim() == 3:
            x = x.unsqueeze(0)
        if tuple(x.shape[1:]) != (3, a.size, a.size):
            x = torch.nn.functional.interpolate(x, size=(a.size, a.size), mode="bilinear", align_corners=False)
    else:
        x = torch.randn(1, 3, a.size, a.size)
    calib = torch.cat([x, torch.randn(max(0, a.calib - 1), 3, a.size, a.size)])
    cfg = AcceleratorConfig()
    print(f"rmsmp demo: ResNet-18 ({'weights ' + a.weights if a.weights else 'random init'}), "
          f"{a.size}×{a.size} input; accelerator {cfg.describe()}")
    try:
        t = time.perf_counter()
        qm = quantize(model, calib, hessian_images=min(4, a.calib), progress=True)
        print(f"quantized (RMSMP {qm.ratio}) in {time.perf_counter() - t:.1f} s; rows {dict(qm.scheme_rows())}")
        t = time.perf_counter()
        prog = compile_model(qm, cfg)
        print(f"compiled in {time.perf_counter() - t:.1f} s: {len(prog.image) * 4 / 2**20:.1f} MiB memory image")
        dev = open_device("sim", cfg)
        t = time.perf_counter()
        built = dev.build()
        print(f"Verilator model ready in {built:.1f} s")
        dev.load(prog)
        logits = dev.run(x)
    except RmsmpError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 2
    from rmsmp.sim import golden
    ref = golden(qm, x)
    exact = torch.equal(logits, ref)
    s = dev.stats
    top = torch.topk(logits[0], 5)
    print("top-5 (class: logit): " + ", ".join(f"{int(i)}: {float(v):.3f}" for v, i in zip(top.values, top.indices)))
    print(f"simulator vs golden: {'bit-exact' if exact else 'MISMATCH'}")
    print(dev.layer_table())
    print(f"{s['cycles']:,} cycles, MAC utilization {s['mac_utilization']:.1%}, "
          f"latency {s['time_per_image_at_clock_s'] * 1e3:.2f} ms at {cfg.clock_hz / 1e6:g} MHz; "
          f"simulated {s['sim_cycles_per_s'] / 1e3:.0f} kcycles/s ({s['wall_s']:.0f} s)")
    from .report import write_report
    page = write_report(a.report, qm, program=prog, run=s,
                        title=f"rmsmp demo: ResNet-18 {a.size}×{a.size} on {cfg.describe()}")
    print(f"report: {page.resolve()}")
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
