"""Programs for the core: instructions + a memory image, built from lowered layers.

Memory map (bus words): the program at 0, then each blob (input, weights, parameters) in
order, then the output region.  Entries wider than the bus take consecutive words,
least significant first (as the DMA reads them); weight entries of at most half a word share
words in power-of-two slots (:func:`rmsmp.rtl.dma.weight_slot`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from rmsmp.host.quant.fileio import atomic_path
from rmsmp.host.quant.qmodel import TensorQ
from rmsmp.rtl.dma import weight_slot, words_per_entry
from rmsmp.rtl.isa import (
    ACT_BANKS,
    INSTR_BITS,
    Buffer,
    Instruction,
    Opcode,
    encode,
    param_entries,
    param_entry_bits,
    param_slots,
    stamp_words,
)

from .layout import pack_activations
from .lower import CompileError, LoweredLayer, lower_conv, lower_vec

__all__ = ["Program", "CorruptProgramError", "RESIDENT_WORDS", "RESIDENT_MAGIC", "ProgramIO", "TensorSlot", "RowMap",
           "ProgramBuilder", "blob_slot", "blob_words", "split_words", "layer_program", "vec_program"]


def blob_slot(cfg, weights: int | None) -> int:
    """Bits of the bus-word slot an entry of lane group ``weights``' weight blobs takes
    (:func:`~rmsmp.rtl.dma.weight_slot`; 0: whole words, and for any other blob)."""
    if weights is None:
        return 0
    g = cfg.lane_groups[weights]
    return weight_slot(g.rows * cfg.columns * g.format.bits, cfg.bus_width)


def blob_words(cfg, n: int, width: int, weights: int | None = None) -> int:
    """Bus words a blob of ``n`` entries of ``width`` bits takes (``weights``: the lane group
    whose weight buffer it fills, whose small entries share words), as a LOAD moves it."""
    slot = blob_slot(cfg, weights)
    return -(-n // (cfg.bus_width // slot)) if slot else n * words_per_entry(width, cfg.bus_width)


def split_words(value: int, width: int, bus: int) -> list[int]:
    n = words_per_entry(width, bus)
    mask = (1 << bus) - 1
    return [(value >> (bus * i)) & mask for i in range(n)]


@dataclass(frozen=True)
class RowMap:
    """How an activation transfer spreads rows over the pixel lanes (``DmaDesc`` fields):
    memory rows of ``row_w`` entries; entry ``x`` of row ``r`` in lane ``p`` at buffer entry
    ``buf_addr + r·pitch + x - p·step``, loaded into each lane of ``lanes`` where
    ``lo <= x - p·step < hi``, stored from lane ``x // step``."""

    row_w: int
    pitch: int
    step: int
    lo: int
    hi: int
    lanes: int

    def span(self, buf_addr: int, count: int, store: bool) -> tuple[int, int]:
        """First and last buffer entry a transfer of ``count`` entries touches."""
        rows = -(-count // self.row_w)
        first = buf_addr if store else buf_addr + min(self.lo, 0)
        return first, buf_addr + (rows - 1) * self.pitch + (self.step if store else self.hi) - 1

    def fields(self) -> dict:
        return {"row_w": self.row_w, "pitch": self.pitch, "step": self.step, "lo": self.lo, "hi": self.hi,
                "lanes": self.lanes}


@dataclass(frozen=True)
class TensorSlot:
    """A tensor a program reads or writes: ``name`` is its blob (input) or output region,
    ``shape`` [C, H, W]; an input's ``addr`` is its word address in the image."""

    name: str
    shape: tuple
    signed: bool = True
    wide: bool = False               # 16-bit values (channel ch in bytes 2ch, 2ch+1)
    addr: int | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "signed": self.signed, "wide": self.wide,
                "addr": self.addr}

    @classmethod
    def from_dict(cls, d: dict) -> "TensorSlot":
        return cls(d["name"], tuple(d["shape"]), bool(d["signed"]), bool(d["wide"]), d["addr"])


