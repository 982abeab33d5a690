"""Per-layer cycles and MAC utilization of the layer benches on the default array (Verilator).

    python bench/layer_benches.py

Also reports the Verilator build time of the core and the simulated cycles per second.
Every result is checked bit-exact against the golden model before it is reported.
"""
import time

from rmsmp.generator.config import AcceleratorConfig
from rmsmp.generator.program import layer_program, vec_program
from rmsmp.host import open_device
from rmsmp.sim.layer_cases import LAYER_CASES, VEC_CASES, mini_block, one_layer_model, vec_case


def main():
    cfg = AcceleratorConfig()
    dev = open_device("sim", cfg)
    t = time.perf_counter()
    built = dev.build()
    print(f"{cfg.describe()}\nVerilator build (or cache hit): {built:.1f} s")
    print("| layer | shape | MACs | cycles | MAC utilization | array busy | sim kcycles/s |")
    print("|---|---|---|---|---|---|---|")
    for name, case in LAYER_CASES.items():
        qm, layer, x, y = one_layer_model(**case)
        hw = case.get("hw", 1)
        dev.load(layer_program(qm, layer, cfg, x, in_hw=(hw, hw)))
        got = dev.run(x)
        assert got.tolist() == y.reshape(got.shape).tolist(), name
        s = dev.stats
        shape = f"{case['cin']}→{case['cout']}" + (f" @{hw}×{hw}" if case["op"] == "conv" else "")
        print(f"| {name} | {shape} | {s['macs']} | {s['cycles']} | {s['mac_utilization']:.1%} | "
              f"{s['beat_utilization']:.1%} | {s['sim_cycles_per_s'] / 1e3:.0f} |")
    qm, tr = mini_block(hw=16)
    for name in VEC_CASES:
        layer, inputs, y = vec_case(qm, tr, name)
        dev.load(vec_program(qm, layer, cfg, inputs))
        got = dev.run(*inputs)
        assert got.tolist() == y.reshape(got.shape).tolist(), name
        s = dev.stats
        print(f"| {name} | {'×'.join(map(str, inputs[0].shape))} → {'×'.join(map(str, got.shape))} | – | "
              f"{s['cycles']} | – | – | {s['sim_cycles_per_s'] / 1e3:.0f} |")
    print(f"total wall {time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    main()
