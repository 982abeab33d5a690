"""The user API: compile a quantized model for an accelerator, open a device to run it on."""
from __future__ import annotations

from rmsmp.generator.catalog import BOARDS
from rmsmp.generator.catalog import board as board_spec
from rmsmp.generator.compiler import compile_model as _compile
from rmsmp.generator.config import AcceleratorConfig
from rmsmp.generator.program import Program
from rmsmp.generator.runtime import Device

from .errors import RmsmpError
from .quant.qmodel import QuantizedModel

__all__ = ["compile_model", "open_device"]


def compile_model(qm: QuantizedModel, cfg: AcceleratorConfig, input_shape=None, *, batch: int = 1,
                  memory_words: int | None = None) -> Program:
    """Compile a :class:`QuantizedModel` for an accelerator config into a ``Program``.

    ``input_shape`` ([C, H, W]) defaults to the calibration images' shape.  ``batch``: images
    a run takes (with streamed weights each weight set loads once a batch); ``memory_words``:
    the device memory the program must fit (``dev.mem_words``).
    """
    shape = input_shape or qm.meta.get("input_shape")
    if not shape:
        raise RmsmpError("compile_model: give input_shape (the model does not record one)")
    return _compile(qm, cfg, shape, batch=batch, memory_words=memory_words)


def _program(program):
    """A :class:`Program`, or one read from its file."""
    return program if isinstance(program, Program) else Program.load(program)


def open_device(target: str, cfg: AcceleratorConfig | None = None, *, board: str | None = None,
                memory: str | None = None, program=None, **kw) -> Device:
    """A device to run programs on: ``"sim"`` (the Verilator model of ``cfg``) or
    ``"serial:PORT"`` (a board programmed with ``make bitstream BOARD=…``, reached over its
    USB-UART; ``board`` names it, ``memory`` the backend it was built with (default: the
    board's default, e.g. the ULX3S's SDRAM), ``cfg`` defaults to
    ``AcceleratorConfig.for_board(board, memory=memory)`` and is checked against the board's
    ID register).  ``program`` (a :class:`Program` or its file): with a board, the program it
    already holds — booted from its flash (``make bitstream PROGRAM=…``) or uploaded earlier —
    used without an upload, or refused naming what the board holds; with the simulator, loaded.

    Example::

        dev = open_device("sim", AcceleratorConfig())
        dev.load(program)
        y = dev.run(x_int)
        print(dev.stats)          # cycles, mac_utilization, ...
    """
    if target == "sim":
        if cfg is None:
            raise RmsmpError("open_device('sim', cfg): the simulator needs an AcceleratorConfig")
        from rmsmp.sim.device import SimDevice
        dev = SimDevice(cfg, board=board, **kw)
        if program is not None:
            dev.load(_program(program))
        return dev
    if target.startswith("serial:"):
        from .link import LinkClient, SerialTransport
        from .serial_device import SerialDevice
        if not board:
            raise RmsmpError(f"open_device({target!r}): name the board, e.g. board='ulx3s-85f' "
                             f"(supported: {', '.join(sorted(BOARDS))})")
        spec = board_spec(board)
        port = target[len("serial:"):]
        memory = spec.memory(memory)
        cfg = cfg or AcceleratorConfig.for_board(spec.name, memory=memory)
        link = LinkClient(SerialTransport(port, kw.pop("baud", spec.link_baud(cfg.clock_hz))))
        dev = SerialDevice(link, cfg, mem_words=spec.memory_words(memory), name=f"{spec.name} on {port}",
                           memory=memory, **kw)
        if program is not None:
            dev.attach(_program(program))
        return dev
    raise RmsmpError(f"unknown device {target!r}; available: 'sim', 'serial:PORT'")
