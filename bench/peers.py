"""rmsmp beside its peers on the same networks and data: Brevitas (FINN's front end) and hls4ml.

    pip install -e ".[peers]"            # brevitas 0.13.4, hls4ml 1.3.0 (not needed by make test)
    python bench/peers.py [--qat-steps 300] [--sim-images 200] [--mnist-test 10000]

Two plain CNNs every tool takes (conv-BN-ReLU, max-pool, flatten, linear), trained in float
here: a 3-conv CNN on scikit-learn's digits (8×8, 450 test images) and LeNet(8) on MNIST
(28×28, 10,000 test images).  On each:

* **Brevitas** — its ``QuantConv2d`` / ``QuantReLU`` / ``QuantLinear`` twin of the float net
  (same weights to start), 4-bit weights and 4-bit activations with an 8-bit input (the
  configuration FINN users train), QAT for ``--qat-steps`` steps; and the same with 8-bit
  first and last layers (rmsmp's default edge).  Accuracy of Brevitas's own fake-quant
  forward.
* **rmsmp** — PTQ and PTQ+QAT (the same steps): RMSMP 10:5:1, the ratio
  ``AcceleratorConfig.for_board("ulx3s-85f")`` chooses, uniform fix4; with fix8 edge layers
  (default) and with every layer on the ratio.  Accuracy of the integer golden model.
* **hls4ml** — its PyTorch front end on the same float nets, compiled to its C++ emulation
  (``compile()``, g++) at ``ap_fixed<16,6>`` (its default), 8-bit and 4-bit weights with 8-bit
  activations (integer bits per layer from the weights' and activations' ranges, as its
  profiling guides; rounded to nearest and saturated, ``AP_RND_CONV,AP_SAT``).  Accuracy of the
  emulation, and how often its top-1 differs from the float model it was converted from.
* **rmsmp's simulator against golden** — the compiled RMSMP 10:5:1 program on the
  Verilator model of ``AcceleratorConfig()``: logits differing from golden (0 by design).

Bits per weight are over all conv/linear weights.  Times are wall-clock on this machine.
"""
from __future__ import annotations

import argparse
import math
import time
import warnings

import numpy as np
import torch
import torch.nn as nn

from rmsmp.host import AcceleratorConfig, compile_model, qat, quantize
from rmsmp.host.datasets import mnist
from rmsmp.host.models import load_digits, train_digits
from rmsmp.sim import golden


def digits_cnn() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(32 * 2 * 2, 10))


