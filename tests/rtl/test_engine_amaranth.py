"""The conv engine in Amaranth's simulator: whole layers bit-exact vs the golden model."""
from dataclasses import replace

import pytest
import torch
from amaranth import Fragment
from amaranth.sim import Simulator

from rmsmp.generator.config import AcceleratorConfig
from rmsmp.generator.layout import pack_activations, unpack_activations
from rmsmp.generator.lower import CompileError, lower_conv, pot_terms
from rmsmp.rtl.engine import ConvEngine
from rmsmp.rtl.isa import param_entries, param_slots
from rmsmp.sim.collisions import PoisonCollisions
from rmsmp.sim.layer_cases import one_layer_model

CFG = AcceleratorConfig(lane_groups=(("pot4", 2), ("fix4", 1), ("fix8", 1)), columns=4,
                        act_depth=2048, weight_depth=512, acc_depth=64)
RATIO = {"pot4": 0.5, "fix4": 0.25, "fix8": 0.25}


def run_engine(cfg, low, x_words, in_base, out_base, out_words):
    dut = ConvEngine(cfg)
    result = {}

    async def bench(ctx):
        for a, w in enumerate(x_words):
            ctx.set(dut.act_w.addr[0], in_base + a)
            ctx.set(dut.act_w.data, w)
            ctx.set(dut.act_w.en[0], (1 << cfg.columns) - 1)
            await ctx.tick()
        ctx.set(dut.act_w.en[0], 0)
        for g in cfg.lane_groups:
            port = getattr(dut, f"wgt_w_{g.scheme}")
            for a, w in enumerate(low.weights[g.scheme]):
                ctx.set(port.addr, low.desc["w_base"] + a)
                ctx.set(port.data, w)
                ctx.set(port.en, 1)
                await ctx.tick()
            ctx.set(port.en, 0)
        slots = param_slots(cfg.rows)
        entries = [e for w in low.params for e in param_entries(w, cfg.acc_bits, cfg.mult_bits, cfg.shift_bits,
                                                                  cfg.rows)]
        for a, w in enumerate(entries):
            ctx.set(dut.par_w.addr, low.desc["p_base"] * slots + a)
            ctx.set(dut.par_w.data, w)
            ctx.set(dut.par_w.en, 1)
            await ctx.tick()
        ctx.set(dut.par_w.en, 0)
        ctx.set(dut.desc, low.desc)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        cycles = 0
        while not ctx.get(dut.done):
            await ctx.tick()
            cycles += 1
            assert cycles < 200000, "engine never finished"
        result["cycles"], result["beats"] = ctx.get(dut.cycles), ctx.get(dut.mac_beats)
        words = []
        for a in range(out_words):
            ctx.set(dut.act_r.addr, out_base + a)
            await ctx.tick().repeat(dut.act_read_latency)
            words.append(ctx.get(dut.act_r.data))
        result["words"] = words

    # memories as the builds make them: a read during a write to its address reads garbage
    # (boards/toolchain.py: NO_COLLISION_BYPASS), so a layer is exact only if it never uses one
    sim = Simulator(Fragment.get(dut, PoisonCollisions()))
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return result


