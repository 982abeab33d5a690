"""RTL units in Amaranth's simulator against the golden arithmetic (fast unit tests)."""
import random

import pytest
import torch
from amaranth.sim import Simulator

from rmsmp.host.quant.formats import FIX_BITS, POT_BITS, WeightFormat, parse_weight_format
from rmsmp.host.quant.qmodel import TensorQ
from rmsmp.rtl.lanes import make_lane, product_width
from rmsmp.rtl.mac import MacArray, MacRow
from rmsmp.rtl.ppu import Requantizer
from rmsmp.sim.golden import requantize

FORMATS = [WeightFormat("fix", b) for b in FIX_BITS] + [WeightFormat("pot", b) for b in POT_BITS]
AW = 9


def run(dut, bench, clock=True):
    sim = Simulator(dut)
    if clock:
        sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


LANES = ([(f, "") for f in FORMATS] + [(WeightFormat("fix", b), "lut") for b in FIX_BITS]
         + [(WeightFormat("pot", b), "folded") for b in POT_BITS])


@pytest.mark.parametrize("fmt, kind", LANES, ids=str)
def test_lane_every_code(fmt, kind):
    """Every weight code against every corner activation (and random ones): ``a · q``
    exactly — multiplier and LUT-built (shift-and-add) fixed-point lanes alike, and folded
    power-of-two lanes as ``p + neg``."""
    lane = make_lane(fmt, AW, lut=kind == "lut", folded=kind == "folded")
    rnd = random.Random(str(fmt))
    acts = [-256, -255, -129, -128, -1, 0, 1, 127, 128, 255] + [rnd.randrange(-256, 256) for _ in range(6)]

    # every code the packer can emit (fix excludes -2^(b-1); pot includes "-0")
    codes = sorted({fmt.encode_int(q) for q in fmt.level_list()} | ({1 << (fmt.bits - 1)} if fmt.is_pot else set()))

    async def bench(ctx):
        for code in codes:
            q = fmt.decode_int(code)
            ctx.set(lane.w, code)
            for a in acts:
                ctx.set(lane.a, a)
                got = ctx.get(lane.p) + (ctx.get(lane.neg) if kind == "folded" else 0)
                assert got == a * q, (fmt, code, a)

    run(lane, bench, clock=False)
    assert lane.p.shape().width == product_width(fmt, AW)


def test_pot_and_lut_lanes_have_no_multiplier():
    from amaranth.back import rtlil
    assert "$mul" not in rtlil.convert(make_lane(parse_weight_format("pot4"), AW))
    assert "$mul" not in rtlil.convert(make_lane(parse_weight_format("fix4"), AW, lut=True))
    assert "$mul" in rtlil.convert(make_lane(parse_weight_format("fix4"), AW))


def _beats(rnd, rows_fmt, C, K, amin, amax, extreme=False, pixels=1):
    """K beats of ``pixels`` activation vectors and per-row weight codes (shared by the
    pixel lanes); returns (beats, expected sums [pixel][row])."""
    beats, exp = [], [[0] * len(rows_fmt) for _ in range(pixels)]
    for k in range(K):
        a = [[amax if extreme else rnd.randint(amin, amax) for _ in range(C)] for _ in range(pixels)]
        w = []
        for r, f in enumerate(rows_fmt):
            lv = f.level_list()
            q = [f.qmax if extreme else rnd.choice(lv) for _ in range(C)]
            w.append([f.encode_int(x) for x in q])
            for p in range(pixels):
                exp[p][r] += sum(x * y for x, y in zip(a[p], q))
        beats.append((a, w, k == 0, k == K - 1))
    return beats, exp


async def _drive_array(ctx, dut, groups, seqs, rnd, bubbles):
    """Feed sequences of beats (with random bubbles) and collect every output beat."""
    outs = []
    pending = [b for beats in seqs for b in beats]
    idle_after = dut.latency + 3
    while pending or idle_after:
        if pending and not (bubbles and rnd.random() < 0.3):
            a, w, first, last = pending.pop(0)
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload.a, a)
            ctx.set(dut.i.payload.first, first)
            ctx.set(dut.i.payload.last, last)
            r0 = 0
            for f, n in groups:
                ctx.set(dut.i.payload.w[f], w[r0:r0 + n])
                r0 += n
        else:
            ctx.set(dut.i.valid, 0)
            if not pending:
                idle_after -= 1
        await ctx.tick()
        if ctx.get(dut.o.valid):
            outs.append([list(px) for px in ctx.get(dut.o.payload)])
    return outs


@pytest.mark.parametrize("C, P, narrow, copy_rows", [(1, 1, 0, None), (3, 1, 0, None), (4, 1, 0, None),
                                                    (8, 1, 0, None), (3, 2, 0, None), (4, 3, 0, None),
                                                    (4, 1, 5, None), (3, 2, 5, None), (4, 2, 5, 2), (3, 1, 0, 4)])
