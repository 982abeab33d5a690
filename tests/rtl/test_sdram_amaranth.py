"""The SDR SDRAM controller against a behavioural SDRAM model that checks every command:
init sequence, mode register, open/closed banks, tRCD/tRP/tRC/tRAS/tWR, read-burst
truncation, refresh interval; data read back equals what was written (random bursts
across row and bank boundaries, with back-pressure on the read stream) — also with the
controller on a clock of its own behind :class:`MemPortCrossing` (clocks of no common
period, so every phase of the crossing occurs)."""
import random
from dataclasses import replace

import pytest
from amaranth import ClockDomain, DomainRenamer, Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from rmsmp.rtl.sdram import MemPortCrossing, SdramController, SdramGeometry, SdramTiming
from rmsmp.sim.sdram_model import SdramModel, split

GEOM = SdramGeometry(row_bits=4, col_bits=4, bank_bits=2)     # 8 words per row: many crossings
TIMING = SdramTiming(rp=2, rcd=2, rc=5, ras=4, wr=2, cl=2, refresh_cycles=80, init_cycles=30)


def chip_process(model, ctl, domain="sync"):
    """Amaranth simulator process: the chip ``model`` on ``ctl``'s pins (clocked by ``domain``)."""
    async def chip(ctx):
        cyc = 0
        async for _, _, cs_n, ras_n, cas_n, we_n, a, ba, dq, oe, dqm in ctx.tick(domain).sample(
                ctl.cs_n, ctl.ras_n, ctl.cas_n, ctl.we_n, ctl.a, ctl.ba, ctl.dq_o, ctl.dq_oe, ctl.dqm):
            if not cs_n:
                model.edge(cyc, (ras_n, cas_n, we_n), a, ba, dq, oe, dqm)
            cyc += 1
            ctx.set(ctl.dq_i, model.drive.pop(cyc, 0x5A5A))
    return chip


def simulate(top, model, ctl, bench, seconds, mem_period=None):
    """Run ``bench`` on ``top`` with the chip model on ``ctl``; fails on any timing error.
    ``mem_period``: the controller and the chip on the ``mem`` clock, of that period."""
    sim = Simulator(top)
    sim.add_clock(1e-8)
    if mem_period:
        sim.add_clock(mem_period, domain="mem")
    sim.add_process(chip_process(model, ctl, "mem" if mem_period else "sync"))
    sim.add_testbench(bench)
    sim.run_until(seconds)
    assert not model.errors, "\n".join(model.errors[:10])


@pytest.mark.parametrize("seed,cl", [(0, 2), (1, 2), (2, 3)])
@pytest.mark.parametrize("mem_period", [None, 4.3e-9, 13.1e-9])
def test_sdram_controller_against_the_chip_model(seed, cl, mem_period):
    """(CL 3: the chip above 100 MHz.)  ``mem_period``: the controller on its own clock, the
    host's port crossing to it (the controller at 2.3× and at 0.76× the host's clock)."""
    timing = replace(TIMING, cl=cl)
    ctl = SdramController(GEOM, timing)
    dut = ctl
    if mem_period:
        top = Module()
        top.domains.mem = ClockDomain("mem")
        top.submodules.ctl = ctl = DomainRenamer({"sync": "mem"})(ctl)
        top.submodules.cross = dut = MemPortCrossing(32)
        wiring.connect(top, dut.down, ctl.port)
    else:
        top = dut
    model = SdramModel(GEOM, timing)
    rng = random.Random(seed)
    words = GEOM.words
    ref = {}
    ops = []
    for _ in range(14):
        a = rng.randrange(words - 40)
        n = rng.randrange(1, 40)
        ops.append(("w", a, [rng.getrandbits(32) for _ in range(n)]))
        if rng.random() < 0.6:
            b = rng.randrange(words - 40)
            ops.append(("r", b, rng.randrange(1, 40)))
    ops.append(("r", 0, words))                        # everything, crossing every row and bank
    done = {"reads": []}

    async def host(ctx):
        p = dut.up if mem_period else dut.port
        if seed == 0:       # idle through the first refreshes: one after reset resumes no burst
            await ctx.tick().repeat(TIMING.init_cycles + 3 * TIMING.refresh_cycles)
        for op in ops:
            if op[0] == "w":
                _, a, data = op
                ctx.set(p.wr_cmd.payload, {"addr": a, "len": len(data)})
                ctx.set(p.wr_cmd.valid, 1)
                await ctx.tick().until(p.wr_cmd.ready)
                ctx.set(p.wr_cmd.valid, 0)
                for w in data:
                    ctx.set(p.wr_data.payload, w)
                    ctx.set(p.wr_data.valid, 1)
                    await ctx.tick().until(p.wr_data.ready)
                    if rng.random() < 0.2:              # gaps in the write stream
                        ctx.set(p.wr_data.valid, 0)
                        await ctx.tick().repeat(rng.randrange(1, 4))
                ctx.set(p.wr_data.valid, 0)
                for i, w in enumerate(data):
                    ref[a + i] = w
            else:
                _, a, n = op
                ctx.set(p.rd_cmd.payload, {"addr": a, "len": n})
                ctx.set(p.rd_cmd.valid, 1)
                await ctx.tick().until(p.rd_cmd.ready)
                ctx.set(p.rd_cmd.valid, 0)
                got = []
                while len(got) < n:
                    ready = rng.random() < 0.7           # back-pressure
                    ctx.set(p.rd_data.ready, ready)
                    _, _, valid, payload = await ctx.tick().sample(p.rd_data.valid, p.rd_data.payload)
                    if ready and valid:
                        got.append(payload)
                ctx.set(p.rd_data.ready, 0)
                done["reads"].append((a, n, got))
                for i, w in enumerate(got):
                    if a + i in ref:
                        assert w == ref[a + i], f"word {a + i:#x}: read {w:#010x}, wrote {ref[a + i]:#010x}"
        done["cycles"] = None

    simulate(top, model, ctl, host, 2e-3 if not mem_period else 2e-3 * max(1, mem_period / 1e-8), mem_period)
    assert "cycles" in done, "the host did not finish"
    assert len(done["reads"]) == sum(op[0] == "r" for op in ops)
    # every refresh interval within the period (plus the longest wait to close a row)
    gaps = [b - a for a, b in zip(model.refreshes, model.refreshes[1:])]
    assert gaps and max(gaps) <= TIMING.refresh_cycles + 30, max(gaps)
    # the model holds the written words at the mapped (bank, row, column)
    for w, v in list(ref.items())[:50]:
        bank, row, col = split(GEOM, w)
        assert model.mem[(bank, row, col)] | model.mem[(bank, row, col + 1)] << 16 == v


