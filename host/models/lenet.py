"""A LeNet-style CNN for 28×28 MNIST: conv5×5 → max-pool → conv5×5 → max-pool → flatten of
the 16×4×4 map → Linear (the flatten of a spatial map runs on the array as a 4×4 conv)."""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["LeNet"]


class LeNet(nn.Module):
    def __init__(self, width: int = 8, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 5, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 5, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(2 * width * 4 * 4, num_classes)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))
        return self.fc(torch.flatten(x, 1))
