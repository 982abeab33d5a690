"""Reference networks: torchvision-compatible ResNet-18 and a small digits CNN."""
from .digits import DigitsNet, load_digits, train_digits
from .resnet import BasicBlock, ResNet, resnet18

__all__ = ["resnet18", "ResNet", "BasicBlock", "DigitsNet", "load_digits", "train_digits"]
