"""rmsmp's user side: quantize a model, compile it for an accelerator, run it.

    from rmsmp.host import quantize, compile_model, open_device, AcceleratorConfig

The quantization core (:mod:`rmsmp.host.quant`, :mod:`rmsmp.host.errors`) is the bottom
layer of the package and imports nothing else of rmsmp; the names here are loaded on first
use, so importing the core does not pull in the generator or the simulator.
"""
from importlib import import_module

_EXPORTS = {
    "quantize": ".quant", "qat": ".quant", "QuantizedModel": ".quant", "DEFAULT_RATIO": ".quant",
    "compile_model": ".api", "open_device": ".api",
    "AcceleratorConfig": "rmsmp.generator.config",
    "RmsmpError": ".errors", "RatioError": ".errors", "SchemeError": ".errors", "UnsupportedLayerError": ".errors",
    "ModelFormatError": ".errors",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
