"""The built-in architectures, as plain-data graphs (models.py): mlp, lenet, vgg11/16 and ResNets.

Each hidden synaptic layer is conv or linear -> batchnorm -> act (2 bits by default);
the output layer is linear -> act (3 bits) without batchnorm. The ResNets use basic
blocks: conv 3x3 -> bn -> act -> conv 3x3 -> bn, plus the identity, or a 1x1 strided
conv -> bn projection where the shape changes, added, then act; they end in global
average pooling -> linear -> act.
"""

from __future__ import annotations

from typing import List, Sequence

from qffs_lava.ann.models import INPUT, Arch, Node, check_arch


class GraphBuilder:
    """Appends nodes with unique names and returns each node's name, for building architectures."""

    def __init__(self, name: str, input_shape: Sequence[int], num_classes: int):
        self.name, self.input_shape, self.num_classes = name, list(input_shape), num_classes
        self.nodes: List[Node] = []

    def add(self, name: str, op: str, inputs: Sequence[str], **params) -> str:
        self.nodes.append({"name": name, "op": op, "inputs": list(inputs), **params})
        return name

    def conv(self, name: str, source: str, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0) -> str:
        return self.add(name, "conv", [source], in_channels=cin, out_channels=cout, kernel_size=kernel,
                        stride=stride, padding=padding, groups=1)

    def conv_bn(self, name: str, source: str, cin: int, cout: int, kernel: int, stride: int = 1) -> str:
        conv = self.conv(name, source, cin, cout, kernel, stride, kernel // 2)
        return self.add(f"{name}_bn", "batchnorm", [conv], num_features=cout)

    def act(self, name: str, source: str, bits: int) -> str:
        return self.add(name, "act", [source], bits=bits)

    def linear(self, name: str, source: str, n_in: int, n_out: int) -> str:
        return self.add(name, "linear", [source], in_features=n_in, out_features=n_out)

    def finish(self) -> Arch:
        arch = {"name": self.name, "input_shape": self.input_shape, "num_classes": self.num_classes,
                "nodes": self.nodes}
        check_arch(arch)
        return arch


def mlp(input_shape: Sequence[int], num_classes: int, act_bits: int = 2, out_bits: int = 3,
        hidden: Sequence[int] = (256, 256)) -> Arch:
    """flatten -> [linear -> batchnorm -> act] per hidden layer -> linear -> act(out_bits)."""
    g = GraphBuilder("mlp", input_shape, num_classes)
    x = g.add("flatten", "flatten", [INPUT])
    width = 1
    for n in input_shape:
        width *= n
    for i, h in enumerate(hidden, start=1):
        x = g.act(f"act{i}", g.add(f"fc{i}_bn", "batchnorm", [g.linear(f"fc{i}", x, width, h)], num_features=h),
                  act_bits)
        width = h
    g.act("out", g.linear("fc_out", x, width, num_classes), out_bits)
    return g.finish()


def pool_node(g: GraphBuilder, name: str, source: str, pool: str) -> str:
    """A 2x2 stride-2 pooling node: "max" (event max pooling in the SNN) or "avg" (folded into the next synapse)."""
    if pool == "max":
        return g.add(name, "maxpool", [source], kernel_size=2, stride=2, padding=0)
    return g.add(name, "avgpool", [source], kernel_size=2, stride=2)


def lenet(input_shape: Sequence[int], num_classes: int, act_bits: int = 2, out_bits: int = 3,
          pool: str = "max") -> Arch:
    """LeNet-style: 2 x [conv 5x5 -> batchnorm -> act -> pool 2] -> linear 128 -> act -> linear -> act."""
    channels, height, width = input_shape
    g = GraphBuilder("lenet", input_shape, num_classes)
    x = INPUT
    for i, cout in enumerate((16, 32), start=1):
        x = g.act(f"act{i}", g.conv_bn(f"conv{i}", x, channels, cout, 5), act_bits)
        x = pool_node(g, f"pool{i}", x, pool)
        channels, height, width = cout, height // 2, width // 2
    x = g.add("flatten", "flatten", [x])
    x = g.act("act3", g.add("fc1_bn", "batchnorm", [g.linear("fc1", x, channels * height * width, 128)],
                            num_features=128), act_bits)
    g.act("out", g.linear("fc_out", x, 128, num_classes), out_bits)
    return g.finish()


VGG_CONFIGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


def vgg(name: str, input_shape: Sequence[int], num_classes: int, act_bits: int = 2, out_bits: int = 3,
        pool: str = "max") -> Arch:
    """VGG for 32x32 inputs: [conv 3x3 -> batchnorm -> act] blocks with 2x2 pools -> linear -> act."""
    channels, height, width = input_shape
    g = GraphBuilder(name, input_shape, num_classes)
    x = INPUT
    for i, item in enumerate(VGG_CONFIGS[name], start=1):
        if item == "M":
            x = pool_node(g, f"pool{i}", x, pool)
            height, width = height // 2, width // 2
        else:
            x = g.act(f"act{i}", g.conv_bn(f"conv{i}", x, channels, item, 3), act_bits)
            channels = item
    x = g.add("flatten", "flatten", [x])
    g.act("out", g.linear("fc_out", x, channels * height * width, num_classes), out_bits)
    return g.finish()


def resnet(name: str, input_shape: Sequence[int], num_classes: int, widths: Sequence[int], blocks: Sequence[int],
           act_bits: int = 2, out_bits: int = 3, stem_stride: int = 1) -> Arch:
    """ResNet of basic blocks: stem conv 3x3 (stride `stem_stride`) -> bn -> act, stages of `blocks[i]` blocks of
    `widths[i]` channels (each stage after the first halves the resolution in its first block), global average
    pool, linear, act."""
    g = GraphBuilder(name, input_shape, num_classes)
    x = g.act("stem_act", g.conv_bn("stem", INPUT, input_shape[0], widths[0], 3, stem_stride), act_bits)
    channels = widths[0]
    for stage, (width, count) in enumerate(zip(widths, blocks), start=1):
        for block in range(count):
            stride = 2 if stage > 1 and block == 0 else 1
            prefix = f"s{stage}b{block}"
            y = g.act(f"{prefix}_act1", g.conv_bn(f"{prefix}_conv1", x, channels, width, 3, stride), act_bits)
            y = g.conv_bn(f"{prefix}_conv2", y, width, width, 3)
            shortcut = x if stride == 1 and channels == width else \
                g.conv_bn(f"{prefix}_proj", x, channels, width, 1, stride)
            x = g.act(f"{prefix}_act2", g.add(f"{prefix}_add", "add", [y, shortcut]), act_bits)
            channels = width
    x = g.add("pool", "global_avgpool", [x])
    g.act("out", g.linear("fc_out", x, channels, num_classes), out_bits)
    return g.finish()


ARCHS = ("mlp", "lenet", "vgg11", "vgg16", "resnet20", "resnet8")
ARCH_HELP = ("mlp (any input), lenet (CNN with max pooling), vgg11/vgg16 (32x32 RGB), resnet20 (CIFAR ResNet: "
             "16/32/64 channels, 3 blocks per stage, 32x32 RGB), resnet8 (small ResNet for 28x28 grayscale: "
             "stride-2 stem, one block per stage of 32/64/128 channels)")


POOLS = ("max", "avg")
#: The image sides (height and width) a built-in architecture takes: ("at least" or "exactly", pixels).
INPUT_SIDES = {"lenet": ("at least", 4), "resnet8": ("at least", 8), "resnet20": ("exactly", 32),
               "vgg11": ("exactly", 32), "vgg16": ("exactly", 32)}


def check_input_shape(name: str, input_shape: Sequence[int]) -> None:
    """ValueError where a built-in architecture does not take inputs of `input_shape` (INPUT_SIDES)."""
    if name not in INPUT_SIDES:
        return
    rule, side = INPUT_SIDES[name]
    sides = tuple(input_shape[1:])
    if len(input_shape) != 3 or (min(sides) < side if rule == "at least" else sides != (side, side)):
        raise ValueError(f"{name} needs image inputs of {rule} {side}x{side}, got {tuple(input_shape)}")


def make_arch(name: str, input_shape: Sequence[int], num_classes: int, act_bits: int = 2, out_bits: int = 3,
              pool: str = "max") -> Arch:
    """A named architecture for a dataset's input shape; `pool` "avg" puts average pooling where lenet and the
    VGGs max-pool (the paper's pooling ablation)."""
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {', '.join(POOLS)}, got {pool!r}")
    if pool != "max" and name not in ("lenet",) + tuple(VGG_CONFIGS):
        raise ValueError(f"{name} has no max pooling to replace (pool avg is for lenet, vgg11, vgg16)")
    check_input_shape(name, input_shape)
    if name == "mlp":
        return mlp(input_shape, num_classes, act_bits, out_bits)
    if name == "lenet":
        return lenet(input_shape, num_classes, act_bits, out_bits, pool)
    if name == "resnet20":
        return resnet(name, input_shape, num_classes, (16, 32, 64), (3, 3, 3), act_bits, out_bits)
    if name in VGG_CONFIGS:
        return vgg(name, input_shape, num_classes, act_bits, out_bits, pool)
    if name == "resnet8":
        return resnet(name, input_shape, num_classes, (32, 64, 128), (1, 1, 1), act_bits, out_bits, stem_stride=2)
    raise ValueError(f"unknown architecture {name!r} (choose from {', '.join(ARCHS)})")


def set_layer_bits(arch: Arch, bits: Sequence[int]) -> Arch:
    """A copy of `arch` with the act nodes' bits set in order (the last is the output layer)."""
    acts = [node for node in arch["nodes"] if node["op"] == "act"]
    if len(bits) != len(acts):
        raise ValueError(f"{arch['name']} has {len(acts)} activation layers, got {len(bits)} bit widths")
    it = iter(bits)
    nodes = [{**node, "bits": next(it)} if node["op"] == "act" else dict(node) for node in arch["nodes"]]
    result = {**arch, "nodes": nodes}
    check_arch(result)
    return result
