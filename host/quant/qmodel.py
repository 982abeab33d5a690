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

import math

from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch

from ..errors import ModelFormatError, RmsmpError
from rmsmp.rtl.formats import MULT_BITS, requant_multiplier

from .schemes import parse_scheme

__all__ = ["TensorQ", "LOG_FRAC", "LOG_SQRT2", "LOG_MAX_BITS", "Layer", "QuantizedModel", "requant_multiplier", "bias_to_int",
           "BIAS_LIMIT", "MULT_BITS", "accumulator_bits", "legal_scale"]

#: Integer biases are clamped by the quantizer's choice of scale to ``|B| <= 2^30``.
BIAS_LIMIT = 2 ** 30

COMPUTE_OPS = ("conv", "linear")
OPS = ("input", "conv", "linear", "add", "relu", "maxpool", "avgpool", "flatten")


#: Logarithmic activations (MXQN, docs/quantization.md §mxqn): levels ``2^(k/2)`` steps with
#: ``√2`` held as ``LOG_SQRT2 / 2^LOG_FRAC``; decoded values are integers in units of
#: ``2^-(frac + LOG_FRAC)``.  Codes wider than ``LOG_MAX_BITS`` would leave int64.
LOG_FRAC = 7
LOG_SQRT2 = 181                       # round(√2 · 2^7) = 181 (1.4140625)
LOG_MAX_BITS = 5
CODES = ("fix", "log")


@lru_cache(maxsize=None)
def _log_levels(bits: int) -> tuple:
    return (0,) + tuple((LOG_SQRT2 if (c - 1) & 1 else 1 << LOG_FRAC) << ((c - 1) >> 1)
                        for c in range(1, 2 ** bits))


@lru_cache(maxsize=None)
def _log_thresholds(bits: int) -> tuple:
    out = [1 << (LOG_FRAC - 1)]
    for c in range(2, 2 ** bits):
        target = 1 << (4 * LOG_FRAC + 2 * c - 3)
        v = math.isqrt(math.isqrt(target))
        while v ** 4 < target:
            v += 1
        out.append(v)
    return tuple(out)


