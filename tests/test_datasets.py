"""Datasets: digits split, MNIST through torchvision's layout, and missing-data errors."""

from pathlib import Path

import pytest
import torch

from qffs_lava.ann.datasets import DATASETS, load_dataset, split_validation
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


def test_the_validation_split_is_fixed_and_disjoint_from_training():
    images, labels = load_dataset("digits", "train")
    (train_x, train_y), (val_x, val_y) = split_validation(images, labels, 0.1)
    assert len(val_x) == 135 and len(train_x) == 1347 - 135
    rows = {tuple(row.tolist()) for row in images.reshape(len(images), -1)}
    assert len(rows) == len(images)  # no duplicate images, so rows identify them
    held = {tuple(row.tolist()) for row in val_x.reshape(len(val_x), -1)}
    kept = {tuple(row.tolist()) for row in train_x.reshape(len(train_x), -1)}
    assert not held & kept and held | kept == rows
    assert sorted(val_y.unique().tolist()) == list(range(10))
    again = split_validation(images, labels, 0.1)
    assert torch.equal(again[1][0], val_x) and torch.equal(again[0][1], train_y)
    assert len(split_validation(images, labels, 0)[1][0]) == 0
    with pytest.raises(QffsError, match="validation share"):
        split_validation(images, labels, 1.0)


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


@pytest.fixture(scope="module")
def fashion_dir(data_dir):
    if not (data_dir / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").is_file():
        pytest.skip(f"Fashion-MNIST is not under {data_dir}: run `make data`")
    return data_dir


def test_fashionmnist_from_the_offline_copy(fashion_dir):
    test_x, test_y = load_dataset("fashionmnist", "test", fashion_dir)
    assert test_x.shape == (10000, 1, 28, 28) and torch.bincount(test_y).tolist() == [1000] * 10


@pytest.mark.e2e
def test_fashionmnist_is_laid_out_from_debians_files_md5_checked(fashion_dir, tmp_path, monkeypatch):
    import gzip
    import shutil

    from qffs_lava.ann import datasets

    debian = tmp_path / "usr-share-datasets-fashion-mnist"
    debian.mkdir()
    for name in datasets.RAW_MD5["fashionmnist"]:
        with open(fashion_dir / "FashionMNIST" / "raw" / name, "rb") as src, \
                gzip.open(debian / f"{name}.gz", "wb", 1) as dst:
            shutil.copyfileobj(src, dst)
    monkeypatch.setattr(datasets, "FASHION_DEBIAN_FOLDER", debian)
    folder = datasets.fetch_fashionmnist_from_debian(tmp_path / "data")
    assert folder == tmp_path / "data" / "FashionMNIST" / "raw"
    assert torch.equal(load_dataset("fashionmnist", "test", tmp_path / "data")[1],
                       load_dataset("fashionmnist", "test", fashion_dir)[1])
    with open(debian / "t10k-labels-idx1-ubyte.gz", "wb") as f:  # a damaged copy is refused
        f.write(gzip.compress(b"not the labels"))
    with pytest.raises(QffsError, match="t10k-labels-idx1-ubyte from .* has the wrong MD5 sum; not installed"):
        datasets.fetch_fashionmnist_from_debian(tmp_path / "other")
    assert not (tmp_path / "other" / "FashionMNIST").exists()


def test_without_apt_the_fetch_says_what_else_works(tmp_path, monkeypatch):
    from qffs_lava.ann import datasets

    monkeypatch.setattr(datasets, "FASHION_DEBIAN_FOLDER", tmp_path / "absent")
    monkeypatch.setattr(datasets.shutil, "which", lambda name: None)
    with pytest.raises(QffsError, match="apt-get and dpkg are not here; install the Debian package "
                                        r"\(dataset-fashion-mnist\), put torchvision's four files into"):
        datasets.fetch_fashionmnist_from_debian(tmp_path / "data")


def test_a_folder_of_grey_images_reaches_a_grey_network_as_the_dataset_itself(mnist_dir, tmp_path):
    """MNIST test images written as grey PNGs into an image folder reach the MNIST LeNet (trained on MNIST itself,
    so one channel and no recorded augmentation) as exactly the dataset's tensors: read grey, at their own size,
    not RGB and not zoomed by ImageNet's centre crop."""
    from PIL import Image

    import qffs_lava as qffs
    from qffs_lava.inputs import load_inputs

    images, labels = load_dataset("mnist", "test", mnist_dir)
    order = sorted(range(100), key=lambda i: (int(labels[i]), i))  # the folder's order: by class, then name
    for i in order:
        for split in ("train", "val"):
            (tmp_path / split / str(int(labels[i]))).mkdir(parents=True, exist_ok=True)
        Image.fromarray((images[i, 0] * 255).round().byte().numpy()).save(tmp_path / "val" / str(int(labels[i]))
                                                                         / f"{i:03d}.png")
    network = qffs.read_net(Path(__file__).parent / "data" / "v1" / "v1_mnist_lenet.h5")
    read = load_inputs(network, f"folder:{tmp_path}").x
    x, y = zip(*(read[j] for j in range(len(read))))
    assert torch.equal(torch.stack(x), images[order]) and list(y) == labels[order].tolist()
