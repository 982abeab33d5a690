"""cocotb benches for the MAC array and the post-processing units (exact vs golden).

Ports are the flattened Amaranth signature (``i__payload`` …); payloads are packed and
unpacked with the very ``lib.data`` layouts the RTL is built from.
"""
import random

import cocotb
import torch
from amaranth.lib import data
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from rmsmp.host.quant.formats import parse_weight_format
from rmsmp.host.quant.qmodel import TensorQ
from rmsmp.rtl.mac import MacArray
from rmsmp.rtl.ppu import Requantizer
from rmsmp.sim.benches import bench_params
from rmsmp.sim.golden import requantize


class StreamTB:
    """Drives an always-ready input stream with random bubbles and monitors the output."""

    def __init__(self, dut, component, bubble: float, seed: int):
        self.dut, self.comp = dut, component
        self.in_layout = component.i.payload.shape()
        self.out_layout = component.o.payload.shape()
        self.rnd = random.Random(seed)
        self.bubble = bubble
        self.outputs = []

    async def start(self):
        Clock(self.dut.clk, 10, unit="ns").start()
        self.dut.rst.value = 1
        self.dut.i__valid.value = 0
        await RisingEdge(self.dut.clk)
        self.dut.rst.value = 0
        cocotb.start_soon(self._monitor())

    async def _monitor(self):
        while True:
            await RisingEdge(self.dut.clk)
            await ReadOnly()
            if self.dut.o__valid.value:
                v = self.dut.o__payload.value
                if isinstance(self.out_layout, data.Layout):
                    self.outputs.append(self.out_layout.from_bits(v.to_unsigned()))
                else:
                    self.outputs.append(v.to_signed() if self.out_layout.signed else v.to_unsigned())

    async def send(self, payloads, drain: int):
        for p in payloads:
            while self.rnd.random() < self.bubble:
                self.dut.i__valid.value = 0
                await RisingEdge(self.dut.clk)
            self.dut.i__valid.value = 1
            self.dut.i__payload.value = self.in_layout.const(p).as_bits()
            await RisingEdge(self.dut.clk)
        self.dut.i__valid.value = 0
        for _ in range(drain):
            await RisingEdge(self.dut.clk)


def _array(p):
    return MacArray(lane_groups=[(parse_weight_format(f), n) for f, n in p["groups"]], columns=p["columns"],
                    act_width=p["act_width"], acc_bits=p["acc_bits"])


def _products(rnd, groups, C, K, aw, mode):
    """One dot product of K beats: (beats, expected per-row sums via torch int64)."""
    fmts = [(parse_weight_format(s), n) for s, n in groups]
    amin, amax = -(1 << (aw - 1)), (1 << (aw - 1)) - 1
    if mode in ("max", "min"):
        A = torch.full((K, C), amin, dtype=torch.int64)
    else:
        A = torch.tensor([[rnd.randint(amin, amax) for _ in range(C)] for _ in range(K)], dtype=torch.int64)
    Q, codes = [], {}
    for f, n in fmts:
        lv = f.level_list()
        ext = {"max": -f.qmax, "min": f.qmax}.get(mode)          # amin * ∓qmax: largest ± products
        rows = [[[(ext if ext is not None else rnd.choice(lv)) for _ in range(C)] for _ in range(K)] for _ in range(n)]
        codes[f.name] = [[[f.encode_int(q) for q in beat] for beat in r] for r in rows]
        Q += rows
    Qt = torch.tensor(Q, dtype=torch.int64)                         # [R, K, C]
    exp = (Qt * A[None]).sum(dim=(1, 2)).tolist()                   # golden: integer dot products
    beats = [{"a": [A[k].tolist()], "w": {name: [r[k] for r in rows] for name, rows in codes.items()},
              "first": int(k == 0), "last": int(k == K - 1)} for k in range(K)]
    return beats, exp


@cocotb.test()
async def mac_array_random_and_extreme_dot_products(dut):
    p = bench_params()
    comp = _array(p)
    tb = StreamTB(dut, comp, bubble=0.2, seed=p.get("seed", 1))
    await tb.start()
    rnd = random.Random(p.get("seed", 1))
    # extremes: as many largest-magnitude beats as the accumulator holds (docs §3)
    qmax = max(parse_weight_format(s).qmax for s, _ in p["groups"])
    k_ext = ((1 << (p["acc_bits"] - 1)) - 1) // (p["columns"] * (1 << (p["act_width"] - 1)) * qmax)
    beats, exps = [], []
    for k in range(p.get("products", 40)):
        mode = {9: "max", 19: "min"}.get(k % 20, "rand")
        K = k_ext if mode != "rand" else rnd.randint(1, 12)
        b, e = _products(rnd, p["groups"], p["columns"], K, p["act_width"], mode)
        beats += b
        exps.append(e)
    await tb.send(beats, drain=comp.latency + 2)
    got = [list(o[0]) for o in tb.outputs]                          # pixel lane 0
    assert len(got) == len(exps), (len(got), len(exps))
    for k, (g, e) in enumerate(zip(got, exps)):
        assert g == e, f"dot product {k}: rtl {g} != golden {e}"
    dut._log.info("%d dot products over %d beats exact; max |sum| %d", len(exps), len(beats),
                  max(abs(x) for e in exps for x in e))


@cocotb.test()
async def requantizer_matches_golden(dut):
    p = bench_params()
    comp = Requantizer(acc_bits=p["acc_bits"], mult_bits=p["mult_bits"], shift_bits=p["shift_bits"],
                       out_bits=p["out_bits"])
    tb = StreamTB(dut, comp, bubble=0.2, seed=p.get("seed", 2))
    await tb.start()
    rnd = random.Random(p.get("seed", 2))
    fmts = [TensorQ(4, False, 0), TensorQ(8, False, 0), TensorQ(8, True, 0), TensorQ(16, True, 0)]
    lim = 1 << (p["acc_bits"] - 2)
    cases = [(rnd.randrange(-lim, lim), rnd.randrange(-lim, lim),
              rnd.choice([1, rnd.randrange(1, 1 << p["mult_bits"])]),
              rnd.randrange(0, 1 << p["shift_bits"]), rnd.choice(fmts), rnd.random() < 0.5) for _ in range(2000)]
    cases += [(v, 0, 1, 1, TensorQ(8, True, 0), False) for v in range(-9, 10)]          # ties both signs
    cases += [(lim - 1, lim, (1 << p["mult_bits"]) - 1, 0, TensorQ(16, True, 0), False),  # saturation
              (-lim, -lim, (1 << p["mult_bits"]) - 1, 0, TensorQ(16, True, 0), False)]
    exp = [int(requantize(torch.tensor(a + b), m, n, q, r)) for a, b, m, n, q, r in cases]
    await tb.send([{"acc": a, "bias": b, "mult": m, "shift": n, "lo": max(q.lo, 0) if r else q.lo, "hi": q.hi}
                   for a, b, m, n, q, r in cases], drain=comp.latency + 2)
    assert tb.outputs == exp
