"""``SerialDevice``: a board running the accelerator, reached over its UART host link.

    dev = open_device("serial:/dev/ttyUSB0", board="ulx3s-85f")   # cfg read from the board's ID
    dev.load(program)          # checks the config hash, uploads the memory image (progress bar)
    y = dev.run(images)        # same API and results as the simulator device
    print(dev.stats)           # cycles and MAC beats from the board's counters

``load`` uploads the whole image once; ``run`` sends only the words that differ from what
the board holds (the inputs), starts the program, polls ``done`` and reads back only the
output regions.

A board remembers which program its memory holds in a resident record at the top of its
memory (:meth:`Program.resident_record`), written by the host after an upload and by the
board itself when it boots a program from its flash (``make bitstream PROGRAM=…``,
:mod:`rmsmp.boards.flash`).  ``load`` skips the upload when the program is resident;
``attach(program)`` (``open_device(…, program=…)``) runs the resident program and refuses,
saying what the board holds, when it is another.

Everything goes through :class:`rmsmp.host.link.LinkClient`, the code the board-top
simulation test drives through the UART pins.
"""
from __future__ import annotations

import time

import torch

from rmsmp.generator.layout import pack_activation_words
from rmsmp.generator.program import RESIDENT_WORDS, Program
from rmsmp.generator.runtime import Device, ProgramMismatchError, changed_runs
from rmsmp.rtl.csr import CsrAddr, Ctrl, Status

from .errors import RmsmpError
from .link import LinkClient, LinkError

__all__ = ["SerialDevice", "changed_runs"]


