"""``quantize()``: PyTorch model + calibration data → :class:`QuantizedModel`."""
from __future__ import annotations

import os
from collections.abc import Mapping

import torch
import torch.nn as nn

from ..errors import RmsmpError
from .calibrate import ActivationRecorder, as_batches, fit_frac
from .fake import GraphModule
from .graph import capture
from .mxqn import choose_activation, sqnr_pow2_exponent
from .pow2 import gradient_second_moments, msqe_pow2_exponent
from .qmodel import Layer, QuantizedModel, TensorQ, legal_pow2_exponent, legal_scale
from .rmsmp import ASSIGN_MODES, assign_rows, fit_scales, hessian_row_traces, parse_ratio, row_counts
from .schemes import parse_scheme

__all__ = ["quantize", "DEFAULT_RATIO", "METHODS"]

#: The RMSMP paper's 10:5:1 split of a 16-row array.
DEFAULT_RATIO = {"pot4": 10 / 16, "fix4": 5 / 16, "fix8": 1 / 16}
METHODS = ("rmsmp", "msqe", "grad", "hmq", "mxqn")


def _check_bits(name, v, lo, hi):
    if not isinstance(v, int) or not lo <= v <= hi:
        raise RmsmpError(f"{name} must be an integer in {lo}..{hi}, got {v!r}")


def _tensor_bits(layers: list[Layer], first: str, last: str, *, act_bits, edge_act_bits, res_bits, out_bits):
    """Bits and signedness of every tensor (docs/quantization.md §activations).

    A tensor read by a conv/linear gets that layer's input width (edge layers:
    ``edge_act_bits``); pass-through ops (max-pool, flatten) hand their consumers'
    needs to their producer.  Other tensors: ``act_bits`` after ReLU, ``res_bits``
    signed otherwise (pre-residual-add), ``out_bits`` signed for the network output.
    """
    req: dict[str, int] = {}
    for l in reversed(layers):
        if l.is_compute:
            need = edge_act_bits if (l.name in (first, last) and edge_act_bits) else act_bits
        elif l.op in ("maxpool", "flatten"):
            need = req.get(l.name)
        else:
            need = None
        if need:
            for i in l.inputs:
                req[i] = max(req.get(i, 0), need)
    fmt: dict[str, tuple[int, bool]] = {}
    for l in layers:
        if l.op == "input":
            fmt[l.name] = (req.get(l.name, edge_act_bits or act_bits), True)
        elif l.op in ("maxpool", "flatten"):
            fmt[l.name] = fmt[l.inputs[0]]
        elif l.op == "relu":
            b, s = fmt[l.inputs[0]]
            fmt[l.name] = (b - 1 if s else b, False)
        else:
            signed = not l.attrs.get("relu") and (l.op != "avgpool" or fmt[l.inputs[0]][1])
            default = out_bits if l is layers[-1] else (act_bits if not signed else res_bits)
            fmt[l.name] = (req.get(l.name, default), signed)
    return fmt


def _check_calibration_shape(layers, batches) -> None:
    """The calibration images fit the layers that read the network input (a conv takes
    [N, C, H, W] with its channels, a linear [N, features]) — refused naming the layer."""
    x = batches[0][0]
    for l in layers[1:]:
        if l.inputs[:1] != (layers[0].name,) or l.weight is None:
            continue
        want = {"conv": 4, "linear": 2}.get(l.op)
        cin = l.weight.shape[1] * l.attrs.get("groups", 1)
        if want is not None and (x.dim() != want or x.shape[1] != cin):
            form = f"[N, {cin}, H, W]" if l.op == "conv" else f"[N, {cin}]"
            raise RmsmpError(f"calibration images of shape {list(x.shape)}; the model's first layer {l.name!r} "
                             f"({l.op}) takes {form}")


