"""Capture a ``torch.nn.Module`` as a list of :class:`Layer` (torch.fx), folding BatchNorm.

Supported: Conv2d (square kernel 1..7, stride 1/2, zero padding — numbers, ``"same"`` or
``"valid"`` — groups=1 or depthwise (groups = in = out channels), dilation=1), zero
padding before a conv (``F.pad``, ``ZeroPad2d``, ``ConstantPad2d(…, 0)``; folded into the
conv, also asymmetric as TensorFlow's "same" at stride 2: the same amount before on both
axes and the same after), Linear, BatchNorm1d/2d
directly after a conv/linear (folded), ReLU and ReLU6 (modules, functions, ``Hardtanh(0, c)``
and ``clamp(0, c)``; fused into the producing conv/linear/add when it is the only user — a
ReLU6 must be), residual add (``+``, ``+=``, ``torch.add``), MaxPool2d,
AdaptiveAvgPool2d(1)/global mean, flatten, and Identity/Dropout (dropped).  Anything else
raises :class:`~rmsmp.errors.UnsupportedLayerError` naming the node and the op.
"""
from __future__ import annotations

import copy
import operator

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UnsupportedLayerError
from .qmodel import Layer

__all__ = ["capture", "fold_bn"]

_RELU_FUNCS = {F.relu, torch.relu, torch.relu_}
_CLAMP_FUNCS = {torch.clamp, torch.clip}
_PAD_MODULES = (nn.ZeroPad2d, nn.ConstantPad2d)
_ADD_FUNCS = {operator.add, operator.iadd, torch.add}
_FLATTEN_FUNCS = {torch.flatten}
_PASS_MODULES = (nn.Identity, nn.Dropout)


def _pair(v, what, node):
    if isinstance(v, (tuple, list)):
        if len(set(v)) != 1:
            raise UnsupportedLayerError(node, what, f"non-square {v}")
        return int(v[0])
    return int(v)


def _arg(node, i: int, name: str, default):
    """Argument ``i`` (or keyword ``name``) of an fx call, ``default`` when absent."""
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


def fold_bn(weight, bias, bn: nn.modules.batchnorm._BatchNorm):
    """Fold eval-mode BatchNorm into the preceding layer's weight/bias (float64 math)."""
    w = weight.detach().double()
    b = torch.zeros(w.shape[0], dtype=torch.float64) if bias is None else bias.detach().double()
    gamma = bn.weight.detach().double() if bn.affine else torch.ones_like(b)
    beta = bn.bias.detach().double() if bn.affine else torch.zeros_like(b)
    std = torch.sqrt(bn.running_var.detach().double() + bn.eps)
    k = gamma / std
    w = w * k.reshape(-1, *([1] * (w.dim() - 1)))
    b = (b - bn.running_mean.detach().double()) * k + beta
    return w.float(), b.float()