def lenet() -> nn.Sequential:
    """LeNet(8) of rmsmp.host.models as a Sequential (the layers the twins are built from)."""
    return nn.Sequential(nn.Conv2d(1, 8, 5, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 5, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(16 * 4 * 4, 10))


def weight_layers(net: nn.Module):
    return [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


# -- Brevitas ---------------------------------------------------------------------------
def brevitas_twin(fp: nn.Sequential, wbits: int, abits: int, edge_bits: int | None) -> nn.Sequential:
    """The float net with Brevitas quant layers: ``wbits`` weights (``edge_bits`` for the
    first and last layer), ``abits`` unsigned activations after every ReLU, 8-bit signed input."""
    import brevitas.nn as qnn
    wl = weight_layers(fp)
    layers = [qnn.QuantIdentity(bit_width=8)]
    for m in fp:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            b = edge_bits if edge_bits and m in (wl[0], wl[-1]) else wbits
            if isinstance(m, nn.Conv2d):
                q = qnn.QuantConv2d(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride, padding=m.padding,
                                    bias=m.bias is not None, weight_bit_width=b)
            else:
                q = qnn.QuantLinear(m.in_features, m.out_features, bias=m.bias is not None, weight_bit_width=b)
            q.weight.data.copy_(m.weight.data)
            if m.bias is not None:
                q.bias.data.copy_(m.bias.data)
            q.bits_per_weight = b
            layers.append(q)
        elif isinstance(m, nn.ReLU):
            layers.append(qnn.QuantReLU(bit_width=abits))
        elif isinstance(m, nn.BatchNorm2d):
            bn = nn.BatchNorm2d(m.num_features)
            bn.load_state_dict(m.state_dict())
            layers.append(bn)
        else:
            layers.append(type(m)(**{k: getattr(m, k) for k in ("kernel_size", "stride")})
                          if isinstance(m, nn.MaxPool2d) else nn.Flatten())
    return nn.Sequential(*layers)


def train_steps(net: nn.Module, batches, steps: int, lr: float, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    net.train()
    for k in range(steps):
        x, y = batches[k % len(batches)]
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


# -- hls4ml -----------------------------------------------------------------------------
# Round to nearest and saturate: with ap_fixed's defaults (truncate toward -inf, wrap) the
# 4-bit weights of these float nets fall to chance (11 % on digits), which says more about
# the defaults than about hls4ml.
_QUANT = "AP_RND_CONV,AP_SAT"


def _int_bits(vmax: float) -> int:
    """Integer bits (sign included) of an ``ap_fixed`` that holds ±``vmax``."""
    return max(1, math.ceil(math.log2(max(vmax, 1e-6))) + 1)


def hls4ml_model(fp: nn.Sequential, shape, calib: torch.Tensor, wbits: int | None, abits: int, out_dir: str):
    """hls4ml's C++ emulation of ``fp``: ``wbits``-bit weights, ``abits``-bit results (``None``:
    its default ``ap_fixed<16,6>`` everywhere), integer bits from the observed ranges."""
    import hls4ml
    cfg = hls4ml.utils.config_from_pytorch_model(fp, input_shape=tuple(shape), granularity="name",
                                                 default_precision="ap_fixed<16,6>", backend="Vivado")
    if wbits is not None:
        acts = {}
        hooks = [m.register_forward_hook(lambda mod, i, o, n=n: acts.__setitem__(n, float(o.abs().max())))
                 for n, m in fp.named_modules() if n]
        with torch.no_grad():
            fp(calib)
        for h in hooks:
            h.remove()
        mods = dict(fp.named_modules())
        for lname, lc in cfg["LayerName"].items():
            key = lname[1:] if lname.startswith("_") else lname     # hls4ml names Sequential's "0" "_0"
            mod = mods.get(key)
            prec = lc.setdefault("Precision", {})
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                prec["weight"] = f"ap_fixed<{wbits},{_int_bits(float(mod.weight.detach().abs().max()))},{_QUANT}>"
                prec["bias"] = "ap_fixed<16,6>"
            if key in acts and not isinstance(mod, (nn.Flatten, nn.MaxPool2d)):
                prec["result"] = f"ap_fixed<{abits},{_int_bits(acts[key])},{_QUANT}>"
        if not any("weight" in lc.get("Precision", {}) and "<" in str(lc["Precision"]["weight"])
                   for lc in cfg["LayerName"].values()):
            raise RuntimeError("hls4ml layer names did not match the network's: no precision was set")
    hm = hls4ml.converters.convert_from_pytorch_model(fp, hls_config=cfg, output_dir=out_dir, backend="Vivado",
                                                      io_type="io_parallel")
    hm.compile()
    return hm


def hls4ml_predict(hm, x: torch.Tensor) -> torch.Tensor:
    y = hm.predict(np.ascontiguousarray(x.numpy().astype(np.float32)))
    return torch.from_numpy(np.asarray(y, dtype=np.float64)).reshape(len(x), -1)


# -- the bench --------------------------------------------------------------------------
def top1(logits, y) -> float:
    return float((logits.argmax(1) == y).double().mean()) * 100


def mean_bits(net: nn.Module) -> float:
    ws = [m for m in net.modules() if hasattr(m, "bits_per_weight")]
    return sum(m.bits_per_weight * m.weight.numel() for m in ws) / sum(m.weight.numel() for m in ws)


def rmsmp_bits(qm) -> float:
    return qm.weight_bits() / sum(l.weight.numel() for l in qm.compute_layers())


def run_network(name, fp, shape, train, xte, yte, a, hw_ratio):
    rows = []
    cal = [(x, y) for x, y in train[:8]]
    with torch.no_grad():
        f = fp(xte)
    fp_pred = f.argmax(1)
    rows.append((name, "float", "FP32", 32.0, top1(f, yte), None, "", 0.0))

    # Brevitas: QAT from the float weights (its fake-quant forward)
    for edge in (None, 8):
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tw = train_steps(brevitas_twin(fp, 4, 4, edge), train, a.qat_steps, lr=a.brevitas_lr)
            with torch.no_grad():
                acc = top1(tw(xte), yte)
        label = "4w4a QAT" + (", 8-bit first/last layer" if edge else "")
        rows.append((name, "Brevitas", label, mean_bits(tw), None, acc, "", time.perf_counter() - t))

    # rmsmp: PTQ and PTQ+QAT, integer golden model
    kinds = [("RMSMP 10:5:1", {}),
             ("RMSMP hardware ratio " + ", ".join(f"{k} {v:.2f}" for k, v in hw_ratio.items()), {"ratio": hw_ratio}),
             ("uniform fix4", {"ratio": {"fix4": 1.0}})]
    programs = {}
    for label, kw in kinds:
        for edge in ("fix8", None):
            t = time.perf_counter()
            qm = quantize(fp, cal, seed=0, edge_scheme=edge, edge_act_bits=8 if edge else None, **kw)
            ptq = top1(golden(qm, xte), yte)
            qq = qat(qm, train, steps=a.qat_steps, seed=0)
            acc = top1(golden(qq, xte), yte)
            if label == "RMSMP 10:5:1" and edge:
                programs[name] = qm
            rows.append((name, "rmsmp", label + (", fix8 first/last layer" if edge else ", every layer"),
                         rmsmp_bits(qm), ptq, acc, "", time.perf_counter() - t))

    # hls4ml: its C++ emulation of the float net
    for label, wb, ab in (("its default config (ap_fixed<16,6>, result types inferred)", None, None),
                          ("8-bit weights, 8-bit results (rounded, saturated)", 8, 8),
                          ("4-bit weights, 8-bit results (rounded, saturated)", 4, 8)):
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hm = hls4ml_model(fp, shape, cal[0][0], wb, ab, f"build/peers/hls4ml-{name}-{wb or 16}")
        y = hls4ml_predict(hm, xte)
        differ = float((y.argmax(1) != fp_pred).double().mean()) * 100
        rows.append((name, "hls4ml", label, float(wb or 16), None, top1(y, yte),
                     f"top-1 ≠ float model on {differ:.2f} %", time.perf_counter() - t))
    return rows, programs


def sim_check(qm, shape, x: torch.Tensor) -> tuple[int, int, float]:
    from rmsmp.sim import run_dataset
    cfg = AcceleratorConfig()
    prog = compile_model(qm, cfg, list(shape), batch=min(50, len(x)))
    t = time.perf_counter()
    y, _ = run_dataset(prog, cfg, x, workers=1)
    g = golden(qm, x)
    return int((y != g).any(1).sum()), len(x), time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qat-steps", type=int, default=300)
    ap.add_argument("--brevitas-lr", type=float, default=1e-3)
    ap.add_argument("--epochs", type=int, default=2, help="float training epochs of LeNet on MNIST")
    ap.add_argument("--mnist-test", type=int, default=10000)
    ap.add_argument("--sim-images", type=int, default=200, help="images run on the simulator per network")
    a = ap.parse_args(argv)
    try:
        import brevitas  # noqa: F401
        import hls4ml  # noqa: F401
    except ImportError as e:
        raise SystemExit(f"bench/peers.py needs the peers extra: pip install -e '.[peers]' ({e})") from None
    hw = AcceleratorConfig.for_board("ulx3s-85f").ratio
    t0 = time.perf_counter()
    xtr, ytr, xte, yte = load_digits()
    torch.manual_seed(0)
    dnet = train_digits(digits_cnn(), xtr, ytr, epochs=30)
    dtrain = [(xtr[i:i + 64], ytr[i:i + 64]) for i in range(0, len(ytr) - 63, 64)]
    rows, progs = run_network("digits", dnet, (1, 8, 8), dtrain, xte, yte, a, hw)
    mx, my = mnist("train")
    mxt, myt = mnist("test")
    mxt, myt = mxt[:a.mnist_test], myt[:a.mnist_test]
    torch.manual_seed(0)
    mnet = train_digits(lenet(), mx, my, epochs=a.epochs, batch=128, seed=0)
    mtrain = [(mx[i:i + 64], my[i:i + 64]) for i in range(0, 32768, 64)]
    r2, p2 = run_network("MNIST", mnet, (1, 28, 28), mtrain, mxt, myt, a, hw)
    rows += r2
    progs.update(p2)
    sims = {"digits": sim_check(progs["digits"], (1, 8, 8), xte[:a.sim_images]),
            "MNIST": sim_check(progs["MNIST"], (1, 28, 28), mxt[:a.sim_images])}
    print(f"\nrmsmp beside Brevitas {brevitas.__version__} and hls4ml {hls4ml.__version__}: digits CNN (3 conv, "
          f"{len(yte)} test images), LeNet(8) on MNIST ({len(myt):,} test images); QAT {a.qat_steps} steps "
          f"(batch 64); total {time.perf_counter() - t0:.0f} s\n")
    print("| net | tool | configuration | bits/weight | top-1 % PTQ | top-1 % QAT / emulated | note | s |")
    print("|---|---|---|---|---|---|---|---|")
    for net, tool, label, bits, ptq, acc, note, s in rows:
        ptq_s = "" if ptq is None else f"{ptq:.2f}"
        acc_s = f"{acc:.2f}" if acc is not None else ""
        if tool == "float":
            ptq_s, acc_s = "", f"{ptq:.2f}"
        print(f"| {net} | {tool} | {label} | {bits:.2f} | {ptq_s} | {acc_s} | {note} | {s:.0f} |")
    print()
    for net, (bad, n, s) in sims.items():
        print(f"rmsmp simulator vs golden, {net} RMSMP 10:5:1: {bad} of {n} images' logits differ ({s:.0f} s)")


if __name__ == "__main__":
    main()
