"""The whole core in Amaranth's simulator: program in memory, DMA, compute, store."""
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from amaranth import Fragment, Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from rmsmp.generator.config import AcceleratorConfig
from rmsmp.generator.layout import unpack_activations
from rmsmp.generator.program import layer_program, vec_program
from rmsmp.generator.runtime import Device
from rmsmp.generator.validate import check_program
from rmsmp.host import compile_model, quantize
from rmsmp.rtl.burst_ram import BurstRam
from rmsmp.rtl.core import Core
from rmsmp.rtl.dma import words_per_entry
from rmsmp.rtl.isa import INSTR_BITS, Buffer, Instruction, Opcode
from rmsmp.sim import golden
from rmsmp.sim.collisions import PoisonCollisions
from rmsmp.sim.layer_cases import mini_block, one_layer_model, vec_case

CFG = AcceleratorConfig(lane_groups=(("pot4", 2), ("fix4", 1), ("fix8", 1)), columns=4,
                        act_depth=2048, weight_depth=512, acc_depth=64)
RATIO = {"pot4": 0.5, "fix4": 0.25, "fix8": 0.25}
#: the compact core (no optional pipeline stages: what iCE40 builds get)
COMPACT = replace(CFG, pipelined=False)
INSTR_WORDS = INSTR_BITS // CFG.bus_width


def run_core(cfg, prog, spare=64):
    """Runs ``prog`` from memory, its memories as the builds make them: a read during a write
    to its address reads garbage (boards/toolchain.py: NO_COLLISION_BYPASS), so a result is exact
    only if the core never uses one; ``collisions`` counts them per memory."""
    core = Core(cfg)
    poison = PoisonCollisions()
    mem = BurstRam(depth=len(prog.image) + spare, bus_width=cfg.bus_width, init=prog.image)
    top = Module()
    top.submodules.core, top.submodules.mem = core, mem
    wiring.connect(top, core.mem, mem.port)
    out = {}

    async def bench(ctx):
        assert ctx.get(core.id) == cfg.config_hash
        ctx.set(core.prog_addr, prog.prog_addr)
        ctx.set(core.start, 1)
        await ctx.tick()
        ctx.set(core.start, 0)
        n = 0
        while not ctx.get(core.done):
            await ctx.tick()
            n += 1
            assert n < 300000, "core never finished"
        out["cycles"], out["beats"] = ctx.get(core.cycles), ctx.get(core.mac_beats)
        out["error"], out["pc"] = ctx.get(core.error), ctx.get(core.pc)
        out["image"] = [ctx.get(mem.mem.data[i]) for i in range(len(prog.image))]
        out["collisions"] = {k: ctx.get(v) for k, v in poison.hits.items()}

    sim = Simulator(Fragment.get(top, poison))
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out


@pytest.mark.parametrize("case", [
    dict(op="conv", cin=6, cout=8, k=3, s=2, p=1, hw=7),
    dict(op="linear", cin=9, cout=6, relu=False),
], ids=["3x3s2", "linear"])
@pytest.mark.parametrize("cfg", [CFG, COMPACT], ids=["pipelined", "compact"])
def test_core_runs_a_layer_program_bit_exact(case, cfg):
    qm, layer, x, y = one_layer_model(**case, ratio=RATIO)
    hw = case.get("hw", 1)
    prog = layer_program(qm, layer, cfg, x, in_hw=(hw, hw))
    res = run_core(cfg, prog)
    low = prog.layers[0]
    OH, OW = low.desc["out_h"], low.desc["out_w"]
    got = unpack_activations(prog.read_entries(res["image"], "y"), layer.rows, OH, OW, cfg.columns,
                             layer.out.signed)
    assert got == y.reshape(layer.rows, OH, OW).tolist()
    assert res["beats"] == low.beats
    assert res["error"] == 0 and res["pc"] == len(check_program(prog, cfg)) * INSTR_WORDS    # past END
    print(f"\n{case}: {res['cycles']} cycles for the program ({low.beats} MAC beats)")


@pytest.mark.parametrize("name", ["maxpool", "signed maxpool", "add", "avgpool"])
@pytest.mark.parametrize("cfg", [CFG, COMPACT], ids=["pipelined", "compact"])
def test_core_runs_vector_ops_bit_exact(name, cfg):
    """max-pool 3x3/2 p1 (of a ReLU's output, and of signed values: the unit compares order
    keys), residual add + ReLU, global average pool, vs golden."""
    signed_pool = name == "signed maxpool"
    qm, tr = mini_block(signed_pool=signed_pool)
    layer, inputs, y = vec_case(qm, tr, name.split()[-1])
    if "maxpool" in name:
        assert qm[layer.inputs[0]].out.signed == signed_pool
    prog = vec_program(qm, layer, cfg, inputs)
    res = run_core(cfg, prog)
    o = prog.io.outputs[0]
    got = unpack_activations(prog.read_entries(res["image"], o.name), *o.shape, cfg.columns, o.signed)
    assert got == y.reshape(o.shape).tolist()


PACK_CFG = AcceleratorConfig(lane_groups=(("pot4", 2), ("fix8", 2)), columns=4,
                             act_depth=2048, weight_depth=512, acc_depth=64)