def check_layer(qm, layer, x, y, hw_in, cfg=CFG):
    C = cfg.columns
    low = lower_conv(qm, layer, cfg, in_hw=hw_in, in_base=0, out_base=1024)
    xin = x if x.dim() == 3 else x.reshape(-1, 1, 1)
    xw = pack_activations(xin, C)
    OH, OW = low.desc["out_h"], low.desc["out_w"]
    n_out = (low.out_channels_padded // C) * OH * OW
    res = run_engine(cfg, low, xw, 0, 1024, n_out)
    got = unpack_activations(res["words"], layer.rows, OH, OW, C, layer.out.signed)
    exp = y.reshape(layer.rows, OH, OW).tolist()
    assert got == exp
    assert res["beats"] == low.beats
    return res, low


@pytest.mark.parametrize("case", [
    dict(op="conv", cin=6, cout=8, k=3, s=1, p=1, hw=6),      # 3x3 s1 p1, channels not a multiple of C
    dict(op="conv", cin=5, cout=12, k=3, s=2, p=1, hw=7),     # 3x3 s2 p1, odd size
    dict(op="conv", cin=8, cout=8, k=1, s=2, p=0, hw=6, relu=False),   # 1x1 s2 downsample, signed out
    dict(op="linear", cin=10, cout=8, relu=False),
], ids=["3x3s1", "3x3s2", "1x1s2", "linear"])
def test_engine_layer_bit_exact(case):
    qm, layer, x, y = one_layer_model(**case, ratio=RATIO)
    hw = case.get("hw", 1)
    res, low = check_layer(qm, layer, x, y, (hw, hw))
    print(f"\n{case}: {res['cycles']} cycles, {low.beats} beats, MAC utilization "
          f"{low.macs / (res['cycles'] * CFG.peak_macs_per_cycle):.1%}")


def test_engine_first_layer_7x7_signed_input():
    """7x7 s2 p3 with 3 input channels, signed 8-bit input, fix8 edge rows."""
    qm, layer, x, y = one_layer_model("conv", 3, 4, k=7, s=2, p=3, hw=9, ratio=RATIO, edge=True)
    assert qm.input.out.signed and set(layer.schemes) == {"fix8"}
    check_layer(qm, layer, x, y, (9, 9))


def test_scheme_without_lanes_is_named():
    cfg = AcceleratorConfig(lane_groups=(("pot4", 2), ("fix4", 2)), columns=4)
    qm, layer, x, y = one_layer_model("conv", 4, 8, ratio={"fix8": 0.5, "fix4": 0.5})
    with pytest.raises(CompileError, match=r"'0'.*fix8 has no lane group that can run it"):
        lower_conv(qm, layer, cfg, in_hw=(6, 6), in_base=0, out_base=512)


@pytest.mark.parametrize("ratio,groups", [({"fix4": 1.0}, 3), ({"pot3": 0.5, "fix4": 0.5}, 2)],
                         ids=["fix4-only", "pot3+fix4"])
def test_rows_spill_onto_wider_lanes(ratio, groups):
    """fix4 rows run on the fix8 lane too, pot3 rows on pot4 and fix lanes: fewer output
    groups, still bit-exact."""
    qm, layer, x, y = one_layer_model("conv", 6, 8, k=3, s=1, p=1, hw=5, ratio=ratio)
    res, low = check_layer(qm, layer, x, y, (5, 5))
    # fix4-only: 8 channels on the fix4 and fix8 rows (not 8 groups on the one fix4 row), and
    # (this core has row chains) a third channel an output group on the two pot rows, its
    # weights (|q| ≤ 7) in two power-of-two terms; pot3+fix4: the pot3 rows fill the pot4
    # lanes, the fix4 rows the fix lanes
    assert low.desc["out_groups"] == groups


#: a core with more pot rows than fix8 rows, for row chains
CHAIN_CFG = AcceleratorConfig(lane_groups=(("pot4", 8), ("fix8", 2)), columns=4,
                              act_depth=2048, weight_depth=512, acc_depth=64)


@pytest.mark.parametrize("pipelined", [True, False])
def test_fix8_layer_chains_rows_on_pot_lanes(pipelined):
    """An all-fix8 layer (an edge layer: signed 8-bit input) on a core with row chains: some
    output channels run on the pot rows, each weight's power-of-two terms on a chain of rows
    the requantizer sums — fewer output groups than the fix8 rows alone need, bit-exact.  A
    compact core has no chains and keeps the layer on its fix8 rows."""
    cfg = replace(CHAIN_CFG, pipelined=pipelined)
    assert cfg.row_chains == pipelined
    qm, layer, x, y = one_layer_model("conv", 3, 8, k=3, s=1, p=1, hw=6, ratio=RATIO, edge=True)
    assert set(layer.schemes) == {"fix8"} and int(layer.qweight.abs().max()) > 64   # terms up to 64
    res, low = check_layer(qm, layer, x, y, (6, 6), cfg)
    pot_rows = range(8)
    on_pot = [ch for ch in range(8) if low.perm[ch] % cfg.rows in pot_rows]
    if pipelined:
        assert on_pot and low.desc["out_groups"] < 4          # 8 channels on 2 fix8 rows: 4 groups
    else:
        assert not on_pot and low.desc["out_groups"] == 4


def test_pot_terms_sum_to_the_weights():
    """Every fix8 value is a sum of pot4 values (0, ±1 … ±64) in its fewest terms."""
    q = torch.arange(-127, 128)
    t = pot_terms(q, 64)
    assert torch.equal(t.sum(dim=0), q)
    assert all(v == 0 or abs(v) & (abs(v) - 1) == 0 for v in t.flatten().tolist()) and int(t.abs().max()) == 64
    assert (t[:, q == 127] != 0).sum() == 3 and (t[:, q == 96] != 0).sum() == 2    # 64 + 64 − 1; 64 + 32
    assert (t != 0).sum(dim=0).max() == t.shape[0]
