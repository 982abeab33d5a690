"""The network compiler's pieces that need no simulator: layouts, bands, the im2col input,
the programs it emits (the simulator checks the results in tests/rtl)."""
import math

import pytest
import torch

from rmsmp.generator.compiler import compile_model
from rmsmp.generator.config import AcceleratorConfig
from rmsmp.generator.layout import im2col_input, pack_activation_words, pack_activations, unpack_activations
from rmsmp.generator.lower import CompileError
from rmsmp.generator.program import RowMap, split_words
from rmsmp.generator.schedule import band_rows
from rmsmp.rtl.isa import ACT_BANKS, Buffer, Instruction, Opcode


def test_im2col_input_is_the_convolution():
    """A 1×1 conv over im2col columns with the reshaped kernel == the k×k conv."""
    torch.manual_seed(0)
    x = torch.randint(-128, 128, (3, 11, 13))
    w = torch.randint(-7, 8, (5, 3, 7, 7))
    cols = im2col_input(x, 7, 2, 3)
    assert cols.shape == (147, 6, 7)
    ref = torch.nn.functional.conv2d(x[None].double(), w.double(), stride=2, padding=3)[0]
    got = torch.einsum("oc,chw->ohw", w.reshape(5, -1).double(), cols.double())
    assert torch.equal(got, ref)


def test_instruction_encoding_matches_amaranths_constants():
    """``isa.encode`` (the compiler's fast path) gives the bits of ``Instruction.const`` for
    every descriptor kind, with random in-range fields — negative signed ones, enums, the
    union's members — and truncates an out-of-range integer as Amaranth does."""
    from amaranth import Shape
    from amaranth.lib import data

    from rmsmp.rtl.isa import ConvDesc, DmaDesc, VecDesc, VecKind, encode
    g = torch.Generator().manual_seed(0)

    def rand(struct):
        out = {}
        for name, f in data.Layout.cast(struct):
            if name == "kind":
                out[name] = list(VecKind)[int(torch.randint(0, 3, (), generator=g))]
                continue
            s = Shape.cast(f.shape)
            lo, hi = (-(1 << (s.width - 1)), 1 << (s.width - 1)) if s.signed else (0, 1 << s.width)
            out[name] = int(torch.randint(lo, hi, (), generator=g, dtype=torch.int64))
        return out

    for _ in range(50):
        for op, key, struct in ((Opcode.CONV, "conv", ConvDesc), (Opcode.LOAD, "dma", DmaDesc),
                                (Opcode.VEC, "vec", VecDesc)):
            value = {"op": op, "arg": {key: rand(struct)}}
            assert encode(Instruction, value) == Instruction.const(value).as_bits()
    assert encode(Instruction, {"op": Opcode.END}) == Instruction.const({"op": Opcode.END}).as_bits()
    assert encode(DmaDesc, {"count": 1 << 21, "lo": -3}) == DmaDesc.const({"count": 1 << 21, "lo": -3}).as_bits()


@pytest.mark.parametrize("C,bus", [(8, 32), (4, 32), (8, 16), (2, 8)])
def test_vectorised_packing_matches_the_entry_layout(C, bus):
    torch.manual_seed(1)
    x = torch.randint(-128, 128, (11, 3, 5))
    ref = [w for e in pack_activations(x, C) for w in split_words(e, 8 * C, bus)]
    assert pack_activation_words(x, C, bus) == ref
    back = unpack_activations(pack_activations(x, C), 11, 3, 5, C, signed=True)
    assert back == x.tolist()