@dataclass
class ProgramIO:
    """What a program takes and gives.  A compiled network (``input_q`` set) takes real
    images: one per input slot (``batch`` of them), quantized with ``input_q`` and, when
    ``im2col`` is set, laid out as the first layer's im2col columns (kernel, stride,
    padding[, padding after]); its outputs are real (``output_q``).  A single-layer program takes and gives
    integer tensors, one per slot.  ``trace`` names the layers the program stamps the cycle
    counter after (``moved_words``: bus words each moves for the first image)."""

    inputs: list
    outputs: list
    input_q: TensorQ | None = None
    output_q: TensorQ | None = None
    batch: int = 1
    im2col: tuple | None = None
    resident: bool = False
    trace: list = field(default_factory=list)
    moved_words: list = field(default_factory=list)
    set_major: list = field(default_factory=list)    # layers run a weight set at a time over on-chip bands
    #: where each traced layer's output lies in memory for the first image once its STAMP has
    #: run (:mod:`rmsmp.sim.localize` reads them): name -> addr (word), shape [C, H, W],
    #: signed, wide (16-bit), nib (stored as nibbles), wpe (bus words per entry)
    tensors: dict = field(default_factory=dict)
    in_parts: list = field(default_factory=list)     # layers run with the input on chip, the output in parts
    #: the batch runs layer by layer, each weight set once a batch: a traced layer's STAMP
    #: follows the whole batch (and ``moved_words`` count the sets' words a batch ÷ ``batch``)
    layer_major: bool = False
    batch_parts: list = field(default_factory=list)  # layers run a part (one set) at a time over the batch
    images_on_chip: list = field(default_factory=list)  # layers holding the whole batch on chip
    batch_added: dict = field(default_factory=dict)  # batch_parts layer -> memory words its parts add
    #: residual add -> the conv that runs it on its output bands on chip: the add's cycles are
    #: in the conv's (its own row ~0), and the conv's output is never in memory (no ``tensors`` entry)
    fused: dict = field(default_factory=dict)

    @property
    def is_network(self) -> bool:
        return self.input_q is not None

    @property
    def input_shape(self) -> tuple:
        return self.inputs[0].shape

    @property
    def output_shape(self) -> tuple:
        return self.outputs[0].shape

    def to_dict(self) -> dict:
        return {"inputs": [s.to_dict() for s in self.inputs], "outputs": [s.to_dict() for s in self.outputs],
                "input_q": self.input_q.to_dict() if self.input_q else None,
                "output_q": self.output_q.to_dict() if self.output_q else None,
                "batch": self.batch, "im2col": list(self.im2col) if self.im2col else None,
                "resident": self.resident, "trace": list(self.trace), "moved_words": list(self.moved_words),
                "set_major": list(self.set_major), "tensors": self.tensors, "in_parts": list(self.in_parts),
                "layer_major": self.layer_major, "batch_parts": list(self.batch_parts),
                "images_on_chip": list(self.images_on_chip), "batch_added": dict(self.batch_added),
                "fused": dict(self.fused)}

    @classmethod
    def from_dict(cls, d: dict) -> "ProgramIO":
        q = {k: TensorQ(**d[k]) if d[k] else None for k in ("input_q", "output_q")}
        return cls([TensorSlot.from_dict(s) for s in d["inputs"]], [TensorSlot.from_dict(s) for s in d["outputs"]],
                   q["input_q"], q["output_q"], d["batch"], tuple(d["im2col"]) if d["im2col"] else None,
                   d["resident"], list(d["trace"]), list(d["moved_words"]), list(d.get("set_major", [])),
                   dict(d.get("tensors", {})), list(d.get("in_parts", [])), bool(d.get("layer_major", False)),
                   list(d.get("batch_parts", [])), list(d.get("images_on_chip", [])), dict(d.get("batch_added", {})),
                   dict(d.get("fused", {})))


#: words at the top of a board's memory that name the program it holds (``Program.resident_record``)
RESIDENT_WORDS = 8
RESIDENT_MAGIC = int.from_bytes(b"RRES", "little")


