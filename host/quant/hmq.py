"""HMQ (arXiv 2007.09952): a Gumbel-Softmax search over weight bit-width × power-of-two threshold.

Every searched layer (all conv/linear but the fix8 edge layers) gets a quantization block:
candidates ``(b, e)`` — fixed-point ``b`` bits (2..8) with scale ``2^e``, ``e`` the MSQE
exponent for ``b`` and its two neighbours — and one logit per candidate.  The forward pass
uses the Gumbel-Softmax mixture ``Σ π_i·Q_i(w)`` (straight-through through each rounding),
activations fake-quantized as the hardware does.  The loss is the task loss plus a penalty
toward the target weight compression: ``λ·max(0, E[bits] − 32/target)²`` with ``E[bits]``
the expected bits per weight over the whole network (edge layers included).  The
temperature anneals exponentially; at the end each layer takes its argmax candidate; if
the argmax misses the target, the layer whose one-bit step costs the least weight error per
saved bit steps down until the target holds (a repair the paper does not need with its
longer schedules; documented in docs/quantization.md).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .distributed import DataParallel
from .fake import GraphModule, _key, fake_quant_tensor
from .layer import activation, conv2d
from .pow2 import msqe_pow2_exponent, pow2_error
from .schemes import parse_scheme

__all__ = ["HmqSearch", "BITS", "hmq_quantize", "target_bits_of"]

BITS = (2, 3, 4, 5, 6, 7, 8)


class HmqSearch(GraphModule):
    """The fake-quant network of ``init`` (a pow2 QuantizedModel) with a quantization block
    per searched layer.  ``choice()`` gives the argmax ``(bits, exponent)`` per layer."""

    def __init__(self, init, searched, *, bits=BITS, tau: float = 1.0):
        super().__init__(init, mode="fake", pow2=True)
        self.searched = list(searched)
        for name in self.searched:        # a searched layer's scales are its candidates' exponents
            del self.log2_scale[_key(name)]
        self.tau = tau
        self.cands: dict[str, list[tuple[int, int]]] = {}
        self.logits = nn.ParameterDict()
        for name in self.searched:
            w = self.weight[_key(name)].detach()
            cs = []
            for b in bits:
                e, _ = msqe_pow2_exponent(w, parse_scheme(f"fix{b}"), outlier_sigma=3.0)
                cs += [(b, e + d) for d in (-1, 0, 1)]
            self.cands[name] = cs
            self.logits[_key(name)] = nn.Parameter(torch.zeros(len(cs)))
        self._n = {l.name: l.weight.numel() for l in init.compute_layers()}
        self._fixed_bits = {l.name: parse_scheme(l.schemes[0]).bits for l in init.compute_layers()}

    def probs(self, name: str, sample: bool = True) -> torch.Tensor:
        z = self.logits[_key(name)]
        if sample and self.training:
            return F.gumbel_softmax(z, tau=self.tau)
        return F.softmax(z / self.tau, dim=0)

    def expected_bits(self) -> torch.Tensor:
        """Expected bits per weight over all compute layers (searched ones by their softmax)."""
        dev = next(iter(self.logits.values())).device
        tot = torch.zeros((), device=dev)
        for name, n in self._n.items():
            if name in self.cands:
                b = torch.tensor([float(c[0]) for c in self.cands[name]], device=dev)
                tot = tot + n * (self.probs(name, sample=False) * b).sum()
            else:
                tot = tot + n * self._fixed_bits[name]
        return tot / sum(self._n.values())

    def run_layer(self, l, args):
        if l.name not in self.cands:
            return super().run_layer(l, args)
        k = _key(l.name)
        w, b, a = self.weight[k], self.bias[k], args[0]
        p = self.probs(l.name)
        weff = torch.zeros_like(w)
        for pi, (bits, e) in zip(p, self.cands[l.name]):
            x = w / 2.0 ** e
            q = parse_scheme(f"fix{bits}").round(x)
            weff = weff + pi * (x + (q - x).detach()) * 2.0 ** e
        y = conv2d(a, weff, b, l.attrs) if l.op == "conv" else F.linear(a, weff, b)
        y = activation(y, l.attrs)
        return fake_quant_tensor(y, l.out)

    @torch.no_grad()
    def choice(self, target_bits: float) -> dict[str, tuple[int, int]]:
        """Argmax candidate per searched layer, stepped down until ``target_bits`` holds."""
        pick = {n: self.cands[n][int(self.logits[_key(n)].argmax())] for n in self.searched}
        total = sum(self._n.values())

        def avg():
            return sum(n * (pick[k][0] if k in pick else self._fixed_bits[k]) for k, n in self._n.items()) / total

        def best_exp(name, bits):
            w = self.weight[_key(name)].detach()
            return msqe_pow2_exponent(w, parse_scheme(f"fix{bits}"), outlier_sigma=3.0)

        while avg() > target_bits + 1e-9:
            steps = []
            for name, (bits, e) in pick.items():
                if bits <= min(BITS):
                    continue
                w = self.weight[_key(name)].detach()
                now = pow2_error(w, parse_scheme(f"fix{bits}"), e)
                e2, err2 = best_exp(name, bits - 1)
                steps.append(((err2 - now) / self._n[name], name, (bits - 1, e2)))
            if not steps:
                break
            _, name, c = min(steps)
            pick[name] = c
        return pick


def target_bits_of(compression: float) -> float:
    if not (isinstance(compression, (int, float)) and 32 / 8 <= compression <= 32 / 2):
        raise ValueError(f"target_compression must be between 4 (8-bit) and 16 (2-bit) against fp32, "
                         f"got {compression!r}")
    return 32.0 / compression


def search_schedule(steps: int, tau0: float = 1.0, tau1: float = 0.05):
    """Temperature per step: exponential from ``tau0`` to ``tau1``."""
    return [tau0 * (tau1 / tau0) ** (k / max(1, steps - 1)) for k in range(steps)]



def hmq_quantize(init, batches, *, target_compression: float, steps: int = 200, finetune: int = 200,
                 penalty: float = 1.0, seed: int = 0, progress: bool = False,
                 device: str | torch.device = "cpu", shard: bool = True):
    """Search, take the argmax (repaired to the target), build the QuantizedModel, fine-tune.

    ``init``: the msqe model with every row fix8 (edge layers stay as they are).  Returns
    ``(QuantizedModel, {layer: (bits, exponent)})``.  Under ``torchrun`` the search and the
    fine-tuning are data-parallel (:mod:`.distributed`; ``shard``, ``device`` as in
    :func:`~.qat.qat`): every rank draws the same Gumbel samples (same seed) and anneals
    the temperature on the same schedule, so the ranks search one set of logits."""
    from .layer import Layer, legal_pow2_exponent
    from .qat import qat
    target = target_bits_of(target_compression)
    torch.manual_seed(seed)
    compute = init.compute_layers()
    searched = [l.name for l in compute[1:-1]]
    net = HmqSearch(init, searched).train()
    dp = DataParallel(net, device, shard=shard)
    opt = torch.optim.Adam([{"params": list(net.weight.values()) + list(net.bias.values()), "lr": 1e-4},
                            {"params": list(net.logits.values()), "lr": 0.05}])
    it = range(steps)
    if progress:
        it = dp.progress(it, desc="rmsmp: HMQ search", unit="step")
    for k, tau in zip(it, search_schedule(steps)):
        net.tau = tau
        x, y, n = dp.local(*batches[k % len(batches)])
        # the penalty is the same on every rank: DDP's average leaves its gradient whole
        loss = dp.cross_entropy(dp.model(x), y, n) + penalty * F.relu(net.expected_bits() - target) ** 2
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.cpu().eval()
    pick = net.choice(target)
    layers = []
    for l in init.layers:
        if l.name in pick:
            bits, e = pick[l.name]
            w = net.weight[_key(l.name)].detach().float().clone()
            b = net.bias[_key(l.name)].detach().float().clone()
            e = legal_pow2_exponent(e, b, init.in_q(l).value_frac)
            scheme = parse_scheme(f"fix{bits}")
            scale = torch.full((l.rows,), 2.0 ** e, dtype=torch.float64)
            l = Layer(l.name, l.op, l.inputs, dict(l.attrs), weight=w, bias=b, out=l.out,
                      schemes=(str(scheme),) * l.rows, qweight=scheme.quantize(w.double(), scale), scale=scale)
            pick[l.name] = (bits, e)
        layers.append(l)
    qm = init.with_layers(layers)
    if finetune:
        qm = qat(qm, batches, steps=finetune, seed=seed, progress=progress, pow2=True, freeze_at=0.8,
                 device=device, shard=shard)
    return qm, pick
