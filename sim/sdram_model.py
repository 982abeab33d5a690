"""Behavioural model of one x16 SDR SDRAM chip that checks every command it receives:
init sequence, mode register, open/closed banks, tRCD/tRP/tRC/tRAS/tWR, read-burst
truncation, bus contention, refresh interval.  Used by the Amaranth tests of the SDRAM
controller and by the cocotb bench of the SDRAM-backed board top.

Cycle ``k`` is the chip's ``k``-th clock edge; ``edge`` takes the pins it samples there.
The chip drives ``drive[k]`` on dq from edge ``k − 1`` to edge ``k`` (CAS latency ``cl``:
the first half of a READ at edge ``r`` is ``drive[r + cl]``).
"""
from rmsmp.rtl.sdram import Cmd

__all__ = ["SdramModel", "split", "NAMES"]

NAMES = {v: k for k, v in vars(Cmd).items() if isinstance(v, tuple)}


class SdramModel:
    """Cycle model of one x16 SDR SDRAM: commands are taken at the clock edge (``edge``)."""

    def __init__(self, g, t):
        self.g, self.t = g, t
        self.mem = {}
        self.open = {}                    # bank -> (row, cycle of ACTIVE)
        self.last = {"PRECHARGE": -99, "REFRESH": -99, "ACTIVE": {}, "write_end": -99, "read": -99}
        self.refreshes = []
        self.mode = None
        self.drive = {}                   # cycle -> halfword on dq for the edge ending that cycle
        self.pending_write = None
        self.chip_drives = set()          # cycles whose dq the chip drives (read data)
        self.errors = []

    def err(self, cyc, msg):
        self.errors.append(f"cycle {cyc}: {msg}")

    def edge(self, cyc, cmd, a, ba, dq, dq_oe, dqm):
        t = self.t
        if cyc in self.chip_drives:
            self.chip_drives.discard(cyc)
            if dq_oe:
                self.err(cyc, "bus contention: the controller drives dq while the chip outputs read data")
        if self.pending_write is not None:        # second half of a write burst
            key = self.pending_write
            if not dq_oe:
                self.err(cyc, "second write half not driven")
            self.mem[key] = dq
            self.pending_write = None
            self.last["write_end"] = cyc
        name = NAMES[cmd]
        if name == "NOP":
            return
        if cyc < t.init_cycles:
            self.err(cyc, f"{name} before the power-up wait")
        if cyc - self.last["REFRESH"] < t.rc:
            self.err(cyc, f"{name} {cyc - self.last['REFRESH']} cycles after REFRESH (tRC {t.rc})")
        if name in ("ACTIVE", "REFRESH", "MODE") and cyc - self.last["PRECHARGE"] < t.rp:
            self.err(cyc, f"{name} within tRP of PRECHARGE")
        if name == "MODE":
            if self.open or len(self.refreshes) < 2:
                self.err(cyc, "MODE before precharge-all and two refreshes")
            self.mode = a
            if a & 0b111 != 0b001 or (a >> 4) & 0b111 != t.cl:
                self.err(cyc, f"mode register {a:#x}: want burst length 2, CL {t.cl}")
        elif name == "REFRESH":
            if self.open:
                self.err(cyc, f"REFRESH with banks open {self.open}")
            self.refreshes.append(cyc)
            self.last["REFRESH"] = cyc
        elif name == "PRECHARGE":
            banks = list(self.open) if a & (1 << 10) else [ba]
            for b in banks:
                if b in self.open and cyc - self.open[b][1] < t.ras:
                    self.err(cyc, f"PRECHARGE bank {b} within tRAS")
            if cyc - self.last["write_end"] <= t.wr - 1:
                self.err(cyc, f"PRECHARGE {cyc - self.last['write_end']} cycles after write data (tWR {t.wr})")
            if cyc - self.last["read"] < 2:
                self.err(cyc, "PRECHARGE truncates a read burst")
            for b in banks:
                self.open.pop(b, None)
            self.last["PRECHARGE"] = cyc
        elif name == "ACTIVE":
            if self.mode is None:
                self.err(cyc, "ACTIVE before the mode register is set")
            if ba in self.open:
                self.err(cyc, f"ACTIVE on open bank {ba}")
            if cyc - self.last["ACTIVE"].get(ba, -99) < t.rc:
                self.err(cyc, "ACTIVE to ACTIVE within tRC")
            self.open[ba] = (a, cyc)
            self.last["ACTIVE"][ba] = cyc
        elif name in ("READ", "WRITE"):
            if ba not in self.open:
                self.err(cyc, f"{name} to closed bank {ba}")
                return
            row, t_act = self.open[ba]
            if cyc - t_act < t.rcd:
                self.err(cyc, f"{name} within tRCD of ACTIVE")
            col = a & ((1 << self.g.col_bits) - 1)
            if col & 1:
                self.err(cyc, f"{name} at odd column {col}")
            if dqm:
                self.err(cyc, f"DQM {dqm:#b} set during {name}")
            if name == "WRITE":
                if not dq_oe:
                    self.err(cyc, "WRITE without driving dq")
                self.mem[(ba, row, col)] = dq
                self.pending_write = (ba, row, col + 1)
            else:
                self.last["read"] = cyc
                self.drive[cyc + t.cl] = self.mem.get((ba, row, col), 0xDEAD)
                self.drive[cyc + t.cl + 1] = self.mem.get((ba, row, col + 1), 0xBEEF)
                self.chip_drives.update((cyc + t.cl, cyc + t.cl + 1))


def split(g, w):
    col = (w & ((1 << (g.col_bits - 1)) - 1)) << 1
    bank = (w >> (g.col_bits - 1)) & ((1 << g.bank_bits) - 1)
    row = w >> (g.col_bits - 1 + g.bank_bits)
    return bank, row, col