def _record_check(words) -> int:
    """The resident record's check word: an FNV-style hash of its first six words."""
    check = RESIDENT_MAGIC
    for w in words:
        check = (check * 0x01000193 ^ w) & 0xFFFFFFFF
    return check


class CorruptProgramError(CompileError):
    """A program file or object whose contents do not match its checksum, or that cannot be read."""


@dataclass
class Program:
    config_hash: int
    bus_width: int
    image: list                     # bus words, from address 0
    prog_addr: int = 0
    outputs: dict = field(default_factory=dict)   # region name -> (word address, entries, entry width)
    layers: list = field(default_factory=list)    # LoweredLayer, in order
    io: ProgramIO | None = None                   # what it takes and gives
    config: dict = field(default_factory=dict)    # AcceleratorConfig.to_dict() it was compiled for
    checksum: str | None = None                   # digest() when compiled (seal()); checked on load

    FORMAT, VERSION = "rmsmp.Program", 4

    def digest(self) -> str:
        """SHA-256 of what the program is: its memory image (instructions and data), where it
        starts, its I/O map and the accelerator it is for."""
        import hashlib
        import json

        import numpy as np
        h = hashlib.sha256()
        h.update(json.dumps([self.config_hash, self.bus_width, self.prog_addr, sorted(self.outputs.items()),
                             self.io.to_dict() if self.io else None], sort_keys=True, default=list).encode())
        h.update(np.asarray(self.image, dtype=np.uint64).tobytes())
        return h.hexdigest()

    def seal(self) -> "Program":
        """Record the program's :meth:`digest` (the compiler does, once it is complete)."""
        self.checksum = self.digest()
        return self

    def verify(self, what: str = "program") -> None:
        """Raise :class:`CorruptProgramError` if the program changed since :meth:`seal`."""
        if self.checksum is not None and self.digest() != self.checksum:
            raise CorruptProgramError(f"{what}: its instructions, memory image or I/O map changed since it was "
                                      f"compiled (checksum mismatch): the program is corrupt; recompile it")

    def save(self, path) -> None:
        """One ``.npz`` file: the memory image and a JSON header (config, I/O map, layer stats,
        the checksum :meth:`load` verifies)."""
        import json

        import numpy as np
        head = {"format": self.FORMAT, "version": self.VERSION, "config_hash": self.config_hash,
                "checksum": self.checksum or self.digest(),
                "bus_width": self.bus_width, "prog_addr": self.prog_addr, "outputs": self.outputs,
                "io": self.io.to_dict() if self.io else None, "config": self.config,
                "layers": [{"name": l.name, "kind": l.kind, "macs": l.macs, "beats": l.beats} for l in self.layers]}
        with atomic_path(path, "program file") as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, image=np.asarray(self.image, dtype=np.uint64), header=json.dumps(head))

    @classmethod
    def load(cls, path) -> "Program":
        import json

        import numpy as np
        try:
            z = np.load(path, allow_pickle=False)
            head = json.loads(str(z["header"]))
            image = z["image"].tolist()
        except FileNotFoundError:
            raise
        except Exception as e:
            raise CorruptProgramError(f"{path}: not a readable rmsmp program file ({type(e).__name__}: {e})") from None
        if head.get("format") != cls.FORMAT or head.get("version") != cls.VERSION:
            raise CompileError(f"{path}: not an rmsmp program file of version {cls.VERSION}"
                               + (f" (version {head.get('version')}: recompile it)" if head.get("format") == cls.FORMAT
                                  else ""))
        try:
            io = ProgramIO.from_dict(head["io"]) if head["io"] else None
            layers = [LoweredLayer(d["name"], {}, macs=d["macs"], beats=d["beats"], kind=d["kind"])
                      for d in head["layers"]]
            prog = cls(head["config_hash"], head["bus_width"], image, head["prog_addr"],
                       {k: tuple(v) for k, v in head["outputs"].items()}, layers, io, head["config"],
                       head["checksum"])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CorruptProgramError(f"{path}: the program's header is incomplete or corrupt "
                                      f"({type(e).__name__}: {e})") from None
        prog.verify(str(path))
        return prog

    # -- the resident record: which program a board's memory holds -------------------------
    def fingerprint(self) -> int:
        """64 bits of the program's :meth:`digest` (its identity on a board)."""
        return int((self.checksum or self.digest())[:16], 16)

    @staticmethod
    def resident_addr(mem_words: int) -> int:
        """Word address of the resident record in a memory of ``mem_words``."""
        return mem_words - RESIDENT_WORDS

    def resident_record(self, mem_words: int) -> list[int]:
        """The words a board's memory holds at :meth:`resident_addr` when it holds this
        program (written after a complete upload or flash boot), or a ``CompileError`` if the
        image leaves no room for them."""
        if len(self.image) > self.resident_addr(mem_words):
            raise CompileError(f"the program's memory image ({len(self.image):,} words) leaves no room for the "
                               f"{RESIDENT_WORDS}-word resident record at the top of the {mem_words:,}-word memory")
        fp = self.fingerprint()
        words = [RESIDENT_MAGIC, fp & 0xFFFFFFFF, fp >> 32, self.config_hash, len(self.image), self.prog_addr]
        return words + [_record_check(words), 0]

    @staticmethod
    def parse_resident(words) -> dict | None:
        """{"fingerprint", "config_hash", "words", "prog_addr"} from a resident record read
        back, or None when the words are not one (memory after power-up, an image over it)."""
        words = [int(w) for w in words]
        if len(words) < RESIDENT_WORDS - 1 or words[0] != RESIDENT_MAGIC:
            return None
        if _record_check(words[:6]) != words[6]:
            return None
        return {"fingerprint": words[1] | words[2] << 32, "config_hash": words[3], "words": words[4],
                "prog_addr": words[5]}

    def regions(self, names) -> list[tuple[int, int]]:
        """(word address, words) of each output region in ``names``."""
        out = []
        for name in names:
            addr, n, width = self.outputs[name]
            out.append((addr, n * words_per_entry(width, self.bus_width)))
        return out

    def read_entries(self, image, name) -> list[int]:
        """Entries of output ``name`` from a memory image after the run."""
        addr, n, width = self.outputs[name]
        wpe = words_per_entry(width, self.bus_width)
        out = []
        for e in range(n):
            v = 0
            for i in range(wpe):
                v |= image[addr + e * wpe + i] << (self.bus_width * i)
            out.append(v)
        return out


