"""Boot from flash (issue 26): the board top with the Verilog SPI flash model in Verilator.

The flash holds a "bitstream" and, at the board's program offset, the boot image of the
compiled digits network (:func:`rmsmp.boards.flash.boot_image`).  After reset the board
copies it into its memory (the iCEBreaker's single-port SPRAM backend); the host's serial
device code then sees the program resident and runs it without an upload, bit-exact vs golden.
A flash image with one byte flipped, or built for another accelerator, is reported invalid
(STATUS.boot_bad) and the program is refused; an erased flash reports no program.  The flash
model checks the chip's timing (SCK rate, wake-up time, chip-select gaps) throughout."""
import json
from dataclasses import replace

import pytest
import torch

from rmsmp.boards.flash import boot_cycles, boot_image, flash_image
from rmsmp.boards.top import BoardTop
from rmsmp.generator.catalog import board
from rmsmp.generator.config import AcceleratorConfig
from rmsmp.generator.program import Program
from rmsmp.host import compile_model
from rmsmp.rtl.flash_boot import HEADER_BYTES, boot_timing
from rmsmp.sim import golden
from rmsmp.sim.top import FLASH_MODEL, FlashBoardTop
from rmsmp.sim.verilator import VerilatorBuild

pytestmark = pytest.mark.slow      # a board top compiled and run in Verilator

CFG = AcceleratorConfig(lane_groups=(("pot4", 2), ("fix8", 2)), columns=4,
                        act_depth=512, weight_depth=256, acc_depth=64)
DIV = 8                           # clock cycles per UART bit (10 ns clock)
CLOCK_HZ = 100e6                  # the bench's 10 ns clock
OFFSET = 0x1000                   # the program's offset in the (1 MiB) model flash
FLASH_BYTES = 1 << 20
#: the reader at SCK = clock / 2 (50 MHz: the READ command's limit, which the model checks;
#: a board's own build keeps SCK ≤ 25 MHz) and the wake-up wait of 10 µs at this clock
FLASH = {"offset": OFFSET, "half": 1, "wake_cycles": boot_timing(CLOCK_HZ)[1]}
#: word ranges of the copied image read back over the link (start, middle, end)
READ_BACK = 384


@pytest.fixture(scope="module")
def setup(digits_q, digits, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("flash")
    _, _, xte, yte = digits
    prog = compile_model(digits_q, CFG)
    prog.save(tmp / "prog.npz")
    torch.save(xte[:2], tmp / "images.pt")
    mem_words = 1 << (len(prog.image) + 64).bit_length()
    top = BoardTop(CFG, mem_words=mem_words, divisor=DIV, link_timeout=4096, single_port=True, flash=FLASH)
    model = VerilatorBuild(FlashBoardTop(top, clk_ns=10, flash_bytes=FLASH_BYTES), "rmsmp_flash_board",
                           extra_sources=[FLASH_MODEL])
    model.build(log_file=tmp / "build.log")
    spec = replace(board("icebreaker"), flash_offset=OFFSET, flash_bytes=FLASH_BYTES)
    bitstream = bytes(range(256)) * 8                 # stands in for the bitstream below the offset
    return {"tmp": tmp, "prog": prog, "images": xte[:2], "mem_words": mem_words, "model": model,
            "spec": spec, "bitstream": bitstream, "qm": digits_q}


def _boot(s, name: str, flash: bytes, read_back: bool = False) -> dict:
    tmp = s["tmp"] / name
    tmp.mkdir()
    hexfile = tmp / "flash.hex"
    hexfile.write_text("@0\n" + "\n".join(f"{b:02x}" for b in flash) + "\n")
    result = tmp / "result.json"
    s["model"].run("rmsmp.sim.benches.flash_boot",
                   {"program": str(s["tmp"] / "prog.npz"), "config": CFG.to_dict(),
                    "images": str(s["tmp"] / "images.pt"), "baud": 100_000_000 // DIV, "mem_words": s["mem_words"],
                    "read_back": _ranges(len(s["prog"].image)) if read_back else [], "result": str(result)},
                   plusargs=[f"+flash={hexfile}"], test_dir=tmp, log_file=tmp / "sim.log")
    r = json.loads(result.read_text())
    assert r["flash_errors"] == 0, f"flash timing violated: {r['flash_errors']:04b}"
    return r


def _ranges(n: int) -> list:
    return [[a, min(READ_BACK, n - a)] for a in sorted({0, max(0, n // 2 - READ_BACK // 2), max(0, n - READ_BACK)})]


def test_board_boots_the_digits_network_from_flash_and_runs_it_bit_exact(setup):
    s = setup
    prog = s["prog"]
    boot = boot_image(prog, s["mem_words"])
    r = _boot(s, "good", flash_image(s["spec"], s["bitstream"], boot), read_back=True)
    assert (r["boot_ok"], r["boot_bad"]) == (1, 0)
    for (a, n), words in zip(_ranges(len(prog.image)), r["memory"]):
        assert words == [int(w) for w in prog.image[a:a + n]], f"copy differs in words {a}..{a + n}"
    # (the model counts a byte when it drives its first bit: the one after the last is begun)
    assert r["flash_reads"] == len(boot) + 1                     # read once, nothing past its end
    res = r["resident"]
    assert res["from_flash"] and res["fingerprint"] == prog.fingerprint() and res["words"] == len(prog.image)
    y = torch.tensor(r["logits"], dtype=torch.float64)
    assert torch.equal(y, golden(s["qm"], s["images"]))
    assert 0 < r["uploaded_words"] < len(prog.image) // 4         # only the inputs went over the link
    est = boot_cycles(len(boot), FLASH, frames=-(-len(prog.image) // 256) + 1, words=len(prog.image) + 8)
    print(f"\nflash boot: {len(boot):,} bytes in {r['boot_cycles']:,} cycles "
          f"({r['boot_cycles'] / len(boot):.2f} cycles/byte at SCK = clock/{2 * FLASH['half']}; estimate {est:,})")
    assert abs(r["boot_cycles"] - est) <= 0.03 * est


def test_a_corrupted_flash_image_is_reported_and_not_run(setup):
    s = setup
    boot = bytearray(boot_image(s["prog"], s["mem_words"]))
    boot[HEADER_BYTES + len(boot) // 8] ^= 0x04                  # one bit in a frame's payload
    r = _boot(s, "corrupt", flash_image(s["spec"], s["bitstream"], bytes(boot)))
    assert (r["boot_ok"], r["boot_bad"]) == (0, 1)
    assert r["resident"] is None
    assert "failed its checks" in r["refused"] and "logits" not in r


def test_a_flash_image_for_another_accelerator_is_refused(setup):
    s = setup
    other = Program(**{**s["prog"].__dict__, "config_hash": s["prog"].config_hash ^ 1})
    r = _boot(s, "other", flash_image(s["spec"], s["bitstream"], boot_image(other, s["mem_words"])))
    assert (r["boot_ok"], r["boot_bad"]) == (0, 1)
    assert r["flash_reads"] == 4 + 1 + 1                         # stopped at the hash's first byte
    assert "failed its checks" in r["refused"]


def test_an_erased_flash_boots_no_program(setup):
    s = setup
    r = _boot(s, "erased", s["bitstream"])
    assert (r["boot_ok"], r["boot_bad"]) == (0, 0)
    assert r["flash_reads"] == 1 + 1                             # the first byte: no magic
    assert "no program" in r["refused"]
