"""Capture a ``torch.nn.Module`` as a list of :class:`Layer` (torch.fx), folding BatchNorm.

Supported: Conv2d (square kernel 1..7, stride 1/2, zero padding, groups=1, dilation=1),
Linear, BatchNorm1d/2d directly after a conv/linear (folded), ReLU (module or function,
fused into the producing conv/linear/add when it is the only user), residual add
(``+``, ``+=``, ``torch.add``), MaxPool2d, AdaptiveAvgPool2d(1)/global mean, flatten,
and Identity/Dropout (dropped).  Anything else raises
:class:`~rmsmp.errors.UnsupportedLayerError` naming the node and the op.
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
_ADD_FUNCS = {operator.add, operator.iadd, torch.add}
_FLATTEN_FUNCS = {torch.flatten}
_PASS_MODULES = (nn.Identity, nn.Dropout)


def _pair(v, what, node):
    if isinstance(v, (tuple, list)):
        if len(set(v)) != 1:
            raise UnsupportedLayerError(node, what, f"non-square {v}")
        return int(v[0])
    return int(v)


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

    def relu(node):
        s = src(node)
        prod = by_name[s]
        if prod.op in ("conv", "linear", "add") and not prod.attrs.get("relu") and only_user(s):
            prod.attrs["relu"] = True
            env[node] = s
            owner_node[s] = node
        else:
            add(Layer(node.name, "relu", (s,)), node)

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
            tname = str(node.target)
            if isinstance(m, nn.Conv2d):
                if m.groups != 1:
                    raise UnsupportedLayerError(tname, "Conv2d", f"groups={m.groups}; only groups=1 is supported")
                if _pair(m.dilation, "Conv2d dilation", tname) != 1:
                    raise UnsupportedLayerError(tname, "Conv2d", f"dilation={m.dilation}; only 1 is supported")
                if m.padding_mode != "zeros" or isinstance(m.padding, str):
                    raise UnsupportedLayerError(tname, "Conv2d", f"padding={m.padding!r} mode={m.padding_mode}; "
                                                "only explicit zero padding is supported")
                k = _pair(m.kernel_size, "Conv2d kernel", tname)
                s = _pair(m.stride, "Conv2d stride", tname)
                p = _pair(m.padding, "Conv2d padding", tname)
                if not 1 <= k <= 7 or s not in (1, 2):
                    raise UnsupportedLayerError(tname, "Conv2d",
                                                f"kernel {k}, stride {s}; supported kernel 1..7, stride 1/2")
                b = None if m.bias is None else m.bias.detach().float().clone()
                add(Layer(tname, "conv", (src(node),),
                          {"kernel": k, "stride": s, "padding": p,
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
            if t in _RELU_FUNCS or t in ("relu", "relu_"):
                relu(node)
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