@pytest.mark.parametrize("k,s,p,H", [(3, 1, 1, 10), (3, 2, 1, 11), (1, 2, 0, 8), (7, 2, 3, 20)])
def test_bands_cover_the_input_rows_each_output_row_reads(k, s, p, H):
    OH = (H + 2 * p - k) // s + 1
    for t in range(1, OH + 1):
        for oy0 in range(0, OH, t):
            oy1 = min(OH, oy0 + t)
            b0, b1, pad_top = band_rows(oy0, oy1, k, s, p, H)
            assert 0 <= pad_top <= p and 0 <= b0 < b1 <= H
            for oy in range(oy0, oy1):
                for ky in range(k):
                    iy = oy * s + ky - p                     # the global row this tap reads
                    local = (oy - oy0) * s + ky - pad_top    # what the engine computes in the band
                    if 0 <= iy < H:
                        assert local == iy - b0 and 0 <= local < b1 - b0
                    else:
                        assert local < 0 or local >= b1 - b0  # a padding tap stays padding


def test_bands_of_even_heights_keep_a_short_band_from_waiting():
    """Seven output rows in bands of at most three (ResNet-18's layer4 parts on the ULX3S at
    batch 8): as 3, 3, 1 the one-row band computes for 2,304 cycles while the DMA moves the
    next image's first band and its share of the next part's weights — more than that;
    as 2, 3, 2 every band's compute covers the transfers beside it, and the end bands load
    the padding's row fewer.  The cost model sees it and picks the even bands."""
    from rmsmp.generator.schedule import BandShape, band_cost, choose_bands, even_bands
    assert even_bands(7, 3) == [(0, 2), (2, 5), (5, 7)]
    assert even_bands(14, 5) == [(0, 3), (3, 6), (6, 9), (9, 12), (12, 14)]
    assert even_bands(4, 4) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    for OH, n in [(9, 2), (56, 5), (13, 4)]:
        bands = even_bands(OH, n)
        heights = [b1 - b0 for b0, b1 in bands]
        assert bands[0][0] == 0 and bands[-1][1] == OH and max(heights) - min(heights) <= 1
        assert all(a[1] == b[0] for a, b in zip(bands, bands[1:]))
    shape = BandShape(64, 7, 7, 4, 7, 3, 1, in_pitch=6, out_pitch=4)
    costs = dict(shape=shape, out_h=7, compute=16128, weight_words=0, n_sets=1, n_dma=68, spread=24384)
    uniform, even = [(0, 3), (3, 6), (6, 7)], even_bands(7, 3)
    assert band_cost(even * 8, True, **costs) < band_cost(uniform * 8, True, **costs)
    bands, pipelined, _ = choose_bands("layer4", 7, shape, act_depth=4096, repeat=8,
                                       **{k: v for k, v in costs.items() if k not in ("shape", "out_h")})
    assert pipelined and bands == even


def test_a_band_at_the_top_or_bottom_fits_the_rows_it_reads():
    """A band's padding rows are not loaded, so an end band reads a row fewer than one in the
    middle: ResNet-18's layer3 convs on the ULX3S (14 rows, 32 blocks in and out, pitch 9)
    fit the whole buffer (4,096 entries) in two bands of seven — each reads 8 rows, 3,872
    entries with its output — where counting 9 rows a band made it three (each band reloads
    the layer's weight sets)."""
    from rmsmp.generator.schedule import BandShape, choose_bands
    shape = BandShape(32, 14, 14, 32, 14, 3, 1, in_pitch=9, out_pitch=7, pad=1)
    assert shape.band_in_h(0, 7) == shape.band_in_h(7, 14) == 8 and shape.band_in_h(3, 10) == 9
    assert shape.band_entries(0, 7) == 32 * 9 * 8 + 32 * 7 * 7 == 3872
    costs = dict(act_depth=4096, compute=225792, weight_words=98304, n_sets=3, n_dma=64)
    bands, pipelined, _ = choose_bands("layer3", 14, shape, **costs)
    assert (bands, pipelined) == ([(0, 7), (7, 14)], False)
    unknown = BandShape(32, 14, 14, 32, 14, 3, 1, in_pitch=9, out_pitch=7)     # (padding not known)
    assert len(choose_bands("layer3", 14, unknown, **costs)[0]) == 3


