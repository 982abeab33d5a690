"""An ``nn.Module`` that executes a captured layer graph in float or fake-quant mode.

* ``mode="float"``: the BN-folded float network (calibration, Hessian estimates).
* ``mode="fake"``: weights quantized per row with their scheme and a learnable scale
  (straight-through estimator), every tensor rounded half-up to its ``TensorQ`` and
  clamped, as in ``docs/arithmetic.md``.  ``to_quantized()`` exports the trained state
  back to a :class:`QuantizedModel`.

The fake-quant forward rounds the bias to accumulator units like the hardware, but keeps
the real requantization factor where the hardware uses ``M/2^n``; the agreement this
allows is stated in docs §7 and tested.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layer import Layer, TensorQ, activation, conv2d, legal_pow2_exponent, legal_scale
from .schemes import parse_scheme

__all__ = ["GraphModule", "fake_quant_tensor", "ste_weight"]


def fake_quant_tensor(y: torch.Tensor, q: TensorQ) -> torch.Tensor:
    """Round ``y`` half-up to ``q`` and clamp; gradient passes inside the range (STE).

    A logarithmic ``q`` rounds half-up to its fine grid (``2^-value_frac``) and takes the
    level of the code the golden model's thresholds give."""
    if q.is_log:
        s = 2.0 ** q.value_frac
        lv = torch.tensor(q.levels(), dtype=y.dtype, device=y.device)
        u = torch.clamp(y * s, 0, float(lv[-1]))
        thr = torch.tensor(q.thresholds(), dtype=y.dtype, device=y.device)
        code = torch.bucketize(torch.floor(u.detach() + 0.5), thr, right=True)
        return (u + (lv[code] - u).detach()) / s
    s = 2.0 ** q.frac
    yc = torch.clamp(y * s, q.lo, q.hi)
    return (yc + (torch.floor(yc + 0.5) - yc).detach()) / s


def ste_weight(w: torch.Tensor, scale: torch.Tensor, groups) -> torch.Tensor:
    """Integer-valued weights (float) per row group ``[(scheme, rows), …]``, STE gradient.

    The gradient reaches both ``w`` and ``scale`` (LSQ-style) through ``w / scale``.
    """
    x = w / scale.reshape(-1, *([1] * (w.dim() - 1)))
    out = torch.empty_like(x)
    for scheme, rows in groups:
        xr = x[rows]
        out[rows] = xr + (scheme.round(xr) - xr).detach()
    return out


def _key(name: str) -> str:
    return re.sub(r"\W", "_", name)


