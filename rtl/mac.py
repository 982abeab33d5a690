"""The mixed-scheme row-wise MAC array.

A :class:`MacRow` is ``C`` lanes of one weight format, a pipelined adder tree and an
accumulator.  :class:`MacArray` broadcasts one activation vector of ``C`` values per
cycle to all ``R`` rows (grouped by format as in the :class:`AcceleratorConfig`), so it
performs ``R·C`` MACs per cycle.

Streams are ``always_ready``: the array never stalls its producer; a cycle without
``valid`` is a bubble.  ``first`` marks the first vector of a dot product (the
accumulator restarts from zero), ``last`` the final one (the sum leaves on ``o``).
Latency from an input beat to its output beat: :attr:`MacRow.latency` cycles.
"""
from __future__ import annotations

from amaranth import Cat, Const, Module, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .arith import delay, stage
from .lanes import lane_format, make_lane

__all__ = ["MacRow", "MacArray", "row_input_layout", "REPLICA", "COPY_ROWS"]

#: the name mark of registers that copy one value to drive part of a wide fan-out: yosys
#: would merge them back into one (same input), so the board builds mark them ``keep``
#: (boards/toolchain.py)
REPLICA = "replica"
#: rows of a pipelined core's array that share one copy of the broadcast activations and flags
COPY_ROWS = 4


def row_input_layout(fmt, columns: int, act_width: int) -> data.StructLayout:
    return data.StructLayout({
        "a": data.ArrayLayout(signed(act_width), columns),
        "w": data.ArrayLayout(unsigned(lane_format(fmt).bits), columns),
        "first": 1,
        "last": 1,
    })


#: rows of at least this many lanes sign-fold their power-of-two lanes (rtl/lanes.py): a
#: popcount and a three-operand accumulation instead of a negation adder a lane.  Measured
#: in whole-core syntheses: 3–8 % fewer LUTs on ECP5 at 8 and 16 columns; at 4 columns
#: −4 … +2 %, and 1–7 % more on iCE40 (1–4 columns), so narrower rows keep the negations
FOLD_MIN_COLUMNS = 8


def _tree_levels(columns: int) -> int:
    return max(0, (columns - 1).bit_length())


class MacRow(wiring.Component):
    """One row: ``C`` lanes of format ``fmt``, adder tree, ``acc_bits`` accumulator."""

    def __init__(self, fmt, *, columns: int, act_width: int, acc_bits: int):
        self._fmt = lane_format(fmt)
        if columns < 1:
            raise ValueError(f"columns must be >= 1, got {columns}")
        self._columns, self._act_width, self._acc_bits = columns, act_width, acc_bits
        #: the row's lanes (a formal proof reads their products: sim/formal.py)
        self.lanes = [make_lane(self._fmt, act_width, folded=columns >= FOLD_MIN_COLUMNS) for _ in range(columns)]
        super().__init__({
            "i": In(stream.Signature(row_input_layout(self._fmt, columns, act_width), always_ready=True)),
            "o": Out(stream.Signature(signed(acc_bits), always_ready=True)),
        })

    @property
    def latency(self) -> int:
        """Cycles from an input beat with ``last`` to its sum on ``o``."""
        return 2 + _tree_levels(self._columns)

    def elaborate(self, platform):
        m = Module()
        total, carry = _sum_tree(m, self.lanes, self.i.payload.a, self.i.payload.w, "row")
        flags = delay(m, Cat(self.i.valid, self.i.payload.first, self.i.payload.last),
                      1 + _tree_levels(self._columns), "flags")
        valid, first, last = flags[0], flags[1], flags[2]
        acc = Signal(signed(self._acc_bits))
        _accumulate(m, acc, total, valid, first, carry)
        m.d.sync += self.o.valid.eq(valid & last)
        m.d.comb += self.o.payload.eq(acc)
        return m


