"""Control and status registers of the core, defined once for the RTL and the host.

The host side (the UART bridge and :class:`rmsmp.host.serial_device.SerialDevice`, the
cocotb benches) addresses registers by :class:`CsrAddr` and decodes them with the same
:class:`Ctrl` / :class:`Status` layouts.  Reads are combinational; a write to ``CTRL`` with ``start``
set starts the program at ``PROG_ADDR``.
"""
from amaranth import Module, Signal
from amaranth.lib import data, enum, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["CsrAddr", "Ctrl", "Status", "csr_signature", "CsrBank"]


class CsrAddr(enum.Enum, shape=4):
    ID = 0            # R: configuration hash of this accelerator
    CTRL = 1          # W: Ctrl
    STATUS = 2        # R: Status
    PROG_ADDR = 3     # RW: word address of the first instruction
    CYCLES = 4        # R: cycles of the last/current program
    MAC_BEATS = 5     # R: MAC-array beats of the last/current program
    PC = 6            # R: address of the next instruction


class Ctrl(data.Struct):
    start: 1
    _reserved: 31


class Status(data.Struct):
    busy: 1
    done: 1
    error: 1          # the last program stopped at an instruction it could not run (the one before PC)
    boot_ok: 1        # a program was copied from the board's flash after configuration (rtl/flash_boot.py)
    boot_bad: 1       # the flash held a program that failed its checks (not copied, or not all of it)
    _reserved: 27


def csr_signature() -> wiring.Signature:
    """Host side (master) of the CSR bus."""
    return wiring.Signature({"addr": Out(CsrAddr), "we": Out(1), "wdata": Out(32), "rdata": In(32)})


class CsrBank(wiring.Component):
    """CSR bus → the core's control ports."""

    bus: In(csr_signature())
    start: Out(1)
    prog_addr: Out(32)
    busy: In(1)
    done: In(1)
    error: In(1)
    id: In(32)
    cycles: In(32)
    mac_beats: In(32)
    pc: In(32)
    boot_ok: In(1)
    boot_bad: In(1)

    def __init__(self, *, addr_bits: int = 32):
        """``addr_bits``: bits of ``PROG_ADDR`` kept (the memory's address width; the rest read 0)."""
        if not 1 <= addr_bits <= 32:
            raise ValueError(f"addr_bits must be 1..32, not {addr_bits}")
        self._addr_bits = addr_bits
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        b = self.bus
        prog_addr = Signal(self._addr_bits)
        m.d.comb += self.prog_addr.eq(prog_addr)
        regs = {CsrAddr.ID: self.id, CsrAddr.PROG_ADDR: self.prog_addr, CsrAddr.CYCLES: self.cycles,
                CsrAddr.MAC_BEATS: self.mac_beats, CsrAddr.PC: self.pc}
        with m.Switch(b.addr):
            for a, sig in regs.items():
                with m.Case(a):
                    m.d.comb += b.rdata.eq(sig)
            with m.Case(CsrAddr.STATUS):
                st = Status(b.rdata)
                m.d.comb += [st.busy.eq(self.busy), st.done.eq(self.done), st.error.eq(self.error),
                                     st.boot_ok.eq(self.boot_ok), st.boot_bad.eq(self.boot_bad)]
        with m.If(b.we):
            with m.Switch(b.addr):
                with m.Case(CsrAddr.PROG_ADDR):
                    m.d.sync += prog_addr.eq(b.wdata)
                with m.Case(CsrAddr.CTRL):
                    m.d.comb += self.start.eq(Ctrl(b.wdata).start)
        return m
