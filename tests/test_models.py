"""Architectures as plain-data graphs: validation, shapes, ResNets, version 1 archs, and a CPU smoke test of VGG."""

import copy

import pytest
import torch
import torch.nn.functional as F

from qffs_lava.ann.archs import make_arch, set_layer_bits
from qffs_lava.ann.models import QuantAct, arch_from_v1, build_model, check_arch, predict, set_quantized


def acts_of(model):
    return [m for m in model.modules() if isinstance(m, QuantAct)]


@pytest.mark.parametrize(
    "name, shape",
    [("mlp", (1, 8, 8)), ("mlp", (1, 28, 28)), ("lenet", (1, 28, 28)), ("lenet", (1, 8, 8)),
     ("vgg11", (3, 32, 32)), ("vgg16", (3, 32, 32)), ("resnet20", (3, 32, 32)), ("resnet8", (1, 28, 28))],
)
def test_named_architectures_build_and_map_images_to_class_levels(name, shape, seed):
    torch.manual_seed(seed)
    arch = make_arch(name, shape, 10)
    model = build_model(arch).eval()
    assert model(torch.rand(2, *shape)).shape == (2, 10)
    acts = acts_of(model)
    assert [a.bits for a in acts] == [2] * (len(acts) - 1) + [3]
    assert acts[-1].output and not any(a.output for a in acts[:-1])
    ops = [node["op"] for node in arch["nodes"]]
    if name == "lenet":
        assert ops.count("maxpool") == 2
    if name == "resnet20":
        assert ops.count("add") == 9 and ops.count("conv") == 19 + 2  # 19 3x3 convs, 2 projections
        assert ops.count("global_avgpool") == 1


def test_resnet_blocks_have_identity_and_projection_shortcuts():
    arch = make_arch("resnet20", (3, 32, 32), 10)
    nodes = {node["name"]: node for node in arch["nodes"]}
    identity = nodes["s1b1_add"]["inputs"]
    assert identity[1] == "s1b0_act2"  # the block's input itself
    projection = nodes["s2b0_add"]["inputs"][1]
    assert nodes[projection]["op"] == "batchnorm" and nodes[nodes[projection]["inputs"][0]]["stride"] == 2
    shapes = check_arch(arch)
    assert shapes["s1b0_act2"] == (16, 32, 32) and shapes["s2b0_act2"] == (32, 16, 16)
    assert shapes["s3b2_act2"] == (64, 8, 8) and shapes["pool"] == (64,)


@pytest.mark.e2e
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
    step_grad = model.output_act.quantizer.step.grad  # LSQ learns the step: a finite gradient reaches it
    assert step_grad is not None and bool(torch.isfinite(step_grad).all()) and float(step_grad.abs().sum()) > 0


def test_quantized_output_is_integer_levels_times_step(seed):
    torch.manual_seed(seed)
    model = build_model(make_arch("mlp", (1, 8, 8), 10)).train()
    set_quantized(model, True)
    model(torch.rand(16, 1, 8, 8))  # initialises the steps
    model.eval()
    out = model(torch.rand(4, 1, 8, 8))
    levels = out / model.output_act.quantizer.step
    torch.testing.assert_close(levels, levels.round())
    assert levels.min() >= 0 and levels.max() <= 7


def test_predict_takes_lowest_index_on_ties():
    assert predict(torch.tensor([[0.0, 3.0, 3.0, 1.0], [0.0, 0.0, 0.0, 0.0]])).tolist() == [1, 0]


def node(arch, name):
    return next(n for n in arch["nodes"] if n["name"] == name)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda a: a["nodes"].insert(1, {"name": "x", "op": "layernorm", "inputs": ["flatten"]}),
         "unsupported op 'layernorm'"),
        (lambda a: node(a, "fc1").update(in_features=65), r"node 'fc1' \(linear\): expects \(65,\) inputs"),
        (lambda a: node(a, "fc1").pop("out_features"), "missing key 'out_features'"),
        (lambda a: node(a, "act1").update(bits=9), "bits must be in 1..8"),
        (lambda a: node(a, "act1").update(bits="2"), "must be an integer"),
        (lambda a: a["nodes"].pop(), "must end in an act"),
        (lambda a: node(a, "fc2").update(inputs=["act3"]), r"inputs \['act3'\] are not earlier nodes"),
        (lambda a: node(a, "fc2").update(inputs=["fc2"]), "are not earlier nodes"),
        (lambda a: node(a, "fc2").update(name="fc1"), "the name is used twice"),
        (lambda a: node(a, "fc2").update(name="layer.2"), "a name of letters, digits and '_'"),
        (lambda a: node(a, "fc2").update(name="forward"), "taken by torch.nn.Module"),
        (lambda a: a["nodes"].insert(4, {"name": "sum", "op": "add", "inputs": ["act1"]}), "two or more input"),
        (lambda a: a["nodes"].insert(4, {"name": "sum", "op": "add", "inputs": ["act1", "flatten"]}),
         "adds inputs of different shapes"),
    ],
)
def test_check_arch_names_the_problem(mutate, message):
    arch = copy.deepcopy(make_arch("mlp", (1, 8, 8), 10))
    mutate(arch)
    with pytest.raises(ValueError, match=message):
        check_arch(arch)


def test_a_version_1_architecture_becomes_a_chain_of_nodes():
    v1 = {"name": "tiny", "input_shape": [1, 2, 2], "num_classes": 2, "layers": [
        {"type": "flatten"}, {"type": "linear", "in_features": 4, "out_features": 2}, {"type": "act", "bits": 3}]}
    arch = arch_from_v1(v1)
    assert [(n["name"], n["op"], n["inputs"]) for n in arch["nodes"]] == [
        ("0", "flatten", ["input"]), ("1", "linear", ["0"]), ("2", "act", ["1"])]
    assert sorted(build_model(arch).state_dict()) == ["1.bias", "1.weight", "2.quantizer.initialized",
                                                      "2.quantizer.step"]


def test_per_layer_bits():
    arch = set_layer_bits(make_arch("lenet", (1, 28, 28), 10), [3, 2, 2, 4])
    assert [n["bits"] for n in arch["nodes"] if n["op"] == "act"] == [3, 2, 2, 4]
    with pytest.raises(ValueError, match="4 activation layers"):
        set_layer_bits(arch, [2, 3])


def test_image_architectures_refuse_other_input_sizes():
    for name in ("vgg11", "resnet20"):
        with pytest.raises(ValueError, match="32x32"):
            make_arch(name, (1, 28, 28), 10)
