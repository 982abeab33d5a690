"""Reference networks: torchvision-compatible ResNet-18, a small digits CNN, a LeNet for
MNIST, torchvision-compatible MobileNetV2, and the MLPerf Tiny models with their published
weights."""
from .digits import DigitsNet, load_digits, train_digits
from .lenet import LeNet
from .mlperf_tiny import mlperf_tiny
from .mobilenet import MobileNetV2, mobilenet_v2
from .resnet import BasicBlock, ResNet, resnet18

__all__ = ["resnet18", "ResNet", "BasicBlock", "DigitsNet", "load_digits", "train_digits", "mlperf_tiny",
           "LeNet", "MobileNetV2", "mobilenet_v2"]