def _decode(prog):
    words = 256 // prog.bus_width
    out = []
    for i in range(0, len(prog.image), words):
        bits = sum(w << (prog.bus_width * j) for j, w in enumerate(prog.image[i:i + words]))
        ins = Instruction.as_shape().from_bits(bits)
        out.append(ins)
        if ins.op == Opcode.END:
            return out
    raise AssertionError("no END")


@pytest.mark.slow      # quantizes ResNet-18 at 224×224 (shared)
def test_resnet18_program_respects_the_buffers(resnet18_224):
    """224×224 ResNet-18: every activation transfer and op stays inside the buffer, names the
    banks it touches, and weight sets never exceed their half of the buffers."""
    _, _, qm = resnet18_224
    cfg = AcceleratorConfig()
    prog = compile_model(qm, cfg, (3, 224, 224))
    kinds = _check_buffers(prog, cfg)
    assert kinds[Opcode.CONV] > 21 and kinds[Opcode.VEC] > 9 and kinds[Opcode.STAMP] == 32
    assert prog.io.im2col == (7, 2, 3, 3)
    # the max-pool runs over groups of channel blocks, in bands tall enough that the rows two
    # bands' windows share are few: it moves at most 10 % more than its input and output once
    # (over all 8 blocks a band held one output row, and loaded each input row 1.5 times)
    moved = dict(zip(prog.io.trace, prog.io.moved_words))["maxpool"]
    once = (112 * 112 + 56 * 56) * 64 // 2 // 4                # nibbles, in 32-bit words
    assert once <= moved <= 1.1 * once


@pytest.mark.slow      # three ResNet-18 batch programs, ~10⁵ instructions decoded
@pytest.mark.filterwarnings("ignore::rmsmp.generator.compiler.RatioMismatchWarning")   # a 10:5:1 model
def test_a_resnet18_batch_loads_its_sets_once_within_the_memory_given(resnet18_224):
    """A batch of 4 on the ULX3S core runs layer by layer: the weight-heavy convs (layer3,
    layer4) in output parts of one set each, every transfer and op inside the buffers, each
    weight blob loaded once.  Given less memory than that program takes, the compiler gives
    up parts (most words first) until it fits; given far too little, it refuses naming both."""
    _, _, qm = resnet18_224
    cfg = AcceleratorConfig.for_board("ulx3s-85f")
    prog = compile_model(qm, cfg, (3, 224, 224), batch=4)
    io = prog.io
    assert io.layer_major and io.batch_parts and io.images_on_chip == ["fc"]
    _check_buffers(prog, cfg)
    loads = [(i.arg.dma.buf, i.arg.dma.ext_addr) for i in _decode(prog) if i.op == Opcode.LOAD and i.arg.dma.buf]
    assert len(loads) == len(set(loads))
    limit = len(prog.image) - 1
    small = compile_model(qm, cfg, (3, 224, 224), batch=4, memory_words=limit)
    assert len(small.image) <= limit and set(small.io.batch_parts) < set(io.batch_parts)
    with pytest.raises(CompileError, match=r"the program takes [\d,]+ memory words \(batch 4.*the memory holds 1,000"):
        compile_model(qm, cfg, (3, 224, 224), batch=4, memory_words=1000)


@pytest.mark.slow      # a ResNet-18 batch program, ~10⁴ instructions decoded
@pytest.mark.filterwarnings("ignore::rmsmp.generator.compiler.RatioMismatchWarning")   # a 10:5:1 model
def test_a_sets_load_is_spread_over_the_convs_of_the_set_before(resnet18_224):
    """A batch part runs one set over every image's bands; the next set loads in pieces, one
    after each of those convs, so no band's activation transfers (issued in order behind it)
    wait for a whole set: in layer4.1.conv1 on the ULX3S at batch 4 no stretch between two
    convs loads more than twice the weight entries of an even share (a whole set after a
    part's first conv, as before, is 12× that; the runs' bit-exactness says the pieces add
    up to the sets)."""
    _, _, qm = resnet18_224
    cfg = AcceleratorConfig.for_board("ulx3s-85f")
    prog = compile_model(qm, cfg, (3, 224, 224), batch=4)
    k = prog.io.trace.index("layer4.1.conv1")
    assert "layer4.1.conv1" in prog.io.batch_parts
    stamps, span = 0, []
    for ins in _decode(prog):
        if ins.op == Opcode.STAMP:
            stamps += 1
        elif stamps == k + 1:                       # (stamp 0 comes before the first layer)
            span.append(ins)
    between, runs, n_conv = 0, [], 0
    for ins in span:
        if ins.op == Opcode.CONV:
            runs.append(between)
            between, n_conv = 0, n_conv + 1
        elif ins.op == Opcode.LOAD and ins.arg.dma.buf >= Buffer.WEIGHT0:
            between += ins.arg.dma.count * (ins.arg.dma.reps + 1)
    total = sum(runs) + between
    assert n_conv > 100 and total > 0
    assert max(runs[1:] + [between]) <= 2 * total / n_conv