def quantize(model: nn.Module, calib_batches, method: str = "rmsmp", *,
             ratio: Mapping | None = None, act_bits: int = 4, edge_scheme: str | None = "fix8",
             edge_act_bits: int | None = 8, res_bits: int = 8, out_bits: int = 16,
             assign: str = "hessian", hessian_samples: int = 2, hessian_images: int = 16,
             outlier_sigma: float | None = 3.0, error_weight: str | None = "grad2", grad_steps: int = 200,
             target_compression: float = 8.0, hmq_steps: int = 200, log_activations: bool = True,
             seed: int = 0, progress: bool = False, device: str = "cpu") -> QuantizedModel:
    """Quantize ``model`` post-training.

    ``method="rmsmp"``: row-wise mixed schemes and precisions.  ``method="msqe"``: uniform
    symmetric fixed-point weights with one power-of-two scale per layer, chosen by MSQE
    (least squares, then the exponent with the lower error; :mod:`rmsmp.host.quant.pow2`).
    ``method="grad"``: the same grid with the scale learned by gradient (arXiv 2210.03671).
    ``method="mxqn"``: fixed-point weights with the fraction length of highest SQNR, and per
    activation tensor fixed-point or base-√2 logarithmic codes, whichever has the higher SQNR
    on the calibration data (:mod:`rmsmp.host.quant.mxqn`; no retraining).

    Args:
        model: a float ``nn.Module`` (conv/linear/BN/ReLU/add/pool/flatten graph), or an
            ONNX model — a ``.onnx`` path or an ``onnx.ModelProto`` — of the same op set
            (:func:`rmsmp.host.quant.onnx_net.from_onnx`).
        calib_batches: a tensor, or an iterable of tensors or ``(images, labels)``.
        method: ``"rmsmp"``, ``"msqe"``, ``"grad"`` (msqe, then ``grad_steps`` steps of
            training a learned log2 scale per layer whose exponent is rounded in the forward
            pass, frozen to its moving average for the last 20 %; needs labelled batches) or
            ``"hmq"`` (Gumbel-Softmax search of bit-width × power-of-two threshold per layer
            for ``hmq_steps`` toward ``target_compression`` (vs fp32; 8 = 4 bits per weight),
            argmax, then ``grad_steps`` of fine-tuning; needs labelled batches).
        ratio: ``{scheme: fraction}``, the same in every layer; default 10:5:1 of
            pot4:fix4:fix8 (rmsmp) or ``{"fix4": 1}`` (msqe, which takes one fix scheme).
            ``{"fix4": 1}`` gives uniform 4-bit fixed-point.
        act_bits: activation bits between layers (unsigned after ReLU).
        edge_scheme / edge_act_bits: scheme of every row, and input activation bits, of
            the first and last conv/linear (default fix8 / 8); ``None`` applies the
            ratio / ``act_bits`` to them too.
        res_bits: bits of signed tensors that feed a residual add.
        out_bits: bits of the network output (signed).
        assign: ``"hessian"`` (default), ``"variance"`` or ``"random"`` row assignment.
        hessian_samples / hessian_images: Hutchinson probes and images used.
        outlier_sigma (msqe): weights beyond this many standard deviations are left out of
            the error the scale minimises (``None``: keep them).
        log_activations (mxqn): ``False`` keeps every activation fixed-point (what this
            accelerator's RTL runs); the weights are still chosen by SQNR.
        error_weight (msqe): ``"grad2"`` weights each weight's error by its gradient second
            moment on the calibration data; ``None`` weights all alike.
        progress: show a progress bar.
        device (grad, hmq): where the training steps run (e.g. ``"cuda:0"``).  Under
            ``torchrun`` they are data-parallel over the ranks, each taking its share of
            every batch (:mod:`rmsmp.host.quant.distributed`); the result is the same on
            every rank.

    Example::

        qm = quantize(model, images[:32], ratio={"pot4": 10/16, "fix4": 5/16, "fix8": 1/16})
        logits = rmsmp.sim.golden(qm, images)
    """
    if method not in METHODS:
        raise RmsmpError(f"unknown quantization method {method!r}; available: {', '.join(METHODS)}")
    if not isinstance(model, nn.Module):
        if isinstance(model, (str, os.PathLike)) and not str(model).endswith(".onnx"):
            raise RmsmpError(f"quantize({str(model)!r}): give an nn.Module or an ONNX model (.onnx)")
        from .onnx_net import from_onnx
        model = from_onnx(model)
    if assign not in ASSIGN_MODES:
        raise RmsmpError(f"unknown row assignment {assign!r}; available: {', '.join(ASSIGN_MODES)}")
    _check_bits("act_bits", act_bits, 2, 8)
    _check_bits("res_bits", res_bits, 2, 16)
    _check_bits("out_bits", out_bits, 2, 32)
    if edge_act_bits is not None:
        _check_bits("edge_act_bits", edge_act_bits, 2, 8)
    if error_weight not in ("grad2", None):
        raise RmsmpError(f"unknown error_weight {error_weight!r}; available: 'grad2', None")
    ratio_s = parse_ratio((DEFAULT_RATIO if method == "rmsmp" else {"fix4": 1}) if ratio is None else ratio)
    if method in ("msqe", "grad", "mxqn") and (len(ratio_s) != 1 or next(iter(ratio_s)).kind != "fix"):
        raise RmsmpError(f"method {method!r} quantizes every row of a layer to one fixed-point grid; "
                         f"got ratio {dict((str(k), v) for k, v in ratio_s.items())}")
    edge = parse_scheme(edge_scheme) if edge_scheme is not None else None
    if method in ("msqe", "grad", "mxqn") and edge is not None and edge.kind != "fix":
        raise RmsmpError(f"method {method!r} needs a fixed-point edge_scheme, got {edge}")
    batches = as_batches(calib_batches)
    gen = torch.Generator().manual_seed(seed)

    layers = capture(model)
    _check_calibration_shape(layers, batches)
    compute = [l for l in layers if l.is_compute]
    first, last = compute[0].name, compute[-1].name
    gm = GraphModule(layers, mode="float")

    # -- activation formats: calibrate on the float (BN-folded) network ---------------
    rec = ActivationRecorder(seed=seed)
    gm.observer = rec
    with torch.no_grad():
        for x, _ in batches:
            gm(x)
    gm.observer = None
    fmt = _tensor_bits(layers, first, last, act_bits=act_bits, edge_act_bits=edge_act_bits,
                       res_bits=res_bits, out_bits=out_bits)
    outq: dict[str, TensorQ] = {}
    act_choice: dict[str, dict] = {}
    for l in layers:
        bits, signed = fmt[l.name]
        if l.op in ("maxpool", "flatten"):
            outq[l.name] = outq[l.inputs[0]]
        elif l.op == "relu":
            p = outq[l.inputs[0]]
            outq[l.name] = p if p.is_log else TensorQ(bits, False, p.frac)
        elif method == "mxqn" and log_activations and not signed and l.op != "input" and l is not layers[-1]:
            outq[l.name], act_choice[l.name] = choose_activation(rec.values(l.name), bits, rec.absmax[l.name])
        else:
            outq[l.name] = fit_frac(rec.values(l.name), bits, signed, rec.absmax[l.name])

    # -- row counts per layer, then sensitivity where precisions differ ------------------
    plan = {}
    for l in compute:
        if edge is not None and l.name in (first, last):
            plan[l.name] = {edge: l.rows}
        else:
            plan[l.name] = row_counts(l.rows, ratio_s)
    if method in ("grad", "hmq") and any(y is None for _, y in batches):
        raise RmsmpError(f"method {method!r} learns from the task loss: give labelled (images, labels) batches")
    if method == "hmq":
        from .hmq import hmq_quantize, target_bits_of
        try:
            target_bits_of(target_compression)
        except ValueError as e:
            raise RmsmpError(str(e)) from None
        init = quantize(model, calib_batches, "msqe", ratio={"fix8": 1}, act_bits=act_bits, edge_scheme=edge_scheme,
                        edge_act_bits=edge_act_bits, res_bits=res_bits, out_bits=out_bits,
                        hessian_images=hessian_images, outlier_sigma=outlier_sigma, error_weight=None, seed=seed)
        out, pick = hmq_quantize(init, batches, target_compression=target_compression, steps=hmq_steps,
                                 finetune=grad_steps, seed=seed, progress=progress, device=device)
        return out.with_meta({**out.meta, "method": "hmq", "target_compression": target_compression,
                              "hmq_steps": hmq_steps, "finetune_steps": grad_steps,
                              "layer_bits": {k: v[0] for k, v in pick.items()}})
    if method == "grad":
        from .qat import qat
        init = quantize(model, calib_batches, "msqe", ratio=ratio, act_bits=act_bits, edge_scheme=edge_scheme,
                        edge_act_bits=edge_act_bits, res_bits=res_bits, out_bits=out_bits,
                        hessian_images=hessian_images, outlier_sigma=outlier_sigma, error_weight=error_weight,
                        seed=seed)
        out = qat(init, batches, steps=grad_steps, seed=seed, progress=progress, pow2=True, freeze_at=0.8,
                  device=device)
        return out.with_meta({**out.meta, "method": "grad", "init": "msqe", "grad_steps": grad_steps,
                              "freeze_at": 0.8})
    if method == "mxqn":
        done, w_db = {}, {}
        for l in compute:
            scheme = next(iter(plan[l.name]))
            e, w_db[l.name] = sqnr_pow2_exponent(l.weight, scheme)
            done[l.name] = _fixed_layer(l, scheme, outq, e)
        return _assemble(model, layers, done, outq, ratio_s, batches, method="mxqn", assign=None,
                         act_bits=act_bits, res_bits=res_bits, out_bits=out_bits, edge=edge,
                         edge_act_bits=edge_act_bits, weight_sqnr_db=w_db, activation_sqnr_db=act_choice,
                         log_activations=[l.name for l in layers if outq[l.name].is_log])
    if method in ("msqe", "grad"):
        imp = (gradient_second_moments(gm, [l.name for l in compute], batches, hessian_images * 4)
               if error_weight == "grad2" else {})
        done = {l.name: _pow2_layer(l, next(iter(plan[l.name])), outq, imp.get(l.name), outlier_sigma)
                for l in compute}
        return _assemble(model, layers, done, outq, ratio_s, batches, method=method, assign=None,
                         act_bits=act_bits, res_bits=res_bits, out_bits=out_bits, edge=edge,
                         edge_act_bits=edge_act_bits, outlier_sigma=outlier_sigma, error_weight=error_weight)
    needs_h = [l.name for l in compute
               if assign == "hessian" and len({s.bits for s, c in plan[l.name].items() if c}) > 1]
    traces = hessian_row_traces(gm, needs_h, batches, hessian_samples, hessian_images, seed) if needs_h else {}

    # -- assign, fit scales, quantize ---------------------------------------------------
    it = compute
    if progress:
        from tqdm import tqdm
        it = tqdm(compute, desc="rmsmp: quantizing layers", unit="layer")
    done: dict[str, Layer] = {}
    for l in it:
        counts = plan[l.name]
        top = max(s.bits for s, c in counts.items() if c)
        # fits of the lower-precision schemes over all rows: the Hessian score needs their
        # errors, and the rows that end up on them reuse the scales
        fits = {s: fit_scales(l.weight, s) for s, c in counts.items()
                if c and s.bits < top and l.name in traces}
        schemes = assign_rows(l.weight, counts, mode=assign, trace=traces.get(l.name), fits=fits,
                              generator=gen)
        scale = torch.empty(l.rows, dtype=torch.float64)
        q = torch.empty(l.weight.shape, dtype=torch.int64)
        in_frac = outq[l.inputs[0]].value_frac
        for s in set(schemes):
            rows = torch.tensor([r for r, x in enumerate(schemes) if x == s])
            sc = fits[s][0][rows] if s in fits else fit_scales(l.weight[rows], s)[0]
            sc = legal_scale(sc, l.bias[rows], in_frac)
            scale[rows] = sc
            q[rows] = s.quantize(l.weight[rows].double(), sc)
        done[l.name] = Layer(l.name, l.op, l.inputs, dict(l.attrs), weight=l.weight, bias=l.bias,
                             out=outq[l.name], schemes=tuple(str(s) for s in schemes), qweight=q, scale=scale)
    return _assemble(model, layers, done, outq, ratio_s, batches, method=method, assign=assign, act_bits=act_bits,
                     res_bits=res_bits, out_bits=out_bits, edge=edge, edge_act_bits=edge_act_bits)


