"""Models a user might write, on digits (1x8x8, 10 classes), for tests/test_own_files.py: each is a case a new
user met (issue 26)."""

import torch
import torch.nn.functional as F
from torch import nn


class ThreeChannels(nn.Module):
    """A first conv for RGB images."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3)
        self.f = nn.Linear(8 * 6 * 6, num_classes)

    def forward(self, x):
        return self.f(torch.flatten(F.relu(self.c(x)), 1))


class Seven(nn.Module):
    """Seven outputs, whatever the dataset."""

    def __init__(self, in_channels=1):
        super().__init__()
        self.c = nn.Conv2d(in_channels, 8, 3)
        self.f = nn.Linear(8 * 6 * 6, 7)

    def forward(self, x):
        return self.f(torch.flatten(F.relu(self.c(x)), 1))


class PoolBeforeRelu(nn.Module):
    """conv -> max pool -> ReLU."""

    def __init__(self, in_channels=1, num_classes=10):
        super().__init__()
        self.c1 = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.f = nn.Linear(8 * 4 * 4, num_classes)

    def forward(self, x):
        x = F.relu(self.c1(x))
        x = F.relu(self.pool(self.c2(x)))
        return self.f(torch.flatten(x, 1))


class AvgPoolBeforeRelu(nn.Module):
    """conv -> batchnorm -> F.avg_pool2d -> ReLU, then conv -> nn.AvgPool2d (overlapping) -> batchnorm -> ReLU."""

    def __init__(self, in_channels=1, num_classes=10):
        super().__init__()
        self.c1 = nn.Conv2d(in_channels, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1)
        self.pool = nn.AvgPool2d(3, stride=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.f = nn.Linear(16 * 2 * 2, num_classes)

    def forward(self, x):
        x = F.relu(F.avg_pool2d(self.bn1(self.c1(x)), 2))
        x = F.relu(self.bn2(self.pool(self.c2(x))))
        return self.f(torch.flatten(x, 1))


class ConvConv(nn.Module):
    """conv -> conv with no ReLU between."""

    def __init__(self, in_channels=1, num_classes=10):
        super().__init__()
        self.c1 = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.f = nn.Linear(8 * 8 * 8, num_classes)

    def forward(self, x):
        return self.f(torch.flatten(F.relu(self.c2(self.c1(x))), 1))


class AddIntoPool(nn.Module):
    """relu(conv(x)) + x into a max pool: the pool reads a sum, not spikes."""

    def __init__(self, in_channels=1, num_classes=10):
        super().__init__()
        self.c1 = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.f = nn.Linear(4 * 4 * 4, num_classes)

    def forward(self, x):
        x = F.relu(self.c1(x))
        return self.f(torch.flatten(self.pool(F.relu(self.c2(x)) + x), 1))


class Functional(nn.Module):
    """F.max_pool2d, F.avg_pool2d and a batchnorm with eps 1e-3."""

    def __init__(self, in_channels=1, num_classes=10):
        super().__init__()
        self.c1 = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8, eps=1e-3)
        self.f = nn.Linear(8 * 2 * 2, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn(self.c1(x))), 2)
        x = F.avg_pool2d(x, kernel_size=2)
        return self.f(torch.flatten(x, 1))


class Relu6(nn.Module):
    """A ReLU6, which QFFS does not convert."""

    def __init__(self, in_channels=1, num_classes=10):
        super().__init__()
        self.c = nn.Conv2d(in_channels, 4, 3)
        self.act = nn.ReLU6()
        self.f = nn.Linear(4 * 6 * 6, num_classes)

    def forward(self, x):
        return self.f(torch.flatten(self.act(self.c(x)), 1))


class Mlp(nn.Module):
    """A plain-PyTorch MLP, trained on normalized inputs by the test that uses it."""

    def __init__(self, in_channels=1, num_classes=10):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 64, 64), nn.ReLU(), nn.Linear(64, num_classes))

    def forward(self, x):
        return self.net(x)
