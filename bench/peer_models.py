"""The float LeNet that `make peers` trains once and every converter takes: plain PyTorch, no qffs code.

conv 5x5 (16) -> batchnorm -> ReLU -> pool 2 -> conv 5x5 (32) -> batchnorm -> ReLU -> pool 2 -> flatten ->
linear 128 -> batchnorm -> ReLU -> linear. QFFS takes it through `qffs-train --arch
bench/peer_models.py:lenet_avg --init STATE_DICT`, as a user's own model.
"""

from torch import nn


def lenet(num_classes: int = 10, in_channels: int = 1, pool: str = "avg") -> nn.Sequential:
    """The LeNet above for 28x28 inputs, with 2x2 average ("avg") or max ("max") pooling."""
    pooling = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}[pool]
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 5, padding=2), nn.BatchNorm2d(16), nn.ReLU(), pooling(2),
        nn.Conv2d(16, 32, 5, padding=2), nn.BatchNorm2d(32), nn.ReLU(), pooling(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Linear(128, num_classes))


def lenet_avg(num_classes: int = 10, in_channels: int = 1) -> nn.Sequential:
    return lenet(num_classes, in_channels, "avg")


def lenet_max(num_classes: int = 10, in_channels: int = 1) -> nn.Sequential:
    return lenet(num_classes, in_channels, "max")
