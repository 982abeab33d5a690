"""Errors raised by rmsmp.  All derive from :class:`RmsmpError` (a ``ValueError``); this module
imports nothing, so every layer can raise them."""


class RmsmpError(ValueError):
    """Base class: bad input to rmsmp, with a message naming what was wrong."""


class FormatError(RmsmpError):
    """An unknown weight format, a bit-width out of range, or a value off the level set."""


class SchemeError(FormatError):
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
