"""A corrupted program never runs: the file's checksum, the host's instruction check, the
cycle budget.  (The core's own checks are in tests/rtl/test_core_amaranth.py.)"""
import random
from copy import deepcopy

import pytest

from rmsmp.generator.config import AcceleratorConfig
from rmsmp.generator.program import CorruptProgramError, Program, split_words
from rmsmp.generator.runtime import Device
from rmsmp.generator.validate import ProgramError, check_program, cycle_budget, cycle_estimate, decode
from rmsmp.host.errors import RmsmpError
from rmsmp.rtl.isa import INSTR_BITS, Instruction, Opcode

CFG = AcceleratorConfig()


class _Loader(Device):
    """A device that only loads (the host's checks before any upload)."""
    mem_words = 1 << 20


def _resealed(p, image):
    bad = deepcopy(p)
    bad.image = list(image)
    return bad.seal()


def _set_instr(p, index, bits):
    w = INSTR_BITS // p.bus_width
    image = list(p.image)
    image[index * w:(index + 1) * w] = split_words(bits, INSTR_BITS, p.bus_width)
    return image


def test_a_compiled_program_checks_and_loads(prog):
    steps = check_program(prog, CFG)
    assert steps[-1].op == "END" and {"LOAD", "STORE", "CONV", "VEC"} <= {s.op for s in steps}
    _Loader(CFG).load(prog)
    assert cycle_budget(prog, CFG) > cycle_estimate(prog, CFG) > 0


def test_random_byte_flips_in_the_file_are_an_error_or_change_nothing(prog, tmp_path):
    path = tmp_path / "d.prog"
    prog.save(path)
    raw = path.read_bytes()
    rng = random.Random(1)
    errors = 0
    for trial in range(40):
        data = bytearray(raw)
        for _ in range(rng.choice((1, 4))):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        bad = tmp_path / f"bad{trial}.prog"
        bad.write_bytes(bytes(data))
        try:
            got = Program.load(bad)
        except RmsmpError:
            errors += 1
            continue
        assert got.digest() == prog.digest()           # a flip in the zip's metadata only
    assert errors >= 30


