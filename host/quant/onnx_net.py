"""ONNX in: a float ONNX model as an ``nn.Module`` the graph capture (:mod:`.graph`) reads.

:func:`from_onnx` parses the model with the ``onnx`` package and rebuilds it from the
PyTorch modules the fx front end already knows — ``Conv2d`` (biases and per-channel ``Add``s
folded in), ``BatchNorm2d``, ``ReLU``, ``Hardtanh(0, c)`` for ``Clip(0, c)``, ``MaxPool2d``,
``AvgPool2d``, ``AdaptiveAvgPool2d(1)``, ``ZeroPad2d``, ``Flatten``, ``Linear`` (``Gemm``, or
``MatMul`` by a constant with its bias ``Add``) and residual ``Add``s — so an ONNX network
quantizes, compiles and runs exactly as the same network written in PyTorch.  Constant
subgraphs (``Constant``, ``Reshape`` of initializers) are folded; ``Identity``/``Dropout``
pass through.  Anything else is refused with :class:`UnsupportedOnnxError` naming the node,
its op and why.

The op set is the one the hardware runs (convolutions, fully connected, ReLU/ReLU6, residual
add, max/average pooling, zero padding); tests/test_onnx.py checks rebuilt models against
``onnxruntime`` on models exported by ``torch.onnx.export`` and on the MNIST model of the
qonnx zoo.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import RmsmpError

__all__ = ["from_onnx", "UnsupportedOnnxError", "SUPPORTED_OPS", "onnx_input_shape"]

SUPPORTED_OPS = ("Conv", "Gemm", "MatMul", "BatchNormalization", "Relu", "Clip", "Add", "MaxPool", "AveragePool",
                 "GlobalAveragePool", "Flatten", "Reshape", "Pad", "Constant", "Identity", "Dropout")


class UnsupportedOnnxError(RmsmpError):
    """An ONNX node the accelerator cannot run (or the converter does not map)."""

    def __init__(self, node, why: str):
        name = node.name or (node.output[0] if node.output else "?")
        super().__init__(f"ONNX node {name!r} ({node.op_type}): {why}")


def _load(model):
    import onnx
    if isinstance(model, (str, Path)):
        try:
            model = onnx.load(str(model))
        except FileNotFoundError:
            raise
        except Exception as e:
            raise RmsmpError(f"{model}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise RmsmpError(f"the ONNX model is invalid: {str(e).splitlines()[0]}") from None
    return onnx.shape_inference.infer_shapes(model)


def _graph_inputs(g):
    inits = {i.name for i in g.initializer}
    return [i for i in g.input if i.name not in inits]


def onnx_input_shape(model) -> tuple:
    """(C, H, W) of an ONNX model's one image input."""
    return _input_shape(_load(model).graph)


def _input_shape(g) -> tuple:
    ins = _graph_inputs(g)
    if len(ins) != 1:
        raise RmsmpError(f"the ONNX model has {len(ins)} inputs; one image input is supported")
    dims = [d.dim_value for d in ins[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or not all(dims[1:]):
        raise RmsmpError(f"the ONNX model's input {ins[0].name!r} has shape {dims}; expected [N, C, H, W]")
    return tuple(dims[1:])


class OnnxNet(nn.Module):
    """The rebuilt network: modules named after the ONNX nodes, run in the graph's order;
    ``input_shape``: (C, H, W) of its image input (None if it is not one)."""

    def __init__(self, plan, input_name: str, output_name: str, modules: dict, input_shape: tuple):
        super().__init__()
        self.input_shape = input_shape
        self._plan = plan                # (kind, module name | None, inputs, output)
        self._input, self._output = input_name, output_name
        self.layers = nn.ModuleDict(modules)

    def forward(self, x):
        env = {self._input: x}
        for kind, name, ins, out in self._plan:
            if kind == "module":
                env[out] = self.layers[name](env[ins[0]])
            else:                        # a residual add
                env[out] = env[ins[0]] + env[ins[1]]
        return env[self._output]


def _attrs(node) -> dict:
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _fold(node, consts, opset) -> list:
    """The outputs of ``node`` whose inputs are all constants, by the ``onnx`` package's
    reference implementation of its op."""
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator
    ins = [i for i in node.input if i]
    g = helper.make_graph([node], "fold", [], [helper.make_empty_tensor_value_info(o) for o in node.output],
                          [numpy_helper.from_array(np.asarray(consts[i]), i) for i in ins])
    try:
        return ReferenceEvaluator(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])).run(None, {})
    except Exception as e:
        raise UnsupportedOnnxError(node, f"its constant inputs could not be folded ({type(e).__name__}: {e})") from None


