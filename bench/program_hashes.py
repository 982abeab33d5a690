"""Fingerprints of compiled programs: the check that a compiler refactor changes no image.

    python bench/program_hashes.py [--resnet] [--save hashes.json] [--check hashes.json]

Compiles the digits CNN (widths 32 and 16, RMSMP and HMQ) for several accelerator configs
(the default, the ULX3S and iCEBreaker ``for_board`` choices, the split-fix ULX3S array, an
add-only vector unit, batch 3) and, with ``--resnet``, ResNet-18 (random init, seed 0) at
32×32 and 224×224, and prints one SHA-256 per program over its memory image, its output
map and its I/O description.  ``--save`` writes them, ``--check`` compares with a saved set
and exits 1 on any difference.  The quantized models are cached in ``build/hash_models/``
(quantization is the slow part and is not what a compiler change touches).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

from rmsmp.host import AcceleratorConfig, QuantizedModel, compile_model, quantize
from rmsmp.host.models import DigitsNet, load_digits, resnet18, train_digits

CACHE = Path("build/hash_models")


def _cached(name, make):
    path = CACHE / f"{name}.rmsmp"
    if path.exists():
        return QuantizedModel.load(path)
    qm = make()
    CACHE.mkdir(parents=True, exist_ok=True)
    qm.save(path)
    return qm


def fingerprint(prog) -> str:
    head = json.dumps({"outputs": prog.outputs, "bus": prog.bus_width, "hash": prog.config_hash},
                      sort_keys=True, default=list)
    h = hashlib.sha256(head.encode())
    h.update(b"".join(int(w).to_bytes(8, "little") for w in prog.image))
    return h.hexdigest()[:16]


def programs(resnet: bool):
    xtr, ytr, _, _ = load_digits()
    cal = [(xtr[i:i + 64], ytr[i:i + 64]) for i in range(0, 256, 64)]

    def digits(width, **kw):
        torch.manual_seed(0)
        return quantize(train_digits(DigitsNet(width=width), xtr, ytr, epochs=3), cal, **kw)

    d32 = _cached("digits32", lambda: digits(32))
    d16 = _cached("digits16", lambda: digits(16))
    dh = _cached("digits32_hmq", lambda: digits(32, method="hmq", target_compression=10.0, hmq_steps=20,
                                                 grad_steps=5))
    # fixed configs (for_board's choices move with the cost data): the ULX3S and iCEBreaker
    # cores of the 10:5:1 ratio, the split-fix array, and pixel-lane arrays
    default = AcceleratorConfig()
    ecp5 = {"weight_depth": 2048, "act_depth": 8192, "acc_depth": 512, "clock_hz": 12_500_000}
    ulx = AcceleratorConfig(lane_groups=(("pot4", 16), ("fix8", 9)), **ecp5)
    split = AcceleratorConfig(lane_groups=(("pot4", 19), ("fix4", 9), ("fix8", 2)), **ecp5)
    ice = AcceleratorConfig(lane_groups=(("pot4", 1), ("fix8", 1)), columns=2, weight_depth=512, act_depth=1024,
                            acc_depth=64, acc_bits=24, vector_ops=("add",), clock_hz=12_000_000)
    small = replace(default, weight_depth=256, act_depth=1024, acc_depth=16)
    add_only = replace(default, vector_ops=("add",))
    p2, p4 = replace(default, pixels=2, act_depth=4096), replace(default, pixels=4, act_depth=2048)
    shape = (1, 8, 8)
    yield "digits32/default", compile_model(d32, default, shape)
    yield "digits32/default/batch3", compile_model(d32, default, shape, batch=3)
    yield "digits32/ulx3s", compile_model(d32, ulx, shape)
    yield "digits32/split", compile_model(d32, split, shape)
    yield "digits32/small-buffers", compile_model(d32, small, shape)
    yield "digits32/add-only", compile_model(d32, add_only, shape)
    yield "digits32/icebreaker", compile_model(d32, ice, shape)
    yield "digits16/icebreaker/batch8", compile_model(d16, ice, shape, batch=8)
    yield "digits32-hmq/default", compile_model(dh, default, shape)
    yield "digits32/P2", compile_model(d32, p2, shape)
    yield "digits32/P4/batch3", compile_model(d32, p4, shape, batch=3)
    if resnet:
        def r18(size):
            torch.manual_seed(0)
            x = torch.randn(2, 3, size, size)
            return quantize(resnet18().eval(), x, hessian_images=1, hessian_samples=1)
        r32 = _cached("resnet18_32", lambda: r18(32))
        yield "resnet18-32/default", compile_model(r32, default, (3, 32, 32))
        yield "resnet18-32/small-buffers", compile_model(r32, replace(default, weight_depth=1024, act_depth=2048),
                                                         (3, 32, 32))
        r224 = _cached("resnet18_224", lambda: r18(224))
        yield "resnet18-224/default", compile_model(r224, default, (3, 224, 224))
        yield "resnet18-224/ulx3s", compile_model(r224, ulx, (3, 224, 224))
        yield "resnet18-224/split", compile_model(r224, split, (3, 224, 224))
        yield "resnet18-224/P4", compile_model(r224, p4, (3, 224, 224))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resnet", action="store_true", help="also ResNet-18 at 32×32 and 224×224")
    ap.add_argument("--save")
    ap.add_argument("--check")
    a = ap.parse_args(argv)
    got = {}
    for name, prog in programs(a.resnet):
        got[name] = fingerprint(prog)
        print(f"{got[name]}  {name}", flush=True)
    if a.save:
        Path(a.save).write_text(json.dumps(got, indent=1) + "\n")
    if a.check:
        want = json.loads(Path(a.check).read_text())
        bad = [n for n in got if n in want and want[n] != got[n]]
        missing = [n for n in want if n not in got]
        for n in bad:
            print(f"CHANGED  {n}: {want[n]} -> {got[n]}")
        print(f"{len(got) - len(bad)} of {len(got)} unchanged" + (f", {len(missing)} not compiled" if missing else ""))
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