@pytest.mark.parametrize("ratio,wbits", [({"pot4": 0.5, "fix4": 0.5}, 4), ({"pot4": 0.5, "fix3": 0.5}, 4),
                                         ({"fix2": 1}, 2), ({"pot4": 0.75, "fix4": 0.25}, 0)],
                         ids=["fix4-on-fix8", "fix3-on-fix8", "fix2-on-fix8", "pot4-spills-to-fix8"])
def test_weights_pack_at_their_own_width(ratio, wbits):
    """Fixed-point rows on wider fix lanes are stored and moved at their own width; the DMA
    sign-extends them (pot4 rows spilling onto a fix8 lane need all 8 bits)."""
    qm, layer, x, y = one_layer_model("conv", cin=6, cout=8, k=3, s=1, p=1, hw=5, ratio=ratio)
    prog = layer_program(qm, layer, PACK_CFG, x, in_hw=(5, 5))
    low = prog.layers[0]
    got_wbits, width, words = low.packed["fix8"]
    assert got_wbits == wbits
    assert width == 2 * 4 * (wbits or 8)                  # 2 rows × 4 columns × code width
    assert len(words) == len(low.weights["fix8"])
    res = run_core(PACK_CFG, prog)
    OH, OW = low.desc["out_h"], low.desc["out_w"]
    got = unpack_activations(prog.read_entries(res["image"], "y"), layer.rows, OH, OW, PACK_CFG.columns,
                             layer.out.signed)
    assert got == y.reshape(layer.rows, OH, OW).tolist()


SMALL_CFG = AcceleratorConfig(lane_groups=(("pot4", 1), ("fix8", 1)), columns=2, act_depth=512, weight_depth=256,
                              acc_depth=16)


@pytest.mark.parametrize("ratio,wbits", [({"pot4": 0.5, "fix8": 0.5}, 0), ({"pot4": 0.5, "fix4": 0.5}, 4)],
                         ids=["fix8", "fix4-on-fix8"])
