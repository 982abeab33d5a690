"""Quantization-aware fine-tuning of a :class:`QuantizedModel` through its fake-quant module."""
from __future__ import annotations

import torch

from .calibrate import as_batches
from .distributed import DataParallel
from .fake import GraphModule
from .qmodel import QuantizedModel

__all__ = ["qat"]


def qat(qm: QuantizedModel, batches, steps: int = 200, lr: float = 1e-4, scale_lr: float = 1e-3,
        seed: int = 0, progress: bool = False, *, pow2: bool = False, freeze_at: float | None = None,
        ema: float = 0.9, device: str | torch.device = "cpu", shard: bool = True) -> QuantizedModel:
    """Fine-tune ``qm`` for ``steps`` optimizer steps on labelled ``(x, y)`` batches (cycled).

    Weights and biases (Adam, ``lr``) and the log2 row scales (Adam, ``scale_lr``: a
    relative step, since scales span orders of magnitude) train through the
    straight-through estimator; schemes, row assignment and activation formats stay
    fixed.  Returns a new QuantizedModel.

    ``pow2``: ``qm`` has one power-of-two scale per layer, and it stays one: the layer
    learns a continuous log2 scale whose exponent is rounded (to the neighbour with the
    lower weight error) in the forward pass, TQT-style.  ``freeze_at`` (a fraction of
    ``steps``): from then on every exponent is frozen to the rounded exponential moving
    average (decay ``ema``) of its exponents so far, so the last steps train the weights
    against fixed scales.

    Under ``torchrun`` the ranks train one model with DistributedDataParallel
    (:mod:`.distributed`): with ``shard=True`` every rank is given the same global batches
    and trains on its share of each, and the result equals the one-process result on those
    batches (up to float summation order); ``shard=False``: each rank's batches are its own.
    ``device``: where to train (``"cuda:N"`` for rank N's GPU); the result is on the CPU.
    """
    data = as_batches(batches)
    if any(y is None for _, y in data):
        raise ValueError("qat needs labelled (images, labels) batches")
    torch.manual_seed(seed)
    fq = GraphModule(qm, mode="fake", pow2=pow2).train()
    names = [l.name for l in qm.compute_layers()]
    avg = {n: float(fq.pow2_exponent(n)) for n in names} if pow2 else {}
    freeze_step = None if freeze_at is None else int(freeze_at * steps)
    groups = [{"params": list(fq.weight.values()) + list(fq.bias.values()), "lr": lr},
              {"params": list(fq.log2_scale.values()), "lr": scale_lr}]
    dp = DataParallel(fq, device, shard=shard)
    opt = torch.optim.Adam(groups)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    it = range(steps)
    if progress:
        it = dp.progress(it, desc="rmsmp: QAT", unit="step")
    for k in it:
        if pow2 and k == freeze_step:
            fq.frozen.update({n: round(v) for n, v in avg.items()})
        x, y, n = dp.local(*data[k % len(data)])
        loss = dp.cross_entropy(dp.model(x), y, n)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if pow2 and not fq.frozen:
            for n in names:
                avg[n] = ema * avg[n] + (1 - ema) * fq.pow2_exponent(n)
    return fq.cpu().eval().to_quantized()
