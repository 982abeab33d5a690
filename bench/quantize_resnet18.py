"""Time RMSMP post-training quantization of ResNet-18 (random init, 224×224, 32 calibration images).

    python bench/quantize_resnet18.py [--images 32] [--repeat 1]

Prints the wall time per phase and in total, and the peak resident memory.
"""
import argparse
import resource
import time

import torch

from rmsmp.host import quantize
from rmsmp.host.models import resnet18
from rmsmp.sim import golden


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    torch.manual_seed(0)
    model = resnet18().eval()
    x = torch.randn(a.images, 3, a.size, a.size)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ResNet-18 random init, "
          f"{a.images} calibration images {a.size}x{a.size}")
    times = []
    for _ in range(a.repeat):
        t = time.perf_counter()
        qm = quantize(model, x)
        times.append(time.perf_counter() - t)
    print("quantize (rmsmp, hessian assignment, default 10:5:1): "
          + ", ".join(f"{t:.1f} s" for t in times) + f"  (best {min(times):.1f} s)")
    t = time.perf_counter()
    quantize(model, x, assign="variance")
    print(f"quantize (variance assignment, no Hessian): {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    golden(qm, x[:1])
    print(f"golden, 1 image: {time.perf_counter() - t:.2f} s")
    print(f"rows per scheme: {dict(sorted(qm.scheme_rows().items()))}; packed weights "
          f"{qm.weight_bits() / 8 / 2**20:.2f} MiB "
          f"(fp32 {sum(l.weight.numel() for l in qm.compute_layers()) * 4 / 2**20:.1f} MiB)")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
