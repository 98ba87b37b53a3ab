"""A user's own PyTorch model, not one of qffs-lava's: a small residual network for 28x28 images.

Plain PyTorch: conv, batchnorm, ReLU (a module called twice and F.relu), max pooling, a
residual `+`, global average pooling, dropout and a linear classifier. qffs-train traces
it with torch.fx:

    qffs-train --dataset fashionmnist --arch examples/custom_resnet.py:SmallResNet --out custom.pt
"""

import torch.nn.functional as F
from torch import nn


class Residual(nn.Module):
    """x + bn(conv(relu(bn(conv(x))))), then ReLU: the same ReLU module twice."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + x)


class SmallResNet(nn.Module):
    """conv 3x3 -> max pool -> residual block -> conv 3x3 stride 2 -> residual block -> global avg pool -> linear."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(width)
        self.pool = nn.MaxPool2d(2)
        self.block1 = Residual(width)
        self.down = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False)
        self.down_bn = nn.BatchNorm2d(2 * width)
        self.block2 = Residual(2 * width)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = self.pool(F.relu(self.stem_bn(self.stem(x))))
        x = self.block1(x)
        x = F.relu(self.down_bn(self.down(x)))
        x = self.block2(x)
        x = self.gap(x).flatten(1)
        return self.fc(self.dropout(x))