class GraphModule(nn.Module):
    """Execute layers (a :class:`QuantizedModel`, or captured float layers with ``mode="float"``)."""

    def __init__(self, src, mode: str = "fake", *, pow2: bool = False):
        super().__init__()
        self.pow2 = pow2          # one power-of-two scale per layer (the "grad" method)
        self.frozen: dict[str, int] = {}        # pow2: exponents fixed late in training
        if mode not in ("float", "fake"):
            raise ValueError(f"mode must be 'float' or 'fake', got {mode!r}")
        layers_only = isinstance(src, (list, tuple))        # captured float layers, else a QuantizedModel
        if mode == "fake" and layers_only:
            raise ValueError("fake-quant mode needs a QuantizedModel")
        self._qm = None if layers_only else src
        self.layers: list[Layer] = list(src.layers if self._qm else src)
        self.mode = mode
        self.weight = nn.ParameterDict()
        self.bias = nn.ParameterDict()
        self.log2_scale = nn.ParameterDict()   # scales train in the log domain (relative steps)
        self._groups: dict[str, list] = {}
        self._rows: dict[str, int] = {}
        self.observer: Callable[[str, torch.Tensor], None] | None = None
        for l in self.layers:
            if l.op in ("conv", "linear"):
                k = _key(l.name)
                self.weight[k] = nn.Parameter(l.weight.detach().float().clone())
                self.bias[k] = nn.Parameter(l.bias.detach().float().clone())
                if mode == "fake" and pow2:
                    e = torch.log2(l.scale.detach().double())
                    if not bool((e == e.round()).all()) or len(set(e.tolist())) != 1:
                        raise ValueError(f"layer {l.name!r}: pow2 training needs one power-of-two scale per layer")
                    self.log2_scale[k] = nn.Parameter(e[:1].float())
                elif mode == "fake":
                    self.log2_scale[k] = nn.Parameter(torch.log2(l.scale.detach().double()).float())
                if mode == "fake":
                    self._groups[l.name] = [
                        (parse_scheme(s), torch.tensor([r for r, x in enumerate(l.schemes) if x == s]))
                        for s in sorted(set(l.schemes))]
                    self._rows[l.name] = l.rows

    def layer_weight(self, name: str) -> nn.Parameter:
        return self.weight[_key(name)]

    def row_scale(self, name: str) -> torch.Tensor:
        """Per-row scales of a conv/linear layer (``2^log2_scale``; fake mode).

        ``pow2``: the layer's one learned ``log2`` scale is rounded to an integer exponent
        — to whichever neighbour (floor or ceil) quantizes the current weights with the
        lower squared error, the fix for the exponent flipping between neighbours — with a
        straight-through gradient to the continuous value; a frozen exponent is used as is."""
        p = self.log2_scale[_key(name)]
        if not self.pow2:
            return torch.exp2(p)
        rows = self._rows[name]
        if name in self.frozen:
            # `0 * p` keeps the parameter in the graph (a zero gradient), so every step uses every
            # parameter: DistributedDataParallel needs no search for unused ones
            return torch.full((rows,), 2.0 ** self.frozen[name], device=p.device) + 0 * p
        with torch.no_grad():
            w = self.weight[_key(name)].detach().double()
            best = None
            for e in (math.floor(float(p)), math.ceil(float(p))):
                err = sum(float(((sch.round(w[r] / 2.0 ** e) * 2.0 ** e - w[r]) ** 2).sum())
                          for sch, r in self._groups[name])
                if best is None or err < best[0]:
                    best = (err, e)
        e = p + (best[1] - p).detach()
        return torch.exp2(e).expand(rows)

    def pow2_exponent(self, name: str) -> int:
        """The integer exponent ``row_scale`` uses now (pow2 mode)."""
        return int(round(math.log2(float(self.row_scale(name)[0].detach()))))

    def run_layer(self, l: Layer, args: list[torch.Tensor]) -> torch.Tensor:
        """Output of layer ``l`` for its input tensors ``args`` (real values)."""
        fake = self.mode == "fake"
        if l.op == "input":
            y = args[0].float()
        else:
            a = args[0]
            if l.op in ("conv", "linear"):
                k = _key(l.name)
                w, b = self.weight[k], self.bias[k]
                if fake:
                    s = self.row_scale(l.name)
                    wq = ste_weight(w, s, self._groups[l.name])
                    z = conv2d(a, wq, None, l.attrs) if l.op == "conv" else F.linear(a, wq)
                    shape = (1, -1, 1, 1) if l.op == "conv" else (1, -1)
                    # the hardware adds an integer bias in accumulator units (docs §4)
                    unit = s * 2.0 ** -self._qm.in_q(l).value_frac
                    bq = b / unit
                    bq = bq + (torch.round(bq) - bq).detach()
                    y = z * s.reshape(shape) + (bq * unit).reshape(shape)
                else:
                    y = conv2d(a, w, b, l.attrs) if l.op == "conv" else F.linear(a, w, b)
            elif l.op == "add":
                y = a + args[1]
            elif l.op == "relu":
                y = F.relu(a)
            elif l.op == "maxpool":
                y = F.max_pool2d(a, l.attrs["kernel"], l.attrs["stride"], l.attrs["padding"])
            elif l.op == "avgpool":
                y = a.mean(dim=(2, 3), keepdim=True)
            elif l.op == "flatten":
                y = a.flatten(1)
            else:  # pragma: no cover
                raise ValueError(f"unknown op {l.op}")
            y = activation(y, l.attrs)
        if fake and l.op not in ("maxpool", "flatten", "relu"):
            y = fake_quant_tensor(y, l.out)
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vals: dict[str, torch.Tensor] = {}
        for l in self.layers:
            y = self.run_layer(l, [x] if l.op == "input" else [vals[i] for i in l.inputs])
            if self.observer is not None:
                self.observer(l.name, y)
            vals[l.name] = y
        return vals[self.layers[-1].name]

    @torch.no_grad()
    def to_quantized(self):
        """Export the current (e.g. fine-tuned) state as a new :class:`QuantizedModel`."""
        if self.mode != "fake":
            raise ValueError("only a fake-quant GraphModule exports a QuantizedModel")
        qm = self._qm
        new = []
        for l in self.layers:
            if l.op in ("conv", "linear"):
                k = _key(l.name)
                w = self.weight[k].detach().float().clone()
                b = self.bias[k].detach().float().clone()
                if self.pow2:                       # a bias floor may only raise the exponent
                    e = legal_pow2_exponent(self.pow2_exponent(l.name), b, qm.in_q(l).value_frac)
                    s = torch.full((l.rows,), 2.0 ** e, dtype=torch.float64)
                else:
                    s = legal_scale(self.row_scale(l.name).detach(), b, qm.in_q(l).value_frac)
                q = torch.empty_like(w, dtype=torch.int64)
                for scheme, rows in self._groups[l.name]:
                    q[rows] = scheme.quantize(w[rows].double(), s[rows])
                l = Layer(l.name, l.op, l.inputs, dict(l.attrs), weight=w, bias=b, out=l.out,
                          schemes=l.schemes, qweight=q, scale=s)
            new.append(l)
        return qm.with_layers(new)