def test_sdram_timing_from_nanoseconds():
    t = SdramTiming.at(50e6)
    assert (t.rp, t.rcd, t.rc, t.ras, t.cl) == (1, 1, 3, 3, 2)        # 18, 18, 60, 42 ns at 20 ns
    assert t.refresh_cycles == 374 and t.init_cycles == 10_000
    # at 100 MHz CL 2 still holds (10 ns); faster, the chip needs CL 3
    assert SdramTiming.at(100e6).cl == 2 and (SdramTiming.at(125e6).cl, SdramTiming.at(125e6).rcd) == (3, 3)


@pytest.mark.slow      # the core behind the SDRAM controller, in Amaranth's simulator
def test_core_runs_a_layer_from_sdram():
    """The core with the SDRAM controller as its memory: a conv layer's program, weights
    and input preloaded into the chip model, run, output read from the chip == golden; the
    model checks every command on the way."""
    from amaranth import Module
    from amaranth.lib import wiring
    from test_core_amaranth import CFG, RATIO

    from rmsmp.generator.layout import unpack_activations
    from rmsmp.generator.program import layer_program
    from rmsmp.rtl.core import Core
    from rmsmp.sim.layer_cases import one_layer_model

    geom = SdramGeometry(row_bits=6, col_bits=5, bank_bits=2)          # 16 words per row
    qm, layer, x, y = one_layer_model(op="conv", cin=6, cout=8, k=3, s=2, p=1, hw=7, ratio=RATIO)
    prog = layer_program(qm, layer, CFG, x, in_hw=(7, 7))
    assert len(prog.image) < geom.words
    core, ctl = Core(CFG), SdramController(geom, TIMING)
    top = Module()
    top.submodules.core, top.submodules.ctl = core, ctl
    wiring.connect(top, core.mem, ctl.port)
    model = SdramModel(geom, TIMING)
    for w, v in enumerate(prog.image):
        bank, row, col = split(geom, w)
        model.mem[(bank, row, col)], model.mem[(bank, row, col + 1)] = v & 0xFFFF, v >> 16
    out = {}

    async def bench(ctx):
        await ctx.tick().repeat(TIMING.init_cycles + 40)            # controller initialisation
        ctx.set(core.prog_addr, prog.prog_addr)
        ctx.set(core.start, 1)
        await ctx.tick()
        ctx.set(core.start, 0)
        await ctx.tick().until(core.done)
        out["cycles"] = ctx.get(core.cycles)

    simulate(top, model, ctl, bench, 5e-3)
    assert "cycles" in out, "the core did not finish"
    image = []
    for w in range(len(prog.image)):
        bank, row, col = split(geom, w)
        image.append(model.mem.get((bank, row, col), 0) | model.mem.get((bank, row, col + 1), 0) << 16)
    low = prog.layers[0]
    got = unpack_activations(prog.read_entries(image, "y"), layer.rows, low.desc["out_h"], low.desc["out_w"],
                             CFG.columns, layer.out.signed)
    assert got == y.reshape(layer.rows, low.desc["out_h"], low.desc["out_w"]).tolist()
    assert len(model.refreshes) >= out["cycles"] // (TIMING.refresh_cycles + 30)
