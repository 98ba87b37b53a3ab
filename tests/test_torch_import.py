"""Bring your own PyTorch model: torch.fx import (ann/torch_import.py), --arch MODULE:FUNCTION and --init."""

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from qffs_lava.ann.models import set_quantized
from qffs_lava.ann.torch_import import build_module, from_torch
from qffs_lava.ann.train import _optimizer, train
from qffs_lava.backends.pytorch import TorchNetwork
from qffs_lava.convert.network import convert
from qffs_lava.errors import QffsError
from qffs_lava.ir.loihi import loihi_problems

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
from custom_resnet import SmallResNet  # noqa: E402

QUIET = dict(progress=False)


def randomized(module: nn.Module) -> nn.Module:
    """The module in eval mode with random batchnorm statistics, so that folding them is tested."""
    generator = torch.Generator().manual_seed(0)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=generator))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=generator))
            m.weight.data.copy_(0.5 + torch.rand(m.num_features, generator=generator))
    return module.eval()


def test_a_user_module_imports_node_for_node_with_its_float_outputs(seed):
    torch.manual_seed(seed)
    net = randomized(SmallResNet(num_classes=10, in_channels=1, width=8))
    arch, model = from_torch(net, (1, 28, 28))
    ops = [node["op"] for node in arch["nodes"]]
    assert ops.count("act") == 7 and ops.count("add") == 2 and ops.count("maxpool") == 1
    assert ops[-3:] == ["global_avgpool", "linear", "act"] and arch["nodes"][-1]["bits"] == 3
    assert "dropout" not in {node["name"] for node in arch["nodes"]}
    relus = [node["name"] for node in arch["nodes"] if node["name"].startswith("block1_relu")]
    assert relus == ["block1_relu", "block1_relu_1"]  # one module called twice: two activations
    x = torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(model(x), net(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("module, node, op", [
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.Sigmoid(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10)), "_1", "Sigmoid"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU6(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10)), "_1", "ReLU6"),
])
def test_unsupported_modules_are_refused_naming_the_node(module, node, op):
    with pytest.raises(QffsError) as err:
        from_torch(module, (1, 28, 28))
    message = str(err.value)
    assert "\n" not in message and f"node {node!r}" in message and op in message and "supported: Conv2d" in message


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(8 * 26 * 26, 10)

    def forward(self, x):
        y = F.relu(self.conv(x))
        return self.fc(torch.cat([y, y], dim=1).flatten(1))


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        if x.sum() > 0:
            x = x * 2
        return self.fc(x.flatten(1))


def test_concat_and_data_dependent_branches_are_refused_in_one_line():
    with pytest.raises(QffsError, match=r"^cannot import node 'cat' \(call_function cat\): .*supported: Conv2d"):
        from_torch(Concat(), (1, 28, 28))
    with pytest.raises(QffsError, match=r"torch.fx cannot trace it .*control flow.*supported: Conv2d") as err:
        from_torch(DataDependent(), (1, 8, 8))
    assert "\n" not in str(err.value)