def test_interleave_spreads_each_scheme_and_keeps_its_channels_in_order():
    from rmsmp.generator.channel_order import interleave
    assert interleave(["a"] * 6 + ["b"] * 2) == [0, 1, 6, 2, 3, 4, 7, 5]
    assert interleave(["a", "b", "a", "b"]) == [0, 1, 2, 3]
    order = interleave(["pot4"] * 40 + ["fix8"] * 24)
    assert sorted(order) == list(range(64))
    assert all(abs(sum(c >= 40 for c in order[i:i + 16]) - 6) <= 1 for i in range(49))
    # two writers of one space: both spread at once (each writer's clusters at opposite ends)
    w1, w2 = ["p"] * 48 + ["f"] * 16, ["f"] * 16 + ["p"] * 48
    order = interleave(w1, w2)
    assert sorted(order) == list(range(64))
    for w in (w1, w2):
        assert all(abs([w[c] for c in order[i:i + 16]].count("f") - 4) <= 1.5 for i in range(49))


def test_a_linear_over_a_flattened_map_reads_its_channels_whole_maps_at_a_time():
    """LeNet's conv2 → max-pool → flatten → fc: the channels are one space, and the
    classifier's columns (c, y, x) move a channel's whole map at a time; same integers."""
    from rmsmp.generator.channel_order import balance_channels, channel_spaces
    from rmsmp.host.models import LeNet
    from rmsmp.host.quant import quantize
    from rmsmp.sim import golden
    torch.manual_seed(0)
    x = torch.randn(8, 1, 28, 28)
    qm = quantize(LeNet().eval(), x, progress=False)
    (sp,) = [sp for sp in channel_spaces(qm) if "flatten" in sp.tensors]
    assert (sp.writers, sp.readers) == (("conv2",), ("fc",))
    bal, orders = balance_channels(qm)
    o = orders["flatten"]
    assert o != sorted(o)
    q = qm["fc"].qweight
    assert torch.equal(bal["fc"].qweight.reshape(q.shape[0], len(o), -1), q.reshape(q.shape[0], len(o), -1)[:, o])
    assert torch.equal(golden(bal, x), golden(qm, x))


