"""Flash images (issue 26) on the host side: the boot image's header and frames, the whole
flash's layout, the resident record, and the serial device's use of a resident program —
on the fake board of test_link_faults, which answers frames as the bridge does.  (The
gateware's boot copy is tested in Verilator: tests/rtl/test_flash_boot_verilator.py.)"""
import struct
from dataclasses import replace

import pytest
from test_link_faults import MEM_WORDS, FakeBoard, _device, _images

from rmsmp.boards.build import build_bitstream
from rmsmp.boards.flash import boot_image, boot_seconds, flash_image
from rmsmp.generator.catalog import BoardError, board
from rmsmp.generator.config import AcceleratorConfig
from rmsmp.generator.lower import CompileError
from rmsmp.generator.program import RESIDENT_WORDS, Program
from rmsmp.generator.runtime import ProgramMismatchError
from rmsmp.host.link import crc16
from rmsmp.rtl.bridge import MAX_BURST, REQUEST_BYTES, SYNC_REQ, Cmd, RequestHeader
from rmsmp.rtl.flash_boot import FLASH_END, FLASH_MAGIC, HEADER_BYTES, FlashHeader

CFG = AcceleratorConfig()


def frames(data: bytes) -> list[tuple]:
    """(cmd, addr, words) of each request frame in ``data``, each CRC checked."""
    out, i = [], 0
    while i < len(data):
        assert data[i] == SYNC_REQ
        h = RequestHeader.from_bits(int.from_bytes(data[i + 1:i + 1 + REQUEST_BYTES], "little"))
        n = int(h.len)
        end = i + 1 + REQUEST_BYTES + 4 * n
        assert struct.unpack(">H", data[end:end + 2])[0] == crc16(data[i + 1:end])
        out.append((Cmd(int(h.cmd)), int(h.addr), list(struct.unpack(f"<{n}I", data[i + 1 + REQUEST_BYTES:end]))))
        i = end + 2
    return out


def test_the_boot_image_is_a_header_and_the_frames_of_the_memory_image(prog):
    boot = boot_image(prog, MEM_WORDS)
    h = FlashHeader.from_bits(int.from_bytes(boot[:HEADER_BYTES], "little"))
    assert int(h.magic).to_bytes(4, "little") == FLASH_MAGIC
    assert int(h.config_hash) == prog.config_hash
    assert boot[-1] == FLASH_END
    fr = frames(boot[HEADER_BYTES:-1])
    assert all(c == Cmd.MEM_WRITE and len(w) <= MAX_BURST for c, _, w in fr)
    mem = [None] * MEM_WORDS
    for _, a, w in fr:
        mem[a:a + len(w)] = w
    assert mem[:len(prog.image)] == [int(x) for x in prog.image]
    assert fr[-1][1] == MEM_WORDS - RESIDENT_WORDS
    rec = Program.parse_resident(fr[-1][2])
    assert rec["fingerprint"] == prog.fingerprint() and rec["words"] == len(prog.image)


def test_the_resident_record_names_its_program_and_rejects_damage(prog):
    rec = prog.resident_record(MEM_WORDS)
    assert Program.parse_resident(rec)["config_hash"] == prog.config_hash
    for i in range(7):
        bad = list(rec)
        bad[i] ^= 1 << (i + 3)
        assert Program.parse_resident(bad) is None
    assert Program.parse_resident([0] * RESIDENT_WORDS) is None
    with pytest.raises(CompileError, match="no room for the 8-word resident record"):
        prog.resident_record(len(prog.image) + 4)


def test_the_flash_holds_the_bitstream_then_the_program_at_the_boards_offset(prog):
    spec = board("icebreaker")
    boot = boot_image(prog, spec.memory_words())
    bit = bytes(range(256)) * 400
    img = flash_image(spec, bit, boot)
    assert img[:len(bit)] == bit and set(img[len(bit):spec.flash_offset]) == {0xFF}
    assert img[spec.flash_offset:] == boot
    with pytest.raises(BoardError, match="runs past the program's flash offset"):
        flash_image(spec, b"\0" * (spec.flash_offset + 1), boot)
    with pytest.raises(BoardError, match="does not fit"):
        flash_image(replace(spec, flash_bytes=spec.flash_offset + 100), bit, boot)
    with pytest.raises(BoardError, match="cannot boot a program"):
        flash_image(replace(spec, flash_offset=0), bit, boot)
    # boot time at the board's clock: about (16·half + 2) cycles a byte
    s = boot_seconds(prog, spec, boot)
    assert len(boot) * 18 / spec.clock_hz < s < len(boot) * 25 / spec.clock_hz


