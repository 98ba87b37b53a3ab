"""Architectures as plain data: validation, shapes, and a CPU smoke test of VGG."""

import pytest
import torch
import torch.nn.functional as F

from qffs_lava.models import (
    QuantAct,
    build_model,
    check_arch,
    make_arch,
    output_quantizer,
    predict,
    set_layer_bits,
    set_quantized,
)


@pytest.mark.parametrize(
    "name, shape",
    [("mlp", (1, 8, 8)), ("mlp", (1, 28, 28)), ("lenet", (1, 28, 28)), ("lenet", (1, 8, 8)),
     ("vgg11", (3, 32, 32)), ("vgg16", (3, 32, 32))],
)
def test_named_architectures_build_and_map_images_to_class_levels(name, shape):
    arch = make_arch(name, shape, 10)
    model = build_model(arch).eval()
    assert model(torch.rand(2, *shape)).shape == (2, 10)
    acts = [m for m in model if isinstance(m, QuantAct)]
    assert [a.bits for a in acts] == [2] * (len(acts) - 1) + [3]
    assert acts[-1].output and not any(a.output for a in acts[:-1])
    if name == "lenet":
        assert sum(spec["type"] == "maxpool" for spec in arch["layers"]) == 2


def test_vgg_trains_a_few_batches_on_cpu():
    torch.manual_seed(0)
    model = build_model(make_arch("vgg11", (3, 32, 32), 10))
    set_quantized(model, True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.rand(8, 3, 32, 32), torch.arange(8) % 10
    losses = []
    for _ in range(3):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert output_quantizer(model).step.grad is not None


def test_quantized_output_is_integer_levels_times_step():
    model = build_model(make_arch("mlp", (1, 8, 8), 10)).train()
    set_quantized(model, True)
    model(torch.rand(16, 1, 8, 8))  # initialises the steps
    model.eval()
    out = model(torch.rand(4, 1, 8, 8))
    levels = out / output_quantizer(model).step
    torch.testing.assert_close(levels, levels.round())
    assert levels.min() >= 0 and levels.max() <= 7


def test_predict_takes_lowest_index_on_ties():
    assert predict(torch.tensor([[0.0, 3.0, 3.0, 1.0], [0.0, 0.0, 0.0, 0.0]])).tolist() == [1, 0]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda a: a["layers"].insert(1, {"type": "residual_add"}), "unsupported layer type 'residual_add'"),
        (lambda a: a["layers"].insert(1, {"type": "layernorm"}), "unsupported layer type 'layernorm'"),
        (lambda a: a["layers"][1].update(in_features=65), "linear expects"),
        (lambda a: a["layers"][1].pop("out_features"), "missing key 'out_features'"),
        (lambda a: a["layers"].pop(3), "must be followed by an act"),
        (lambda a: a["layers"][3].update(bits=9), "bits must be in 1..8"),
        (lambda a: a["layers"][3].update(bits="2"), "must be an integer"),
        (lambda a: a["layers"].pop(), "must end in an act"),
    ],
)
def test_check_arch_names_the_problem(mutate, message):
    arch = make_arch("mlp", (1, 8, 8), 10)
    mutate(arch)
    with pytest.raises(ValueError, match=message):
        check_arch(arch)


def test_per_layer_bits():
    arch = set_layer_bits(make_arch("lenet", (1, 28, 28), 10), [3, 2, 2, 4])
    assert [s["bits"] for s in arch["layers"] if s["type"] == "act"] == [3, 2, 2, 4]
    with pytest.raises(ValueError, match="4 activation layers"):
        set_layer_bits(arch, [2, 3])


def test_vgg_refuses_other_input_sizes():
    with pytest.raises(ValueError, match="32x32"):
        make_arch("vgg11", (1, 28, 28), 10)