@pytest.mark.slow      # quantizes ResNet-18 at 224×224 (shared)
@pytest.mark.filterwarnings("ignore::rmsmp.generator.compiler.RatioMismatchWarning")   # a 10:5:1 model
def test_channels_no_one_outside_sees_are_interleaved_so_output_parts_fill_their_groups(resnet18_224):
    """ResNet-18's channel spaces are each block's conv1 output (read by its conv2) and the
    four residual stages (their conv2s, downsample, adds and pools; read by the next convs
    and the classifier).  Each gets its writers' schemes interleaved and its readers' input
    channels to match: the network computes the same integers, and on the ULX3S core the
    output parts a batch runs the layer3 and layer4 convs in (runs of whole channel blocks,
    each as long as one weight set's groups place) take no more output groups than each
    layer whole — in the model's own order layer4's parts take more."""
    from rmsmp.generator.channel_order import balance_channels, channel_spaces
    from rmsmp.generator.compiler import infer_shapes, lower_layers
    from rmsmp.generator.lower import part_cuts
    from rmsmp.generator.weight_sets import set_groups
    from rmsmp.sim import golden
    _, x, qm = resnet18_224
    spaces = channel_spaces(qm)
    by_writers = {sp.writers: sp.readers for sp in spaces}
    assert len(spaces) == 12
    assert by_writers[("layer4.1.conv1",)] == ("layer4.1.conv2",)
    assert by_writers[("layer4.0.conv2", "layer4.0.downsample.0", "layer4.1.conv2")] == ("layer4.1.conv1", "fc")
    assert by_writers[("conv1", "layer1.0.conv2", "layer1.1.conv2")] == (
        "layer1.0.conv1", "layer1.1.conv1", "layer2.0.conv1", "layer2.0.downsample.0")
    bal, orders = balance_channels(qm)
    for sp in spaces:
        o = orders[sp.tensors[0]]
        assert all(orders[t] == o for t in sp.tensors)
        for w in sp.writers:
            assert bal[w].schemes == tuple(qm[w].schemes[c] for c in o)
            for s in set(qm[w].schemes):            # any 32 channels: the scheme's share, within one (1.5)
                share = 32 * qm[w].schemes.count(s) / len(o)
                assert all(abs(bal[w].schemes[i:i + 32].count(s) - share) <= (1.5 if len(sp.writers) > 1 else 0.99)
                           for i in range(len(o) - 31)), (w, s)
        for r in sp.readers:
            q = qm[r].qweight
            q = q[orders[r]] if r in orders else q      # (a reader may write a space of its own)
            cols = q.reshape(q.shape[0], len(o), -1)[:, o].reshape(q.shape)
            assert torch.equal(bal[r].qweight, cols)
    small = x[:1, :, :64, :64]
    assert torch.equal(golden(bal, small), golden(qm, small))
    cfg = AcceleratorConfig.for_board("ulx3s-85f")

    def groups(m, name):                            # (the layer whole, its output parts)
        shapes = infer_shapes(m, (3, 224, 224))
        whole = lower_layers(m, cfg, shapes, None, parts={name: 1})[name]
        cuts = part_cuts(m[name], cfg, m.in_q(m[name]), set_groups(cfg, whole))
        parts = lower_layers(m, cfg, shapes, None, parts={name: cuts})[name]
        return whole.desc["out_groups"], sum(hi - lo for lo, hi, _, _ in parts.parts)
    for name in [f"layer{i}.{j}.conv{k}" for i in (3, 4) for j in (0, 1) for k in (1, 2)]:
        whole, parts = groups(bal, name)
        assert parts == whole, name
    for name in ("layer4.1.conv1", "layer4.1.conv2"):
        whole, parts = groups(qm, name)
        assert parts > whole, name


@pytest.mark.slow      # quantizes ResNet-18 at 224×224 (shared)
@pytest.mark.filterwarnings("ignore::rmsmp.generator.compiler.RatioMismatchWarning")   # a 10:5:1 model
def test_bands_take_the_weight_sets_in_serpentine_order_and_reload_none_on_chip(resnet18_224):
    """On the ULX3S core layer3.1.conv1 (of a 10:5:1 model) runs in row bands (two: an end
    band does not load its padding row, so seven of the 14 rows fit) over four weight sets.
    Each band starts with the two sets the band before ended with, so only the first band
    loads all four and the next ones two each (6 loads for 8 band-set runs, not 8; with three
    bands 8 for 12); and no set is ever
    loaded while the buffers still hold it (its parameter blob — every set has one — is never
    loaded into a half that holds it, nor while the other half does)."""
    _, _, qm = resnet18_224
    cfg = AcceleratorConfig.for_board("ulx3s-85f")
    prog = compile_model(qm, cfg, (3, 224, 224))
    held = {}                                    # half of the parameter buffer -> ext_addr of its blob
    layers, cur = [], {"convs": 0, "loads": 0}
    for ins in _decode(prog):
        d = ins.arg.dma
        if ins.op == Opcode.STAMP:
            layers.append(cur)
            cur = {"convs": 0, "loads": 0}
        elif ins.op == Opcode.CONV:
            cur["convs"] += 1
        elif ins.op == Opcode.LOAD and d.buf == Buffer.PARAM:
            assert d.ext_addr not in held.values()
            held[bool(d.buf_addr)] = d.ext_addr
            cur["loads"] += 1
    trace = prog.io.trace
    l31 = layers[1 + trace.index("layer3.1.conv1")]          # (layers[0]: before the first layer)
    bands = l31["convs"] // 4
    assert bands >= 2 and (l31["convs"], l31["loads"]) == (4 * bands, 4 + 2 * (bands - 1))