def test_mac_array_random_dot_products(C, P, narrow, copy_rows):
    """Every row of every pixel lane: the exact dot product of its lane's activations with
    the row's (shared) weights, over dot products of several lengths, with bubbles.
    ``narrow``: the pot lanes and the LUT-built fix4 lanes take 5-bit signed activations
    (the activations are drawn to fit them); ``copy_rows``: a pipelined core's array (the
    broadcast inputs copied per block of rows, multiplier lanes with their own registers)."""
    groups = [("pot4", 2), ("fix4", 1), ("fix8", 1), ("pot2", 1)]
    dut = MacArray(lane_groups=[(parse_weight_format(f), n) for f, n in groups], columns=C, act_width=AW,
                   acc_bits=32, pixels=P, pot_act_width=narrow or None, lut_schemes=("fix4",) if narrow else (),
                   copy_rows=copy_rows)
    fmts = [WeightFormat(f[:3], int(f[3:])) for f, n in groups for _ in range(n)]
    rnd = random.Random(C * 10 + P)
    seqs, exps = [], []
    lo, hi = (-(1 << (narrow - 1)), (1 << (narrow - 1)) - 1) if narrow else (-256, 255)
    for K in (1, 5, 2, 9):
        b, e = _beats(rnd, fmts, C, K, lo, hi, pixels=P)
        seqs.append(b)
        exps.append(e)

    async def bench(ctx):
        outs = await _drive_array(ctx, dut, groups, seqs, rnd, bubbles=True)
        assert outs == exps

    run(dut, bench)