def test_small_weight_entries_share_bus_words(ratio, wbits):
    """One row × two columns: a pot4 entry is 8 bits, a fix8 one 16 (8 with fix4 rows, in the
    lane group's 16-bit slots), so four or two share a 32-bit word; 54 entries a group end in
    a part-filled word."""
    from rmsmp.generator.program import ProgramBuilder
    qm, layer, x, y = one_layer_model("conv", cin=3, cout=6, k=3, s=1, p=1, hw=5, ratio=ratio)
    prog = layer_program(qm, layer, SMALL_CFG, x, in_hw=(5, 5))
    low = prog.layers[0]
    pb = ProgramBuilder(SMALL_CFG)
    for k, (scheme, per) in enumerate((("pot4", 4), ("fix8", 2))):
        got_wbits, width, words = low.packed[scheme]
        assert len(words) == 54 and (scheme == "pot4" or (got_wbits, width) == (wbits, 2 * (wbits or 8)))
        assert pb.blob_words(pb.blob(scheme, words, width, weights=k)) == -(-54 // per)
    with pytest.raises(ValueError, match=r"blob 'loose' loads buffer 2 but was made for no weight buffer"):
        pb.load(Buffer.WEIGHT0, pb.blob("loose", words, width))
    res = run_core(SMALL_CFG, prog)
    got = unpack_activations(prog.read_entries(res["image"], "y"), layer.rows, 5, 5, 2, layer.out.signed)
    assert got == y.reshape(layer.rows, 5, 5).tolist()


def test_engine_op_fetched_while_the_engine_runs():
    """Two convs back to back with different output bases: the second CONV is fetched while
    the first runs, and must not reach the engine's descriptor register before it is done."""
    from rmsmp.generator.layout import pack_activations
    from rmsmp.generator.lower import lower_conv
    from rmsmp.generator.program import ProgramBuilder
    from rmsmp.rtl.isa import Buffer
    qm, layer, x, y = one_layer_model("conv", cin=6, cout=8, k=3, s=2, p=1, hw=7, ratio=RATIO)
    C = CFG.columns
    xw = pack_activations(x, C)
    first = lower_conv(qm, layer, CFG, in_hw=(7, 7), in_base=0, out_base=len(xw))
    n = first.out_channels_padded // C * first.desc["out_h"] * first.desc["out_w"]
    second = lower_conv(qm, layer, CFG, in_hw=(7, 7), in_base=0, out_base=len(xw) + n)
    pb = ProgramBuilder(CFG)
    pb.load(Buffer.ACT, pb.blob("x", xw, 8 * C))
    pb.load_layer(first)
    pb.conv(first)
    pb.conv(second)
    pb.store("y1", len(xw), n)
    pb.store("y2", len(xw) + n, n)
    prog = pb.build()
    res = run_core(CFG, prog)
    OH, OW = first.desc["out_h"], first.desc["out_w"]
    for name in ("y1", "y2"):
        got = unpack_activations(prog.read_entries(res["image"], name), layer.rows, OH, OW, C, layer.out.signed)
        assert got == y.reshape(layer.rows, OH, OW).tolist(), name
    assert res["beats"] == 2 * first.beats
    print(f"\ncollided reads (garbled, unused): {res['collisions']}")


@pytest.mark.parametrize("cfg", [CFG, COMPACT], ids=["pipelined", "compact"])
def test_stamps_write_where_the_cycles_went(cfg):
    """A STAMP writes the cycle counter and (pipelined cores) the cycles the DMA, the engine
    and both were busy and the MAC beats: over a span with only an activation load the engine,
    the overlap and the beats count nothing and the DMA at least a cycle a word; over a span
    with only a conv the DMA and the overlap count nothing, the beats are the conv's and the
    engine busy at least as long; neither beyond the span's cycles.  A compact core writes the
    cycle counter alone."""
    from rmsmp.generator.layout import pack_activations
    from rmsmp.generator.lower import lower_conv
    from rmsmp.generator.program import ProgramBuilder
    from rmsmp.rtl.isa import STAMP_COUNTERS, stamp_words
    qm, layer, x, y = one_layer_model("conv", cin=6, cout=8, k=3, s=2, p=1, hw=7, ratio=RATIO)
    C = cfg.columns
    xw = pack_activations(x, C)
    low = lower_conv(qm, layer, cfg, in_hw=(7, 7), in_base=0, out_base=len(xw))
    pb = ProgramBuilder(cfg)
    x_ref = pb.blob("x", xw, 8 * C)
    pb.load_layer(low)
    pb.trace("trace", 3)
    pb.stamp("trace", 0)
    pb.load(Buffer.ACT, x_ref)
    pb.stamp("trace", 1)
    pb.conv(low)
    pb.stamp("trace", 2)
    prog = pb.build()
    res = run_core(cfg, prog)
    n = stamp_words(cfg.pipelined)
    assert n == (5 if cfg.pipelined else 1)
    words = prog.read_entries(res["image"], "trace")
    assert len(words) == 3 * n
    st = [dict(zip(STAMP_COUNTERS, words[i * n:(i + 1) * n])) for i in range(3)]
    load, conv = ({c: b[c] - a[c] for c in a} for a, b in zip(st, st[1:]))
    assert 0 < st[0]["cycles"] < st[1]["cycles"] < st[2]["cycles"] <= res["cycles"]
    if not cfg.pipelined:
        return
    assert load["engine_busy"] == load["both_busy"] == load["mac_beats"] == 0
    assert len(xw) * words_per_entry(8 * C, cfg.bus_width) <= load["dma_busy"] <= load["cycles"]
    assert conv["dma_busy"] == conv["both_busy"] == 0
    assert conv["mac_beats"] == low.beats <= conv["engine_busy"] <= conv["cycles"]


@pytest.mark.parametrize("cfg", [CFG, COMPACT], ids=["pipelined", "compact"])
def test_a_vector_op_runs_beside_a_conv_in_other_banks(cfg):
    """A conv in bank 0 and a max-pool in bank 1, first with a STAMP between them (which
    waits for both units), then back to back: a pipelined core runs the second pair side by
    side, in fewer cycles than the first (at most the longer op plus the issue), a compact
    core one after the other; both pairs bit-exact."""
    from rmsmp.generator.layout import pack_activations
    from rmsmp.generator.lower import lower_conv, lower_vec
    from rmsmp.generator.program import ProgramBuilder
    from rmsmp.rtl.isa import stamp_words
    C, half = cfg.columns, cfg.act_depth // 2
    qm, layer, x, y = one_layer_model("conv", cin=6, cout=8, k=3, s=1, p=1, hw=7, ratio=RATIO)
    xw = pack_activations(x, C)
    conv = lower_conv(qm, layer, cfg, in_hw=(7, 7), in_base=0, out_base=len(xw))
    conv.desc["banks"] = 0b01
    n_conv = conv.out_channels_padded // C * conv.desc["out_h"] * conv.desc["out_w"]
    vq, tr = mini_block()
    pool, (px,), py = vec_case(vq, tr, "maxpool")
    pw = pack_activations(px, C)
    ch, H, W = px.shape
    vec = lower_vec(vq, pool, cfg, channels=ch, in_hw=(H, W), a_base=half, out_base=half + len(pw))
    vec.desc["banks"] = 0b10
    oh, ow = vec.out_hw
    n_vec = vec.out_channels_padded // C * oh * ow
    pb = ProgramBuilder(cfg)
    pb.load(Buffer.ACT, pb.blob("x", xw, 8 * C))
    pb.load(Buffer.ACT, pb.blob("px", pw, 8 * C), half)
    pb.load_layer(conv)
    pb.trace("trace", 4)
    pb.stamp("trace", 0)
    pb.conv(conv)
    pb.stamp("trace", 1)          # (a STAMP waits for both units)
    pb.vec(vec)
    pb.stamp("trace", 2)
    pb.store("y1", len(xw), n_conv)
    pb.store("p1", half + len(pw), n_vec)
    pb.conv(conv)
    pb.vec(vec)
    pb.stamp("trace", 3)
    pb.store("y2", len(xw), n_conv)
    pb.store("p2", half + len(pw), n_vec)
    prog = pb.build()
    res = run_core(cfg, prog)
    for name in ("y1", "y2"):
        got = unpack_activations(prog.read_entries(res["image"], name), layer.rows, 7, 7, C, layer.out.signed)
        assert got == y.reshape(layer.rows, 7, 7).tolist(), name
    for name in ("p1", "p2"):
        got = unpack_activations(prog.read_entries(res["image"], name), ch, oh, ow, C, pool.out.signed)
        assert got == py.reshape(ch, oh, ow).tolist(), name
    n = stamp_words(cfg.pipelined)
    t = [prog.read_entries(res["image"], "trace")[i * n] for i in range(4)]
    t_conv, t_vec, t_both = t[1] - t[0], t[2] - t[1], t[3] - t[2]
    # (the second pair also waits for the stores of the first)
    print(f"\nconv {t_conv}, max-pool {t_vec}, side by side {t_both} cycles")
    if cfg.pipelined:
        # the 3×3/2 pool walks its rows column by column: 3 taps a column, not 9 a window
        assert t_vec < vec.desc["cb"] * oh * ow * 9 < t_vec * 3 // 2
        assert t_both < t_conv + t_vec - min(t_conv, t_vec) // 2
    else:
        assert t_both >= t_conv + t_vec - 8


def test_poisoned_memory_garbles_a_collided_read_and_counts_it():
    """The checker itself: a memory read and written at one address in a cycle returns the
    written bytes inverted and counts the hit; apart, it returns the stored data."""
    from amaranth.lib.memory import Memory
    m = Module()
    m.submodules.mem = mem = Memory(shape=16, depth=4, init=[0x1111, 0x2222, 0x3333, 0x4444])
    wp, rp = mem.write_port(granularity=8), mem.read_port()
    poison = PoisonCollisions()

    async def bench(ctx):
        ctx.set(rp.addr, 1)
        await ctx.tick()
        assert ctx.get(rp.data) == 0x2222
        ctx.set(wp.addr, 1)
        ctx.set(wp.data, 0xABCD)
        ctx.set(wp.en, 0b01)              # low byte written while it is read
        await ctx.tick()
        ctx.set(wp.en, 0)
        assert ctx.get(rp.data) == 0x2222 ^ 0x00FF     # old data, written byte inverted
        ctx.set(rp.addr, 2)
        ctx.set(wp.en, 0b11)                 # write 1 while 2 is read: no collision
        await ctx.tick()
        ctx.set(wp.en, 0)
        assert ctx.get(rp.data) == 0x3333
        ctx.set(rp.addr, 1)
        await ctx.tick()
        assert ctx.get(rp.data) == 0xABCD
        assert list(ctx.get(h) for h in poison.hits.values()) == [1]

    sim = Simulator(Fragment.get(m, poison))
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


class _AmaranthDevice(Device):
    """The core in Amaranth's simulator, memories poisoned as in :func:`run_core`, as a device."""

    def run_loaded(self, prog, x):
        self.load(prog)
        return self.run(x)

    def run_image(self, image, read=None):
        res = run_core(self.cfg, SimpleNamespace(image=image, prog_addr=self.program.prog_addr))
        self.stats = {"cycles": res["cycles"], "mac_beats": res["beats"], "wall_s": 1.0, "process_s": 1.0}
        return res["image"]


class _PoolNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 10, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(10)
        self.relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(10, 4)

    def forward(self, x):
        return self.fc(torch.flatten(self.avgpool(self.relu(self.bn(self.conv(x)))), 1))


@pytest.mark.parametrize("acc_depth,sets", [(64, 0), (4, 2)], ids=["resident", "streamed-in-2-sets"])
def test_average_pool_on_the_conv_engine_runs_block_by_block(acc_depth, sets):
    """Without a vector-unit pool the global average pool runs on the conv engine one channel
    block at a time (10 channels, C = 4: three ops, the last half empty) with one stored
    kernel; bit-exact whole network, its parameters resident or streamed in sets of blocks."""
    torch.manual_seed(0)
    model = _PoolNet().eval()
    x = torch.randn(8, 3, 5, 5)
    qm = quantize(model, x, assign="variance")
    cfg = AcceleratorConfig(lane_groups=CFG.lane_groups, columns=4, act_depth=2048, weight_depth=512,
                            acc_depth=acc_depth, vector_ops=("add",))
    prog = compile_model(qm, cfg, (3, 5, 5))
    assert prog.io.resident == (sets == 0)
    pool = [low for low in prog.layers if low.name == "avgpool"]
    assert len(pool) == 3 and {low.desc["in_cb"] for low in pool} == {1}
    assert pool[0].beats == 3 * 5 * 5 and pool[0].macs == 10 * 5 * 5
    assert [low.desc["in_base"] - pool[0].desc["in_base"] for low in pool] == [0, 25, 50]
    assert len(pool[0].weights["pot4"]) == 5 * 5                 # one kernel, not one per block
    pb = [low.desc["p_base"] for low in pool]                   # each block's parameter words
    if sets:                  # blocks 0, 1 in one half of the parameter buffer, block 2 in the other
        assert pb[1] == pb[0] + 1 and pb[2] // (acc_depth // 2) != pb[0] // (acc_depth // 2)
    else:
        assert pb == [pb[0], pb[0] + 1, pb[0] + 2]
    dev = _AmaranthDevice(cfg)
    dev.load(prog)
    assert torch.equal(dev.run(x[:1]), golden(qm, x[:1]))


class _MiniResNet(nn.Module):
    """3×3 conv, max-pool, a residual block, a strided one with a 1×1 downsample, global pool,
    fc: every kind of layer the pixel lanes touch, on widths (9, 5, 3) no lane count divides."""

    def __init__(self, w=8):
        super().__init__()
        from rmsmp.host.models.resnet import BasicBlock
        self.conv1 = nn.Conv2d(3, w, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = BasicBlock(w, w)
        down = nn.Sequential(nn.Conv2d(w, 2 * w, 1, 2, bias=False), nn.BatchNorm2d(2 * w))
        self.layer2 = BasicBlock(w, 2 * w, 2, down)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * w, 5)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(self.avgpool(self.layer2(self.layer1(x))), 1))