def test_a_build_refuses_a_program_its_memory_cannot_boot_before_running_any_tool(tmp_path):
    cfg = AcceleratorConfig.for_board("icebreaker")
    big = Program(cfg.config_hash, 32, [0] * board("icebreaker").memory_words(), config=cfg.to_dict())
    with pytest.raises(BoardError, match="cannot boot this program.*no room"):
        build_bitstream("icebreaker", program=big, out_dir=tmp_path, quiet=True)
    assert not any(tmp_path.iterdir())


def _booted(prog) -> tuple:
    """A fake board whose memory was filled by the frames of the program's boot image (as the
    bridge writes what the flash boot unit feeds it), and a device on it."""
    dev, t = _device(prog)
    for _, a, w in frames(boot_image(prog, MEM_WORDS)[HEADER_BYTES:-1]):
        t.board.mem[a:a + len(w)] = w
    return dev, t


def test_a_booted_program_runs_without_an_upload_and_equals_an_uploaded_one(prog):
    images = _images(prog, 2, 0)
    ref, _ = _device(prog)
    ref.load(prog)
    want = [ref.run_image(img) for img in images]
    dev, t = _booted(prog)
    assert dev.resident()["fingerprint"] == prog.fingerprint()
    dev.attach(prog)
    got = [dev.run_image(img) for img in images]
    assert got == want
    assert dev.stats["uploaded_words"] < len(prog.image) // 8      # the inputs, not the program


def test_load_skips_the_upload_of_a_resident_program_and_a_new_session_sees_it(prog):
    dev, t = _device(prog)
    dev.load(prog)                                             # uploads, then writes the record
    again, _ = _device(prog)
    again.link = dev.link                                      # a second host session on the same board
    writes = []
    orig = dev.link.write_mem
    dev.link.write_mem = lambda a, w, progress=None: (writes.append((a, len(list(w)))), orig(a, w, progress))
    again.load(prog)
    assert writes == []                                        # resident: nothing uploaded


def test_attach_refuses_another_program_naming_what_the_board_holds(prog):
    dev, t = _booted(prog)
    other = Program(**{**prog.__dict__, "image": list(prog.image[:-1]) + [prog.image[-1] ^ 1], "checksum": None})
    with pytest.raises(ProgramMismatchError, match=f"holds program {prog.fingerprint():016x}.*booted|uploaded"):
        dev.attach(other)
    empty, _ = _device(prog)
    with pytest.raises(ProgramMismatchError, match="holds no program"):
        empty.attach(prog)


def test_an_upload_invalidates_the_record_until_it_completes(prog):
    board_ = FakeBoard(prog)
    dev, t = _device(prog)
    t.board = board_
    dev.load(prog)
    assert Program.parse_resident(board_.mem[-RESIDENT_WORDS:])["fingerprint"] == prog.fingerprint()
    # an interrupted upload of another program leaves no record naming either
    other = Program(**{**prog.__dict__, "image": list(prog.image[:-1]) + [prog.image[-1] ^ 1], "checksum": None})
    calls = {"n": 0}
    orig = dev.link.transact

    def failing(cmd, addr, length, words=()):
        calls["n"] += 1
        if calls["n"] == 8:                         # (ID, STATUS, STATUS + record, invalidate, uploads…)
            raise RuntimeError("link lost")
        return orig(cmd, addr, length, words)
    dev.link.transact = failing
    with pytest.raises(RuntimeError):
        dev.load(other)
    assert Program.parse_resident(board_.mem[-RESIDENT_WORDS:]) is None


def test_which_boards_build_the_boot_unit_and_what_it_costs_the_core():
    """The ULX3S always boots from its flash (the unit inside its board-top allowance: the
    same core); the iCEBreaker only when asked, with a core that leaves the unit room."""
    ulx, ice = board("ulx3s-85f"), board("icebreaker")
    assert ulx.boots_from_flash() and not ice.boots_from_flash() and ice.boots_from_flash(True)
    assert ice.core_budget(flash_boot=True)["LUT"] == ice.core_budget()["LUT"] - ice.flash_boot_luts
    full, room = AcceleratorConfig.for_board("icebreaker"), AcceleratorConfig.for_board("icebreaker", flash_boot=True)
    assert full.peak_macs_per_cycle > room.peak_macs_per_cycle >= 4 and room.columns >= 2
    with pytest.raises(BoardError, match="cannot boot a program from its flash"):
        replace(ice, flash_offset=0).boots_from_flash(True)
    assert ulx.flash_boot(100e6)["half"] == 2 and ulx.flash_boot(12.5e6)["half"] == 1   # SCK ≤ 25 MHz
    assert ulx.flash_boot(100e6)["wake_cycles"] == 1000                                # 10 µs


