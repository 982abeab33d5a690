"""The parts of a quantized network: tensor formats (:class:`TensorQ`), graph nodes
(:class:`Layer`) and the integer rules for scales, biases and inputs (docs/arithmetic.md)
that the golden model and the compiler share.  :mod:`.qmodel` builds networks of them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import torch

from ..errors import RmsmpError

__all__ = ["TensorQ", "Layer", "pad_after", "window_out", "conv2d", "activation", "clip_code", "LOG_FRAC",
           "LOG_SQRT2", "LOG_MAX_BITS", "BIAS_LIMIT", "COMPUTE_OPS", "OPS", "CODES",
           "bias_to_int", "legal_scale", "legal_pow2_exponent", "accumulator_bits", "quantize_input"]

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


# -- window geometry and activation functions, shared by every executor ---------------------
# A conv or max-pool has ``padding`` zero rows/columns before its input (top, left) and
# ``pad_after`` after it (bottom, right; absent: the same), as TensorFlow's "same" padding
# (0 before, 1 after at stride 2) or an ``F.pad`` folded into the conv leaves it.
# A ReLU6 (or any ``clamp(0, c)``) fused into its producer is ``relu`` plus ``clip = c``.

def pad_after(attrs: dict) -> int:
    return int(attrs.get("pad_after", attrs["padding"]))


def window_out(attrs: dict, h: int, w: int) -> tuple[int, int]:
    """Output (H, W) of a conv/max-pool window over an ``h × w`` input."""
    k, s, p0, p1 = attrs["kernel"], attrs["stride"], attrs["padding"], pad_after(attrs)
    return (h + p0 + p1 - k) // s + 1, (w + p0 + p1 - k) // s + 1


def conv2d(a: torch.Tensor, w: torch.Tensor, b, attrs: dict) -> torch.Tensor:
    """``F.conv2d`` with the layer's (possibly asymmetric) zero padding, stride and groups
    (``groups`` > 1: depthwise, one input channel per output channel)."""
    p0, p1 = attrs["padding"], pad_after(attrs)
    if p0 != p1:
        a = torch.nn.functional.pad(a, (p0, p1, p0, p1))
        p0 = 0
    return torch.nn.functional.conv2d(a, w, b, attrs["stride"], p0, 1, attrs.get("groups", 1))


def activation(y: torch.Tensor, attrs: dict) -> torch.Tensor:
    """The fused activation on real values: ReLU, and with ``clip`` ReLU6-style ``min(·, clip)``."""
    if attrs.get("relu"):
        y = torch.relu(y)
        if "clip" in attrs:
            y = y.clamp(max=float(attrs["clip"]))
    return y


def clip_code(attrs: dict, out: "TensorQ") -> int | None:
    """The fused clip as an integer in units of ``2^-out.value_frac``: ``clip · 2^value_frac``
    rounded half up (as requantization rounds, so clipping before or after rounding agree);
    ``None`` without a clip."""
    if not attrs.get("relu") or "clip" not in attrs:
        return None
    return math.floor(float(attrs["clip"]) * 2.0 ** out.value_frac + 0.5)


def as_images(x, what: str = "images") -> torch.Tensor:
    """``x`` as a tensor of real values (numpy arrays and nested lists are taken), refusing
    what no network input can be: non-numeric data, NaN or infinity (named by position)."""
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError) as e:
            raise RmsmpError(f"{what}: a {type(x).__name__} is not a tensor of numbers ({e})") from None
    if x.dtype == torch.bool or x.is_complex():
        raise RmsmpError(f"{what}: {x.dtype} values; give real numbers")
    if x.is_floating_point():
        bad = ~torch.isfinite(x)
        if bad.any():
            pos = tuple(int(i) for i in bad.nonzero()[0])
            raise RmsmpError(f"{what}: {float(x[pos])} at index {list(pos)} ({int(bad.sum())} non-finite value(s) "
                             f"in a tensor of shape {list(x.shape)})")
    return x


def quantize_input(x: torch.Tensor, q: TensorQ) -> torch.Tensor:
    """Real network input -> integers: ``clamp(floor(x * 2^frac + 1/2))`` in float64."""
    x = as_images(x)
    return torch.floor(x.double() * 2.0 ** q.frac + 0.5).clamp(q.lo, q.hi).to(torch.int64)