def _dma_ops(prog):
    """The DMA descriptors of a program's LOADs and STOREs."""
    from rmsmp.rtl.isa import INSTR_BITS, Instruction, Opcode
    words, out = INSTR_BITS // prog.bus_width, []
    for i in range(0, len(prog.image), words):
        ins = Instruction.as_shape().from_bits(sum(w << (prog.bus_width * j)
                                                   for j, w in enumerate(prog.image[i:i + words])))
        if ins.op == Opcode.END:
            return out
        if ins.op in (Opcode.LOAD, Opcode.STORE):
            out.append(ins.arg.dma)
    raise AssertionError("no END")


# whole networks in Amaranth's simulator take 5–20 s each: one of a kind stays in the fast
# loop (make test-fast), the other variants are `slow` (make test runs them all)
SLOW = pytest.mark.slow


@pytest.mark.parametrize("pixels, columns, act_depth, weight_depth, pipelined", [
    (2, 4, 2048, 512, True), pytest.param(3, 4, 2048, 512, True, marks=SLOW),
    pytest.param(3, 4, 256, 64, True, marks=SLOW),
    pytest.param(1, 8, 2048, 512, True, marks=SLOW), pytest.param(2, 16, 1024, 512, True, marks=SLOW),
    pytest.param(1, 4, 2048, 512, False, marks=SLOW)],
    ids=["P2", "P3", "P3-banded-streamed", "P1-C8-nibbles", "P2-C16-nibbles", "P1-compact"])
