"""Random-network differential testing on the simulator (rmsmp.sim.fuzz): N random small
networks, each quantized, compiled, run on the Verilator model of the config and compared
with golden.  Prints how many ran bit-exact, how many the tools refused (and why), and the
first failure (hypothesis shrinks it to a small network).

    python bench/fuzz_networks.py --count 50 [--seed 0] [--board ulx3s-85f | --config cfg.json]

``--config`` runs another configuration, e.g. one whose buffers are small enough that every
network streams its weights (and a batch runs layer by layer).
"""
from __future__ import annotations

import argparse
import collections
import time

from hypothesis import HealthCheck, given, seed, settings

from rmsmp.generator.config import AcceleratorConfig
from rmsmp.host import open_device
from rmsmp.sim.fuzz import networks, run_case


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=20, help="networks to run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--board", default=None, help="size the core for a board (default: AcceleratorConfig())")
    ap.add_argument("--config", help="an AcceleratorConfig JSON to run instead")
    a = ap.parse_args()
    if a.config:
        cfg = AcceleratorConfig.load(a.config)
    else:
        cfg = AcceleratorConfig.for_board(a.board) if a.board else AcceleratorConfig()
    dev = open_device("sim", cfg)
    outcomes, reasons, t0 = collections.Counter(), collections.Counter(), time.time()

    @seed(a.seed)
    @settings(max_examples=a.count, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(networks())
    def fuzz(spec):
        r = run_case(spec, dev, cfg)
        kind = r.split(":")[0]
        outcomes[kind] += 1
        if kind == "refused":
            reasons[r.split(":", 2)[-1].strip().split("(")[0][:60]] += 1
        print(f"[{sum(outcomes.values())}] {r[:100]}  {spec}", flush=True)

    failed = None
    try:
        fuzz()
    except AssertionError as e:
        failed = e
    what = a.config or a.board or "AcceleratorConfig()"
    print(f"\n{sum(outcomes.values())} networks in {time.time() - t0:.0f} s ({what}): "
          f"{outcomes['exact']} bit-exact, {outcomes['refused']} refused, {1 if failed else 0} failed")
    for why, n in reasons.most_common():
        print(f"  refused ×{n}: {why}")
    if failed:
        print(f"FAILURE: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