def _safe(name: str) -> str:
    s = "".join(c if c.isalnum() else "_" for c in name)
    return s if s and not s[0].isdigit() else "n_" + s


def from_onnx(model) -> nn.Module:
    """The float ONNX ``model`` (a path or an ``onnx.ModelProto``) as an ``nn.Module`` in eval
    mode (see the module's docstring for the ops; others raise :class:`UnsupportedOnnxError`)."""
    from onnx import numpy_helper
    m = _load(model)
    g = m.graph
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 13)
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    shapes = {}
    for vi in [*g.value_info, *g.input, *g.output]:
        dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        shapes[vi.name] = dims
    ins = _graph_inputs(g)
    if len(ins) != 1 or len(g.output) != 1:
        raise RmsmpError(f"the ONNX model has {len(ins)} inputs and {len(g.output)} outputs; one of each is supported")
    uses: dict[str, int] = {}
    for node in g.node:
        for i in node.input:
            uses[i] = uses.get(i, 0) + 1
    for o in g.output:
        uses[o.name] = uses.get(o.name, 0) + 1

    plan, modules = [], {}
    alias = {ins[0].name: ins[0].name}          # activation tensor -> the name it is computed under
    producer: dict[str, str] = {}               # activation -> module name that produced it

    def act(node, name):
        if name not in alias:
            raise UnsupportedOnnxError(node, f"input {name!r} is neither the network's input nor computed from it")
        return alias[name]

    def const(node, name, what):
        if name not in consts:
            raise UnsupportedOnnxError(node, f"{what} ({name!r}) must be a constant")
        return consts[name]

    def module(node, mod, x, tag=None):
        name = _safe(node.name or node.output[0])
        while name in modules:
            name += "_"
        modules[name] = mod
        plan.append(("module", name, [x], node.output[0]))
        alias[node.output[0]] = node.output[0]
        producer[node.output[0]] = name
        return name

    def spatial_pads(node, a, k, s, x_name):
        """(top, left, bottom, right) of a conv/pool from ``pads``/``auto_pad``."""
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            hw = shapes.get(x_name, [None] * 4)[2:]
            if len(hw) != 2 or None in hw:
                raise UnsupportedOnnxError(node, "auto_pad SAME needs the input's height and width (shape inference)")
            out = []
            for n, kk, ss in zip(hw, k, s):
                total = max((math.ceil(n / ss) - 1) * ss + kk - n, 0)
                lo = total // 2 if auto == "SAME_UPPER" else total - total // 2
                out.append((lo, total - lo))
            return out[0][0], out[1][0], out[0][1], out[1][1]
        if auto == "VALID":
            return 0, 0, 0, 0
        p = list(a.get("pads", [0, 0, 0, 0]))
        if len(p) != 4:
            raise UnsupportedOnnxError(node, f"pads {p}: a 2-D op takes four")
        return p[0], p[1], p[2], p[3]

    def sym_or_pad(node, pads, x):
        """Symmetric padding for the op, or a ZeroPad2d before it (asymmetric: Keras/TF 'same')."""
        t, left, b, r = pads
        if t == b and left == r:
            return (t, left), x
        pad = nn.ZeroPad2d((left, r, t, b))
        name = _safe((node.name or node.output[0]) + "_pad")
        modules[name] = pad
        out = node.output[0] + "__padded"
        plan.append(("module", name, [x], out))
        alias[out] = out
        return (0, 0), out

    for node in g.node:
        op, a = node.op_type, _attrs(node)
        out = node.output[0] if node.output else None
        if op != "Constant" and node.input and all(i in consts for i in node.input if i):
            for name, v in zip(node.output, _fold(node, consts, opset)):
                consts[name] = v                        # a constant subgraph (shapes, pads, weights)
            continue
        if op == "Constant":
            if "value" not in a:
                raise UnsupportedOnnxError(node, "only tensor constants (value=) are supported")
            consts[out] = numpy_helper.to_array(a["value"])
        elif op in ("Identity", "Dropout"):
            if node.input[0] in consts:
                consts[out] = consts[node.input[0]]
            else:
                alias[out] = act(node, node.input[0])
                if alias[out] in producer:
                    producer[out] = producer[alias[out]]
        elif op == "Reshape":
            shape = const(node, node.input[1], "the target shape")
            if node.input[0] in consts:
                consts[out] = consts[node.input[0]].reshape([int(v) for v in shape])
                continue
            x = act(node, node.input[0])
            if len(shape) != 2 or int(shape[-1]) not in (-1, math.prod(d or 0 for d in shapes.get(out, [0, 0])[1:])):
                raise UnsupportedOnnxError(node, f"reshape to {list(shape)}: only flattening [N, C, H, W] to [N, "
                                                 f"C·H·W] is supported")
            module(node, nn.Flatten(), x)
        elif op == "Flatten":
            if a.get("axis", 1) != 1:
                raise UnsupportedOnnxError(node, f"axis {a.get('axis')}: only axis 1 (keep the batch) is supported")
            module(node, nn.Flatten(), act(node, node.input[0]))
        elif op == "Conv":
            x = act(node, node.input[0])
            w = const(node, node.input[1], "the weights")
            if w.ndim != 4:
                raise UnsupportedOnnxError(node, f"a {w.ndim - 2}-D convolution; only 2-D is supported")
            if any(d != 1 for d in a.get("dilations", [1, 1])):
                raise UnsupportedOnnxError(node, f"dilations {a['dilations']} are not supported")
            groups = int(a.get("group", 1))
            cout, cin_g, kh, kw = w.shape
            cin = cin_g * groups
            k = list(a.get("kernel_shape", [kh, kw]))
            s = list(a.get("strides", [1, 1]))
            pad, x = sym_or_pad(node, spatial_pads(node, a, k, s, node.input[0]), x)
            conv = nn.Conv2d(cin, cout, (kh, kw), tuple(s), pad, groups=groups, bias=len(node.input) > 2)
            conv.weight.data = torch.from_numpy(np.array(w, dtype=np.float32))
            if len(node.input) > 2:
                conv.bias.data = torch.from_numpy(np.array(const(node, node.input[2], "the bias"),
                                                                       dtype=np.float32))
            module(node, conv, x)
        elif op in ("Gemm", "MatMul"):
            x = act(node, node.input[0])
            w = const(node, node.input[1], "the weights").astype(np.float32)
            if w.ndim != 2:
                raise UnsupportedOnnxError(node, f"weights of shape {list(w.shape)}; a 2-D matrix is expected")
            if op == "Gemm" and a.get("transA", 0):
                raise UnsupportedOnnxError(node, "transA=1 is not supported")
            trans_b = op == "Gemm" and a.get("transB", 0)
            wt = (w if trans_b else w.T) * (a.get("alpha", 1.0) if op == "Gemm" else 1.0)     # [out, in]
            bias = None
            if op == "Gemm" and len(node.input) > 2 and node.input[2]:
                bias = const(node, node.input[2], "the bias").astype(np.float32).reshape(-1) * a.get("beta", 1.0)
            lin = nn.Linear(wt.shape[1], wt.shape[0], bias=True)
            lin.weight.data = torch.from_numpy(np.array(wt, dtype=np.float32))
            lin.bias.data = torch.from_numpy(np.broadcast_to(bias, (wt.shape[0],)).copy() if bias is not None
                                             else np.zeros(wt.shape[0], np.float32))
            module(node, lin, x)
        elif op == "BatchNormalization":
            x = act(node, node.input[0])
            scale, b, mean, var = (const(node, n, what) for n, what in
                                   zip(node.input[1:5], ("scale", "bias", "mean", "variance")))
            bn = nn.BatchNorm2d(len(scale), eps=float(a.get("epsilon", 1e-5)))
            for t, v in ((bn.weight, scale), (bn.bias, b), (bn.running_mean, mean), (bn.running_var, var)):
                t.data = torch.from_numpy(np.array(v, dtype=np.float32))
            module(node, bn.eval(), x)
        elif op == "Relu":
            module(node, nn.ReLU(), act(node, node.input[0]))
        elif op == "Clip":
            if opset >= 11:
                lo = float(const(node, node.input[1], "min")) if len(node.input) > 1 and node.input[1] else -math.inf
                hi = float(const(node, node.input[2], "max")) if len(node.input) > 2 and node.input[2] else math.inf
            else:
                lo, hi = float(a.get("min", -math.inf)), float(a.get("max", math.inf))
            if lo != 0 or not math.isfinite(hi) or hi <= 0:
                raise UnsupportedOnnxError(node, f"clip to [{lo:g}, {hi:g}]: only [0, c] (ReLU6-like) is supported")
            module(node, nn.Hardtanh(0.0, hi), act(node, node.input[0]))
        elif op in ("MaxPool", "AveragePool"):
            x = act(node, node.input[0])
            k = list(a["kernel_shape"])
            s = list(a.get("strides", [1, 1]))
            if any(d != 1 for d in a.get("dilations", [1, 1])):
                raise UnsupportedOnnxError(node, f"dilations {a['dilations']} are not supported")
            t, left, b, r = spatial_pads(node, a, k, s, node.input[0])
            if (t, left) != (b, r):
                raise UnsupportedOnnxError(node, f"asymmetric pooling padding {[t, left, b, r]} is not supported")
            ceil = bool(a.get("ceil_mode", 0))
            pool = (nn.MaxPool2d(tuple(k), tuple(s), (t, left), ceil_mode=ceil) if op == "MaxPool" else
                    nn.AvgPool2d(tuple(k), tuple(s), (t, left), ceil_mode=ceil,
                                 count_include_pad=bool(a.get("count_include_pad", 0))))
            module(node, pool, x)
        elif op == "GlobalAveragePool":
            module(node, nn.AdaptiveAvgPool2d(1), act(node, node.input[0]))
        elif op == "Pad":
            x = act(node, node.input[0])
            mode = a.get("mode", b"constant")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            pads = list(const(node, node.input[1], "pads") if opset >= 11 else a.get("pads", []))
            value = (float(const(node, node.input[2], "the value")) if opset >= 11 and len(node.input) > 2
                     and node.input[2] else float(a.get("value", 0.0)))
            if mode != "constant" or value != 0 or len(pads) != 8 or any(pads[i] for i in (0, 1, 4, 5)):
                raise UnsupportedOnnxError(node, f"{mode} padding by {value:g} of {pads}: only zero padding of "
                                                 f"the height and width is supported")
            module(node, nn.ZeroPad2d((int(pads[3]), int(pads[7]), int(pads[2]), int(pads[6]))), x)
        elif op == "Add":
            ia, ib = node.input
            if ia in consts and ib in consts:
                consts[out] = consts[ia] + consts[ib]
            elif ia in consts or ib in consts:
                xa, c = (ib, consts[ia]) if ia in consts else (ia, consts[ib])
                x = act(node, xa)
                mod = modules.get(producer.get(x, ""))
                channels = getattr(mod, "out_channels", None) or getattr(mod, "out_features", None)
                if mod is None or uses.get(x, 0) != 1 or c.size != channels:
                    raise UnsupportedOnnxError(node, "adding a constant is supported only as the bias of the "
                                                     "convolution or matrix product just before it")
                if isinstance(mod, nn.Conv2d) and c.ndim >= 3 and any(d != 1 for d in c.shape[-2:]):
                    raise UnsupportedOnnxError(node, f"a constant of shape {list(c.shape)} is not a per-channel bias")
                cb = torch.from_numpy(np.array(c.reshape(-1), dtype=np.float32))
                if mod.bias is None:
                    mod.bias = nn.Parameter(cb)
                else:
                    mod.bias.data = mod.bias.data + cb
                alias[out] = x
                producer[out] = producer[x]
            else:
                plan.append(("add", None, [act(node, ia), act(node, ib)], out))
                alias[out] = out
        else:
            raise UnsupportedOnnxError(node, f"not an op the accelerator runs (supported: {', '.join(SUPPORTED_OPS)})")
    result = g.output[0].name
    if result not in alias:
        raise RmsmpError(f"the ONNX model's output {result!r} is not computed from its input")
    try:
        shape = _input_shape(g)
    except RmsmpError:                            # not an [N, C, H, W] image input
        shape = None
    return OnnxNet(plan, ins[0].name, alias[result], modules, shape).eval()