def test_truncated_files_are_refused(prog, tmp_path):
    path = tmp_path / "d.prog"
    prog.save(path)
    raw = path.read_bytes()
    for cut in (10, len(raw) // 2, len(raw) - 5):
        (tmp_path / "t.prog").write_bytes(raw[:cut])
        with pytest.raises(CorruptProgramError, match="not a readable rmsmp program"):
            Program.load(tmp_path / "t.prog")


def test_a_changed_image_is_refused_before_upload(prog):
    for word in (0, 3, len(prog.image) // 2):         # instructions, then data
        bad = deepcopy(prog)
        bad.image[word] ^= 0xFF
        with pytest.raises(CorruptProgramError, match="checksum mismatch"):
            _Loader(CFG).load(bad)


def test_a_header_without_layers_is_refused(prog, tmp_path):
    import json

    import numpy as np
    path = tmp_path / "d.prog"
    prog.save(path)
    z = np.load(path)
    head = json.loads(str(z["header"]))
    del head["layers"]
    with open(tmp_path / "h.prog", "wb") as f:
        np.savez_compressed(f, image=z["image"], header=json.dumps(head))
    with pytest.raises(CorruptProgramError, match="header is incomplete or corrupt.*layers"):
        Program.load(tmp_path / "h.prog")


def test_the_instruction_check_names_what_the_core_cannot_run(prog):
    """Programs whose checksum was recomputed after the damage (the file check passes)."""
    steps = decode(prog)
    w = INSTR_BITS // prog.bus_width
    xor4 = list(prog.image)
    for i in range(4):
        xor4[i] ^= 0xFFFFFFFF
    with pytest.raises(ProgramError, match="instruction 0 at word 0x0: illegal opcode 14"):
        check_program(_resealed(prog, xor4), CFG)
    sync = Instruction.const({"op": Opcode.SYNC}).as_bits()
    image = list(prog.image)
    for s in steps[:-1]:
        image[s.addr:s.addr + w] = split_words(sync, INSTR_BITS, prog.bus_width)
    with pytest.raises(ProgramError, match="no instruction loads input 'x0'"):
        check_program(_resealed(prog, image), CFG)
    load = next(s for s in steps if s.op == "LOAD" and s.fields["buf"] >= 2)
    bits = Instruction.const({"op": Opcode.LOAD, "arg": {"dma": {**load.fields, "buf": 2 + len(CFG.lane_groups)}}})
    with pytest.raises(ProgramError, match=f"instruction {load.index} \\(LOAD\\).*buffer code"):
        check_program(_resealed(prog, _set_instr(prog, load.index, bits.as_bits())), CFG)
    fix = 2 + next(k for k, g in enumerate(CFG.lane_groups) if g.format.kind == "fix" and g.format.bits == 8)
    bits = Instruction.const({"op": Opcode.LOAD, "arg": {"dma": {**load.fields, "buf": fix, "wbits": 3}}})
    with pytest.raises(ProgramError, match=f"instruction {load.index} \\(LOAD\\).*packed at 3 bits.*unpacks 2, 4"):
        check_program(_resealed(prog, _set_instr(prog, load.index, bits.as_bits())), CFG)
    rep = next(s for s in steps if s.op in ("LOAD", "STORE") and s.fields["reps"])     # a tensor's blocks
    bits = Instruction.const({"op": Opcode[rep.op], "arg": {"dma": {**rep.fields, "reps": 255}}})
    with pytest.raises(ProgramError, match=f"instruction {rep.index} \\({rep.op}\\).*\\(block 256 of 256\\)"):
        check_program(_resealed(prog, _set_instr(prog, rep.index, bits.as_bits())), CFG)
    conv = next(s for s in steps if s.op == "CONV")
    bits = Instruction.const({"op": Opcode.CONV, "arg": {"conv": {**conv.fields, "in_base": CFG.act_depth}}})
    with pytest.raises(ProgramError, match=f"instruction {conv.index} \\(CONV\\).*in_base"):
        check_program(_resealed(prog, _set_instr(prog, conv.index, bits.as_bits())), CFG)
    store = next(s for s in steps if s.op == "STORE")
    bits = Instruction.const({"op": Opcode.STORE, "arg": {"dma": {**store.fields, "ext_addr": len(prog.image)}}})
    with pytest.raises(ProgramError, match="outside the"):
        check_program(_resealed(prog, _set_instr(prog, store.index, bits.as_bits())), CFG)
    stamp = next(s for s in steps if s.op == "STAMP")                  # a stamp this core does not write
    bits = Instruction.const({"op": Opcode.STAMP, "arg": {"dma": {**stamp.fields, "count": 1}}})
    with pytest.raises(ProgramError, match=f"instruction {stamp.index} \\(STAMP\\).*a stamp of 1 words; this "
                                           f"core writes 5 \\(cycles, dma_busy, engine_busy, both_busy, mac_beats\\)"):
        check_program(_resealed(prog, _set_instr(prog, stamp.index, bits.as_bits())), CFG)
    end = steps[-1]
    with pytest.raises(ProgramError, match="no END"):
        check_program(_resealed(prog, prog.image[:end.addr]), CFG)
    with pytest.raises(ProgramError):                 # and the device refuses it at load
        _Loader(CFG).load(_resealed(prog, xor4))



def test_decode_reads_every_field_as_the_isa_layouts_do(prog):
    """The checker's fast field extraction equals Amaranth's view of the same bits."""
    from rmsmp.generator.validate import ARG_OFFSET, _word_bits
    for s in decode(prog):
        ins = Instruction.as_shape().from_bits(_word_bits(prog.image, s.addr, prog.bus_width))
        view = {"LOAD": ins.arg.dma, "STORE": ins.arg.dma, "STAMP": ins.arg.dma, "CONV": ins.arg.conv,
                "VEC": ins.arg.vec}.get(s.op)
        for name, v in s.fields.items():
            want = int(getattr(view, name)) if name != "kind" else int(_word_bits(prog.image, s.addr, prog.bus_width)
                                                                         >> ARG_OFFSET) & 3
            assert v == want, (s, name)
