"""Encodings shared by the RTL and the compiler, defined once with ``amaranth.lib.data``.

(No ``from __future__ import annotations`` here: ``data.Struct`` reads its annotations.)

:class:`ConvDesc` describes one conv/linear layer for the :class:`~rmsmp.rtl.engine.ConvEngine`;
the compiler packs it with ``ConvDesc.const({...}).as_bits()`` and the engine decodes the
same bits.  :func:`param_layout` is one array row's requantization parameters; the
parameter buffer holds them a row an entry (:func:`param_slots`, :func:`param_entries`).

Activation buffer layout (channel-blocked, ``C`` channels of 8 bits per word): channel
``ch`` of pixel ``(y, x)`` of a tensor at ``base`` with ``H×W`` pixels lives in word
``base + ((ch // C)·H + y)·W + x``, byte ``ch % C``.
"""

import enum as _pyenum

from amaranth import Shape, signed, unsigned
from amaranth.lib import data, enum

__all__ = ["ACT_BANKS", "ConvDesc", "DmaDesc", "VecDesc", "VecKind", "Instruction", "Opcode", "Buffer", "param_layout",
           "param_slots", "param_entry_bits", "param_entries", "ADDR_BITS", "DIM_BITS",
           "INSTR_BITS", "CH_BITS", "ISA_REVISION", "VECTOR_OPS", "AVGPOOL_SUM_BITS",
           "STAMP_COUNTERS", "stamp_words", "field_width", "field_max", "encode"]

#: Revision of what a core reads from memory (instructions, weight layout); part of the
#: config hash (the ID register), so a program for another revision is refused like one for
#: another config.  2: weight entries of at most half a bus word share words.  3: the
#: parameter buffer holds a row's parameters an entry (:func:`param_entries`).  4: a DMA
#: descriptor repeats over blocks (``DmaDesc.reps``).  5: a pipelined core's STAMP writes its
#: busy counters after the cycle counter (:data:`STAMP_COUNTERS`).  6: a row's parameters
#: carry ``chain`` (its sum goes into the next enabled row's: :func:`param_layout`).
ISA_REVISION = 6

#: what a STAMP writes, a word each from its ``ext_addr`` on: the cycle counter, then on a
#: pipelined core the cycles the DMA was busy, the engine was busy, both were, and the array's
#: MAC beats (since the program started) — where a layer's cycles go (:func:`stamp_words`)
STAMP_COUNTERS = ("cycles", "dma_busy", "engine_busy", "both_busy", "mac_beats")


def stamp_words(pipelined: bool) -> int:
    """Memory words one STAMP writes: every :data:`STAMP_COUNTERS` on a pipelined core, the
    cycle counter alone on a compact one (its cells are counted)."""
    return len(STAMP_COUNTERS) if pipelined else 1

ADDR_BITS = 20
DIM_BITS = 10
ACT_BANKS = 2          # activation-buffer banks: the engine owns some while the DMA uses the others
MAX_PIXELS = 8         # pixel lanes (AcceleratorConfig.pixels) the descriptors can address


class ConvDesc(data.Struct):
    """One conv layer (linear = 1×1 conv on a 1×1 image)."""

    in_base: unsigned(ADDR_BITS)      # activation word address of the input tensor
    out_base: unsigned(ADDR_BITS)     # activation word address of the output tensor
    w_base: unsigned(ADDR_BITS)       # weight word address of output group 0
    p_base: unsigned(ADDR_BITS)       # parameter word address of output group 0
    in_h: unsigned(DIM_BITS)
    in_w: unsigned(DIM_BITS)
    in_cb: unsigned(DIM_BITS)         # input channel blocks (ceil(C_in / C))
    out_h: unsigned(DIM_BITS)
    out_w: unsigned(DIM_BITS)
    out_groups: unsigned(DIM_BITS)    # output groups of R rows
    kernel: unsigned(4)
    stride: unsigned(2)
    pad: unsigned(3)                  # zero padding left/right (and top/bottom unless tiled)
    pad_top: unsigned(3)              # rows of zero padding above this (band of the) input
    in_signed: unsigned(1)            # input bytes are two's complement (network input)
    wide: unsigned(1)                 # 16-bit outputs: channel ch is bytes 2ch, 2ch+1 (logits)
    out_lo: signed(17)                # output clamp bounds (ReLU: lo = 0)
    out_hi: signed(17)
    banks: unsigned(ACT_BANKS)        # activation-buffer banks the layer reads or writes
    # pixel lanes (AcceleratorConfig.pixels > 1): lane p computes output columns
    # [p·out_w, (p+1)·out_w) of a row from its own bank, where the row is stored from global
    # column p·out_w·stride - pad on (in_w is then the stored row's pitch); taps outside the
    # row's in_wg columns are padding
    in_wg: unsigned(DIM_BITS)