def test_mac_array_accumulator_extremes():
    """Largest products for many beats: the sum reaches 2^28 and must be exact."""
    groups = [("fix8", 1), ("pot4", 1)]
    dut = MacArray(lane_groups=[(parse_weight_format(f), n) for f, n in groups], columns=8, act_width=AW,
                   acc_bits=32)
    fmts = [WeightFormat("fix", 8), WeightFormat("pot", 4)]
    rnd = random.Random(0)
    b1, e1 = _beats(rnd, fmts, 8, 600, -256, 255, extreme=True)   # 600*8*255*127 ~ 1.55e8
    b2 = [([[-256] * 8], w, f, l) for (a, w, f, l) in b1]
    e2 = [[-x * 256 // 255 for x in e1[0]]]

    async def bench(ctx):
        outs = await _drive_array(ctx, dut, groups, [b1, b2], rnd, bubbles=False)
        assert outs == [e1, e2]
        assert e1[0][0] > 2 ** 27

    run(dut, bench)


def test_mac_row_matches_array_row():
    dut = MacRow(parse_weight_format("fix4"), columns=5, act_width=AW, acc_bits=24)
    rnd = random.Random(5)
    f = WeightFormat("fix", 4)
    beats, exp = _beats(rnd, [f], 5, 7, -256, 255)

    async def bench(ctx):
        got = []
        for beat in beats + [None] * (dut.latency + 1):
            ctx.set(dut.i.valid, beat is not None)
            if beat is not None:
                a, w, first, last = beat
                ctx.set(dut.i.payload.a, a[0])
                ctx.set(dut.i.payload.w, w[0])
                ctx.set(dut.i.payload.first, first)
                ctx.set(dut.i.payload.last, last)
            await ctx.tick()
            if ctx.get(dut.o.valid):
                got.append(ctx.get(dut.o.payload))
        assert got == exp[0]

    run(dut, bench)


def run_stream(dut, payloads) -> list:
    """Feed payloads back to back into an always-ready stream unit; collect its outputs."""
    got = []

    async def bench(ctx):
        for p in list(payloads) + [None] * (dut.latency + 1):
            ctx.set(dut.i.valid, p is not None)
            if p is not None:
                ctx.set(dut.i.payload, p)
            await ctx.tick()
            if ctx.get(dut.o.valid):
                got.append(ctx.get(dut.o.payload))

    run(dut, bench)
    return got


def _requant_cases(rnd, n):
    cases = []
    for _ in range(n):
        out = rnd.choice([TensorQ(4, False, 0), TensorQ(8, True, 0), TensorQ(8, False, 0), TensorQ(16, True, 0)])
        relu = rnd.random() < 0.5
        cases.append((rnd.randrange(-2 ** 29, 2 ** 29), rnd.randrange(-2 ** 30, 2 ** 30),
                      rnd.choice([1, rnd.randrange(1, 2 ** 16)]), rnd.randrange(0, 63), out, relu))
    # corners: ties in both signs, zero shift, saturation at both ends
    cases += [(3, 0, 1, 1, TensorQ(8, True, 0), False), (-3, 0, 1, 1, TensorQ(8, True, 0), False),
              (5, -10, 1, 0, TensorQ(8, True, 0), False),
              (2 ** 31 - 2 ** 30 - 1, 2 ** 30, 65535, 0, TensorQ(16, True, 0), False),
              (-2 ** 31 + 2 ** 30, -2 ** 30, 65535, 0, TensorQ(16, True, 0), False),
              (-1000, 0, 1, 0, TensorQ(4, False, 0), True), (1000, 0, 1, 0, TensorQ(4, False, 0), True)]
    return cases


@pytest.mark.parametrize("pipelined", [True, False])
def test_requantizer_matches_golden(pipelined):
    dut = Requantizer(pipelined=pipelined)
    rnd = random.Random(7)
    cases = _requant_cases(rnd, 300)
    exp = [int(requantize(torch.tensor(acc + b), m, n, q, relu)) for acc, b, m, n, q, relu in cases]
    payloads = [{"acc": acc, "bias": b, "mult": mm, "shift": n, "lo": max(q.lo, 0) if relu else q.lo, "hi": q.hi}
                for acc, b, mm, n, q, relu in cases]
    assert run_stream(dut, payloads) == exp


@pytest.mark.parametrize("pipelined", [True, False])
def test_requantizer_with_held_bounds_matches_golden(pipelined):
    """``held_bounds``: the clamp takes the bounds on the input when the value leaves, so a
    stream whose bounds stay put (the engine's: one per layer) gives the golden values."""
    rnd = random.Random(8)
    groups = {}
    for c in _requant_cases(rnd, 200):
        q, relu = c[4], c[5]
        groups.setdefault((max(q.lo, 0) if relu else q.lo, q.hi), []).append(c)
    assert len(groups) > 4
    for (lo, hi), cases in groups.items():
        exp = [int(requantize(torch.tensor(acc + b), m, n, q, relu)) for acc, b, m, n, q, relu in cases]
        payloads = [{"acc": acc, "bias": b, "mult": mm, "shift": n, "lo": lo, "hi": hi}
                    for acc, b, mm, n, _, _ in cases]
        assert run_stream(Requantizer(held_bounds=True, pipelined=pipelined), payloads) == exp


def add_params(fa, fb, fo):
    f = max(fa, fb)
    up = max(0, fo - f)
    return f - fa + up, f - fb + up, max(0, f - fo)


@pytest.mark.parametrize("single_port", [False, True], ids=["dual", "spram"])
def test_burst_ram_serves_overlapping_bursts(single_port):
    """Region A is written; then region B is written in bursts while A is read back in bursts
    by a reader that stalls at random; then B is read back.  Every word comes back exactly,
    in order, none lost or repeated — the single-port (SPRAM-shaped) memory gives a write
    beat the port and makes the read wait."""
    from rmsmp.rtl.burst_ram import SPRAM_WORDS, BurstRam
    dut = BurstRam(depth=SPRAM_WORDS if single_port else 512, single_port=single_port)
    rnd = random.Random(3)
    a_words = [rnd.randrange(1 << 32) for _ in range(150)]
    b_words = [rnd.randrange(1 << 32) for _ in range(150)]
    A, B = 10, 300
    got_a, got_b, cycles = [], [], {}
    p = dut.port

    async def write(ctx, addr, words, burst):
        for o in range(0, len(words), burst):
            chunk = words[o:o + burst]
            ctx.set(p.wr_cmd.payload, {"addr": addr + o, "len": len(chunk)})
            ctx.set(p.wr_cmd.valid, 1)
            await ctx.tick().until(p.wr_cmd.ready)
            ctx.set(p.wr_cmd.valid, 0)
            for w in chunk:
                ctx.set(p.wr_data.payload, w)
                ctx.set(p.wr_data.valid, 1)
                await ctx.tick().until(p.wr_data.ready)
            ctx.set(p.wr_data.valid, 0)

    async def read(ctx, addr, n, burst, out):
        for o in range(0, n, burst):
            k = min(burst, n - o)
            ctx.set(p.rd_cmd.payload, {"addr": addr + o, "len": k})
            ctx.set(p.rd_cmd.valid, 1)
            await ctx.tick().until(p.rd_cmd.ready)
            ctx.set(p.rd_cmd.valid, 0)
            while k:
                ready = rnd.random() < 0.7
                ctx.set(p.rd_data.ready, ready)
                _, _, valid, data = await ctx.tick().sample(p.rd_data.valid, p.rd_data.payload)
                if valid and ready:
                    out.append(data)
                    k -= 1
            ctx.set(p.rd_data.ready, 0)

    async def writer(ctx):
        await write(ctx, A, a_words, 32)
        cycles["a_written"] = True
        await write(ctx, B, b_words, 7)
        cycles["b_written"] = True

    async def reader(ctx):
        while "a_written" not in cycles:
            await ctx.tick()
        overlapped = "b_written" not in cycles     # B is being written while A is read
        await read(ctx, A, len(a_words), 13, got_a)
        while "b_written" not in cycles:
            await ctx.tick()
        await read(ctx, B, len(b_words), 64, got_b)
        cycles["overlapped"] = overlapped

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(writer)
    sim.add_testbench(reader)
    sim.run()
    assert cycles["overlapped"]             # A was read while B was being written
    assert got_a == a_words and got_b == b_words
