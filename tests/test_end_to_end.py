"""The demo pipeline end to end on digits (slow: `make test-slow`)."""

import pytest

from qffs_lava.demo import run_demo


@pytest.mark.slow
def test_demo_pipeline_reaches_the_qann_and_lava_agrees_with_torch(tmp_path):
    summary = run_demo(tmp_path, steps=16, progress=False, log=lambda _: None)
    for backend in ("torch", "lava"):
        step = summary["equal_from_step"][backend]
        assert step is not None and step <= 16, backend
        # from that step on, the SNN's accuracy is exactly the integer QANN's
        assert all(acc == summary["int_qann_accuracy"] for acc in summary["accuracy_by_step"][backend][step - 1:])
    assert summary["lava_equals_torch"] is True
    assert summary["lava_prediction_agreement"] == 1.0
    assert summary["int_qann_accuracy"] >= 0.95
    assert (tmp_path / "accuracy_vs_steps.png").read_bytes()[:4] == b"\x89PNG"
