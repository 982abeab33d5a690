"""Simulation check of the no-collision property the builds rely on.

``boards/toolchain.py``'s ``NO_COLLISION_BYPASS`` tells yosys that a synchronous read port not
transparent to a write port may read anything when both use one address in the same cycle
(block RAMs do not give the old data Amaranth promises, and the bypass that would costs
logic).  That is safe only if no such read is ever *used*.  :class:`PoisonCollisions` is
an elaboration platform whose ``get_memory`` (Amaranth's hook for a platform's own memory
mapping) builds every memory with each such read port poisoned: on a collision, the bits
being written come out inverted (neither the old nor, in general, the new data) until the
port reads again.  A design that simulates bit-exact against the golden model both ways
never consumes a collided read.  ``hits`` counts the collisions, per memory, so a test can
tell whether it exercised any::

    poison = PoisonCollisions()
    sim = Simulator(Fragment.get(top, poison))
    ...
    sum(ctx.get(c) for c in poison.hits.values())
"""
from __future__ import annotations

from amaranth import Cat, Elaboratable, Module, Signal, Value
from amaranth.hdl import MemoryInstance

__all__ = ["PoisonCollisions"]


class PoisonCollisions:
    """A stand-in platform for ``Fragment.get``/``verilog.convert``: memories as on a device
    that reads garbage on a read-during-write collision (see the module docstring)."""

    def __init__(self, counter_bits: int = 32):
        self._bits = counter_bits
        #: memory name → Signal counting its collided reads (one per read port and cycle)
        self.hits: dict[str, Signal] = {}

    def get_memory(self, memory):
        name = f"{memory.src_loc[0].rsplit('/', 1)[-1]}:{memory.src_loc[1]}"
        while name in self.hits:
            name += "'"
        self.hits[name] = Signal(self._bits, name="collisions")
        return _PoisonedMemory(memory, self.hits[name])


class _PoisonedMemory(Elaboratable):
    def __init__(self, memory, hits):
        self._mem = memory
        self._hits = hits

    def elaborate(self, platform):
        mem, m = self._mem, Module()
        inst = MemoryInstance(data=mem.data, attrs=mem.attrs, src_loc=mem.src_loc)
        writes = {}
        for wp in mem.write_ports:
            writes[wp] = inst.write_port(domain=wp.domain, addr=wp.addr, data=wp.data, en=wp.en)
        counts = []
        for rp in mem.read_ports:
            data = Value.cast(rp.data)
            raw = Signal(len(data))
            inst.read_port(domain=rp.domain, data=raw, addr=rp.addr, en=rp.en,
                           transparent_for=tuple(writes[wp] for wp in rp.transparent_for))
            opaque = [wp for wp in mem.write_ports if wp not in rp.transparent_for and wp.domain == rp.domain]
            if rp.domain == "comb" or not opaque:
                m.d.comb += data.eq(raw)
                continue
            mask = Signal(len(data))         # written bits of the colliding writes, held with the data
            hit = Signal()
            now = 0
            for wp in opaque:
                gran = len(Value.cast(wp.data)) // len(wp.en)
                lanes = Cat(wp.en[i].replicate(gran) for i in range(len(wp.en)))
                now |= Value.cast(lanes) & (wp.addr == rp.addr).replicate(len(data))
            with m.If(rp.en):
                m.d[rp.domain] += [mask.eq(now), hit.eq(now.any())]
            with m.Else():
                m.d[rp.domain] += hit.eq(0)
            m.d.comb += data.eq(raw ^ mask)
            counts.append((rp.domain, hit))
        if counts:
            m.d[counts[0][0]] += self._hits.eq(self._hits + sum(h for _, h in counts))
        m.submodules.mem = inst
        return m