def _check_buffers(prog, cfg) -> dict:
    """Every activation transfer and op of ``prog`` inside the buffer, naming the banks it
    touches; weight sets within their half.  Returns the count of each opcode."""
    half = cfg.act_depth // ACT_BANKS
    kinds = {}
    for ins in _decode(prog):
        op = ins.op
        kinds[op] = kinds.get(op, 0) + 1
        if op in (Opcode.LOAD, Opcode.STORE):
            d = ins.arg.dma
            if op == Opcode.STORE or d.buf == 0:
                # (every repeat's entries; spread over pixel lanes: the rows' span in a lane)
                rows = RowMap(d.row_w, d.pitch, d.step, d.lo, d.hi, d.lanes) if d.row_w else None
                mask = 0
                for r in range(d.reps + 1):
                    at = d.buf_addr + r * d.buf_step
                    lo, hi = rows.span(at, d.count, op == Opcode.STORE) if rows else (at, at + d.count - 1)
                    assert 0 <= lo and hi < cfg.act_depth
                    mask |= sum(1 << b for b in range(lo // half, hi // half + 1))
                assert d.banks == mask
            else:
                assert d.banks == 0
        elif op == Opcode.CONV:
            c = ins.arg.conv
            assert c.banks != 0 and c.in_h <= 224 and c.pad_top <= c.pad
            n_in = math.ceil(c.in_cb) * c.in_h * c.in_w
            if c.banks != (1 << ACT_BANKS) - 1:                 # a pipelined band: one bank
                b = c.banks.bit_length() - 1
                assert b * half <= c.in_base and c.in_base + n_in <= (b + 1) * half
                assert b * half <= c.out_base < (b + 1) * half
            assert c.w_base + c.out_groups <= cfg.weight_depth
    return kinds


@pytest.mark.slow      # quantizes ResNet-18 at 224×224 (shared)
def test_programs_for_too_small_buffers_are_refused(resnet18_224):
    _, _, qm = resnet18_224
    with pytest.raises(CompileError, match=r"layer 'layer4.0.conv2': one output group needs 576 weight entries"):
        compile_model(qm, AcceleratorConfig(weight_depth=512), (3, 32, 32))


def test_saturating_biases_keep_every_output():
    """Against the requantizer itself over every sum a channel can reach: a bias too wide for
    the accumulator whose channel outputs one value whatever its sum (at a bound, or inside
    the range, as a dead channel's does) is replaced by one that fits (with the channel's
    multiplier and shift, or M = 1 and a shift of its own) and gives the same output for
    every sum; other biases (and every narrow one) are left alone."""
    import random

    from rmsmp.generator.lower import saturating_biases
    rnd = random.Random(0)
    cfg = AcceleratorConfig(acc_bits=16)
    lim = 1 << 15

    def y(v, m, n, lo, hi):
        return min(hi, max(lo, (v * m + ((1 << n - 1) if n else 0)) >> n))
    fitted = kept = inside = 0
    for _ in range(600):
        lo, hi = rnd.choice([(0, 15), (-8, 7), (0, 255), (-128, 127), (0, 6)])
        m, n, w = rnd.choice([0, 1, 3, 255, 40_000]), rnd.randrange(0, 48), rnd.choice([0, 1, rnd.randrange(3000)])
        b = rnd.choice([1, -1]) * rnd.randrange(lim, 1 << 30)
        rq = {"bias": torch.tensor([b, 5]), "mult": torch.tensor([m, m]), "shift": torch.tensor([n, n])}
        out = saturating_biases(cfg, rq, [w, w], lo, hi)
        b2, m2, n2 = (int(out[k][0]) for k in ("bias", "mult", "shift"))
        assert [int(out[k][1]) for k in ("bias", "mult", "shift")] == [5, m, n]
        assert all(y(a + b, m, n, lo, hi) == y(a + b2, m2, n2, lo, hi) for a in range(-w, w + 1, max(1, w // 50)))
        assert all(y(a + b, m, n, lo, hi) == y(a + b2, m2, n2, lo, hi) for a in (-w, w))
        if abs(b2) < lim:
            fitted += 1
            inside += lo < y(b, m, n, lo, hi) < hi
        else:
            kept += 1
            assert (b2, m2, n2) == (b, m, n)    # the sum matters: left for the accumulator check to refuse
    assert fitted > 100 and kept > 10 and inside > 10
    narrow = {"bias": torch.tensor([3, -4]), "mult": torch.tensor([1, 1]), "shift": torch.tensor([0, 0])}
    assert saturating_biases(cfg, narrow, [10, 10], 0, 15) is narrow


def test_programs_whose_sums_overflow_the_accumulator_are_refused():
    """The array's accumulators wrap silently: a layer whose worst-case sum (Σ|q|·max|x| of
    its widest row) or bias does not fit ``acc_bits`` is refused, naming the width it needs."""
    from rmsmp.host import quantize
    from rmsmp.host.models.digits import DigitsNet
    torch.manual_seed(0)
    qm = quantize(DigitsNet(width=8).eval(), torch.rand(8, 1, 8, 8), assign="variance")
    need = 0
    for layer in qm.compute_layers():          # the bound, from the quantized model itself
        x = qm.in_q(layer)
        xmax = max(abs(x.value_lo), abs(x.value_hi))
        rows = layer.qweight.reshape(layer.qweight.shape[0], -1).abs().sum(1)
        bias = qm.requant[layer.name]["bias"]
        need = max(need, (int(rows.max()) * xmax).bit_length() + 1, max(abs(int(b)) for b in bias).bit_length() + 1)
    small = dict(lane_groups=(("pot4", 2), ("fix8", 2)), columns=2, weight_depth=256, act_depth=1024, acc_depth=64)
    with pytest.raises(CompileError, match=rf"accumulator (sums|biases) reach [\d,]+, beyond the config's "
                                           rf"signed {need - 1}-bit accumulator \(needs acc_bits ≥ {need}\)"):
        compile_model(qm, AcceleratorConfig(acc_bits=need - 1, **small), (1, 8, 8))
    compile_model(qm, AcceleratorConfig(acc_bits=need, **small), (1, 8, 8))


@pytest.mark.parametrize("depths", [(2048, 512), (160, 16)], ids=["resident", "streamed"])
def test_lane_groups_without_rows_in_a_layer_load_no_weights(digits_q, monkeypatch, depths):
    """An all-fix8 edge layer has no row on the pot4 lanes: no pot4 weight blob is made for
    it (its rows are disabled, so the buffer's stale contents are never written out), while
    the 10:5:1 layers load both groups. (Bit-exactness with stale pot weights present is what
    every whole-network test with fix8 edge layers checks.)"""
    from rmsmp.generator.program import ProgramBuilder
    names = []
    real = ProgramBuilder.blob

    def record(self, name, *a, **k):
        names.append(name)
        return real(self, name, *a, **k)

    monkeypatch.setattr(ProgramBuilder, "blob", record)
    cfg = AcceleratorConfig(weight_depth=depths[0], acc_depth=depths[1])
    prog = compile_model(digits_q, cfg, (1, 8, 8))
    assert prog.io.resident == (depths[0] == 2048)
    convs = [lay.name for lay in digits_q.layers if lay.is_compute]
    first, last, middle = convs[0], convs[-1], convs[1:-1]
    for edge in (first, last):
        assert set(digits_q[edge].schemes) == {"fix8"}
        assert any(n.startswith(f"{edge}.") and n.endswith(".w_fix8") for n in names)
        assert not any(n.startswith(f"{edge}.") and n.endswith(".w_pot4") for n in names), edge
    assert all(any(n.startswith(f"{m}.") and n.endswith(".w_pot4") for n in names) for m in middle)


def test_a_model_quantized_for_another_ratio_than_the_array_is_named():
    """A model whose row schemes do not match the array's rows runs bound by its scarcest
    scheme's rows: the compiler says so (and how to match them); the matching model compiles
    without a word."""
    import warnings

    from rmsmp.generator.compiler import RatioMismatchWarning
    from rmsmp.host import quantize
    from rmsmp.host.models.digits import DigitsNet
    torch.manual_seed(0)
    net, x = DigitsNet(width=32).eval(), torch.rand(8, 1, 8, 8)
    cfg = AcceleratorConfig(lane_groups=(("pot4", 13), ("fix8", 2)), columns=4)
    qm = quantize(net, x, progress=False)                        # 10:5:1: 12 of 32 channels fixed-point
    with pytest.warns(RatioMismatchWarning, match=r"use \d+% of the array's row passes .* ratio=cfg.ratio"):
        compile_model(qm, cfg, (1, 8, 8))
    matched = quantize(net, x, ratio=cfg.ratio, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RatioMismatchWarning)
        compile_model(matched, cfg, (1, 8, 8))


@pytest.mark.parametrize("rows", [1, 2, 3, 16, 29, 32])
def test_parameter_entries_hold_a_row_each_and_the_groups_mask(rows):
    """A group's parameter word becomes ``param_slots(rows)`` entries (a power of two above
    ``rows``): row r's fields at slot r, zeros, then the mask of its enabled rows — read back
    through the layout the engine decodes."""
    import random

    from amaranth.lib import data

    from rmsmp.rtl.isa import param_entries, param_entry_bits, param_layout, param_slots
    plo = param_layout(32, 16, 6)
    rng = random.Random(rows)
    rows_v = [{"bias": rng.randrange(-2**31, 2**31), "mult": rng.randrange(1 << 16), "shift": rng.randrange(64),
               "ch": rng.randrange(1 << 12), "en": rng.randrange(2)} for _ in range(rows)]
    word = data.ArrayLayout(plo, rows).const(rows_v).as_bits()
    ent = param_entries(word, 32, 16, 6, rows)
    S = param_slots(rows)
    assert len(ent) == S > rows and S & (S - 1) == 0 and S // 2 <= rows
    assert all(e < 1 << param_entry_bits(32, 16, 6, rows) for e in ent)
    for r, v in enumerate(rows_v):
        got = plo.from_bits(ent[r])
        assert {k: int(getattr(got, k)) for k in v} == v
    assert ent[rows:S - 1] == [0] * (S - 1 - rows)
    assert ent[-1] == sum(v["en"] << r for r, v in enumerate(rows_v))


def test_parameter_loads_take_parameter_blobs_at_group_addresses():
    """A LOAD of the parameter buffer names output groups; the instruction carries the
    group's first entry.  A plain blob for it (or a parameter blob for another buffer) is
    refused by name."""
    from rmsmp.generator.program import ProgramBuilder
    from rmsmp.rtl.isa import Buffer, param_slots
    cfg = AcceleratorConfig()
    pb = ProgramBuilder(cfg)
    p = pb.param_blob("p", [0, 0])
    pb.load(Buffer.PARAM, p, 3)
    assert pb._instrs[-1][3] == 3 * param_slots(cfg.rows)
    with pytest.raises(ValueError, match="param_blob"):
        pb.load(Buffer.PARAM, pb.blob("x", [0], 8))
    with pytest.raises(ValueError, match="param_blob"):
        pb.load(Buffer.ACT, p)