def test_pixel_lanes_run_a_network_bit_exact(pixels, columns, act_depth, weight_depth, pipelined):
    """Lane p computes output columns [p·G, (p+1)·G) of every row from its own bank, with the
    row's weights shared: the whole network bit-exact against golden, with partial last
    chunks, halos on both sides, stride 2, im2col input, vector ops in every lane — with
    buffers small enough to force row bands and streamed weight sets, and (C = 8, 16) the
    4-bit tensors moved as nibbles."""
    torch.manual_seed(0)
    model = _MiniResNet().eval()
    x = torch.randn(8, 3, 9, 9)
    qm = quantize(model, x, ratio=RATIO, assign="variance")
    cfg = AcceleratorConfig(lane_groups=CFG.lane_groups, columns=columns, act_depth=act_depth,
                            weight_depth=weight_depth, acc_depth=64 if weight_depth > 64 else 8, pixels=pixels,
                            pipelined=pipelined)
    prog = compile_model(qm, cfg, (3, 9, 9))
    nibbles = [d for d in _dma_ops(prog) if d.nib]
    assert bool(nibbles) == (columns >= 8)
    if pixels == 1:
        assert torch.equal(_AmaranthDevice(cfg).run_loaded(prog, x[:1]), golden(qm, x[:1]))
        return
    convs = [low for low in prog.layers if low.kind == "conv" and low.name.startswith("layer")]
    assert all(low.lanes.out_cols < low.lanes.out_w for low in convs)      # spread over the lanes
    pool = next(low for low in prog.layers if low.name == "maxpool")
    assert pool.lanes.out_cols < pool.lanes.out_w                          # so is the max-pool
    adds = [low for low in prog.layers if low.name.startswith("add")]
    assert adds and all(low.desc["out_w"] < 8 * 5 * 5 for low in adds)     # and the adds
    if weight_depth < 512:
        assert not prog.io.resident
        assert len({low.desc["out_h"] for low in prog.layers if low.name == "layer1.conv1"}) >= 1
    dev = _AmaranthDevice(cfg)
    dev.load(prog)
    assert torch.equal(dev.run(x[:1]), golden(qm, x[:1]))


@SLOW
@pytest.mark.parametrize("pixels", [1, 2])
def test_a_residual_add_runs_on_its_convs_output_bands(pixels):
    """A conv whose output only its residual add reads (a block's conv2, a downsample) runs the
    add band by band while its output is on chip: the other operand's rows load beside it, the
    sum is stored, the conv's output never goes to memory nor comes back — bit-exact."""
    torch.manual_seed(0)
    model = _MiniResNet().eval()
    x = torch.randn(4, 3, 9, 9)
    qm = quantize(model, x, ratio=RATIO, assign="variance")
    cfg = AcceleratorConfig(lane_groups=CFG.lane_groups, columns=4, act_depth=2048, weight_depth=512,
                            acc_depth=64, pixels=pixels)
    prog = compile_model(qm, cfg, (3, 9, 9))
    assert prog.io.fused == {"add": "layer1.conv2", "add_1": "layer2.downsample.0"}
    assert not set(prog.io.fused.values()) & set(prog.io.tensors)       # never in memory
    moved = dict(zip(prog.io.trace, prog.io.moved_words))
    assert moved["add"] == moved["add_1"] == 0                           # no pass of its own
    adds = [low for low in prog.layers if low.name.startswith("add")]
    assert len(adds) >= 2 and all(low.macs == 0 for low in adds)
    dev = _AmaranthDevice(cfg)
    dev.load(prog)
    assert torch.equal(dev.run(x[:2]), golden(qm, x[:2]))
    rows = {r["layer"]: r for r in dev.stats["layers"]}
    assert rows["add"]["run_by"] == "layer1.conv2" and rows["add"]["cycles"] < 50 < rows["layer1.conv2"]["cycles"]
    assert "| add (run by layer1.conv2) |" in dev.layer_table()