@pytest.mark.parametrize("name", ["ulx3s-85f", "icebreaker"])
def test_the_board_design_wires_the_flash_pins(name):
    """The boot unit on the board's flash pins: on the ECP5 its clock through USRMCLK (the
    configuration clock pin), on the iCE40 its own pin; write-protect and hold held off."""
    from rmsmp.boards.design import BoardDesign, platform
    spec = board(name)
    cfg = AcceleratorConfig(lane_groups=(("pot4", 1), ("fix8", 1)), columns=2, act_depth=256, weight_depth=64,
                            acc_depth=16, clock_hz=spec.clock_hz, vector_ops=("add",), pipelined=spec.family == "ecp5")
    design = BoardDesign(spec, cfg, flash_boot=True)
    files = platform(spec).prepare(design, name="t").files
    il = files["t.il"]
    if spec.family == "ecp5":
        assert "USRMCLK" in il
        for pin in ("R2", "W2", "V2", "W1", "Y2"):           # cs, copi, cipo, hold, wp
            assert f'SITE "{pin}"' in files["t.lpf"]
    else:
        pcf = files["t.pcf"]
        assert all(f" {p}\n" in pcf for p in ("16", "15", "14", "17", "12", "13"))
    assert "boot" in il
    without = platform(spec).prepare(BoardDesign(spec, cfg, flash_boot=False), name="t").files["t.il"]
    assert "USRMCLK" not in without and "FlashBoot" not in without and "spi_flash" not in without


def test_a_build_with_a_program_writes_the_flash_image_and_names_its_offset(tmp_path, monkeypatch, prog):
    """``make bitstream BOARD=ulx3s-85f PROGRAM=…`` (the tools faked: a bitstream and nextpnr's
    report): flash.bin = the bitstream, erased bytes, the boot image at the board's offset;
    report.json names the offset, the files and the boot time; the flash boot unit is in the
    design; a program compiled for another core is refused before any tool runs."""
    import json

    import rmsmp.boards.build as build
    designs = []

    def fake_run(spec, design, out, env, synth_opts, pnr_opts=(), script_after_synth=None, **_):
        d = design()
        d._MustUse__silence = d.top._MustUse__silence = True       # (not elaborated: the tools are faked)
        designs.append((d.flash, d.memory))
        (out / "rmsmp_top.bit").write_bytes(b"\x5a" * 5000)
        (out / "rmsmp_top.report.json").write_text(json.dumps({
            "fmax": {"clocking.pll_clk": {"achieved": 1.2 * clock, "constraint": clock}}, "critical_paths": []}))
        return 0, ""
    monkeypatch.setattr(build, "run_build", fake_run)
    spec = board("ulx3s-85f")
    clock = spec.clock_hz / 1e6                                   # (the fake build meets it)
    p = Program(**{**prog.__dict__})
    p.config = {**prog.config, "clock_hz": spec.clock_hz}
    cfg = AcceleratorConfig.from_dict(p.config)
    p.config_hash = cfg.config_hash
    p.checksum = p.digest()
    r = build_bitstream("ulx3s-85f", program=p, out_dir=tmp_path, quiet=True)
    assert designs[0][0] is not None and designs[0][1] == "sdram"
    fl = json.loads((tmp_path / "report.json").read_text())["flash"]
    assert fl["program_offset"] == spec.flash_offset == r["flash"]["program_offset"]
    img = (tmp_path / "flash.bin").read_bytes()
    boot = (tmp_path / "program.bin").read_bytes()
    assert img[:5000] == b"\x5a" * 5000 and set(img[5000:spec.flash_offset]) == {0xFF}
    assert img[spec.flash_offset:] == boot == boot_image(p, spec.memory_words())
    assert fl["program_fingerprint"] == f"{p.fingerprint():016x}" and 0 < fl["boot_s"] < 1
    assert "Flash image" in (tmp_path / "report.md").read_text()
    other = Program(**{**p.__dict__, "config_hash": p.config_hash ^ 1})
    designs.clear()
    with pytest.raises(BoardError, match="program compiled for accelerator"):
        build_bitstream("ulx3s-85f", cfg, program=other, out_dir=tmp_path / "o", quiet=True)
    assert designs == []
