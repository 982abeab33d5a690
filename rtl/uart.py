"""8N1 UART receiver and transmitter with ``lib.stream`` byte interfaces.

``divisor`` is clock cycles per bit (``clk_hz // baud``).  The receiver samples each bit in
its middle and reports a **framing error** (stop bit low) with a one-cycle ``error`` pulse
instead of a byte; a start bit that is gone at mid-bit is ignored as a glitch.
"""
from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["UartRx", "UartTx"]


class UartRx(wiring.Component):
    def __init__(self, divisor: int):
        if divisor < 4:
            raise ValueError(f"UART divisor must be at least 4 cycles per bit, got {divisor}")
        self._div = divisor
        super().__init__({"rx": In(1, init=1), "data": Out(stream.Signature(8, always_ready=True)),
                          "error": Out(1)})

    def elaborate(self, platform):
        m = Module()
        div = self._div
        sync_rx = Signal(2, init=0b11)               # two flops against metastability
        m.d.sync += sync_rx.eq(sync_rx << 1 | self.rx)
        rx = sync_rx[1]
        timer = Signal(range(div + 1))
        bit = Signal(range(9))
        shreg = Signal(8)
        m.d.sync += [self.data.valid.eq(0), self.error.eq(0)]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += timer.eq(div // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(rx):
                    m.next = "IDLE"                      # glitch
                with m.Else():
                    m.d.sync += [timer.eq(div - 1), bit.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [shreg.eq(rx << 7 | shreg >> 1), bit.eq(bit + 1), timer.eq(div - 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    with m.If(rx):
                        m.d.sync += [self.data.payload.eq(shreg), self.data.valid.eq(1)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += self.error.eq(1)
                        m.next = "BREAK"
            with m.State("BREAK"):                       # wait for the line to go idle again
                with m.If(rx):
                    m.next = "IDLE"
        return m


class UartTx(wiring.Component):
    def __init__(self, divisor: int):
        if divisor < 4:
            raise ValueError(f"UART divisor must be at least 4 cycles per bit, got {divisor}")
        self._div = divisor
        super().__init__({"tx": Out(1, init=1), "data": In(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        div = self._div
        timer = Signal(range(div))
        frame = Signal(10)                           # start, 8 data bits LSB first, stop
        left = Signal(range(11))
        m.d.comb += self.data.ready.eq(left == 0)
        with m.If(left == 0):
            with m.If(self.data.valid):
                m.d.sync += [frame.eq(1 << 9 | self.data.payload << 1), left.eq(10), timer.eq(0)]
        with m.Else():
            with m.If(timer == 0):
                m.d.sync += [self.tx.eq(frame[0]), frame.eq(frame >> 1), timer.eq(div - 1)]
            with m.Else():
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 1):
                    m.d.sync += left.eq(left - 1)
        return m
