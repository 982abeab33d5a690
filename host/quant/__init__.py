"""Quantization: schemes, graph capture, RMSMP PTQ, fake-quant/QAT, QuantizedModel."""
from .api import DEFAULT_RATIO, METHODS, quantize
from .fake import GraphModule
from .graph import capture
from .qat import qat
from .qmodel import Layer, QuantizedModel, TensorQ
from .schemes import Scheme, parse_scheme

__all__ = ["quantize", "qat", "QuantizedModel", "Layer", "TensorQ", "Scheme", "parse_scheme",
           "capture", "GraphModule", "DEFAULT_RATIO", "METHODS"]
