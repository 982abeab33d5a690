"""Accuracy on scikit-learn digits (held-out 25%): FP, RMSMP PTQ, +QAT, uniform fix4, and ablations.

    python bench/digits_accuracy.py [--seeds 3] [--board ulx3s-85f]

Every quantized accuracy is measured with the integer golden model.  "hardware ratio" is the
ratio ``AcceleratorConfig.for_board(board)`` chooses (pot4 rows on LUTs, fix8 rows on DSPs),
and the one it chooses for ResNet-18's mix of edge-layer MACs (``edge_fraction=0.065``).
"edge layers with the ratio": the first and last layers quantized like the others rather
than all-fix8 (``edge_scheme=None``; then they run on every row of the array).
"""
import argparse
import statistics

import torch

from rmsmp.host import AcceleratorConfig, qat, quantize
from rmsmp.host.models import DigitsNet, load_digits, train_digits
from rmsmp.sim import golden


def acc(logits, y):
    return float((logits.argmax(1) == y).double().mean()) * 100


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--act-bits", type=int, default=4)
    ap.add_argument("--qat-steps", type=int, default=300)
    ap.add_argument("--board", default="ulx3s-85f", help="for the hardware-chosen ratio")
    a = ap.parse_args()
    hw = AcceleratorConfig.for_board(a.board).ratio
    hw_edge = AcceleratorConfig.for_board(a.board, edge_fraction=0.065).ratio
    hw_label, hw_edge_label = ("RMSMP hardware " + ":".join(f"{k} {v:.3f}" for k, v in r.items())
                               for r in (hw, hw_edge))
    rows = {}
    for seed in range(a.seeds):
        xtr, ytr, xte, yte = load_digits(seed=seed)
        torch.manual_seed(seed)
        fp = train_digits(DigitsNet(32), xtr, ytr, epochs=20, seed=seed)
        calib = [(xtr[i:i + 64], ytr[i:i + 64]) for i in range(0, 256, 64)]
        train = [(xtr[i:i + 64], ytr[i:i + 64]) for i in range(0, len(ytr), 64)]
        with torch.no_grad():
            rows.setdefault("FP32", []).append(acc(fp(xte), yte))
        for label, kw in [("RMSMP 10:5:1 (hessian)", {}),
                          ("RMSMP 10:5:1, edge layers with the ratio", {"edge_scheme": None}),
                          (hw_label, {"ratio": hw}),
                          (hw_edge_label, {"ratio": hw_edge}),
                          ("RMSMP 10:5:1 (variance)", {"assign": "variance"}),
                          ("RMSMP 10:5:1 (random)", {"assign": "random"}),
                          ("uniform fix4", {"ratio": {"fix4": 1.0}}),
                          ("uniform pot4", {"ratio": {"pot4": 1.0}})]:
            qm = quantize(fp, calib, act_bits=a.act_bits, seed=seed, **kw)
            rows.setdefault(label + " PTQ", []).append(acc(golden(qm, xte), yte))
            if "random" not in label and "variance" not in label:
                q2 = qat(qm, train, steps=a.qat_steps, seed=seed)
                rows.setdefault(label + " PTQ+QAT", []).append(acc(golden(q2, xte), yte))
    print(f"digits, held-out top-1 %, act_bits={a.act_bits}, mean ± stdev over {a.seeds} seeds (golden model)")
    print(f"| {'model':48s} | top-1 % |")
    print(f"|{'-' * 50}|---------|")
    for k, v in rows.items():
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        print(f"| {k:48s} | {statistics.mean(v):5.2f} ± {sd:.2f} |")


if __name__ == "__main__":
    main()