CH_BITS = 12


def param_layout(acc_bits: int, mult_bits: int, shift_bits: int) -> data.StructLayout:
    """Parameters of one array row for one output group: requantization, the output
    channel the row computes (results are written in natural channel order, so the
    scheme permutation never reaches memory), ``en`` (0: an unused row) and ``chain`` (1: the
    row's sum is not written but added into the next enabled row's — one output channel's
    weights spread over several rows, a power-of-two term of each weight a row; the chain's
    last row has the channel's parameters.  Only a core with ``row_chains`` reads it)."""
    return data.StructLayout({"bias": signed(acc_bits), "mult": unsigned(mult_bits),
                              "shift": unsigned(shift_bits), "ch": unsigned(CH_BITS), "en": 1, "chain": 1})


def param_slots(rows: int) -> int:
    """Parameter-buffer entries of one output group: a power of two above ``rows`` — row
    ``r``'s parameters at slot ``r``, the group's mask of enabled rows at the last slot,
    unused slots between.  Output group ``g``'s entries start at ``g · param_slots(rows)``,
    so the engine addresses a row by concatenation."""
    return 1 << rows.bit_length()


def param_entry_bits(acc_bits: int, mult_bits: int, shift_bits: int, rows: int) -> int:
    """Width of a parameter-buffer entry: one row's :func:`param_layout`, or the mask of
    ``rows`` rows if wider."""
    return max(param_layout(acc_bits, mult_bits, shift_bits).size, rows)


def param_entries(word: int, acc_bits: int, mult_bits: int, shift_bits: int, rows: int) -> list[int]:
    """The :func:`param_slots` entries of one output group, from its parameter word (an
    ``ArrayLayout(param_layout(...), rows)`` value): each row's parameters, zeros, then the
    mask of the rows whose ``en`` is set (the rows the requantizer walks)."""
    plo = param_layout(acc_bits, mult_bits, shift_bits)
    w, en_at = plo.size, plo["en"].offset
    row = [(word >> (r * w)) & ((1 << w) - 1) for r in range(rows)]
    mask = sum(((v >> en_at) & 1) << r for r, v in enumerate(row))
    return row + [0] * (param_slots(rows) - rows - 1) + [mask]


class Opcode(enum.Enum, shape=4):
    END = 0          # stop; the core raises done
    LOAD = 1         # DMA external memory -> a buffer
    STORE = 2        # DMA activation buffer -> external memory
    CONV = 3         # run one ConvDesc on the engine
    VEC = 4          # run one VecDesc (residual add, max-pool, global average pool)
    STAMP = 5        # write the cycle (and busy) counters from memory word dma.ext_addr (per-layer timing)
    SYNC = 6         # wait until the DMA and the engine are idle


class Buffer(_pyenum.IntEnum):
    """DMA target codes: the activation buffer, the parameter buffer, then weight buffer
    ``WEIGHT0 + k`` of lane group ``k``."""
    ACT = 0
    PARAM = 1
    WEIGHT0 = 2      # weight buffer of lane group k is WEIGHT0 + k


class DmaDesc(data.Struct):
    buf: unsigned(4)                  # a Buffer code
    ext_addr: unsigned(32)            # bus-word address in external memory
    buf_addr: unsigned(ADDR_BITS)     # entry address in the buffer
    count: unsigned(ADDR_BITS)        # entries
    banks: unsigned(ACT_BANKS)        # activation-buffer banks the transfer touches (ACT only)
    wbits: unsigned(4)                # weight loads into a fix lane group: the codes' packed
                                      # width in memory (dma.packed_widths: 2, 4; 0: the lane's width)
    # activation transfers across pixel lanes (row_w = 0: entries consecutive in lane 0).
    # Memory holds rows of row_w entries; a row's entry x lives in lane p at buffer entry
    # buf_addr + r·pitch + (x - p·step).  A load writes it into every lane p of ``lanes``
    # with lo <= x - p·step < hi (a lane's columns and its halo); a store reads each entry
    # from lane x // step
    row_w: unsigned(DIM_BITS)
    pitch: unsigned(DIM_BITS)
    step: unsigned(DIM_BITS)
    lo: signed(DIM_BITS + 1)
    hi: signed(DIM_BITS + 1)
    lanes: unsigned(MAX_PIXELS)
    # an activation tensor of 4-bit values, stored in memory as nibbles (half the bytes):
    # a store packs each byte's low nibble, a load widens them (signed: sign-extended)
    nib: unsigned(1)
    nib_signed: unsigned(1)
    # a LOAD/STORE runs ``reps`` more times, each ``ext_step`` bus words further in memory and
    # ``buf_step`` entries further in the buffer (a tensor's channel blocks: one instruction
    # fetched, not one a block); ``banks`` covers every block
    reps: unsigned(8)
    ext_step: unsigned(24)
    buf_step: unsigned(ADDR_BITS)