class ProgramBuilder:
    """Collects instructions and blobs, then lays them out in one image."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.bus = cfg.bus_width
        self._instrs = []        # (op, arg dict with blob references resolved later)
        self._blobs = []         # (name, list of entries, entry width)
        self._blob_words = {}
        self._blob_meta = {}     # name -> (lane group index of a weight blob or None, slot bits or 0)
        self._param_blobs = set()
        self._outputs = []       # (name, entries, width)
        self.layers = []

    def blob(self, name, entries, width, *, weights: int | None = None):
        """Place ``entries`` of ``width`` bits; ``weights=k``: for lane group ``k``'s weight
        buffer, whose entries share bus words when the group's full entry is at most half a
        word (:func:`~rmsmp.rtl.dma.weight_slot`), as the DMA unpacks them."""
        self._blobs.append((name, list(entries), width))
        self._blob_meta[name] = (weights, blob_slot(self.cfg, weights))
        self._blob_words[name] = blob_words(self.cfg, len(entries), width, weights)
        return name

    def load_layer(self, low) -> None:
        """Load lowered conv ``low``'s weights (each lane group's, at its packed width) and
        parameters whole, from blobs of their own (``w_<scheme>``, ``p``): a one-layer
        program's."""
        for k, g in enumerate(self.cfg.lane_groups):
            wbits, width, words = low.packed[g.scheme]
            self.load(Buffer.WEIGHT0 + k, self.blob(f"w_{g.scheme}", words, width, weights=k), wbits=wbits)
        self.load(Buffer.PARAM, self.param_blob("p", low.params))

    def param_blob(self, name, words):
        """Place the requantization parameters of output groups (``words``: one
        ``ArrayLayout(param_layout(...), R)`` value each, as the compiler lowers them) as the
        parameter buffer holds them: :func:`~rmsmp.rtl.isa.param_slots` entries a group, a
        row each and the group's mask of enabled rows (:func:`~rmsmp.rtl.isa.param_entries`).
        A LOAD of it names its buffer address in output groups."""
        c = self.cfg
        entries = [e for w in words for e in param_entries(w, c.acc_bits, c.mult_bits, c.shift_bits, c.rows)]
        self.blob(name, entries, param_entry_bits(c.acc_bits, c.mult_bits, c.shift_bits, c.rows))
        self._param_blobs.add(name)
        return name

    def blob_words(self, name: str) -> int:
        """Bus words that blob ``name`` occupies (what a LOAD of it moves)."""
        return self._blob_words[name]

    def blob_chunks(self, name: str, shares: list) -> list[tuple[int, int, int]]:
        """Blob ``name`` in pieces that LOADs can move one by one, sized in proportion to the
        numbers in ``shares`` — ``(first entry, its bus-word offset, entries)`` each, cut
        where an entry starts a word (entries that share words stay together; a piece may
        be empty)."""
        _, entries, width = next(b for b in self._blobs if b[0] == name)
        weights, slot = self._blob_meta[name]
        per = self.bus // slot if slot else 1              # entries a cut may not split
        units = -(-len(entries) // per)
        total, acc, ends = sum(shares), 0, [0]
        for w in shares:
            acc += w
            ends.append(units * acc // total if total else units)
        cuts = [min(len(entries), per * e) for e in ends]
        return [(e0, blob_words(self.cfg, e0, width, weights), e1 - e0) for e0, e1 in zip(cuts, cuts[1:])]

    def load(self, buf, ref: str, buf_addr: int = 0, *, offset: int = 0, count: int | None = None,
             wbits: int = 0, rows: RowMap | None = None, nib: tuple | None = None, blocks: tuple = (1, 0, 0)):
        """DMA ``count`` entries (default: all of blob ``ref``) from blob or region ``ref``,
        starting ``offset`` bus words in, to entry ``buf_addr`` of buffer ``buf``; ``wbits``:
        the packed code width of a weight blob (0: the lane's width); ``blocks`` ``(n,
        ext_step, buf_step)``: n such transfers, each that many bus words and entries further
        (``DmaDesc.reps``).  The parameter buffer
        (``Buffer.PARAM``) takes only :meth:`param_blob` blobs, and ``buf_addr`` counts its
        output groups there."""
        if (buf == Buffer.PARAM) != (ref in self._param_blobs):
            raise ValueError(f"blob {ref!r}: the parameter buffer loads blobs made by param_blob(), and only "
                             f"it does (this LOAD is for buffer {buf})")
        if buf == Buffer.PARAM:
            buf_addr *= param_slots(self.cfg.rows)
        group = buf - Buffer.WEIGHT0 if buf >= Buffer.WEIGHT0 else None
        if ref in self._blob_meta and self._blob_meta[ref][0] != group:
            k = self._blob_meta[ref][0]
            made = "no weight buffer" if k is None else f"the weight buffer of lane group {k}"
            raise ValueError(f"blob {ref!r} loads buffer {buf} but was made for {made}: make a weight "
                             "blob with blob(..., weights=k), its entries may share words")
        self._instrs.append(("LOAD", buf, ref, buf_addr, offset, count, wbits, rows, nib, blocks))

    def _banks(self, buf, buf_addr: int, count: int, rows: RowMap | None = None, store: bool = False) -> int:
        """Mask of the activation-buffer banks a transfer of ``count`` entries from
        ``buf_addr`` touches."""
        if buf != Buffer.ACT or count == 0:
            return 0
        lo, hi = rows.span(buf_addr, count, store) if rows else (buf_addr, buf_addr + count - 1)
        size = self.cfg.act_depth // ACT_BANKS
        return sum(1 << b for b in range(lo // size, min(ACT_BANKS - 1, hi // size) + 1))

    def region(self, name: str, entries: int, width: int):
        """Reserve a zero-initialised memory region of ``entries`` entries of ``width`` bits
        (outputs, the activation workspace); readable after a run as ``Program.outputs[name]``."""
        self._outputs.append((name, entries, width))
        return name

    def store(self, out_name: str, buf_addr: int, entries: int):
        """Declare output region ``out_name`` and store ``entries`` activation entries into it."""
        self.region(out_name, entries, 8 * self.cfg.columns)
        self.store_to(out_name, buf_addr, entries)

    def store_to(self, ref: str, buf_addr: int, count: int, *, offset: int = 0, rows: RowMap | None = None,
                 nib: tuple | None = None, blocks: tuple = (1, 0, 0)):
        """DMA ``count`` activation entries from ``buf_addr`` into region ``ref`` at ``offset``
        bus words (``nib=(signed,)``: as nibbles; ``blocks``: as :meth:`load`)."""
        self._instrs.append(("STORE", Buffer.ACT, ref, buf_addr, offset, count, 0, rows, nib, blocks))

    def sync(self):
        """Wait until the DMA and the engine are idle (before reusing a buffer region)."""
        self._instrs.append(("SYNC",))

    def conv(self, low: LoweredLayer):
        self.layers.append(low)
        self._instrs.append(("CONV", low.desc))

    def vec(self, low: LoweredLayer):
        self.layers.append(low)
        self._instrs.append(("VEC", low.desc))

    def stamp(self, trace: str, index: int):
        """Write the counters (:data:`~rmsmp.rtl.isa.STAMP_COUNTERS`) into stamp ``index`` of
        output region ``trace``."""
        self._instrs.append(("STAMP", trace, index))

    def trace(self, name: str, stamps: int):
        """Reserve an output region for ``stamps`` stamps (:func:`~rmsmp.rtl.isa.stamp_words`
        bus words each)."""
        self._outputs.append((name, stamps * stamp_words(self.cfg.pipelined), self.bus))

    def build(self) -> Program:
        n_instr = len(self._instrs) + 1
        ipw = INSTR_BITS // self.bus
        addr = n_instr * ipw
        where = {}
        self.blob_addr = {}
        data = []
        for name, entries, width in self._blobs:
            slot = self._blob_meta[name][1]
            where[name] = (addr, len(entries), width)
            self.blob_addr[name] = addr
            if slot:
                per = self.bus // slot
                w = [sum(e << (slot * j) for j, e in enumerate(entries[i:i + per]))
                     for i in range(0, len(entries), per)]
            else:
                w = [x for e in entries for x in split_words(e, width, self.bus)]
            data += w
            addr += len(w)
        outputs = {}
        for name, n, width in self._outputs:
            outputs[name] = (addr, n, width)
            addr += n * words_per_entry(width, self.bus)
        image = []
        for ins in self._instrs + [("END",)]:
            if ins[0] in ("CONV", "VEC"):
                c = encode(Instruction, {"op": Opcode[ins[0]], "arg": {ins[0].lower(): ins[1]}})
            elif ins[0] == "STAMP":
                c = encode(Instruction, {"op": Opcode.STAMP, "arg": {"dma": {
                    "buf": 0, "ext_addr": outputs[ins[1]][0] + ins[2] * stamp_words(self.cfg.pipelined),
                    "buf_addr": 0, "count": stamp_words(self.cfg.pipelined)}}})
            elif ins[0] in ("LOAD", "STORE"):
                _, buf, ref, buf_addr, offset, count, wbits, rows, nib, (reps, ext_step, buf_step) = ins
                ext, n, _ = where[ref] if ref in where else outputs[ref]
                n = n if count is None else count
                st = ins[0] == "STORE"
                banks = 0
                for r in range(reps):
                    banks |= self._banks(buf, buf_addr + r * buf_step, n, rows, st)
                c = encode(Instruction, {"op": Opcode[ins[0]], "arg": {"dma": {
                    "buf": buf, "ext_addr": ext + offset, "buf_addr": buf_addr, "count": n,
                    "reps": reps - 1, "ext_step": ext_step, "buf_step": buf_step,
                    "banks": banks, "wbits": wbits,
                    **(rows.fields() if rows else {}),
                    **({"nib": 1, "nib_signed": int(nib[0])} if nib else {})}}})
            elif ins[0] == "SYNC":
                c = encode(Instruction, {"op": Opcode.SYNC})
            else:
                c = encode(Instruction, {"op": Opcode.END})
            image += split_words(c, INSTR_BITS, self.bus)
        image += data
        image += [0] * (addr - len(image))
        return Program(self.cfg.config_hash, self.bus, image, 0, outputs, self.layers, config=self.cfg.to_dict())


def _width(sig) -> int:
    from amaranth import Shape
    return Shape.cast(sig.members["data"].shape).width


def layer_program(qm, layer, cfg, x_int, *, in_hw=(1, 1)) -> Program:
    """A complete program running one conv/linear ``layer`` on integer input ``x_int``
    ([C, H, W], or [C] for linear): load input, weights and parameters, convolve, store.
    The output is ``Program.outputs["y"]``."""
    C = cfg.columns
    xin = x_int if x_int.dim() == 3 else x_int.reshape(-1, 1, 1)
    xw = pack_activations(xin, C)
    out_base = len(xw)
    low = lower_conv(qm, layer, cfg, in_hw=in_hw, in_base=0, out_base=out_base)
    if out_base + low.out_channels_padded // C * low.desc["out_h"] * low.desc["out_w"] > cfg.act_depth:
        raise ValueError(f"layer {layer.name!r}: input + output need more than the {cfg.act_depth}-entry "
                         "activation buffer (compile_model bands a layer through it)")
    pb = ProgramBuilder(cfg)
    pb.load(Buffer.ACT, pb.blob("x", xw, 8 * C))
    for g in cfg.lane_groups:
        if len(low.weights[g.scheme]) > cfg.weight_depth:
            raise ValueError(f"layer {layer.name!r}: {len(low.weights[g.scheme])} weight words exceed the "
                             f"{cfg.weight_depth}-entry {g.scheme} buffer")
    pb.load_layer(low)
    pb.conv(low)
    pb.store("y", out_base, low.out_channels_padded // C * low.desc["out_h"] * low.desc["out_w"])
    prog = pb.build()
    prog.io = ProgramIO([TensorSlot("x", tuple(xin.shape), addr=pb.blob_addr["x"])],
                        [TensorSlot("y", (layer.rows, low.desc["out_h"], low.desc["out_w"]), bool(layer.out.signed))])
    return prog.seal()



def vec_program(qm, layer, cfg, inputs) -> Program:
    """A program running one ``add``/``maxpool``/``avgpool`` layer on integer ``inputs``
    (one [C, H, W] tensor, two for ``add``)."""
    C = cfg.columns
    ch, H, W = inputs[0].shape
    pb = ProgramBuilder(cfg)
    words = [pack_activations(t, C) for t in inputs]
    bases = [0]
    for w in words[:-1]:
        bases.append(bases[-1] + len(w))
    out_base = bases[-1] + len(words[-1])
    low = lower_vec(qm, layer, cfg, channels=ch, in_hw=(H, W), a_base=bases[0],
                    b_base=bases[1] if len(bases) > 1 else 0, out_base=out_base)
    for k, (w, b) in enumerate(zip(words, bases)):
        pb.load(Buffer.ACT, pb.blob(f"x{k}", w, 8 * C), b)
    pb.vec(low)
    oh, ow = low.out_hw
    pb.store("y", out_base, (low.out_channels_padded // C) * oh * ow)
    prog = pb.build()
    prog.io = ProgramIO([TensorSlot(f"x{k}", tuple(t.shape), addr=pb.blob_addr[f"x{k}"]) for k, t in enumerate(inputs)],
                        [TensorSlot("y", (ch, oh, ow), bool(layer.out.signed))])
    return prog.seal()
