"""The integer golden model: executes a ``QuantizedModel`` exactly as the hardware does.

Every rule here is written down in ``docs/arithmetic.md``; every RTL test compares
against this, bit for bit.  All tensors are int64.  Convolutions are evaluated with
float64 kernels over integer-valued operands, which is exact because every partial
sum stays below 2^53 (checked per layer with :func:`accumulator_bits`; docs §6); :func:`conv_int` is the
int64-only reference used to test that claim.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from rmsmp.host.errors import RmsmpError
from rmsmp.host.quant.layer import as_images, clip_code, conv2d
from rmsmp.host.quant.qmodel import QuantizedModel, TensorQ, accumulator_bits, quantize_input, requant_multiplier
from rmsmp.host.quant.schemes import parse_scheme

__all__ = ["golden", "golden_trace", "quantize_input", "rshift_round", "requantize", "conv_int"]


def rshift_round(x: torch.Tensor, n) -> torch.Tensor:
    """``floor(x / 2^n + 1/2)`` on int64: arithmetic shift with round-half-up (n = 0: x)."""
    n = torch.as_tensor(n, dtype=torch.int64)
    half = torch.where(n > 0, torch.ones_like(n) << (n - 1).clamp(min=0), torch.zeros_like(n))
    return (x + half) >> n


def requantize(v: torch.Tensor, mult, shift, out: TensorQ, relu: bool, clip: int | None = None) -> torch.Tensor:
    """``clamp(rshift_round(v * M, n))``, lower bound 0 with ReLU, upper bound ``clip`` too
    with a fused ReLU6 (docs §4); a logarithmic ``out`` encodes the rounded value (in units
    of ``2^-out.value_frac``) to its code."""
    y = rshift_round(v * mult, shift)
    if clip is not None:
        y = y.clamp(max=clip)
    if out.is_log:
        return out.encode(y)
    lo = max(out.lo, 0) if relu else out.lo
    return y.clamp(lo, out.hi)


def _exact_f64(fn, *args, **kw) -> torch.Tensor:
    return fn(*(a.double() if isinstance(a, torch.Tensor) else a for a in args), **kw).round().to(torch.int64)


def conv_int(x: torch.Tensor, w: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
    """Pure int64 convolution (im2col + integer matmul); the slow independent reference."""
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    xp = F.pad(x, (padding,) * 4)
    oh = (h + 2 * padding - k) // stride + 1
    ow = (wd + 2 * padding - k) // stride + 1
    cols = xp.unfold(2, k, stride).unfold(3, k, stride)            # n c oh ow k k
    cols = cols.permute(0, 2, 3, 1, 4, 5).reshape(n, oh * ow, c * k * k)
    acc = cols @ w.reshape(o, -1).T                                 # int64 matmul
    return acc.reshape(n, oh, ow, o).permute(0, 3, 1, 2).contiguous()


def _check_width(qm: QuantizedModel, l) -> None:
    qmax = max(parse_scheme(s).qmax for s in set(l.schemes))
    bits = accumulator_bits(qmax, qm.in_q(l), l.fan_in)
    if bits > 52:
        raise RmsmpError(f"layer {l.name!r}: accumulator needs {bits} bits; golden supports up to 52")


def golden_trace(qm: QuantizedModel, x: torch.Tensor, *, integer_input: bool = False) -> dict:
    """Run ``qm`` on ``x`` and return every layer's integer output tensor by name."""
    inq = qm.input.out
    x = as_images(x, "golden input")
    xi = x.to(torch.int64) if integer_input else quantize_input(x, inq)
    if integer_input and (xi.min() < inq.lo or xi.max() > inq.hi):
        raise RmsmpError(f"integer input outside [{inq.lo}, {inq.hi}]")
    vals = {qm.input.name: xi}
    for l in qm.layers[1:]:
        a = vals[l.inputs[0]]
        if l.op not in ("maxpool", "flatten", "relu"):     # codes are monotone: those pass them
            a = qm[l.inputs[0]].out.decode(a)
        relu = bool(l.attrs.get("relu"))
        if l.op in ("conv", "linear"):
            _check_width(qm, l)
            rq = qm.requant[l.name]
            if l.op == "conv":
                acc = _exact_f64(conv2d, a, l.qweight, None, l.attrs)
                shape = (1, -1, 1, 1)
            else:
                acc = _exact_f64(F.linear, a, l.qweight)
                shape = (1, -1)
            v = acc + rq["bias"].reshape(shape)
            y = requantize(v, rq["mult"].reshape(shape), rq["shift"].reshape(shape), l.out, relu,
                           clip_code(l.attrs, l.out))
        elif l.op == "add":
            qa, qb = qm[l.inputs[0]].out, qm[l.inputs[1]].out
            b = qb.decode(vals[l.inputs[1]])
            fa, fb, fo = qa.value_frac, qb.value_frac, l.out.value_frac
            f = max(fa, fb)
            s = (a << (f - fa)) + (b << (f - fb))
            if fo > f:
                s = s << (fo - f)
            else:
                s = rshift_round(s, f - fo)
            clip = clip_code(l.attrs, l.out)
            if clip is not None:
                s = s.clamp(max=clip)
            y = l.out.encode(s) if l.out.is_log else s.clamp(max(l.out.lo, 0) if relu else l.out.lo, l.out.hi)
        elif l.op == "relu":
            y = a.clamp(min=0)
        elif l.op == "maxpool":
            k, st, p = l.attrs["kernel"], l.attrs["stride"], l.attrs["padding"]
            # padding never wins: it is -inf in float64, and values are exact integers
            y = F.max_pool2d(a.double(), k, st, p).to(torch.int64)
        elif l.op == "avgpool":
            iq = qm.in_q(l)
            count = a.shape[2] * a.shape[3]
            m, n = requant_multiplier(2.0 ** (l.out.value_frac - iq.value_frac) / count)
            y = requantize(a.sum(dim=(2, 3), keepdim=True), m, n, l.out, False)
        elif l.op == "flatten":
            y = a.flatten(1)
        else:  # pragma: no cover - validate() rejects unknown ops
            raise RmsmpError(f"layer {l.name!r}: golden cannot run op {l.op!r}")
        vals[l.name] = y
    return vals


def golden(qm: QuantizedModel, x: torch.Tensor, *, integer_input: bool = False,
           dequantize: bool = True) -> torch.Tensor:
    """Execute ``qm`` on a batch ``x`` (real values, or integers with ``integer_input``).

    Returns the output as real values (``q * 2^-frac``, float64) or, with
    ``dequantize=False``, the output integers.
    """
    y = golden_trace(qm, x, integer_input=integer_input)[qm.output.name]
    return qm.output.out.dequantize(y) if dequantize else y
