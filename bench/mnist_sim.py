"""The MNIST test set (10,000 images) through the simulated accelerator, bit-exact against
the golden model: a LeNet (trained here on MNIST's 50,000 training images), RMSMP PTQ at
10:5:1, compiled for ``AcceleratorConfig()``, run by ``rmsmp.sim.run_dataset`` with one
Verilator process per worker serving every batch.

    python bench/mnist_sim.py [--images 10000] [--workers 2] [--batch 50] [--epochs 2]
"""
import argparse
import time

import torch

from rmsmp.host import AcceleratorConfig, compile_model, quantize
from rmsmp.host.datasets import mnist
from rmsmp.host.models import LeNet, train_digits
from rmsmp.sim import golden, run_dataset


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=50, help="images per program run")
    ap.add_argument("--epochs", type=int, default=2)
    a = ap.parse_args()
    xtr, ytr = mnist("train")
    xte, yte = mnist("test")
    xte, yte = xte[:a.images], yte[:a.images]
    t0 = time.perf_counter()
    fp = train_digits(LeNet(8), xtr, ytr, epochs=a.epochs, batch=128, seed=0)
    t_train = time.perf_counter() - t0
    qm = quantize(fp, [xtr[i:i + 64] for i in range(0, 512, 64)], seed=0)
    cfg = AcceleratorConfig()
    prog = compile_model(qm, cfg, [1, 28, 28], batch=a.batch)
    y, st = run_dataset(prog, cfg, xte, workers=a.workers)
    g = golden(qm, xte)
    with torch.no_grad():
        f = fp(xte)
    acc = {k: float((v.argmax(1) == yte).double().mean()) * 100 for k, v in (("fp", f), ("golden", g), ("sim", y))}
    print(f"\nLeNet(8) trained {a.epochs} epochs in {t_train:.0f} s; RMSMP 10:5:1 PTQ, act 4 bits")
    print(f"{st['images']:,} MNIST test images on the simulator of {cfg.describe()}: {st['wall_s']:.0f} s wall "
          f"with {st['workers']} workers ({st['wall_s'] / st['images'] * 1e3:.1f} ms/image), "
          f"{st['cycles_per_image']:,.0f} cycles/image, MAC utilization {st['mac_utilization']:.1%}, "
          f"{st['cycles'] / st['sim_s'] / 1e3:.0f} kcycles/s per simulation")
    print(f"outputs equal to golden: {torch.equal(y, g)} ({int((y != g).any(1).sum())} images differ)")
    print(f"top-1: float {acc['fp']:.2f} %, golden {acc['golden']:.2f} %, simulator {acc['sim']:.2f} %")


if __name__ == "__main__":
    main()
