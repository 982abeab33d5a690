"""Quantization methods side by side: digits accuracy, weight SQNR and bits per weight.

    python bench/methods_compare.py [--seeds 3] [--resnet-size 64] [--plot docs/methods.png]

Digits (scikit-learn, held-out 25 %): top-1 from the integer golden model for every method,
mean ± std over seeds.  ResNet-18 (random init): weight SQNR over all conv/linear weights,
``10·log10(Σw² / Σ(w − ŵ)²)``; the methods that learn from a task loss (grad, hmq) train
on the float model's own predictions as labels (no data set ships), with fewer steps.
Bits per weight: the mean of the rows' scheme widths (edge layers included).  MXQN rows
also say how many activation tensors took base-√2 log codes.  ``--plot`` draws digits
top-1 against bits per weight (matplotlib, the ``bench`` extra).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from rmsmp.host import quantize
from rmsmp.host.models import DigitsNet, load_digits, resnet18, train_digits
from rmsmp.sim import golden

METHODS = [("rmsmp 10:5:1 (PTQ)", dict(method="rmsmp")),
           ("msqe fix4, pow2 scale per layer", dict(method="msqe")),
           ("grad fix4, learned pow2 scale", dict(method="grad")),
           ("hmq, 8× compression (≤ 4 bits/weight)", dict(method="hmq", target_compression=8.0)),
           ("mxqn fix4, SQNR fraction length, 4-bit act", dict(method="mxqn")),
           ("mxqn fix4, SQNR fraction length, 3-bit act", dict(method="mxqn", act_bits=3)),
           ("uniform fix4, MSQE row scales", dict(method="rmsmp", ratio={"fix4": 1}))]
#: ResNet-18 on self-labels: fewer steps than on digits (CPU time)
RESNET_STEPS = dict(grad_steps=30, hmq_steps=30)


def weight_sqnr(qm) -> float:
    sig = err = 0.0
    for l in qm.compute_layers():
        w = l.weight.double().reshape(l.rows, -1)
        wq = l.qweight.double().reshape(l.rows, -1) * l.scale.double()[:, None]
        sig += float((w ** 2).sum())
        err += float(((w - wq) ** 2).sum())
    return 10 * torch.log10(torch.tensor(sig / err)).item()


def bits_per_weight(qm) -> float:
    from rmsmp.host.quant.schemes import parse_scheme
    n = b = 0
    for l in qm.compute_layers():
        per_row = l.weight[0].numel()
        for s in l.schemes:
            b += parse_scheme(s).bits * per_row
            n += per_row
    return b / n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--resnet-size", type=int, default=64)
    ap.add_argument("--plot", help="write a PNG of digits top-1 vs bits per weight")
    a = ap.parse_args(argv)
    xtr, ytr, xte, yte = load_digits()
    acc = {name: [] for name, _ in METHODS}
    fp = []
    digits_sqnr, digits_bits, logs = {}, {}, {}
    for seed in range(a.seeds):
        torch.manual_seed(seed)
        m = train_digits(DigitsNet(), xtr, ytr, epochs=20)
        fp.append(float((m(xte).argmax(1) == yte).double().mean()) * 100)
        cal = [(xtr[i:i + 64], ytr[i:i + 64]) for i in range(0, 256, 64)]
        for name, kw in METHODS:
            qm = quantize(m, cal, seed=seed, **kw)
            acc[name].append(float((golden(qm, xte).argmax(1) == yte).double().mean()) * 100)
            digits_sqnr.setdefault(name, []).append(weight_sqnr(qm))
            digits_bits[name] = bits_per_weight(qm)
            if kw["method"] == "mxqn":
                logs.setdefault(name, []).append(len(qm.meta["log_activations"]))
    torch.manual_seed(0)
    model = resnet18().eval()
    x = torch.randn(4, 3, a.resnet_size, a.resnet_size)
    with torch.no_grad():
        labelled = [(x, model(x).argmax(1))]            # self-labels for grad / hmq
    r_sqnr, r_bits, r_time = {}, {}, {}
    for name, kw in METHODS:
        t = time.perf_counter()
        if kw["method"] in ("grad", "hmq"):
            qm = quantize(model, labelled, hessian_images=2, **RESNET_STEPS, **kw)
        else:
            qm = quantize(model, x, hessian_images=2, hessian_samples=1, **kw)
        r_time[name] = time.perf_counter() - t
        r_sqnr[name], r_bits[name] = weight_sqnr(qm), bits_per_weight(qm)

    def ms(v):
        return f"{statistics.mean(v):.2f} ± {statistics.stdev(v):.2f}" if len(v) > 1 else f"{v[0]:.2f}"
    print(f"Digits ({a.seeds} seeds, held-out {len(xte)} images; FP32 {ms(fp)} %) and ResNet-18 "
          f"(random init, {a.resnet_size}×{a.resnet_size} calibration) — edge layers fix8 everywhere\n")
    print("| method | digits top-1 % | digits weight SQNR dB | digits bits/weight | ResNet-18 weight SQNR dB | "
          "ResNet-18 bits/weight | ResNet-18 quantize s |")
    print("|---|---|---|---|---|---|---|")
    for name, _ in METHODS:
        rs = f"{r_sqnr[name]:.2f} | {r_bits[name]:.2f} | {r_time[name]:.1f}"
        label = name + (f" (log tensors: {'/'.join(map(str, logs[name]))})" if name in logs else "")
        print(f"| {label} | {ms(acc[name])} | {ms(digits_sqnr[name])} | {digits_bits[name]:.2f} | {rs} |")
    print(f"\ngrad / hmq on ResNet-18: {RESNET_STEPS} on the float model's predictions")
    if a.plot:
        plot(a.plot, acc, digits_bits, statistics.mean(fp))


def plot(path, acc, bits, fp):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=120)
    seen: dict[float, int] = {}
    for name in acc:
        m, s = statistics.mean(acc[name]), (statistics.stdev(acc[name]) if len(acc[name]) > 1 else 0.0)
        k = seen.get(round(bits[name], 2), 0)          # methods at the same width side by side
        seen[round(bits[name], 2)] = k + 1
        ax.errorbar(bits[name] + 0.012 * k, m, yerr=s, fmt="o", capsize=3, label=name)
    ax.axhline(fp, color="grey", linestyle="--", linewidth=1, label="float32")
    ax.set_xlabel("bits per weight (edge layers fix8 included)")
    ax.set_ylabel("digits top-1 % (golden model, mean ± std)")
    ax.set_title("Quantization methods on the digits CNN")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