def _sum_tree(m: Module, lanes, a, w, name: str):
    """Register each lane's product, then add pairwise with a register per level.  Returns
    (sum, carry): folded power-of-two lanes leave their negations' ``+1`` bits, whose
    count (``carry``, aligned with the sum) the accumulator adds; 0 for other lanes."""
    sums, negs = [], []
    for k, lane in enumerate(lanes):
        m.submodules[f"{name}_lane{k}"] = lane
        m.d.comb += [lane.a.eq(a[k]), lane.w.eq(w[k])]
        r = Signal.like(lane.p, name=f"{name}_p{k}", reset_less=True)
        m.d.sync += r.eq(lane.p)
        sums.append(r)
        if getattr(lane, "folded", False):
            negs.append(lane.neg)
    carry = Const(0, 1)
    if negs:
        count = Signal(range(len(negs) + 1), name=f"{name}_negs", reset_less=True)
        m.d.sync += count.eq(sum(negs))
        carry = delay(m, count, _tree_levels(len(lanes)), f"{name}_negs", reset_less=True)
    level = 0
    while len(sums) > 1:
        nxt = []
        for k in range(0, len(sums), 2):
            if k + 1 < len(sums):
                s = Signal(signed(max(len(sums[k]), len(sums[k + 1])) + 1), name=f"{name}_t{level}_{k // 2}",
                           reset_less=True)
                m.d.sync += s.eq(sums[k] + sums[k + 1])
            else:
                s = Signal.like(sums[k], name=f"{name}_t{level}_{k // 2}", reset_less=True)
                m.d.sync += s.eq(sums[k])
            nxt.append(s)
        sums, level = nxt, level + 1
    return sums[0], carry


def _accumulate(m: Module, acc: Signal, total, valid, first, carry=0):
    """``acc = (first ? 0 : acc) + total + carry`` on valid beats, wrapping at ``len(acc)``
    bits (docs/arithmetic.md §3 proves the width never wraps for a valid program)."""
    with m.If(valid):
        with m.If(first):
            m.d.sync += acc.eq(total + carry)
        with m.Else():
            m.d.sync += acc.eq(acc + total + carry)


