"""Run a data set through the simulated accelerator: several simulations at once, a
progress bar, outputs in input order.

``run_dataset(program, cfg, images, workers=2)`` splits the images into ``workers``
contiguous shards, each run by its own :class:`~rmsmp.sim.device.SimDevice` (one Verilator
process each, serving every chunk of the program's batch) in a thread of its own: the
threads only wait on their simulations, so ``workers`` simulations use ``workers`` cores.
"""
from __future__ import annotations

import threading
import time

import torch

__all__ = ["run_dataset"]


def run_dataset(program, cfg, images: torch.Tensor, *, workers: int = 2, board: str | None = None,
                progress: bool = True, desc: str = "simulating") -> tuple[torch.Tensor, dict]:
    """The program's outputs for every image [N, …] (== golden's, bit for bit) and the run's
    figures: ``images``, ``cycles``, ``cycles_per_image``, ``mac_utilization``, ``wall_s``
    (host time), ``sim_s`` (simulation time summed over the workers)."""
    from tqdm import tqdm

    from .device import SimDevice
    n = len(images)
    B = program.io.batch
    chunks = -(-n // B)                                # program batches in the data set
    workers = max(1, min(workers, chunks))
    per = -(-chunks // workers) * B                    # whole program batches per shard
    shards = [(s, min(n, s + per)) for s in range(0, n, per)]
    outs, stats, errors = [None] * len(shards), [None] * len(shards), []
    bar = tqdm(total=n, desc=desc, unit="img", disable=not progress, smoothing=0.05)
    lock = threading.Lock()

    def work(k, lo, hi):
        try:
            with SimDevice(cfg, board=board) as dev:
                dev.load(program)
                parts, cyc, sim_s, util_cycles = [], 0, 0.0, 0.0
                for s in range(lo, hi, B):
                    y = dev.run(images[s:min(hi, s + B)])
                    parts.append(y)
                    st = dev.stats
                    cyc += st["cycles"]
                    sim_s += st["wall_s"]
                    util_cycles += st["mac_utilization"] * st["cycles"]
                    with lock:
                        bar.update(len(y))
                outs[k] = torch.cat(parts)
                stats[k] = (cyc, sim_s, util_cycles)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(e)

    t0 = time.perf_counter()
    if len(shards) == 1:
        work(0, *shards[0])
    else:
        threads = [threading.Thread(target=work, args=(k, lo, hi), daemon=True) for k, (lo, hi) in enumerate(shards)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    bar.close()
    if errors:
        raise errors[0]
    cycles = sum(s[0] for s in stats)
    return torch.cat(outs), {"images": n, "workers": len(shards), "cycles": cycles, "cycles_per_image": cycles / n,
                             "mac_utilization": sum(s[2] for s in stats) / cycles if cycles else 0.0,
                             "wall_s": time.perf_counter() - t0, "sim_s": sum(s[1] for s in stats)}