class SerialDevice(Device):
    """The accelerator of a board behind ``link``; ``cfg`` is checked against the board's ID
    register (a board built for another configuration is refused)."""

    def __init__(self, link: LinkClient, cfg, *, mem_words: int, progress: bool = True,
                 run_timeout: float = 600.0, poll_s: float = 0.01, name: str = "board", memory: str = "ideal",
                 boot_wait: float = 60.0):
        super().__init__(cfg)
        self.memory = "sdram" if memory == "sdram" else "ideal"      # for the cycle budget
        self.link = link
        self.mem_words = mem_words
        self.progress = progress
        self.run_timeout = run_timeout
        self.poll_s = poll_s
        self.name = name
        self._held: list[int] | None = None          # what the board's memory holds (as uploaded)
        self._expect_done = False                     # a run completed: STATUS.done stays set until a reset
        board_id = self._wait_for_board(boot_wait)
        if board_id != cfg.config_hash:
            raise ProgramMismatchError(
                f"{name} runs accelerator {board_id:08x}, not {cfg.config_hash:08x} ({cfg.describe()}): "
                f"build and program the bitstream for this config, or open the device with the board's config")

    def board_id(self) -> int:
        return self.link.read_csr(CsrAddr.ID)

    def _wait_for_board(self, boot_wait: float) -> int:
        """The board's ID, waiting up to ``boot_wait`` s for a board that copies a program from
        its flash after configuration (its link answers once the copy is done)."""
        t0 = time.perf_counter()
        while True:
            try:
                return self.board_id()
            except LinkError:
                if time.perf_counter() - t0 > boot_wait:
                    raise LinkError(f"{self.name} does not answer (waited {boot_wait:g} s, also for a boot from "
                                    f"its flash): is the bitstream loaded and the port right?") from None

    def resident(self) -> dict | None:
        """What the board's memory holds: {"fingerprint", "config_hash", "words", "prog_addr",
        "from_flash"} (the program's record, :meth:`Program.parse_resident`), or None."""
        st = self._status()
        if st.busy:
            raise LinkError(f"{self.name} is busy running a program; wait for it or reset the board")
        rec = Program.parse_resident(self.link.read_mem(Program.resident_addr(self.mem_words), RESIDENT_WORDS))
        if rec is not None:
            rec["from_flash"] = bool(st.boot_ok)
        return rec

    def _resident_is(self, program: Program, rec: dict | None) -> bool:
        return (rec is not None and rec["fingerprint"] == program.fingerprint()
                and rec["config_hash"] == program.config_hash and rec["words"] == len(program.image))

    def _use_resident(self, program: Program) -> None:
        """The board holds ``program``: what a run changes (inputs, outputs, workspace) is unknown."""
        held = list(program.image)
        io = program.io
        if io is not None:
            for slot in io.inputs:
                n = len(pack_activation_words(torch.zeros(slot.shape, dtype=torch.int64), self.cfg.columns,
                                              program.bus_width))
                held[slot.addr:slot.addr + n] = [None] * n
        for addr, n in program.regions(program.outputs):
            held[addr:addr + n] = [None] * n
        self._held = held
        self._expect_done = False
        self.program = program

    def attach(self, program: Program) -> None:
        """Run ``program`` as the board holds it (booted from its flash, or uploaded before),
        without uploading; :class:`ProgramMismatchError` saying what the board holds if it is
        another program."""
        self._check_program(program)
        st = self._status()
        rec = self.resident()
        if self._resident_is(program, rec):
            self._use_resident(program)
            return
        if rec is not None:
            held = (f"program {rec['fingerprint']:016x} ({rec['words']:,} words, "
                    f"{'booted from its flash' if rec['from_flash'] else 'uploaded'})")
        elif st.boot_bad:
            held = "no valid program: its flash holds one that failed its checks (config hash, checksum)"
        else:
            held = "no program (its flash has none, and none was uploaded)"
        raise ProgramMismatchError(f"{self.name} holds {held}, not program {program.fingerprint():016x}: "
                                   f"load(program) uploads it ({len(program.image):,} words), or write a flash image "
                                   f"built for it (make bitstream BOARD=… PROGRAM=…)")

    def _status(self):
        return Status.as_shape().from_bits(self.link.read_csr(CsrAddr.STATUS))

    def _upload(self, addr: int, words: list[int], what: str) -> None:
        bar = None
        if self.progress and len(words) > self.link.max_burst:
            from tqdm import tqdm
            bar = tqdm(total=len(words), unit="word", desc=f"{what} → {self.name}", leave=False)
        try:
            self.link.write_mem(addr, words, progress=bar.update if bar else None)
        finally:
            if bar:
                bar.close()

    def load(self, program: Program, *, upload: bool = True) -> None:
        """Check ``program`` against the board and upload its memory image (``upload=False``
        when the image is baked into the bitstream)."""
        self._check_program(program)
        board_id = self.board_id()
        if board_id != program.config_hash:
            raise ProgramMismatchError(f"program compiled for accelerator {program.config_hash:08x}; {self.name} "
                                       f"runs {board_id:08x}")
        if self._status().busy:
            raise LinkError(f"{self.name} is busy running a program; wait for it or reset the board")
        if upload and self._resident_is(program, self.resident()):
            self._use_resident(program)               # booted from flash, or uploaded before
            return
        self._held = None                             # until the upload has completed
        record = self.mem_words - len(program.image) >= RESIDENT_WORDS
        if upload:
            if record:                                # what the memory holds is unknown meanwhile
                self.link.write_mem(Program.resident_addr(self.mem_words), [0] * RESIDENT_WORDS)
            self._upload(0, list(program.image), "program")
            if record:
                self.link.write_mem(Program.resident_addr(self.mem_words), program.resident_record(self.mem_words))
        self._held = list(program.image)
        self._expect_done = False
        self.program = program

    def run_image(self, image: list[int], read: list[str] | None = None) -> list[int]:
        """Send the words of ``image`` that differ from the board's memory, run, and return
        ``image`` with the regions named in ``read`` (default: all outputs) read back."""
        if self.program is None:
            raise RmsmpError("no program loaded: call load(program) first")
        if len(image) > self.mem_words:
            raise RmsmpError(f"memory image of {len(image):,} words exceeds {self.name}'s {self.mem_words:,} words")
        t0 = time.perf_counter()
        if self._held is not None and self._expect_done and not self._status().done:
            self._held = None                         # reset since the last run: its memory is unknown
        held, self._held = self._held, None           # unknown while words are on the way
        runs = changed_runs(held, image) if held is not None else [(0, len(image))]
        sent = 0
        for a, b in runs:
            self._upload(a, image[a:b], "inputs" if held is not None else "program")
            sent += b - a
        self._held = list(image)
        self._expect_done = False
        self.link.write_csr(CsrAddr.PROG_ADDR, self.program.prog_addr)
        self.link.write_csr(CsrAddr.CTRL, Ctrl.const({"start": 1}).as_bits())
        t1 = time.perf_counter()
        while True:
            st = self._status()
            if st.done and not st.busy:
                break
            if not st.busy:                           # neither running nor finished: the board was reset
                self._held = None
                raise LinkError(f"{self.name} was reset during the run (STATUS shows it idle, not done): its "
                                f"memory is no longer known, so the next run uploads the whole image again")
            cycles = self.link.read_csr(CsrAddr.CYCLES)
            if self.budget and cycles > self.budget:
                raise self._fault(f"the program ran past its cycle budget of {self.budget:,} cycles (it still "
                                  f"runs: reset {self.name})", self.link.read_csr(CsrAddr.PC), cycles)
            if time.perf_counter() - t1 > self.run_timeout:
                raise LinkError(f"{self.name}: the program did not finish within {self.run_timeout} s "
                                f"(pc {self.link.read_csr(CsrAddr.PC):#x})")
            time.sleep(self.poll_s)
        t2 = time.perf_counter()
        if st.error:
            raise self._fault("the core stopped on an instruction it cannot run", self.link.read_csr(CsrAddr.PC),
                              self.link.read_csr(CsrAddr.CYCLES), stopped=True)
        self._expect_done = True
        stats = {"cycles": self.link.read_csr(CsrAddr.CYCLES), "mac_beats": self.link.read_csr(CsrAddr.MAC_BEATS)}
        out = list(image)
        # the program wrote its output regions (workspace included): unknown until read
        for addr, n in self.program.regions(self.program.outputs):
            self._held[addr:addr + n] = [None] * n
        names = read if read is not None else list(self.program.outputs)
        for addr, n in self.program.regions(names):
            out[addr:addr + n] = self._held[addr:addr + n] = self.link.read_mem(addr, n)
        if not self._status().done:                   # reset while the results were read: they may be zeros
            self._held = None
            raise LinkError(f"{self.name} was reset while its results were read; run again")
        stats.update({"wall_s": t2 - t1, "process_s": time.perf_counter() - t0, "uploaded_words": sent,
                      "link_retries": self.link.retried})
        self.stats = self._finish_stats(stats)
        return out
