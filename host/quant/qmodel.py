"""``QuantizedModel``: the single source of truth for what the hardware computes.

A model is a list of :class:`Layer` in topological order.  Ops: ``input``, ``conv``,
``linear``, ``add``, ``relu``, ``maxpool``, ``avgpool`` (global), ``flatten``.
Every layer's output tensor carries a :class:`TensorQ` (integer bits, signedness and a
power-of-two scale ``2^-frac``).  Conv/linear layers carry integer weights, a scheme
and a real scale per output row (``w ≈ scale[r] * qweight[r]``) and a real bias; the
integer bias, requantization multiplier and shift the hardware uses are *derived* from
those by the exact rules of ``docs/arithmetic.md`` (:func:`requant_multiplier`,
:func:`bias_to_int`).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from ..errors import ModelFormatError, RmsmpError
from .fileio import atomic_path
from .formats import MULT_BITS, requant_multiplier
from .layer import (
    BIAS_LIMIT,
    CODES,
    COMPUTE_OPS,
    LOG_FRAC,
    LOG_MAX_BITS,
    LOG_SQRT2,
    OPS,
    Layer,
    TensorQ,
    accumulator_bits,
    bias_to_int,
    legal_pow2_exponent,
    legal_scale,
    quantize_input,
)
from .schemes import parse_scheme

__all__ = ["QuantizedModel", "TensorQ", "Layer", "LOG_FRAC", "LOG_SQRT2", "LOG_MAX_BITS", "CODES", "OPS", "COMPUTE_OPS",
           "requant_multiplier", "bias_to_int", "BIAS_LIMIT", "MULT_BITS", "accumulator_bits", "legal_scale",
           "legal_pow2_exponent", "quantize_input"]

class QuantizedModel:
    """A quantized network: layers, per-row schemes/scales, integer weights, tensor formats.

    Build one with :func:`rmsmp.host.quantize`; run it with :func:`rmsmp.sim.golden`;
    ``save``/``load`` it; ``fake_quant()`` gives a trainable float module for QAT.
    """

    FORMAT = "rmsmp.QuantizedModel"
    VERSION = 1

    def __init__(self, layers, *, ratio=None, meta=None):
        self.layers: list[Layer] = list(layers)
        self.ratio: dict = dict(ratio or {})
        self.meta: dict = dict(meta or {})
        self._by_name = {l.name: l for l in self.layers}
        if len(self._by_name) != len(self.layers):
            raise RmsmpError("duplicate layer names")
        self.validate()
        self._derive()

    # -- structure ------------------------------------------------------------------
    def __getitem__(self, name: str) -> Layer:
        return self._by_name[name]

    def __iter__(self):
        return iter(self.layers)

    @property
    def input(self) -> Layer:
        return self.layers[0]

    @property
    def output(self) -> Layer:
        return self.layers[-1]

    def compute_layers(self) -> list[Layer]:
        return [l for l in self.layers if l.is_compute]

    def in_q(self, layer: Layer) -> TensorQ:
        """Format of the (first) input tensor of ``layer``."""
        return self._by_name[layer.inputs[0]].out

    def scheme_rows(self) -> Counter:
        """Number of rows per scheme over all compute layers."""
        c = Counter()
        for l in self.compute_layers():
            c.update(l.schemes)
        return c

    # -- derived integer parameters --------------------------------------------------
    def _derive(self):
        """Integer bias ``B``, multiplier ``M`` and shift ``n`` per row (docs §4)."""
        self.requant: dict[str, dict] = {}
        for l in self.compute_layers():
            iq = self.in_q(l)
            t = l.scale.double() * 2.0 ** (l.out.value_frac - iq.value_frac)
            mn = [requant_multiplier(float(v)) for v in t]
            self.requant[l.name] = {
                "bias": bias_to_int(l.bias, l.scale, iq.value_frac),
                "mult": torch.tensor([m for m, _ in mn], dtype=torch.int64),
                "shift": torch.tensor([n for _, n in mn], dtype=torch.int64),
            }

    def validate(self):
        """Check the graph and every integer against its format; raise on the first fault."""
        seen = set()
        if not self.layers or self.layers[0].op != "input":
            raise RmsmpError("a QuantizedModel starts with its 'input' layer")
        for l in self.layers:
            if l.op not in OPS:
                raise RmsmpError(f"layer {l.name!r}: unknown op {l.op!r}")
            for i in l.inputs:
                if i not in seen:
                    raise RmsmpError(f"layer {l.name!r}: input {i!r} is not defined before it")
            if l.out is None:
                raise RmsmpError(f"layer {l.name!r} has no output format (not quantized)")
            if l.op in ("maxpool", "flatten", "relu") and l.inputs:
                src = self._by_name[l.inputs[0]].out
                if src is not None and src.is_log and l.out != src:
                    raise RmsmpError(f"layer {l.name!r}: passes logarithmic codes through, so its "
                                     f"format must be its input's ({src}), got {l.out}")
            if l.out.is_log and l.op not in ("conv", "linear", "add", "avgpool", "maxpool", "flatten", "relu"):
                raise RmsmpError(f"layer {l.name!r}: op {l.op!r} cannot produce logarithmic codes")
            if l.is_compute:
                if l.qweight is None or l.scale is None or l.schemes is None or l.bias is None:
                    raise RmsmpError(f"layer {l.name!r}: missing integer weights, scales, schemes or bias")
                if len(l.schemes) != l.rows or l.scale.shape != (l.rows,) or l.bias.shape != (l.rows,):
                    raise RmsmpError(f"layer {l.name!r}: per-row arrays disagree with {l.rows} rows")
                if l.qweight.shape != l.weight.shape:
                    raise RmsmpError(f"layer {l.name!r}: integer weight shape {tuple(l.qweight.shape)} "
                                     f"!= {tuple(l.weight.shape)}")
                if not bool((l.scale > 0).all()):
                    raise RmsmpError(f"layer {l.name!r}: row scales must be positive")
                for s in set(l.schemes):
                    rows = [r for r, x in enumerate(l.schemes) if x == s]
                    try:
                        parse_scheme(s).check(l.qweight[rows])
                    except RmsmpError as e:
                        raise RmsmpError(f"layer {l.name!r}: {e}") from None
            seen.add(l.name)

    # -- reporting ----------------------------------------------------------------------
    @property
    def realized_ratio(self) -> dict:
        c = self.scheme_rows()
        total = sum(c.values())
        return {k: v / total for k, v in sorted(c.items())}

    def weight_bits(self) -> int:
        """Total bits of the packed weights (each row at its scheme's width)."""
        return sum(parse_scheme(s).bits * l.fan_in for l in self.compute_layers() for s in l.schemes)

    def summary(self) -> str:
        lines = [f"{'layer':28s} {'op':8s} {'rows/schemes':34s} out"]
        for l in self.layers:
            sch = ""
            if l.is_compute:
                c = Counter(l.schemes)
                sch = " ".join(f"{k}:{v}" for k, v in sorted(c.items()))
            relu = ("+relu6" if "clip" in l.attrs else "+relu") if l.attrs.get("relu") else ""
            o = f"{'s' if l.out.signed else 'u'}{l.out.bits} 2^{-l.out.frac}" + (" log√2" if l.out.is_log else "")
            lines.append(f"{l.name:28s} {l.op + relu:8s} {sch:34s} {o}")
        return "\n".join(lines)

    def __repr__(self):
        c = self.scheme_rows()
        return (f"QuantizedModel({len(self.layers)} layers, {len(self.compute_layers())} conv/linear, "
                f"rows {dict(sorted(c.items()))})")

    # -- conversions ------------------------------------------------------------------
    def fake_quant(self):
        """A trainable float ``nn.Module`` computing this model with fake quantization."""
        from .fake import GraphModule
        return GraphModule(self, mode="fake")

    def with_layers(self, layers) -> "QuantizedModel":
        return QuantizedModel(layers, ratio=self.ratio, meta=self.meta)

    def with_meta(self, meta: dict) -> "QuantizedModel":
        return QuantizedModel(self.layers, ratio=self.ratio, meta=dict(meta))

    # -- file format ------------------------------------------------------------------
    def to_dict(self) -> dict:
        def enc(l: Layer):
            return {"name": l.name, "op": l.op, "inputs": list(l.inputs), "attrs": dict(l.attrs),
                    "weight": l.weight, "bias": l.bias,
                    "out": l.out.to_dict() if l.out else None,
                    "schemes": list(l.schemes) if l.schemes is not None else None,
                    "qweight": l.qweight, "scale": l.scale}
        return {"format": self.FORMAT, "version": self.VERSION, "ratio": self.ratio,
                "meta": self.meta, "layers": [enc(l) for l in self.layers]}

    def save(self, path) -> Path:
        """Write the model to one file (torch serialization, tensors and plain types only)."""
        with atomic_path(path, "model file") as tmp:     # never leave a half-written model behind
            torch.save(self.to_dict(), tmp)
        return Path(path)

    @classmethod
    def load(cls, path) -> "QuantizedModel":
        """Read a file written by :meth:`save`; a corrupt or foreign file raises ModelFormatError."""
        path = Path(path)
        try:
            d = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as e:  # torch raises many types for a damaged file
            raise ModelFormatError(f"{path}: not a readable rmsmp model file ({type(e).__name__}: {e})") from None
        if not isinstance(d, dict) or d.get("format") != cls.FORMAT:
            raise ModelFormatError(f"{path}: not an rmsmp QuantizedModel file")
        if d.get("version") != cls.VERSION:
            raise ModelFormatError(f"{path}: format version {d.get('version')!r} is not supported "
                                   f"(this rmsmp reads version {cls.VERSION})")
        try:
            layers = []
            for e in d["layers"]:
                layers.append(Layer(
                    name=e["name"], op=e["op"], inputs=tuple(e["inputs"]), attrs=dict(e["attrs"]),
                    weight=e["weight"], bias=e["bias"],
                    out=TensorQ(**e["out"]) if e["out"] else None,
                    schemes=tuple(e["schemes"]) if e["schemes"] is not None else None,
                    qweight=e["qweight"], scale=e["scale"]))
            return cls(layers, ratio=d["ratio"], meta=d["meta"])
        except (KeyError, TypeError, AttributeError) as e:
            raise ModelFormatError(f"{path}: damaged rmsmp model file ({type(e).__name__}: {e})") from None
        except RmsmpError as e:
            raise ModelFormatError(f"{path}: inconsistent rmsmp model file: {e}") from None
