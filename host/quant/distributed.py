"""Data-parallel training for QAT and the HMQ search (``torchrun`` + DistributedDataParallel).

The same code path runs on one process and on many.  Under ``torchrun`` (``WORLD_SIZE`` > 1
in the environment) the first training call joins the process group (gloo on the CPU, NCCL
when training on CUDA devices) and every rank:

* starts from the same model (the quantizer is deterministic; DDP also broadcasts rank 0's
  parameters when it wraps the module) and the same seed, so the Gumbel-Softmax samples of
  the HMQ search and its temperature schedule are the same on every rank;
* takes its share of each **global** batch (``shard=True``: every rank is given the same
  batches, as a one-process run would be, and keeps rows ``rank::world`` of each) — or is
  given its own batches (``shard=False``, e.g. from a ``DistributedSampler``);
* weights its loss so that DDP's gradient average is the gradient of the mean loss over
  the global batch, whatever the shares' sizes: ``loss_r = world · Σ_r ℓ / N_global``.

The fake-quant network has no BatchNorm layers — BN is folded into the convolutions before
quantization (docs/quantization.md) — so there are no running statistics to synchronise;
every other piece of training state (the pow2 exponent averages, frozen exponents, the
temperature) is a function of the parameters and the step, hence equal on every rank.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["DataParallel", "rank", "world_size", "is_main", "join_from_env"]


def join_from_env(device: str | torch.device = "cpu") -> bool:
    """Join the process group ``torchrun`` describes in the environment (once).

    Returns whether training is distributed.  A single process (no ``WORLD_SIZE``, or 1) is
    not; a process group the caller initialised already is used as it is."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    dist.init_process_group(backend)
    return dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0, or the only process: the one that prints progress and writes files."""
    return rank() == 0


@dataclass
class DataParallel:
    """One training run's view of the ranks: wraps the module, shards batches, scales losses.

    ``module``: the network to train (moved to ``device``).  ``model`` is what the loop
    calls — a :class:`~torch.nn.parallel.DistributedDataParallel` around ``module`` when
    distributed, ``module`` itself otherwise."""
    module: nn.Module
    device: torch.device
    shard: bool = True

    def __post_init__(self):
        self.device = torch.device(self.device)
        if self.device.type == "cuda" and self.device.index is None:     # torchrun: this rank's GPU
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        self.distributed = join_from_env(self.device)
        self.module.to(self.device)
        self.world = world_size()
        self.rank = rank()
        if self.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.module, device_ids=ids)
        else:
            self.model = self.module

    def local(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """This rank's share of a batch, on the device, and the global batch size."""
        if self.distributed and self.shard:
            n = len(x)
            if n < self.world:
                raise ValueError(f"a batch of {n} cannot be shared by {self.world} ranks")
            x, y = x[self.rank::self.world], y[self.rank::self.world]
        elif self.distributed:
            t = torch.tensor([len(x)], dtype=torch.int64, device=self.device)
            dist.all_reduce(t)
            n = int(t)
        else:
            n = len(x)
        return x.to(self.device), y.to(self.device), n

    def cross_entropy(self, logits: torch.Tensor, y: torch.Tensor, n_global: int) -> torch.Tensor:
        """The loss whose DDP-averaged gradient is that of the global batch's mean loss."""
        return F.cross_entropy(logits, y, reduction="sum") * (self.world / n_global)

    def progress(self, it, **kw):
        """``it`` with a tqdm bar on the main rank."""
        if not is_main():
            return it
        from tqdm import tqdm
        return tqdm(it, **kw)