@dataclass(frozen=True)
class TensorQ:
    """Integer format of a tensor.

    ``code="fix"``: value = q * 2^-frac, q in [lo, hi].
    ``code="log"`` (unsigned only): q is a code in [0, 2^bits - 1]; code 0 is zero, code
    c > 0 is ``2^((c-1)/2)`` steps of ``2^-frac`` (base √2), decoded exactly as the integer
    :meth:`decode` gives in units of ``2^-value_frac``.
    """

    bits: int
    signed: bool
    frac: int
    code: str = "fix"

    def __post_init__(self):
        if not (1 <= self.bits <= 32):
            raise RmsmpError(f"tensor bit-width {self.bits} out of range 1..32")
        if self.code not in CODES:
            raise RmsmpError(f"tensor code {self.code!r}: expected one of {', '.join(CODES)}")
        if self.is_log and (self.signed or not 2 <= self.bits <= LOG_MAX_BITS):
            raise RmsmpError(f"logarithmic tensors are unsigned with 2..{LOG_MAX_BITS} bits, "
                             f"got {'signed ' if self.signed else ''}{self.bits} bits")

    @property
    def is_log(self) -> bool:
        return self.code == "log"

    @property
    def lo(self) -> int:
        return -(2 ** (self.bits - 1)) if self.signed else 0

    @property
    def hi(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.signed else 2 ** self.bits - 1

    @property
    def step(self) -> float:
        """Real value of one unit of ``q`` (fix) / of the smallest non-zero level (log)."""
        return 2.0 ** -self.frac

    # -- decoded integer values (what arithmetic consumes) ------------------------------
    @property
    def value_frac(self) -> int:
        """Fraction bits of the decoded integers: ``frac`` (fix), ``frac + LOG_FRAC`` (log)."""
        return self.frac + LOG_FRAC if self.is_log else self.frac

    def levels(self) -> list[int]:
        """Decoded integer of every code (log): ``0, 2^7, 181, 2^8, 181·2, …``."""
        return list(_log_levels(self.bits))

    def thresholds(self) -> list[int]:
        """Smallest decoded value that encodes to code c, for c = 1 … hi (log): half the
        smallest level for c = 1, else the geometric midpoint of the ideal levels
        ``2^(LOG_FRAC + (c-2)/2)`` and ``2^(LOG_FRAC + (c-1)/2)``, rounded up — the
        least integer v with ``v^4 ≥ 2^(4·LOG_FRAC + 2c − 3)`` (exact integer arithmetic)."""
        return list(_log_thresholds(self.bits))

    @property
    def value_lo(self) -> int:
        return 0 if self.is_log else self.lo

    @property
    def value_hi(self) -> int:
        return self.levels()[-1] if self.is_log else self.hi

    def decode(self, q: torch.Tensor) -> torch.Tensor:
        """Codes → integers in units of ``2^-value_frac`` (identity for fix)."""
        if not self.is_log:
            return q
        return torch.tensor(self.levels(), dtype=torch.int64)[q.to(torch.int64)]

    def encode(self, v: torch.Tensor) -> torch.Tensor:
        """Integers in units of ``2^-value_frac`` → codes (log: the code whose threshold
        range holds ``v``, negatives to 0); fix: clamp to [lo, hi]."""
        if not self.is_log:
            return v.clamp(self.lo, self.hi)
        t = torch.tensor(self.thresholds(), dtype=torch.int64)
        return torch.bucketize(v.to(torch.int64), t, right=True)

    def dequantize(self, q: torch.Tensor) -> torch.Tensor:
        """Codes/integers → real values (float64)."""
        return self.decode(q).double() * 2.0 ** -self.value_frac

    def to_dict(self):
        d = {"bits": self.bits, "signed": self.signed, "frac": self.frac}
        if self.is_log:
            d["code"] = self.code
        return d


def bias_to_int(bias: torch.Tensor, scale: torch.Tensor, in_frac: int) -> torch.Tensor:
    """Integer bias in accumulator units: ``round(bias / (scale * 2^-in_frac))`` (float64, ties to even)."""
    b = torch.round(bias.double() / (scale.double() * 2.0 ** -in_frac)).to(torch.int64)
    if bool((b.abs() > BIAS_LIMIT).any()):
        raise RmsmpError(f"integer bias exceeds ±2^30 (scale too small for its bias); "
                         f"largest |B| = {int(b.abs().max())}")
    return b


def legal_scale(scale: torch.Tensor, bias: torch.Tensor, in_frac: int) -> torch.Tensor:
    """Row scales as stored: float32-representable (so the float32 fake-quant module
    round-trips exactly) and large enough that the integer bias fits ``±2^30``."""
    floor = bias.detach().double().abs() * 2.0 ** in_frac / BIAS_LIMIT
    s = torch.maximum(scale.detach().double(), floor).float()
    up = torch.nextafter(s, torch.tensor(float("inf")))
    s = torch.where(s.double() < floor, up, s)
    return s.clamp(min=torch.finfo(torch.float32).tiny).double()


def legal_pow2_exponent(e: int, bias: torch.Tensor, in_frac: int) -> int:
    """The smallest exponent ``≥ e`` whose scale ``2^e`` :func:`legal_scale` keeps as is
    (power-of-two scale methods may only raise the exponent)."""
    floor = float(legal_scale(torch.full((bias.numel(),), 2.0 ** -149), bias, in_frac).max())
    return max(int(e), math.ceil(math.log2(floor)))


def accumulator_bits(qmax_w: int, x: TensorQ, fan_in: int) -> int:
    """Signed accumulator width that holds any sum of ``fan_in`` products (docs §3)."""
    xmax = max(abs(x.value_lo), abs(x.value_hi))
    worst = qmax_w * xmax * fan_in
    return worst.bit_length() + 1


@dataclass
class Layer:
    """One node of the graph.  Float fields come from capture; quant fields from quantize."""

    name: str
    op: str
    inputs: tuple = ()
    attrs: dict = field(default_factory=dict)
    weight: torch.Tensor | None = None       # float, BN folded: [O, C, k, k] or [O, C]
    bias: torch.Tensor | None = None         # float [O]
    out: TensorQ | None = None
    schemes: tuple | None = None             # per output row, e.g. ("pot4", "fix8", …)
    qweight: torch.Tensor | None = None      # int64, same shape as weight
    scale: torch.Tensor | None = None        # float64 [O], alpha per row

    @property
    def is_compute(self) -> bool:
        return self.op in COMPUTE_OPS

    @property
    def rows(self) -> int:
        return 0 if self.weight is None else self.weight.shape[0]

    @property
    def fan_in(self) -> int:
        return 0 if self.weight is None else self.weight[0].numel()


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
            relu = "+relu" if l.attrs.get("relu") else ""
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
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.to_dict(), tmp)
        tmp.replace(path)          # never leave a half-written model behind
        return path

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