def test_global_pool_runs_in_channel_blocks_when_the_input_does_not_fit():
    """A global average pool whose input exceeds the activation buffer pools a few whole
    channel blocks at a time (32 channels of 6×6 at C = 4: eight 36-entry blocks, three per
    128-entry buffer), bit-exact."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 32, 3, 1, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(32, 3)).eval()
    x = torch.randn(8, 3, 6, 6)
    qm = quantize(model, x, ratio=RATIO, assign="variance")
    cfg = AcceleratorConfig(lane_groups=CFG.lane_groups, columns=4, act_depth=128, weight_depth=512, acc_depth=64)
    prog = compile_model(qm, cfg, (3, 6, 6))
    pools = [low for low in prog.layers if low.kind == "vec"]
    assert [low.desc["cb"] for low in pools] == [3, 3, 2]
    dev = _AmaranthDevice(cfg)
    dev.load(prog)
    assert torch.equal(dev.run(x[:1]), golden(qm, x[:1]))


@SLOW
def test_signed_4_bit_tensors_move_as_sign_extended_nibbles():
    """A conv without ReLU before another conv: its output is a signed 4-bit tensor, stored in
    memory as nibbles and sign-extended when loaded (C = 8: an entry's nibbles fill a word)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)).eval()
    x = torch.randn(8, 3, 6, 6)
    qm = quantize(model, x, ratio=RATIO, assign="variance")
    assert qm["0"].out.bits == 4 and qm["0"].out.signed
    cfg = AcceleratorConfig(lane_groups=CFG.lane_groups, columns=8, act_depth=2048, weight_depth=512, acc_depth=64)
    prog = compile_model(qm, cfg, (3, 6, 6))
    assert any(d.nib and d.nib_signed for d in _dma_ops(prog))
    assert torch.equal(_AmaranthDevice(cfg).run_loaded(prog, x[:4]), golden(qm, x[:4]))


@SLOW
@pytest.mark.parametrize("pixels", [1, 2])
def test_set_major_runs_every_weight_set_once_over_on_chip_bands(monkeypatch, pixels):
    """A layer streamed in several weight sets and run in several bands may run set-major
    (ResNet-18's layer4 on the ULX3S core does): each set once, over every band, the bands'
    outputs kept on chip and the input bands reloaded per set.  Forced here (the cost model
    picks it only for weight-heavy layers), bit-exact against golden."""
    import rmsmp.generator.schedule as schedule
    real = schedule.set_major_bands
    monkeypatch.setattr(schedule, "set_major_bands", lambda *a, **k: (r := real(*a, **k)) and (r[0], 0.0))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 3)).eval()
    x = torch.randn(8, 3, 7, 7)
    qm = quantize(model, x, ratio=RATIO, assign="variance")
    cfg = AcceleratorConfig(lane_groups=CFG.lane_groups, columns=4, act_depth=512, weight_depth=160, acc_depth=8,
                            pixels=pixels)
    prog = compile_model(qm, cfg, (3, 7, 7))
    assert prog.io.set_major and not prog.io.resident
    for name in prog.io.set_major:
        convs = [low for low in prog.layers if low.name == name]
        assert len(convs) > 2                                                        # sets × bands
    assert torch.equal(_AmaranthDevice(cfg).run_loaded(prog, x[:1]), golden(qm, x[:1]))


def _streamed_two_convs(pixels, classes):
    """Two 3×3 convs (32 channels, 7×7), a global pool and a classifier, quantized pot4 3 :
    fix8 1, on a 2 + 2-row core whose buffers are small enough that every layer streams its
    weights in several sets: ``(qm, x, cfg)``."""
    from rmsmp.generator.config import LaneGroup
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, classes)).eval()
    x = torch.randn(8, 3, 7, 7)
    qm = quantize(model, x, ratio={"pot4": 0.75, "fix8": 0.25}, assign="variance")
    cfg = AcceleratorConfig(lane_groups=(LaneGroup("pot4", 2), LaneGroup("fix8", 2)), columns=4, act_depth=512,
                            weight_depth=160, acc_depth=8, pixels=pixels)
    return qm, x, cfg