class VecKind(enum.Enum, shape=2):
    ADD = 0
    MAXPOOL = 1
    AVGPOOL = 2


#: the vector unit's operations (a config may build a subset), in :class:`VecKind` order
VECTOR_OPS = tuple(k.name.lower() for k in VecKind)
#: signed width of the vector unit's per-channel average-pool sum
AVGPOOL_SUM_BITS = 24


class VecDesc(data.Struct):
    """Element-wise and pooling work on the activation buffer, ``C`` channels per word.

    Output word ``(cb, oy, ox)`` at ``out_base + (cb·out_h + oy)·out_w + ox`` is reduced
    from taps ``(ty, tx)``: ADD reads ``a_base + ox`` then ``b_base + ox`` (``out_h = 1``,
    ``out_w`` = words); MAXPOOL the ``kernel²`` window (taps in the padding are skipped);
    AVGPOOL all ``in_h × in_w`` pixels of block ``cb`` (``out_h = out_w = 1``)."""

    kind: VecKind
    a_base: unsigned(ADDR_BITS)
    b_base: unsigned(ADDR_BITS)
    out_base: unsigned(ADDR_BITS)
    cb: unsigned(DIM_BITS)
    in_h: unsigned(DIM_BITS)
    in_w: unsigned(DIM_BITS)
    out_h: unsigned(DIM_BITS)
    out_w: unsigned(DIM_BITS)
    kernel: unsigned(4)
    stride: unsigned(2)
    pad: unsigned(3)
    pad_top: unsigned(3)              # MAXPOOL: padding rows above this band of the input
    a_signed: unsigned(1)
    b_signed: unsigned(1)
    sa: unsigned(4)                   # ADD: left shifts of a and b, right shift of the sum
    sb: unsigned(4)
    rs: unsigned(4)
    mult: unsigned(16)                # AVGPOOL: requantizer M and n
    shift: unsigned(6)
    lo: signed(17)
    hi: signed(17)
    banks: unsigned(ACT_BANKS)        # activation-buffer banks the op reads or writes
    in_wg: unsigned(DIM_BITS)         # MAXPOOL over pixel lanes: the row's columns (as ConvDesc)


#: Instructions are INSTR_BITS wide: an opcode and one of the descriptors.
INSTR_BITS = 256


class Instruction(data.Struct):
    op: Opcode
    arg: data.UnionLayout({"conv": ConvDesc, "dma": DmaDesc, "vec": VecDesc})
    pad: unsigned(INSTR_BITS - 4 - max(ConvDesc.as_shape().size, DmaDesc.as_shape().size,
                                       VecDesc.as_shape().size))


_PLANS: dict = {}


def _plan(shape):
    """``shape`` (a layout, a ``data.Struct`` class, an enum or a plain shape) as what
    :func:`encode` needs: ``{name: (offset, member shape)}`` for a layout, else
    ``(width, signed)``."""
    key = id(shape)
    if key not in _PLANS:
        if isinstance(shape, data.Layout) or (isinstance(shape, type) and issubclass(shape, data.Struct)):
            layout = data.Layout.cast(shape)
            plan = {name: (f.offset, f.shape) for name, f in layout}
        else:
            s = Shape.cast(shape)
            plan = (s.width, s.signed)
        _PLANS[key] = (shape, plan)                 # (the shape kept alive: its id stays its own)
    return _PLANS[key][1]


def encode(shape, value) -> int:
    """The bits of ``shape.const(value)`` (a layout's members from a dict, enum members,
    integers truncated to their field as Amaranth does) without building Amaranth
    constants — the compiler encodes ~10⁵ instructions a ResNet-18 batch."""
    plan = _plan(shape)
    if isinstance(plan, dict):
        bits = 0
        for name, v in value.items():
            offset, member = plan[name]
            bits |= encode(member, v) << offset
        return bits
    width, _ = plan
    v = value.value if isinstance(value, _pyenum.Enum) else int(value)
    return v & ((1 << width) - 1)


def field_width(struct, name: str) -> int:
    """Bit width of field ``name`` of a ``data.Struct`` class or layout."""
    layout = struct.as_shape() if hasattr(struct, "as_shape") else struct
    return Shape.cast(layout.members[name]).width


def field_max(struct, name: str) -> int:
    """Largest value of unsigned field ``name`` (what a descriptor can express)."""
    return (1 << field_width(struct, name)) - 1
