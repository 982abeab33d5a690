"""rmsmp host side: quantization, QuantizedModel, models, and (later) runtime devices.

    from rmsmp.host import quantize, QuantizedModel
"""
from .errors import ModelFormatError, RatioError, RmsmpError, SchemeError, UnsupportedLayerError
from .quant import DEFAULT_RATIO, QuantizedModel, qat, quantize

__all__ = ["quantize", "qat", "QuantizedModel", "DEFAULT_RATIO", "RmsmpError", "RatioError",
           "SchemeError", "UnsupportedLayerError", "ModelFormatError"]
