"""A top-level wrapper that exposes a component's ports as plain module ports."""
from __future__ import annotations

from amaranth import Const, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["flat_toplevel"]


def flat_toplevel(component):
    """Wrap ``component`` so every non-constant port becomes a plain top-level port.

    Constant members (the ``ready`` of an ``always_ready`` stream) cannot be ports of a
    top-level module; port names keep Amaranth's ``path__to__member`` convention.
    """
    members, links = {}, []
    for path, member, value in component.signature.flatten(component):
        if isinstance(value, Const) or not hasattr(value, "shape"):
            continue
        name = "__".join(str(p) for p in path)
        members[name] = (In if member.flow == wiring.In else Out)(value.shape())
        links.append((name, member.flow, value))

    class Top(wiring.Component):
        def __init__(self):
            super().__init__(members)

        def elaborate(self, platform):
            m = Module()
            m.submodules.dut = component
            for name, flow, value in links:
                port = getattr(self, name)
                m.d.comb += (value.eq(port) if flow == wiring.In else port.eq(value))
            return m

    return Top()