def capture(model: nn.Module) -> list[Layer]:
    """Trace ``model`` (not modified) into layers with BN folded and ReLUs fused."""
    model = copy.deepcopy(model).eval()
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as e:  # data-dependent control flow etc.
        raise UnsupportedLayerError(type(model).__name__, "torch.fx trace", str(e).splitlines()[0]) from None
    mods = dict(gm.named_modules())
    layers: list[Layer] = []
    by_name: dict[str, Layer] = {}
    env: dict[torch.fx.Node, str] = {}     # fx node -> layer name holding its value
    owner_node: dict[str, torch.fx.Node] = {}  # layer name -> fx node currently carrying it

    def add(layer: Layer, node):
        layers.append(layer)
        by_name[layer.name] = layer
        env[node] = layer.name
        owner_node[layer.name] = node

    def src(node, i=0):
        a = node.args[i]
        if not isinstance(a, torch.fx.Node):
            raise UnsupportedLayerError(node.name, str(node.target), "operand is not a tensor")
        return env[a]

    def only_user(name) -> bool:
        return len(owner_node[name].users) == 1

    def relu(node, clip=None, what="ReLU"):
        s = src(node)
        prod = by_name[s]
        if prod.op in ("conv", "linear", "add") and not prod.attrs.get("relu") and only_user(s):
            prod.attrs["relu"] = True
            if clip is not None:
                prod.attrs["clip"] = float(clip)
            env[node] = s
            owner_node[s] = node
        elif clip is not None:
            raise UnsupportedLayerError(node.name, what, f"a clamp to [0, {clip:g}] must directly follow a "
                                        "conv/linear/add whose only user it is (it runs in that layer's requantizer)")
        else:
            add(Layer(node.name, "relu", (s,)), node)

    def clamp(node, lo, hi, what):
        """``clamp(lo, hi)``: ReLU (0, None) or ReLU6-style (0, c > 0); nothing else runs."""
        if lo != 0 or (hi is not None and not (isinstance(hi, (int, float)) and hi > 0)):
            raise UnsupportedLayerError(node.name, what, f"clamp to [{lo}, {hi}]; only [0, c] with c > 0 "
                                        "(ReLU, ReLU6) is supported")
        relu(node, None if hi is None else float(hi), what)

    pads: dict = {}     # pad node -> (before, after), folded into the conv that reads it

    def pad(node, amounts, value, what):
        if value != 0:
            raise UnsupportedLayerError(node.name, what, f"padding value {value}; only zeros are supported")
        if len(amounts) != 4 or amounts[0] != amounts[2] or amounts[1] != amounts[3] or min(amounts) < 0:
            raise UnsupportedLayerError(node.name, what, f"padding {tuple(amounts)}; supported: (left, right, top, "
                                        "bottom) with top = left ≥ 0 and bottom = right ≥ 0")
        for u in node.users:
            if u.op != "call_module" or not isinstance(mods.get(u.target), nn.Conv2d):
                raise UnsupportedLayerError(node.name, what, f"used by {u.name}; zero padding runs only folded "
                                            "into the Conv2d that directly reads it")
        pads[node] = (int(amounts[0]), int(amounts[1]))
        env[node] = src(node)

    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if layers:
                raise UnsupportedLayerError(node.name, "input", "models with more than one input are not supported")
            add(Layer("input", "input"), node)
        elif node.op == "output":
            out = node.args[0]
            if not isinstance(out, torch.fx.Node):
                raise UnsupportedLayerError("output", "output", "the model must return one tensor")
            name = env[out]
            if layers[-1].name != name:  # keep the output last
                layers.append(layers.pop(layers.index(by_name[name])))
        elif node.op == "call_module":
            m = mods[node.target]
            tname = str(node.target) if str(node.target) not in by_name else node.name   # a module used twice
            if isinstance(m, nn.Conv2d):
                if m.groups != 1 and not m.groups == m.in_channels == m.out_channels:
                    raise UnsupportedLayerError(tname, "Conv2d", f"groups={m.groups} ({m.in_channels} → "
                                                f"{m.out_channels} channels); supported: groups=1 and depthwise "
                                                "(groups = in_channels = out_channels)")
                if _pair(m.dilation, "Conv2d dilation", tname) != 1:
                    raise UnsupportedLayerError(tname, "Conv2d", f"dilation={m.dilation}; only 1 is supported")
                if m.padding_mode != "zeros":
                    raise UnsupportedLayerError(tname, "Conv2d", f"padding_mode={m.padding_mode!r}; "
                                                "only zero padding is supported")
                k = _pair(m.kernel_size, "Conv2d kernel", tname)
                s = _pair(m.stride, "Conv2d stride", tname)
                if m.padding == "valid":
                    p0 = p1 = 0
                elif m.padding == "same":            # (torch allows it at stride 1 only)
                    p0 = (k - 1) // 2
                    p1 = k - 1 - p0
                else:
                    p0 = p1 = _pair(m.padding, "Conv2d padding", tname)
                if not 1 <= k <= 7 or s not in (1, 2):
                    raise UnsupportedLayerError(tname, "Conv2d",
                                                f"kernel {k}, stride {s}; supported kernel 1..7, stride 1/2")
                if node.args[0] in pads:             # F.pad / ZeroPad2d folded in
                    before, after = pads[node.args[0]]
                    p0, p1 = p0 + before, p1 + after
                geom = {"padding": p0} if p0 == p1 else {"padding": p0, "pad_after": p1}
                if m.groups > 1:
                    geom["groups"] = m.groups
                b = None if m.bias is None else m.bias.detach().float().clone()
                add(Layer(tname, "conv", (src(node),),
                          {"kernel": k, "stride": s, **geom,
                           "in_channels": m.in_channels, "out_channels": m.out_channels},
                          weight=m.weight.detach().float().clone(),
                          bias=b if b is not None else torch.zeros(m.out_channels)), node)
            elif isinstance(m, nn.Linear):
                b = m.bias.detach().float().clone() if m.bias is not None else torch.zeros(m.out_features)
                add(Layer(tname, "linear", (src(node),),
                          {"in_features": m.in_features, "out_features": m.out_features},
                          weight=m.weight.detach().float().clone(), bias=b), node)
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                s = src(node)
                prod = by_name[s]
                if prod.op not in ("conv", "linear") or prod.attrs.get("relu") or not only_user(s):
                    raise UnsupportedLayerError(tname, type(m).__name__,
                                                "BatchNorm must directly follow a conv/linear whose only user it is")
                if not m.track_running_stats or m.running_mean is None:
                    raise UnsupportedLayerError(tname, type(m).__name__, "needs running statistics to fold")
                prod.weight, prod.bias = fold_bn(prod.weight, prod.bias, m)
                env[node] = s
                owner_node[s] = node
            elif isinstance(m, nn.ReLU):
                relu(node)
            elif isinstance(m, nn.ReLU6):
                relu(node, 6.0, "ReLU6")
            elif isinstance(m, nn.Hardtanh):
                clamp(node, m.min_val, m.max_val, "Hardtanh")
            elif isinstance(m, _PAD_MODULES):
                pad(node, m.padding, getattr(m, "value", 0), type(m).__name__)
            elif isinstance(m, nn.MaxPool2d):
                if _pair(m.dilation, "MaxPool2d dilation", tname) != 1 or m.ceil_mode:
                    raise UnsupportedLayerError(tname, "MaxPool2d", "dilation and ceil_mode are not supported")
                k = _pair(m.kernel_size, "MaxPool2d kernel", tname)
                st = _pair(m.stride if m.stride is not None else m.kernel_size, "MaxPool2d stride", tname)
                add(Layer(tname, "maxpool", (src(node),),
                          {"kernel": k, "stride": st, "padding": _pair(m.padding, "MaxPool2d padding", tname)}), node)
            elif isinstance(m, nn.AdaptiveAvgPool2d):
                if _pair(m.output_size, "AdaptiveAvgPool2d", tname) != 1:
                    raise UnsupportedLayerError(tname, "AdaptiveAvgPool2d",
                                                f"output_size={m.output_size}; only global (1) pooling is supported")
                add(Layer(tname, "avgpool", (src(node),)), node)
            elif isinstance(m, nn.Flatten):
                if m.start_dim != 1:
                    raise UnsupportedLayerError(tname, "Flatten", "only start_dim=1 is supported")
                add(Layer(tname, "flatten", (src(node),)), node)
            elif isinstance(m, _PASS_MODULES):
                env[node] = src(node)
            else:
                raise UnsupportedLayerError(tname, type(m).__name__)
        elif node.op in ("call_function", "call_method"):
            t = node.target
            kw = node.kwargs
            if t in _RELU_FUNCS or t in ("relu", "relu_"):
                relu(node)
            elif t is F.relu6:
                relu(node, 6.0, "relu6")
            elif t is F.hardtanh:
                clamp(node, _arg(node, 1, "min_val", -1.0), _arg(node, 2, "max_val", 1.0), "hardtanh")
            elif t in _CLAMP_FUNCS or t in ("clamp", "clip", "clamp_", "clip_"):
                clamp(node, _arg(node, 1, "min", None), _arg(node, 2, "max", None), str(getattr(t, "__name__", t)))
            elif t is F.pad:
                if _arg(node, 2, "mode", "constant") != "constant":
                    raise UnsupportedLayerError(node.name, "pad", f"mode {kw.get('mode')!r}; only zeros are supported")
                pad(node, tuple(_arg(node, 1, "pad", ())), _arg(node, 3, "value", 0) or 0, "pad")
            elif t in _ADD_FUNCS or t in ("add", "add_", "__add__", "__iadd__"):
                if len(node.args) != 2 or node.kwargs or not all(isinstance(a, torch.fx.Node) for a in node.args):
                    raise UnsupportedLayerError(node.name, str(t), "only tensor + tensor is supported")
                add(Layer(node.name, "add", (src(node, 0), src(node, 1))), node)
            elif t in _FLATTEN_FUNCS or t == "flatten":
                start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0 if t == "flatten" else 0)
                if start != 1:
                    raise UnsupportedLayerError(node.name, "flatten", "only flatten(x, 1) is supported")
                add(Layer(node.name, "flatten", (src(node),)), node)
            elif t is F.adaptive_avg_pool2d:
                add(Layer(node.name, "avgpool", (src(node),)), node)
            else:
                tn = getattr(t, "__name__", str(t))
                raise UnsupportedLayerError(node.name, f"{node.op} {tn}")
        else:
            raise UnsupportedLayerError(node.name, node.op)
    if not any(l.op in ("conv", "linear") for l in layers):
        raise UnsupportedLayerError(type(model).__name__, "model", "has no conv or linear layer")
    return layers