@pytest.mark.parametrize("pixels, parts", [(1, 4), pytest.param(2, 2, marks=SLOW)])
def test_output_parts_load_the_input_once_and_each_set_once(pixels, parts):
    """A streamed layer whose input fits the buffer whole but not beside its whole output
    (ResNet-18's layer4 on the ULX3S core) runs in output parts: its channels dealt part by
    part (each part's output groups compute only its channel blocks), the input loaded once,
    every set once, each part stored after its last set.  Bit-exact against golden."""
    qm, x, cfg = _streamed_two_convs(pixels, classes=3)
    prog = compile_model(qm, cfg, (3, 7, 7))
    assert "2" in prog.io.in_parts and "2" not in prog.io.set_major and not prog.io.resident
    ops = [low for low in prog.layers if low.name == "2"]
    bounds = ops[0].parts
    assert len(bounds) == parts
    for og_lo, og_hi, cb_lo, cb_hi in bounds:                 # each part's groups: its own channels
        assert {ch for ch, slot in enumerate(ops[0].perm) if og_lo <= slot // cfg.rows < og_hi} \
            == set(range(cb_lo * cfg.columns, cb_hi * cfg.columns))
    assert sum(low.desc["out_groups"] for low in ops) == bounds[-1][1]   # every group once: no band reloads
    assert torch.equal(_AmaranthDevice(cfg).run_loaded(prog, x[:1]), golden(qm, x[:1]))


@pytest.mark.parametrize("pixels", [1, pytest.param(2, marks=SLOW)])
def test_a_batch_loads_each_weight_set_once(monkeypatch, pixels):
    """A batch of streamed weights runs layer by layer: a conv dealt in output parts of one
    set each runs part by part over every image's bands, the classifier holds every image
    on chip while its sets go by — so each weight blob is loaded once for the batch.  The
    parts are forced here (the cost model picks them for weight-heavy layers, ResNet-18's
    layer3 and layer4); bit-exact against golden for every image."""
    import rmsmp.generator.compiler as compiler
    monkeypatch.setattr(compiler, "batch_parts_cost", lambda *a, **k: 0.0)
    qm, x, cfg = _streamed_two_convs(pixels, classes=10)
    B = 3
    prog = compile_model(qm, cfg, (3, 7, 7), batch=B)
    io = prog.io
    assert io.layer_major and not io.resident
    assert "2" in io.batch_parts and "6" in io.images_on_chip
    ops = [low for low in prog.layers if low.name == "2"]
    # every group's every output row once an image (in one band or several)
    assert sum(low.desc["out_groups"] * low.desc["out_h"] for low in ops) == B * ops[0].parts[-1][1] * 7
    weight_loads = [(d.buf, d.ext_addr) for d in _dma_ops(prog) if d.buf >= Buffer.PARAM]
    assert len(weight_loads) == len(set(weight_loads))                              # each blob once a batch
    assert torch.equal(_AmaranthDevice(cfg).run_loaded(prog, x[:B]), golden(qm, x[:B]))


@SLOW
@pytest.mark.parametrize("pixels", [1, 2])
def test_a_batch_part_runs_its_residual_add_on_its_output_bands(monkeypatch, pixels):
    """A batch run part by part (ResNet-18's layer3/layer4 on the ULX3S at batch 8) runs the
    residual add of a conv whose output only the add reads on each band of the part while it
    is on chip: the other operand's rows of the part's channel blocks load beside the output,
    the sum is stored — the conv's output never goes to memory, the add has no pass of its
    own.  Parts forced, small buffers so every conv streams; bit-exact for every image."""
    import rmsmp.generator.compiler as compiler
    from rmsmp.generator.config import LaneGroup
    monkeypatch.setattr(compiler, "batch_parts_cost", lambda *a, **k: 0.0)
    torch.manual_seed(0)
    model = _MiniResNet(w=16).eval()
    x = torch.randn(8, 3, 9, 9)
    qm = quantize(model, x, ratio={"pot4": 0.75, "fix8": 0.25}, assign="variance", progress=False)
    cfg = AcceleratorConfig(lane_groups=(LaneGroup("pot4", 2), LaneGroup("fix8", 2)), columns=4, act_depth=256,
                            weight_depth=160, acc_depth=8, pixels=pixels)
    B = 3
    prog = compile_model(qm, cfg, (3, 9, 9), batch=B)
    io = prog.io
    # (the downsample's add, where its fused bands need the whole buffer, is the cost model's call)
    assert io.fused.get("add") == "layer1.conv2" and set(io.fused) <= {"add", "add_1"}
    assert set(io.fused.values()) <= set(io.batch_parts)
    assert not set(io.fused.values()) & set(io.tensors)                 # never in memory
    moved = dict(zip(io.trace, io.moved_words))
    assert all(moved[a] == 0 for a in io.fused)
    assert torch.equal(_AmaranthDevice(cfg).run_loaded(prog, x[:B]), golden(qm, x[:B]))


@pytest.mark.parametrize("pixels", [1, pytest.param(2, marks=SLOW)])
def test_narrow_pot_lanes_take_4_bit_activations(pixels):
    """Power-of-two lanes built for 4-bit activations (pot_act_bits = 4): every layer whose
    input fits runs its pot rows on them; the first conv (8-bit signed input, quantized here
    with the ratio rather than all-fix8) puts its pot rows on the fix8 lanes. Bit-exact."""
    torch.manual_seed(0)
    model = _MiniResNet().eval()
    x = torch.randn(8, 3, 9, 9)
    qm = quantize(model, x, ratio=RATIO, assign="variance", edge_scheme=None)
    assert "pot4" in qm["conv1"].schemes and qm.input.out.bits == 8
    cfg = AcceleratorConfig(lane_groups=CFG.lane_groups, columns=4, act_depth=2048, weight_depth=512, acc_depth=64,
                            pixels=pixels, pot_act_bits=4)
    prog = compile_model(qm, cfg, (3, 9, 9))
    pot_rows = range(CFG.group_of("pot4").rows)                 # the pot lane group's array rows
    first = next(low for low in prog.layers if low.name == "conv1")
    assert all(first.perm[ch] % cfg.rows not in pot_rows for ch in range(len(first.perm)))
    block = next(low for low in prog.layers if low.name == "layer1.conv1")
    assert any(block.perm[ch] % cfg.rows in pot_rows for ch in range(len(block.perm)))
    assert torch.equal(_AmaranthDevice(cfg).run_loaded(prog, x[:1]), golden(qm, x[:1]))


def test_lut_built_fix_lanes_take_4_bit_activations():
    """A fixed-point core with fix4 lanes built from LUTs (``lut_schemes``, 4-bit
    activations) beside fix8 DSP lanes: every layer whose input fits runs fix4 rows on the
    LUT lanes; the first conv (8-bit input, fix4 weights here) keeps them off. Bit-exact."""
    torch.manual_seed(0)
    model = _MiniResNet().eval()
    x = torch.randn(8, 3, 9, 9)
    qm = quantize(model, x, ratio={"fix4": 1.0}, assign="variance", edge_scheme="fix4")
    assert set(qm["conv1"].schemes) == {"fix4"} and qm.input.out.bits == 8
    cfg = AcceleratorConfig(lane_groups=(("fix8", 2), ("fix4", 3)), columns=4, act_depth=2048, weight_depth=512,
                            acc_depth=64, pot_act_bits=4, lut_schemes=("fix4",))
    prog = compile_model(qm, cfg, (3, 9, 9))
    lut_rows = range(2, 5)                                    # the LUT group's array rows
    first = next(low for low in prog.layers if low.name == "conv1")
    assert all(first.perm[ch] % cfg.rows not in lut_rows for ch in range(len(first.perm)))
    block = next(low for low in prog.layers if low.name == "layer1.conv1")
    assert any(block.perm[ch] % cfg.rows in lut_rows for ch in range(len(block.perm)))
    assert torch.equal(_AmaranthDevice(cfg).run_loaded(prog, x[:1]), golden(qm, x[:1]))


def _patched(prog, index, **fields):
    """A copy of ``prog`` with instruction ``index`` re-encoded with ``fields`` changed
    (``op`` an opcode value, others fields of its descriptor)."""
    from copy import deepcopy

    from rmsmp.generator.program import split_words
    bus = prog.bus_width
    bad = deepcopy(prog)
    at = index * INSTR_WORDS
    bits = sum(w << (bus * i) for i, w in enumerate(bad.image[at:at + INSTR_WORDS]))
    ins = Instruction.as_shape().from_bits(bits)
    op = ins.op
    arg = {Opcode.CONV: "conv", Opcode.VEC: "vec"}.get(op, "dma")
    layout = Instruction.as_shape().members["arg"].members[arg].as_shape()
    desc = {n: getattr(getattr(ins.arg, arg), n) for n, _ in layout}
    code = fields.pop("op", None)
    desc.update(fields)
    new = Instruction.const({"op": op, "arg": {arg: desc}}).as_bits()
    if code is not None:
        new = new & ~0xF | code
    bad.image[at:at + INSTR_WORDS] = split_words(new, INSTR_BITS, bus)
    return bad


@pytest.mark.parametrize("cfg", [CFG], ids=["pipelined"])        # compact cores leave this to the host
def test_core_stops_on_an_instruction_it_cannot_run(cfg):
    """An illegal opcode, a load into a buffer the config lacks, a layer whose input lies
    outside the activation buffer: the core stops there
    with ``error`` and ``pc`` on it, and what follows never runs (the output stays as loaded)."""
    qm, layer, x, y = one_layer_model("conv", cin=6, cout=8, k=3, s=2, p=1, hw=7, ratio=RATIO)
    prog = layer_program(qm, layer, cfg, x, in_hw=(7, 7))
    steps = check_program(prog, cfg)
    first_load = next(s.index for s in steps if s.op == "LOAD")
    conv = next(s.index for s in steps if s.op == "CONV")
    cases = {"illegal opcode": (conv, {"op": 11}),
             "buffer code": (first_load, {"buf": Buffer.WEIGHT0 + len(cfg.lane_groups)}),
             "conv input outside": (conv, {"in_base": cfg.act_depth})}
    y_words = prog.outputs["y"]
    for what, (index, fields) in cases.items():
        bad = _patched(prog, index, **fields)
        res = run_core(cfg, bad)
        assert res["error"] == 1, what
        assert res["pc"] == (index + 1) * INSTR_WORDS, what             # just past it
        addr, n, _ = y_words
        assert res["image"][addr:addr + n] == bad.image[addr:addr + n], what    # nothing stored