def _assemble(model, layers, done, outq, ratio_s, batches, *, edge, **meta) -> QuantizedModel:
    out_layers = [done.get(l.name) or Layer(l.name, l.op, l.inputs, dict(l.attrs), out=outq[l.name])
                  for l in layers]
    meta = {**meta, "edge_scheme": str(edge) if edge else None,
            "model": type(model).__name__, "input_shape": list(batches[0][0].shape[1:])}
    return QuantizedModel(out_layers, ratio={str(s): v for s, v in ratio_s.items()}, meta=meta)


def _pow2_layer(l, scheme, outq, importance, outlier_sigma) -> Layer:
    """Every row of ``l`` on ``scheme`` with one power-of-two scale (MSQE exponent), raised
    if needed until the integer bias fits the accumulator (``legal_scale``)."""
    e, _ = msqe_pow2_exponent(l.weight, scheme, weight=importance, outlier_sigma=outlier_sigma)
    return _fixed_layer(l, scheme, outq, e)


def _fixed_layer(l, scheme, outq, e: int) -> Layer:
    """Every row of ``l`` on ``scheme`` with the scale ``2^e``, ``e`` raised if needed until
    the integer bias fits the accumulator (``legal_pow2_exponent``)."""
    e = legal_pow2_exponent(e, l.bias, outq[l.inputs[0]].value_frac)
    scale = torch.full((l.rows,), 2.0 ** e, dtype=torch.float64)
    q = scheme.quantize(l.weight.double(), scale)
    return Layer(l.name, l.op, l.inputs, dict(l.attrs), weight=l.weight, bias=l.bias, out=outq[l.name],
                 schemes=(str(scheme),) * l.rows, qweight=q, scale=scale)