class MacArray(wiring.Component):
    """All rows of an :class:`~rmsmp.generator.config.AcceleratorConfig`-shaped array, for
    ``pixels`` pixel lanes that share every row's weights.

    ``i.payload.w.<scheme>[r][c]`` is the weight code of row ``r`` of that lane group at
    column ``c``; ``i.payload.a[p][c]`` the activation of pixel lane ``p`` at column ``c``;
    ``o.payload[p][k]`` is the sum of array row ``k`` (groups in order) for pixel lane ``p``.

    ``lut_schemes``: fixed-point groups whose lanes are built from LUTs (no multiplier);
    like the power-of-two lanes they take ``pot_act_width``-bit activations.
    """

    def __init__(self, *, lane_groups, columns: int, act_width: int, acc_bits: int, pixels: int = 1,
                 pot_act_width: int | None = None, lut_schemes=(), fold: bool | None = None,
                 copy_rows: int | None = None):
        self._groups = [(lane_format(s), int(r)) for s, r in lane_groups]
        # ``copy_rows``: the broadcast inputs (a pixel lane's activations and the flags) go
        # through one more register, a copy per ``copy_rows`` rows (``REPLICA`` in its name:
        # the board builds keep such copies apart), and the weights through a register
        # beside their row: no net drives every row of the array (it spans the chip); then
        # one more register before the lanes — a multiplier (DSP) lane's own, so the route
        # into the DSP block starts beside it (two cycles more latency in all)
        self._copy_rows = copy_rows
        self._columns, self._act_width, self._acc_bits = columns, act_width, acc_bits
        self._pixels = pixels
        # power-of-two lanes may take narrower activations (the low bits, signed): the
        # compiler places no pot row on them for a layer whose input does not fit
        self._pot_width = min(pot_act_width or act_width, act_width)
        self._lut = frozenset(lut_schemes)
        # sign-folded pot lanes (None: where it pays, rows of FOLD_MIN_COLUMNS or more)
        self._fold = columns >= FOLD_MIN_COLUMNS if fold is None else fold
        rows = sum(r for _, r in self._groups)
        #: ``lanes[p][k]``: the lanes of array row ``k`` for pixel lane ``p`` (a formal proof
        #: reads their products: sim/formal.py)
        self.lanes = [[[make_lane(fmt, self._lane_width(fmt), lut=fmt.name in self._lut, folded=self._fold)
                        for _ in range(columns)]
                       for fmt, r in self._groups for _ in range(r)]
                      for _ in range(pixels)]
        wl = data.StructLayout({f.name: data.ArrayLayout(data.ArrayLayout(unsigned(f.bits), columns), r)
                                for f, r in self._groups})
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "a": data.ArrayLayout(data.ArrayLayout(signed(act_width), columns), pixels), "w": wl,
                "first": 1, "last": 1}), always_ready=True)),
            "o": Out(stream.Signature(data.ArrayLayout(data.ArrayLayout(signed(acc_bits), rows), pixels),
                                      always_ready=True)),
        })

    @classmethod
    def for_config(cls, cfg) -> "MacArray":
        return cls(lane_groups=[(g.format, g.rows) for g in cfg.lane_groups], columns=cfg.columns,
                   act_width=cfg.act_width, acc_bits=cfg.acc_bits, pixels=cfg.pixels,
                   pot_act_width=cfg.pot_act_width, lut_schemes=cfg.lut_schemes,
                   copy_rows=COPY_ROWS if cfg.pipelined else None)

    @property
    def rows(self) -> int:
        return sum(r for _, r in self._groups)

    @property
    def latency(self) -> int:
        return 2 + _tree_levels(self._columns) + 2 * (self._copy_rows is not None)

    def _lane_width(self, fmt) -> int:
        return self._pot_width if fmt.kind == "pot" or fmt.name in self._lut else self._act_width

    def elaborate(self, platform):
        m = Module()
        tree = 1 + _tree_levels(self._columns)
        inputs = Cat(self.i.valid, self.i.payload.first, self.i.payload.last)
        cr = self._copy_rows
        shared = None if cr else delay(m, inputs, tree, "flags")
        copies = {}                     # (pixel lane, block of rows) -> (activations, flags)

        def block(p, k):
            """The activations of pixel lane ``p`` and the flags (delayed to the accumulators)
            that row ``k`` takes."""
            if not cr:
                return self.i.payload.a[p], shared
            key = (p, k // cr)
            if key not in copies:
                tag = f"p{p}_b{key[1]}"
                a = Signal.like(self.i.payload.a[p], name=f"{tag}_a_{REPLICA}", reset_less=True)
                f = Signal(3, name=f"{tag}_flags_{REPLICA}")
                m.d.sync += [a.eq(self.i.payload.a[p]), f.eq(inputs)]
                copies[key] = (a, delay(m, f, tree + 1, f"{tag}_flags"))
            return copies[key]

        later = {}                      # (pixel lane, block of rows) -> the copy a cycle later

        def block_later(p, k):
            """The activations of row ``k``'s block a cycle later: what LUT-built rows take
            while the multiplier rows take their own registers (same timing)."""
            key = (p, k // cr)
            if key not in later:
                later[key] = stage(m, block(p, k)[0], 1, f"p{p}_b{key[1]}_a_later", reset_less=True)
            return later[key]

        for p in range(self._pixels):
            k = 0
            px = f"p{p}_" if self._pixels > 1 else ""
            for fmt, nrows in self._groups:
                aw = self._lane_width(fmt)
                for r in range(nrows):
                    acts, flags = block(p, k)
                    w = self.i.payload.w[fmt.name][r]
                    if cr:
                        # (beside the row, two cycles like the activations; a multiplier row's
                        # lanes each take the activation from a register of their own — kept
                        # apart in board builds, ``REPLICA`` — next to their DSP block, other
                        # rows from their block's copy a cycle later)
                        w = stage(m, stage(m, w, 1, f"{px}r{k}_w", reset_less=True), 1, f"{px}r{k}_w2",
                                  reset_less=True)
                        if fmt.kind == "fix" and fmt.name not in self._lut:
                            acts = [stage(m, acts[c], 1, f"{px}r{k}_a{c}_{REPLICA}", reset_less=True)
                                    for c in range(self._columns)]
                        else:
                            acts = block_later(p, k)
                    if aw < self._act_width:
                        acts = [Value.cast(acts[c])[:aw].as_signed() for c in range(self._columns)]
                    lanes = self.lanes[p][k]
                    total, carry = _sum_tree(m, lanes, acts, w, f"{px}r{k}_{fmt.name}")
                    acc = Signal(signed(self._acc_bits), name=f"{px}r{k}_acc", reset_less=True)
                    _accumulate(m, acc, total, flags[0], flags[1], carry)
                    m.d.comb += self.o.payload[p][k].eq(acc)
                    k += 1
        _, flags = block(0, 0)
        m.d.sync += self.o.valid.eq(flags[0] & flags[2])
        return m
