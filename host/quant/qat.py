"""Quantization-aware fine-tuning of a :class:`QuantizedModel` through its fake-quant module."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .calibrate import as_batches
from .qmodel import QuantizedModel

__all__ = ["qat"]


def qat(qm: QuantizedModel, batches, steps: int = 200, lr: float = 1e-4, scale_lr: float = 1e-3,
        seed: int = 0, progress: bool = False) -> QuantizedModel:
    """Fine-tune ``qm`` for ``steps`` optimizer steps on labelled ``(x, y)`` batches (cycled).

    Weights and biases (Adam, ``lr``) and the log2 row scales (Adam, ``scale_lr``: a
    relative step, since scales span orders of magnitude) train through the
    straight-through estimator; schemes, row assignment and activation formats stay
    fixed.  Returns a new QuantizedModel.
    """
    data = as_batches(batches)
    if any(y is None for _, y in data):
        raise ValueError("qat needs labelled (images, labels) batches")
    torch.manual_seed(seed)
    fq = qm.fake_quant().train()
    groups = [{"params": list(fq.weight.values()) + list(fq.bias.values()), "lr": lr},
              {"params": list(fq.log2_scale.values()), "lr": scale_lr}]
    opt = torch.optim.Adam(groups)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    it = range(steps)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="rmsmp: QAT", unit="step")
    for k in it:
        x, y = data[k % len(data)]
        loss = F.cross_entropy(fq(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return fq.eval().to_quantized()