@pytest.mark.slow  # make test: the plain-PyTorch float model above enters the same way
def test_torchvision_resnet18_small_stem_trains_exports_and_its_snn_equals_its_qann():
    """resnet18(num_classes=10) with the 32x32 stem: a few LSQ steps on random inputs, export, Loihi 2's
    ranges, and the spiking network's output counts equal the integer QANN's by a stated t."""
    torch.manual_seed(0)
    net = build_module("torchvision:resnet18", (3, 32, 32), 10, small_input_stem=True)
    assert isinstance(net, torchvision.models.ResNet) and net.conv1.stride == (1, 1)
    arch, model = from_torch(net, (3, 32, 32))
    x = torch.randint(0, 256, (16, 3, 32, 32)).float() / 255
    labels = torch.randint(0, 10, (16,))
    set_quantized(model, True)
    model.train()
    optimizer = _optimizer(model, 1e-4, 0.0)
    for _ in range(3):
        loss = F.cross_entropy(model(x), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    acts = [node["bits"] for node in arch["nodes"] if node["op"] == "act"]
    content = {"arch": arch, "input_levels": 255, "input_norm": {"mean": [0.0] * 3, "std": [1.0] * 3},
               "dataset": "cifar10", "bits": {"layers": acts}}
    network = convert(content, model)
    assert not loihi_problems(network)
    sim = TorchNetwork(network)
    qann = sim.qann(x[:4])
    counts = sim.simulate(x[:4], 24).synchronous_counts()
    equal_from = next(t for t in range(1, 25) if all(torch.equal(c, qann) for c in counts[t - 1:]))
    assert qann.sum() > 0 and equal_from <= 16, equal_from  # t = 9 when measured


@pytest.mark.e2e
def test_a_float_model_trained_in_plain_pytorch_enters_through_init(tmp_path, seed):
    """A state dict saved by plain PyTorch, LSQ fine-tuned from its weights (float-epochs 0) via --arch FILE:CLASS."""
    from qffs_lava.ann.datasets import load_dataset

    torch.manual_seed(seed)
    net = SmallResNet(num_classes=10, in_channels=1)
    x, y = load_dataset("digits", "train")
    optimizer = torch.optim.Adam(net.parameters(), 3e-3)
    net.train()
    for epoch in range(3):
        for start in range(0, len(x), 64):
            loss = F.cross_entropy(net(x[start:start + 64]), y[start:start + 64])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    torch.save(net.state_dict(), tmp_path / "float.pt")
    spec = f"{ROOT / 'examples' / 'custom_resnet.py'}:SmallResNet"
    with pytest.raises(QffsError, match="does not fit the model arch builds"):
        train("digits", "mlp", init=str(tmp_path / "float.pt"), float_epochs=0, qat_epochs=1, **QUIET)
    content = train("digits", spec, out=tmp_path / "q.pt", init=str(tmp_path / "float.pt"), float_epochs=0,
                    qat_epochs=2, hardware_epochs=1, **QUIET)
    net.eval()
    test_x, test_y = load_dataset("digits", "test")
    with torch.no_grad():
        float_accuracy = float((net(test_x).argmax(1) == test_y).double().mean())
    assert content["accuracy"]["float"] == pytest.approx(float_accuracy)  # its own weights, measured as they came
    assert content["accuracy"]["qann"] >= 0.8 and content["train"]["arch"] == spec
    given = train("digits", net, float_epochs=0, qat_epochs=2, hardware_epochs=1, **QUIET)  # the module itself
    assert given["accuracy"] == content["accuracy"] and given["train"]["arch"] == "module SmallResNet"


@pytest.mark.parametrize("conv, pool, batchnorm", [
    (dict(kernel_size=3, padding=1), nn.AvgPool2d(2), "before"),  # F.avg_pool2d(x, 2) of a conv: the case
    (dict(kernel_size=3, stride=2, padding=1), nn.AvgPool2d(3, stride=1), "after"),  # overlapping windows
    (dict(kernel_size=(3, 2), stride=(1, 2)), nn.AvgPool2d((2, 3), stride=(2, 1)), None),
])
def test_an_average_pool_after_a_conv_folds_into_one_conv_with_the_same_outputs(conv, pool, batchnorm):
    """conv -> [batchnorm] -> avgpool -> [batchnorm] -> ReLU: the path the exporter plans, folded in float64, gives
    the pool's outputs on every pixel (odd sizes, which the pool's floor crops, included)."""
    from qffs_lava.convert.integer import IntegerModel

    torch.manual_seed(0)
    layers = {"before": [nn.Conv2d(4, 6, **conv), nn.BatchNorm2d(6), pool],
              "after": [nn.Conv2d(4, 6, **conv), pool, nn.BatchNorm2d(6)], None: [nn.Conv2d(4, 6, **conv), pool]}
    pre = randomized(nn.Sequential(*layers[batchnorm]))
    x = torch.rand(8, 4, 13, 11)
    features = pre(x)[0].numel()
    arch, model = from_torch(nn.Sequential(*pre, nn.ReLU(), nn.Flatten(), nn.Linear(features, 10)), (4, 13, 11))
    set_quantized(model, True)
    model.train()
    for module in model.modules():
        module.training = not isinstance(module, nn.BatchNorm2d)  # the statistics stay the imported ones
    model(x)  # LSQ's steps start on the first batch
    model.eval()
    integer = IntegerModel(model, arch, 255, {"mean": [0.0] * 4, "std": [1.0] * 4})
    (path,) = integer.plan[1].paths
    assert path.out_pool is not None and (path.batchnorm is not None) == (batchnorm is not None)
    with torch.no_grad():
        expected = pre.double().eval()(x.double())
        folded = integer.folded(path, tuple(expected.shape[1:]))
        synapse = folded.synapse
        got = F.conv2d(x.double(), synapse.weight, folded.bias, synapse.stride, synapse.padding,
                       groups=synapse.groups)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-12, rtol=0)
