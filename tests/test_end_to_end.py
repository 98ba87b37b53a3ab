"""End to end (slow: `make test-slow`): the demo pipeline on digits, and a user's own ResNet on Fashion-MNIST."""

import pytest

from qffs_lava.demo import run_demo


@pytest.mark.slow
@pytest.mark.lava  # run_demo runs the lava backend
def test_demo_pipeline_reaches_the_qann_and_lava_agrees_with_torch(tmp_path):
    summary = run_demo(tmp_path, steps=16, progress=False)
    for backend in ("torch", "lava"):
        step = summary["equal_from_step"][backend]
        assert step is not None and step <= 16, backend
        # from that step on, the SNN's accuracy is exactly the integer QANN's
        assert all(acc == summary["int_qann_accuracy"] for acc in summary["accuracy_by_step"][backend][step - 1:])
    assert summary["lava_equals_torch"] is True
    assert summary["lava_prediction_agreement"] == 1.0
    assert summary["int_qann_accuracy"] >= 0.95
    assert (tmp_path / "accuracy_vs_steps.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the training alone takes about 12 minutes on 2 cores
def test_a_users_own_resnet_goes_through_train_export_and_run_on_fashion_mnist(tmp_path, data_dir):
    """examples/custom_resnet.py (residual +, max pool, global average pool) through the three commands; the
    QANN as trained and the integer network exported from it agree on at least 99.5% of the test split, and
    the SNN reaches that network (about 17 minutes)."""
    import json

    from qffs_export.cli import export_main

    from qffs_lava.ann.modelfile import read_model_file
    from qffs_lava.cli import run_main, train_main
    from qffs_lava.ir.netfile import read_net

    if not (data_dir / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").is_file():
        pytest.skip(f"Fashion-MNIST is not under {data_dir}: run `make data`")
    model, net, report = tmp_path / "custom.pt", tmp_path / "custom.h5", tmp_path / "run.json"
    assert train_main(["--dataset", "fashionmnist", "--arch", "examples/custom_resnet.py:SmallResNet", "--out",
                       str(model), "--data-dir", str(data_dir), "--float-epochs", "5", "--qat-epochs", "3",
                       "--hardware-epochs", "2", "--threads", "2", "--quiet"]) == 0
    accuracy = read_model_file(model)["accuracy"]
    assert accuracy["qann"] >= 0.85
    assert export_main([str(model), str(net), "--data-dir", str(data_dir)]) == 0
    meta = read_net(net).meta
    assert meta["fidelity_samples"] == 10000 and meta["qann_agreement"] >= 0.995
    assert run_main([str(net), "--dataset", "fashionmnist", "--data-dir", str(data_dir), "--steps", "16",
                     "--json", str(report), "--quiet"]) == 0
    figures = json.loads(report.read_text())
    assert figures["equal_from_step"] is not None and figures["qann_accuracy"] == accuracy["qann"]
