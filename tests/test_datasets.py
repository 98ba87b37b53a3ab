"""Datasets: digits split, MNIST through torchvision's layout, and missing-data errors."""

import pytest
import torch

from qffs_lava.ann.datasets import DATASETS, load_dataset
from qffs_lava.errors import DatasetNotFound, QffsError


def test_digits_split_is_fixed_and_scaled():
    train_x, train_y = load_dataset("digits", "train")
    test_x, test_y = load_dataset("digits", "test")
    assert train_x.shape == (1347, 1, 8, 8) and test_x.shape == (450, 1, 8, 8)
    assert train_x.min() == 0 and train_x.max() == 1
    assert torch.equal(test_x * 16, (test_x * 16).round())  # integer levels, inputScale 16
    assert sorted(test_y.unique().tolist()) == list(range(10))
    again, _ = load_dataset("digits", "test")
    assert torch.equal(test_x, again)


def test_mnist_from_the_offline_copy(mnist_dir):
    test_x, test_y = load_dataset("mnist", "test", mnist_dir)
    assert test_x.shape == (10000, 1, 28, 28) and test_y.shape == (10000,)
    assert test_x.dtype == torch.float32 and 0 <= test_x.min() and test_x.max() <= 1
    assert torch.equal(test_x * 255, (test_x * 255).round())
    assert torch.bincount(test_y).tolist()[:3] == [980, 1135, 1032]  # MNIST's known test counts


@pytest.mark.parametrize("name", [n for n in DATASETS if n != "digits"])
def test_missing_dataset_says_how_to_fetch_it(name, tmp_path):
    with pytest.raises(DatasetNotFound, match=f"{name} not found: {tmp_path}/"):
        load_dataset(name, "test", tmp_path)


def test_unknown_dataset_and_split():
    with pytest.raises(QffsError, match="unknown dataset"):
        load_dataset("imagenet", "test")
    with pytest.raises(QffsError, match="unknown split"):
        load_dataset("digits", "val")
