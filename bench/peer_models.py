"""The float networks the peer converters take (`make peers`: the LeNet; `make paper`: the ResNet-8): plain
PyTorch, no qffs code.

The LeNet: conv 5x5 (16) -> batchnorm -> ReLU -> pool 2 -> conv 5x5 (32) -> batchnorm -> ReLU -> pool 2 ->
flatten -> linear 128 -> batchnorm -> ReLU -> linear. The ResNet-8: qffs-train's resnet8. QFFS takes them as a
user's own models: `qffs-train --arch bench/peer_models.py:lenet_avg --init STATE_DICT` (or :resnet8).
"""

from torch import nn


def lenet(num_classes: int = 10, in_channels: int = 1, pool: str = "avg", side: int = 28) -> nn.Sequential:
    """The LeNet above for side x side inputs (28: MNIST), with 2x2 average ("avg") or max ("max") pooling."""
    pooling = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}[pool]
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 5, padding=2), nn.BatchNorm2d(16), nn.ReLU(), pooling(2),
        nn.Conv2d(16, 32, 5, padding=2), nn.BatchNorm2d(32), nn.ReLU(), pooling(2),
        nn.Flatten(), nn.Linear(32 * (side // 4) ** 2, 128), nn.BatchNorm1d(128), nn.ReLU(),
        nn.Linear(128, num_classes))


def lenet_avg(num_classes: int = 10, in_channels: int = 1) -> nn.Sequential:
    return lenet(num_classes, in_channels, "avg")


def lenet_max(num_classes: int = 10, in_channels: int = 1) -> nn.Sequential:
    return lenet(num_classes, in_channels, "max")


class ResNet8(nn.Module):
    """qffs-train's resnet8 in plain PyTorch: stem conv 3x3 stride 2 -> bn -> ReLU; one basic block per stage of
    32, 64, 128 channels (the second and third halve the resolution, with a 1x1 conv -> bn shortcut); global
    average pool; linear. Every ReLU its own module, so that a converter replaces each once."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU())
        self.blocks = nn.ModuleList(_Block(cin, cout, stride) for cin, cout, stride in ((32, 32, 1), (32, 64, 2),
                                                                                       (64, 128, 2)))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.fc(self.pool(x).flatten(1))


class _Block(nn.Module):
    """ReLU(bn(conv(ReLU(bn(conv(x))))) + shortcut(x)), the shortcut x itself or 1x1 conv -> bn."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU()
        self.conv2, self.bn2, self.relu2 = nn.Conv2d(cout, cout, 3, 1, 1), nn.BatchNorm2d(cout), nn.ReLU()
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else \
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride), nn.BatchNorm2d(cout))

    def forward(self, x):
        return self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))) + self.shortcut(x))


def resnet8(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    return ResNet8(num_classes, in_channels)
