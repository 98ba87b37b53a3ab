"""A tiny quantized MLP of hand-set weights and steps (2x2 input, 2 hidden, 2 outputs), whose integers
test_export.py computes by hand; other tests use it as a model file that needs no training."""

import torch

from qffs_lava.ann.models import arch_from_v1, build_model, set_quantized

TINY_ARCH = arch_from_v1({
    "name": "tiny", "input_shape": [1, 2, 2], "num_classes": 2,
    "layers": [
        {"type": "flatten"},
        {"type": "linear", "in_features": 4, "out_features": 2},
        {"type": "act", "bits": 2},
        {"type": "linear", "in_features": 2, "out_features": 2},
        {"type": "act", "bits": 3},
    ],
})


def tiny_model():
    model = build_model(TINY_ARCH)
    module = lambda index: getattr(model, str(index))  # noqa: E731
    with torch.no_grad():
        module(1).weight.copy_(torch.tensor([[0.5, -0.25, 0.0, 1.0], [-1.0, 0.5, 0.25, 0.0]]))
        module(1).bias.copy_(torch.tensor([0.1, -0.2]))
        module(3).weight.copy_(torch.tensor([[1.0, -0.5], [0.25, 0.75]]))
        module(3).bias.copy_(torch.tensor([0.0, 0.05]))
        for index, step in ((2, 0.5), (4, 0.25)):
            module(index).quantizer.step.fill_(step)
            module(index).quantizer.initialized.fill_(True)
    set_quantized(model, True)
    content = {"arch": TINY_ARCH, "quantized": True, "bits": {"act": 2, "out": 3, "weight": None, "layers": [2, 3]},
               "input_norm": {"mean": [0.0], "std": [1.0]}, "dataset": "digits", "input_shape": [1, 2, 2],
               "num_classes": 2, "input_levels": 16, "accuracy": {"float": 0.0, "qann": 0.0}}
    return content, model.eval()
