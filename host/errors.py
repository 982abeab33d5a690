"""Errors raised by rmsmp's host side.  All derive from :class:`RmsmpError` (a ``ValueError``)."""

from rmsmp.rtl.formats import FormatError


class RmsmpError(ValueError):
    """Base class: bad input to rmsmp, with a message naming what was wrong."""


class SchemeError(RmsmpError, FormatError):
    """An unknown weight scheme, a bit-width out of range, or a value off the level set."""


class RatioError(RmsmpError):
    """A scheme ratio that is empty, negative, does not sum to 1, or names an unknown scheme."""


class UnsupportedLayerError(RmsmpError):
    """A model holds a layer or operation rmsmp cannot quantize or run (names the node and op)."""

    def __init__(self, node: str, op: str, why: str = ""):
        self.node, self.op = node, op
        super().__init__(f"unsupported layer {node!r} ({op})" + (f": {why}" if why else ""))


class ModelFormatError(RmsmpError):
    """A QuantizedModel file that is corrupt, of another format, or of an unsupported version."""
