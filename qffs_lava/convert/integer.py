"""A quantized model's integer network, computed in torch: the one definition of the exporter's arithmetic.

The exporter (float64, no gradient) and the trainer's hardware-exact phase (straight-through
gradients) both get a model's integer network from `IntegerModel.network()`: the `ir.Network`
that qffs-export writes, with its integers also as tensors that carry gradients. The forward
pass runs that network through the closed form every backend's QANN uses
(`backends.pytorch.closed_form`, `dynamics.settled_count`), so the network that is trained is
the network that is exported by construction.

Units. One count of a spiking output stands for `unit` in the ANN: the LSQ step s of an act
(and of a maxpool or flatten of it), 1 / (K inputScale) for the input, which delivers K x_int
counts, x_int = floor(x inputScale + 1/2). For an act with step s and paths p (plan.py) with
folded weights W_p and biases B_p, the float QANN computes

    z = clip(floor((sum_p (W_p unit_p) . z_p + B + s/2) / s), 0, 2^b - 1),   B = sum_p B_p.

The grid (`integer_grid`). Scaling one output channel's numerator and denominator by a
common lambda = 2 mu changes nothing, so per channel mu fills Loihi 2's 8-bit mixed-sign
weight range across all of the layer's synapses, as far as the 24-bit membrane allows, and
everything is rounded to what Loihi 2 holds (round(v) = floor(v + 1/2)):

    A_p = W_p unit_p,   mu = min(127 / max_p max A_p, 128 / max_p max -A_p, mu_fit)
    weight_p = 2 round(mu A_p)                          even integers in [-256, 254]
    (the mantissa range -128..127 is ir/loihi.py's)
    threshold = max(1, round(2 mu s)),   vInit = threshold // 2
    bias per step = round(2 mu B / K) to a 13-bit mantissa times 2^e, 0 <= e <= 7

and the integer network computes

    z = clip(floor((sum_p weight_p . z_p + K bias + vInit) / threshold), 0, 2^b - 1).

mu_fit (`fitting_scale`) is the largest mu whose rounded integers keep the channel's
worst-case |v| (`ir.loihi.membrane_bounds`: every path's source at its count bound beta_p,
`ir.loihi.count_bounds`) below 2^23 and its bias inside the 13-bit grid. Rounding moves each
weight by at most 1 (and never past 4 mu A: round(y) <= 2y for y >= 0), the threshold by 1/2
(at most 2 mu s + 1), vInit = threshold // 2 <= mu s + 1/4, the bias by max(1/2, |2 mu B / K| /
(2^12 - 1/2)), so with P = sum_p beta_p sum pos(A_p), N_P = sum_p beta_p #{A_p > 0}, Q, N_Q
likewise for the negative weights, B+ = pos(B), B- = pos(-B), r = 1 / (2^12 - 1/2), Z = 2^b - 1:

    high <= mu (s + 2 P + 2 (1 + r) B+) + 1/4 + N_P + [B > 0] K / 2    and    <= mu (2 s + 4 P + 4 B+)
    -low <= mu (2 Q + 2 (1 + r) B- + 2 s Z) + N_Q + [B < 0] K / 2 + Z  and    <= mu (4 Q + 4 B- + 2 s Z) + Z

and mu_fit takes the larger mu each pair allows below 2^23 - 1 on both sides, and |2 mu B / K|
below the bias limit: no iteration, no check afterwards. Where mu_fit binds, the channel's
largest weight keeps fewer than 8 bits. The input scale is the dataset's levels unless the
model file records a coarser one (qffs-train's choice after LSQ training, `ann.train.choose_grid`).

A full-precision output (act bits "float") becomes a read-out (`ir.layers.Readout`), which
never fires: its integer network's value is the potential sum_p weight_p . z_p + K bias, and
the prediction its argmax. Its float QANN computes the logits sum_p A_p . z_p + B, whose argmax
a per-channel scale would change, so the read-out takes one mu for all its channels
(`readout_grid`): weight_p = 2 round(mu A_p), bias = round(2 mu B / K) on the 13-bit grid, so
the potential is lambda (sum_p A_p . z_p + B) up to rounding, lambda = 2 mu, and the integer
model's logits are the potential / lambda. mu fills the 8-bit weights of the layer's largest
weight, capped by the smallest of its channels' `fitting_scale` with no threshold and no spikes
(s = 0, Z = 0): the bounds above with those terms gone bound the potential over the whole run.

For training, every round and floor passes the gradient of the value it rounds, mu is a
constant, and each act's step carries LSQ's gradient scale: the forward pass is the
integer network, the gradients are (up to rounding) the float QANN's. BatchNorm folds with
its running statistics, which the phase therefore leaves frozen.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from qffs_lava.ann.lsq import grad_scaled, step_grad_scale, straight_through
from qffs_lava.ann.models import FLOAT, INPUT, GraphModel, check_arch, pair
from qffs_lava.backends.pytorch import LayerTensors, channel_shape, closed_form
from qffs_lava.convert.plan import Path, Planned, plan_layers
from qffs_lava.dynamics import NeuronParams, round_half_up
from qffs_lava.errors import ModelFileError, ParameterError, QffsError
from qffs_lava.ir.layers import ConvSynapse, DenseSynapse, Layer, NeuronLayer, Neurons, Readout, Synapse
from qffs_lava.ir.loihi import (BIAS_LIMIT, BIAS_ROUNDING, STATE_LIMIT, WEIGHT_MANTISSA_MAX, WEIGHT_MANTISSA_MIN,
                                input_count_bound, nearest_bias)
from qffs_lava.ir.network import Network

Tensor = torch.Tensor


#: The fewest bits a channel's largest weight may keep where the grid is coarsened to fit the membrane
#: (qffs-train refuses, before training, a layer that could need fewer: `check_fit`).
MIN_WEIGHT_BITS = 4
#: The coarsest input scale the grid is chosen from: x_int up to 16 (4-bit inputs).
MIN_INPUT_SCALE = 15.5


class Grid(NamedTuple):
    """A neuron layer's integers on Loihi 2's grid (as float tensors), one weight tensor per path."""

    weights: List[Tensor]
    bias: Tensor
    threshold: Tensor
    v_init: Tensor
    scale: Tensor  # lambda = 2 mu per channel, the integers' scale over the float QANN's (no gradient)


def fitting_scale(rows: Sequence[Tensor], bounds: Sequence[int], bias: Tensor, step: Tensor, z_max: int,
                  bias_steps: int) -> Tensor:
    """mu_fit per output channel (module docstring): the largest mu whose rounded integers keep the worst-case |v|
    below 2^23 and the per-step bias inside the 13-bit grid.

    rows: per path, A_p as (channels, fan-in); bounds: per path, its source's count bound beta_p; bias: B; step: s.
    """
    limit, k, s = STATE_LIMIT - 1, bias_steps, float(step)
    up, down = bias.clamp_min(0), (-bias).clamp_min(0)
    pos = sum(r.clamp_min(0).sum(1) * b for r, b in zip(rows, bounds))
    neg = sum((-r).clamp_min(0).sum(1) * b for r, b in zip(rows, bounds))
    pos_n = sum((r > 0).sum(1) * b for r, b in zip(rows, bounds))
    neg_n = sum((r < 0).sum(1) * b for r, b in zip(rows, bounds))

    def largest(room, slope, const, proportional_slope, proportional_const):
        """The larger mu of the two bounds slope mu + const <= room (each inf where its slope is 0)."""
        linear = torch.where(slope > 0, (room - const) / slope, torch.inf)
        proportional = torch.where(proportional_slope > 0, (room - proportional_const) / proportional_slope,
                                   torch.inf)
        return torch.maximum(linear, proportional)

    high = largest(limit, s + 2 * pos + 2 * (1 + BIAS_ROUNDING) * up, 0.25 + pos_n + (up > 0) * k / 2,
                   2 * s + 4 * pos + 4 * up, 0.0)
    low = largest(limit, 2 * neg + 2 * (1 + BIAS_ROUNDING) * down + 2 * s * z_max,
                  neg_n + (down > 0) * k / 2 + z_max, 4 * neg + 4 * down + 2 * s * z_max, z_max)
    in_grid = torch.where(bias != 0, BIAS_LIMIT * (1 - 2**-40) * k / (2 * bias.abs()), torch.inf)
    return torch.minimum(torch.minimum(high, low), in_grid)


def integer_grid(scaled: Sequence[Tensor], bias: Tensor, step: Tensor, bias_steps: int, bounds: Sequence[int],
                 z_max: int, fit: bool = True, shared: bool = False) -> Grid:
    """The integers of a neuron layer on Loihi 2's grid (module docstring), mu capped by `fitting_scale`.

    scaled: A_p = W_p unit_p for each path, output channel first; bias: B, the float bias (O,); step: the act's s;
    bounds: each path's source's count bound; z_max: the act's 2^b - 1. fit=False leaves mu uncapped (only to
    measure what fitting costs: the network may then leave Loihi 2's ranges); shared: one mu for every channel,
    the smallest (a read-out's). Values are exact integers; gradients flow straight through every rounding.
    """
    low, high = WEIGHT_MANTISSA_MIN, WEIGHT_MANTISSA_MAX
    rows = [a.detach().reshape(a.shape[0], -1) for a in scaled]
    top = torch.stack([r.clamp_min(0).amax(dim=1) for r in rows]).amax(dim=0)
    bottom = torch.stack([(-r).clamp_min(0).amax(dim=1) for r in rows]).amax(dim=0)
    inf = torch.full_like(top, float("inf"))
    mu = torch.minimum(torch.where(top > 0, high / top, inf), torch.where(bottom > 0, -low / bottom, inf))
    mu = torch.where(torch.isfinite(mu), mu, torch.ones_like(mu))  # an all-zero channel: any scale
    if fit:
        mu = torch.minimum(mu, fitting_scale(rows, bounds, bias.detach(), step.detach(), z_max, bias_steps))
    if shared:
        mu = mu.min().expand_as(mu)
    lam = 2 * mu
    weights = []
    for a in scaled:
        m = mu.reshape(-1, *([1] * (a.ndim - 1)))
        weights.append(2 * straight_through(round_half_up(m * a).clamp(low, high), (m * a).clamp(low, high)))
    threshold = straight_through(round_half_up(lam * step).clamp_min(1), lam * step)
    bias_int = straight_through(nearest_bias(lam * bias / bias_steps), lam * bias / bias_steps)
    v_init = straight_through(torch.div(threshold, 2, rounding_mode="floor"), threshold / 2)
    return Grid(weights, bias_int, threshold, v_init, lam)


def readout_grid(scaled: Sequence[Tensor], bias: Tensor, bias_steps: int, bounds: Sequence[int],
                 fit: bool = True) -> Tuple[List[Tensor], Tensor, Tensor]:
    """The integers of a read-out on Loihi 2's grid (module docstring): (weights, per-step bias, lambda), with
    one mu for every channel, so that the potential is lambda times the float logits up to rounding and their
    argmax is kept. Arguments as `integer_grid`'s; lambda = 2 mu is a constant (no gradient)."""
    no_step = torch.zeros((), dtype=bias.dtype, device=bias.device)
    grid = integer_grid(scaled, bias, no_step, bias_steps, bounds, 0, fit, shared=True)
    return grid.weights, grid.bias, grid.scale


def weight_bits(layer: NeuronLayer) -> np.ndarray:
    """Per output channel, the bits its largest weight keeps, 1 + log2(largest |mantissa|) (8 where it fills
    the 8-bit range, 0 for a channel of zeros)."""
    mantissa = np.max([np.abs(s.rows()).max(axis=1, initial=0) for s in layer.synapses], axis=0) // 2
    return np.where(mantissa > 0, 1 + np.log2(np.maximum(mantissa, 1)), 0.0)


def same_integers(network: Network, other: Network) -> bool:
    """Whether two integer networks of one model hold the same weights, biases and thresholds."""
    return all(np.array_equal(a.bias, b.bias) and _same_neurons(a.neurons, b.neurons)
               and all(np.array_equal(s.weight, t.weight) for s, t in zip(a.synapses, b.synapses))
               for (_, a), (_, b) in zip(network.neuron_layers, other.neuron_layers))


def _same_neurons(a, b) -> bool:
    """Whether two layers' neurons are of one type with equal parameters."""
    return type(a) is type(b) and all(np.array_equal(getattr(a, f.name), getattr(b, f.name))
                                      for f in dataclasses.fields(a))


def scaled_layers(network: Network, reference: Network) -> Dict[str, Dict[str, Any]]:
    """Per neuron layer (by model name) whose channels' largest weights keep fewer bits than on the reference
    grid: `channels` so scaled of `of`, and `weight_bits`, the fewest bits a channel's largest weight keeps."""
    names, scaled = network.meta["layer_names"], {}
    for (i, layer), (_, ref) in zip(network.neuron_layers, reference.neuron_layers):
        bits, full = weight_bits(layer), weight_bits(ref)
        fewer = bits < full
        if fewer.any():
            scaled[names[i]] = {"channels": int(fewer.sum()), "of": len(bits),
                                "weight_bits": round(float(bits[full > 0].min()), 2)}
    return scaled


def input_scales(levels: float) -> List[float]:
    """The input scales a grid is chosen from, finest first: the dataset's levels, then halvings of it down to
    MIN_INPUT_SCALE (each halves the worst case of the layers that read the input; x_int is then rounded)."""
    scales = [float(levels)]
    while scales[-1] / 2 >= MIN_INPUT_SCALE:
        scales.append(scales[-1] / 2)
    return scales


def bias_steps_of(arch: Dict[str, Any]) -> int:
    """K = 2^b - 1 for the widest hidden act (the output act's bits where there is no hidden one, 1 for a
    full-precision output alone)."""
    bits = [node["bits"] for node in arch["nodes"] if node["op"] == "act"]
    return 2 ** max(bits[:-1], default=bits[-1] if bits[-1] != FLOAT else 1) - 1


def recorded_scale(content: Dict[str, Any]) -> Optional[float]:
    """The input scale a model file's `grid` records (qffs-train's choice), None where it records none."""
    grid = content.get("grid")
    if grid is None:
        return None
    scale = grid.get("input_scale") if isinstance(grid, dict) else None
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 2**16:
        raise ModelFileError(f"the model file's grid records the input scale {scale!r}, not a number in (0, 65536]: "
                             "train it again with qffs-train")
    return float(scale)


def _fan_in(path: Path, nodes: Dict[str, Any], shapes: Dict[str, Any]) -> int:
    """The weights per output channel of the path's folded synapse (an average pool spreads each over its
    window)."""
    if path.synapse is None:
        return 1
    node = nodes[path.synapse]
    if node["op"] == "conv":
        kernel = pair(node["kernel_size"])
        fan_in = node["in_channels"] // node.get("groups", 1) * kernel[0] * kernel[1]
    else:
        fan_in = node["in_features"]
    if path.pool is not None:
        pool = nodes[path.pool]
        window = shapes[path.source][1:] if pool["op"] == "global_avgpool" else pair(pool["kernel_size"])
        fan_in *= int(window[0]) * int(window[1])
    return fan_in


def _overflowing(arch: Dict[str, Any], input_levels: float) -> Optional[Tuple[str, int, int]]:
    """The first act (name, fan-in, worst case) whose channel of weights all of one sign and of the size of a
    MIN_WEIGHT_BITS-bit largest weight reaches |v| >= 2^23 with its sources at their count bounds, the input at
    the coarsest input scale; None where there is none."""
    plan, nodes, shapes = plan_layers(arch), {n["name"]: n for n in arch["nodes"]}, check_arch(arch)
    origin, steps = origins(plan), bias_steps_of(arch)
    coarsest = input_count_bound(input_scales(input_levels)[-1], steps)
    for planned in plan:
        if not planned.paths:
            continue
        fan_ins = [_fan_in(path, nodes, shapes) for path in planned.paths]
        bounds = [coarsest if origin[p.source] == INPUT else 2 ** nodes[origin[p.source]]["bits"] - 1
                  for p in planned.paths]
        worst = 2**MIN_WEIGHT_BITS * sum(f * b for f, b in zip(fan_ins, bounds))
        if worst >= STATE_LIMIT:
            return planned.name, sum(fan_ins), worst
    return None


def check_fit(arch: Dict[str, Any], input_levels: float) -> None:
    """ParameterError, before any training, for an architecture whose integer grid may not fit Loihi 2 at
    MIN_WEIGHT_BITS: a layer where weights of one sign, all as large as a MIN_WEIGHT_BITS-bit largest weight,
    reach |v| >= 2^23 with every source at its count bound (the input at its coarsest scale, `input_scales`).
    The message names the activation bits that would fit, where fewer would."""
    found = _overflowing(arch, input_levels)
    if found is None:
        return
    name, fan_in, worst = found
    bits = max(node["bits"] for node in arch["nodes"] if node["op"] == "act" and node["bits"] != FLOAT)
    fewer = next((b for b in range(bits - 1, 0, -1) if _overflowing(
        {**arch, "nodes": [{**n, "bits": min(n["bits"], b)} if n["op"] == "act" and n["bits"] != FLOAT else n
                           for n in arch["nodes"]]},
        input_levels) is None), None)
    advice = ("train with fewer activation bits ({}) or give it a smaller fan-in", ("act_bits", fewer)) \
        if fewer is not None else ("give it a smaller fan-in",)
    raise ParameterError(f"act {name!r} cannot fit Loihi 2's 24-bit membrane: its {fan_in} inputs at their count "
                         f"bounds reach |v| {worst:,} >= 2^23 even with {MIN_WEIGHT_BITS}-bit weights (where they "
                         f"share one sign and size) and the input at {input_scales(input_levels)[-1]:g} levels: "
                         + advice[0], *advice[1:])


# Folding -------------------------------------------------------------------------------------------

def fold_batchnorm(weight: Tensor, bias: Tensor, bn: nn.Module) -> Tuple[Tensor, Tensor]:
    """W' = W g, B' = (B - mean) g + beta with g = gamma / sqrt(running var + eps), per output channel."""
    gain = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    shift = bn.bias.double() - bn.running_mean.double() * gain
    return weight * gain.reshape(-1, *([1] * (weight.ndim - 1))), bias * gain + shift


def fold_avgpool(weight: Tensor, kernel: Tuple[int, int], flat_shape: Optional[Tuple[int, int, int]]) -> Tensor:
    """Weights of the next layer acting on the unpooled map: each tap spread over its kH x kW block / (kH kW).

    A conv weight (O, I, kh, kw) becomes (O, I, kH kh, kW kw) (stride and padding times the kernel);
    a dense weight over a flattened pooled map (C, Hp, Wp) becomes one over (C, kH Hp, kW Wp).
    """
    if flat_shape is not None:
        weight = weight.reshape(weight.shape[0], *flat_shape)
    spread = weight.repeat_interleave(kernel[0], dim=-2).repeat_interleave(kernel[1], dim=-1) / (kernel[0] * kernel[1])
    return spread.reshape(weight.shape[0], -1) if flat_shape is not None else spread


def pooled_conv(kernel: Tuple[int, int], stride: Tuple[int, int], pool_kernel: Tuple[int, int],
                pool_stride: Tuple[int, int]) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """(kernel, stride) of the one conv that a conv followed by average pooling (no padding) is: k + s (K - 1),
    s T per axis."""
    return (tuple(k + s * (p - 1) for k, s, p in zip(kernel, stride, pool_kernel)),
            tuple(s * t for s, t in zip(stride, pool_stride)))


def fold_avgpool_after(weight: Tensor, stride: Tuple[int, int], pool_kernel: Tuple[int, int],
                       pool_stride: Tuple[int, int]) -> Tuple[Tensor, Tuple[int, int]]:
    """(weight, stride) of a conv (weight (O, I, kh, kw), stride s, any padding) followed by average pooling (kernel K,
    stride T, no padding) as one conv, `pooled_conv`'s: the kernel spread over the pool window,

        W'[a, b] = sum_{u < KH, v < KW} W[a - sH u, b - sW v] / (KH KW),

    the padding unchanged. Its outputs are the pool's: floor((H + 2p - k - s (K - 1)) / (s T)) + 1 per axis."""
    (kh, kw), out_stride = pooled_conv(tuple(weight.shape[-2:]), stride, pool_kernel, pool_stride)
    (sh, sw), (ph, pw) = stride, pool_kernel
    spread = sum(F.pad(weight, (v * sw, kw - weight.shape[-1] - v * sw, u * sh, kh - weight.shape[-2] - u * sh))
                 for u in range(ph) for v in range(pw))
    return spread / (ph * pw), out_stride


def fold_input_normalization(weight: Tensor, bias: Tensor, mean, std) -> Tuple[Tensor, Tensor]:
    """A synapse on raw x instead of (x - mean) / std: W' = W / std, B' = B - W' . mean (per channel); exact but
    for zero padding, which `check_input_norm` rules out."""
    mean, std = (torch.tensor(v, dtype=torch.float64, device=weight.device).reshape(-1) for v in (mean, std))
    channels = len(std)
    if channels == 1:  # one mean and std for every channel
        w = weight / std
        return w, bias - mean * w.flatten(1).sum(dim=1)
    if weight.ndim == 4:  # weight[o, j] reads input channel g * (C / groups) + j, g the group of output o
        out, per_group = weight.shape[:2]
        group = torch.arange(out, device=weight.device) // (out // (channels // per_group))
        reads = (group[:, None] * per_group + torch.arange(per_group, device=weight.device))[..., None, None]
        w = weight / std[reads]
        return w, bias - (w * mean[reads]).sum(dim=(1, 2, 3))
    w = weight.reshape(weight.shape[0], channels, -1) / std.reshape(1, -1, 1)
    return w.reshape(weight.shape), bias - (w * mean.reshape(1, -1, 1)).sum(dim=(1, 2))


def origins(plan: Sequence[Planned]) -> Dict[str, str]:
    """Per spiking output, the act (or the input) whose counts it carries (a maxpool or flatten carries its
    source's)."""
    origin: Dict[str, str] = {}
    for planned in plan:
        origin[planned.name] = planned.name if planned.paths or not planned.sources else origin[planned.sources[0]]
    return origin


def check_input_norm(arch: Dict[str, Any], input_norm: Dict[str, Any]) -> None:
    """ParameterError where the input normalization cannot be folded exactly: a non-zero mean into a synapse on the
    input that pads with zeros (the padding would be -mean/std in the trained model, 0 on the raw input)."""
    if not any(input_norm["mean"]):
        return
    plan, nodes = plan_layers(arch), {node["name"]: node for node in arch["nodes"]}
    origin = origins(plan)
    for planned in plan:
        for path in planned.paths:
            if path.synapse is not None and origin[path.source] == INPUT and any(pair(nodes[path.synapse].get(
                    "padding", 0))):
                raise ParameterError(f"{{}} with a non-zero mean cannot be folded exactly into {path.synapse!r}, which "
                                     "reads the input with zero padding: give a mean of 0 (normalize by std alone), "
                                     "or pad the input yourself", "input_norm")


def pool_notes(arch: Dict[str, Any]) -> List[str]:
    """A note for each average pool after a conv, which the conversion folds into it (`fold_avgpool_after`)."""
    nodes, notes = {node["name"]: node for node in arch["nodes"]}, []
    for planned in plan_layers(arch):
        for path in planned.paths:
            if path.out_pool is not None:
                conv, pool = nodes[path.synapse], nodes[path.out_pool]
                kernel, stride = pooled_conv(pair(conv["kernel_size"]), pair(conv.get("stride", 1)),
                                             pair(pool["kernel_size"]), pair(pool["stride"]))
                notes.append(f"note: average pool {path.out_pool!r} follows conv {path.synapse!r} into ReLU "
                             f"{planned.name!r}: converted as one conv of kernel {kernel[0]}x{kernel[1]}, stride "
                             f"{stride[0]}x{stride[1]} (the kernel of {path.synapse!r} spread over the pool window), "
                             "the same function (average pooling is linear), which QFFS converts")
    return notes


@dataclass
class FoldedPath:
    """A path's synapse with everything folded in, in float64: the IR synapse (its geometry, and its weight as a
    float tensor, conv (O, I, kh, kw) or dense (O, M)) and the bias it adds."""

    synapse: Synapse
    bias: Tensor


def _ints(tensor: Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy().astype(np.int64)


# The integer network of a model -------------------------------------------------------------------


class IntegerModel(nn.Module):
    """The integer QANN that `qffs-export` writes for `model`, recomputed from its parameters on every call.

    `network()` is that network (an ir.Network, what qffs-export writes) with its integers as
    tensors; forward(x) runs it (the output counts times the output act's step: logits, as the
    float QANN's); `run(x)` gives every layer's counts. `input_scale` (default: the dataset's
    levels) is the grid's input scale; fit=False leaves every channel's mu uncapped, a network
    that may leave Loihi 2's ranges (only to measure what fitting costs).
    """

    def __init__(self, model: GraphModel, arch: Dict[str, Any], input_levels: float, input_norm: Dict[str, Any],
                 input_scale: Optional[float] = None, fit: bool = True):
        super().__init__()
        self.model = model
        self.input_norm = input_norm
        self.shapes = check_arch(arch)
        self.nodes = {node["name"]: node for node in arch["nodes"]}
        self.bias_steps = bias_steps_of(arch)
        self.input_scale = float(input_levels if input_scale is None else input_scale)
        self.fit = fit
        self.plan: List[Planned] = plan_layers(arch, self.input_scale)
        self.origin = origins(self.plan)
        check_input_norm(arch, input_norm)
        for planned in self.plan:
            if planned.paths and not self.read_out(planned.name) and \
                    not bool(getattr(model, planned.name).quantizer.initialized):
                raise QffsError(f"act {planned.name!r} was never quantization-trained (run qffs-train)")

    @classmethod
    def of(cls, content: Dict[str, Any], model: GraphModel) -> "IntegerModel":
        """The integer model of a model file's content and model (modelfile.load_model_file), on the grid its
        `grid` records (qffs-train's choice; files without one: the dataset's levels)."""
        return cls(model, content["arch"], content["input_levels"], content["input_norm"], recorded_scale(content))

    def read_out(self, act: str) -> bool:
        """Whether the act is a full-precision output (bits FLOAT), which becomes a read-out."""
        return self.nodes[act]["bits"] == FLOAT

    def step(self, act: str) -> Tensor:
        """The act's LSQ step in float64, its gradient scaled as LSQ scales it."""
        quantizer = getattr(self.model, act).quantizer
        features = 1
        for n in self.shapes[act]:
            features *= n
        return grad_scaled(quantizer.step.double(), step_grad_scale(features, quantizer.q_max))

    def unit(self, source: str) -> Tensor:
        """What one count of a spiking output stands for in the ANN."""
        origin = self.origin[source]
        if origin == INPUT:
            return torch.tensor(1.0 / (self.bias_steps * self.input_scale), dtype=torch.float64, device=self.device)
        return self.step(origin)

    def count_bound(self, source: str) -> int:
        """The most counts a spiking output delivers (ir.loihi.count_bounds): the input's, or its act's 2^b - 1."""
        origin = self.origin[source]
        if origin == INPUT:
            return input_count_bound(self.input_scale, self.bias_steps)
        return 2 ** getattr(self.model, origin).bits - 1

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def folded(self, path: Path, out_shape: Tuple[int, ...]) -> FoldedPath:
        """The path's synapse with batchnorm, average pooling (before it, or after a conv) and the input normalization
        folded in."""
        if path.synapse is None:  # the identity: a diagonal synapse
            channels, like = out_shape[0], dict(dtype=torch.float64, device=self.device)
            if len(out_shape) == 3:
                return FoldedPath(ConvSynapse(torch.ones(channels, 1, 1, 1, **like), groups=channels),
                                  torch.zeros(channels, **like))
            return FoldedPath(DenseSynapse(torch.eye(channels, **like)), torch.zeros(channels, **like))
        node, module = self.nodes[path.synapse], getattr(self.model, path.synapse)
        weight, bias = module.effective_weight().double(), module.bias.double()
        stride, padding = pair(node.get("stride", 1)), pair(node.get("padding", 0))
        if path.pool is not None:
            weight, stride, padding = self._fold_pool(path, node, weight, stride, padding)
        if path.out_pool is not None:
            pool = self.nodes[path.out_pool]
            weight, stride = fold_avgpool_after(weight, stride, pair(pool["kernel_size"]), pair(pool["stride"]))
        if path.batchnorm is not None:
            weight, bias = fold_batchnorm(weight, bias, getattr(self.model, path.batchnorm))
        if self.origin[path.source] == INPUT:
            weight, bias = fold_input_normalization(weight, bias, self.input_norm["mean"], self.input_norm["std"])
        if weight.ndim == 4:
            return FoldedPath(ConvSynapse(weight, stride, padding, groups=node.get("groups", 1)), bias)
        return FoldedPath(DenseSynapse(weight), bias)

    def _fold_pool(self, path: Path, node, weight, stride, padding):
        pool = self.nodes[path.pool]
        source_shape = self.shapes[path.source]
        if pool["op"] == "global_avgpool":
            kernel = tuple(source_shape[1:])
        else:
            kernel = pair(pool["kernel_size"])
            if kernel != pair(pool["stride"]):
                raise QffsError(f"avgpool {path.pool!r}: only average pooling with kernel == stride can be folded")
            if source_shape[1] % kernel[0] or source_shape[2] % kernel[1]:
                raise QffsError(f"avgpool {path.pool!r}: kernel {kernel} does not tile the "
                                f"{source_shape[1]}x{source_shape[2]} map")
        if node["op"] == "conv":
            return (fold_avgpool(weight, kernel, None), (stride[0] * kernel[0], stride[1] * kernel[1]),
                    (padding[0] * kernel[0], padding[1] * kernel[1]))
        pooled = (source_shape[0], source_shape[1] // kernel[0], source_shape[2] // kernel[1])
        return fold_avgpool(weight, kernel, pooled), stride, padding

    def neuron_layer(self, planned: Planned, inputs: Tuple[int, ...]) -> Tuple[NeuronLayer, LayerTensors]:
        """One act's neuron layer and its integers as tensors: its paths folded, scaled by their units, and put
        on the grid."""
        shape = tuple(self.shapes[planned.name])
        folded = [self.folded(path, shape) for path in planned.paths]
        scaled = [f.synapse.weight * self.unit(path.source) for f, path in zip(folded, planned.paths)]
        bias = folded[0].bias
        for f in folded[1:]:
            bias = bias + f.bias
        bounds = [self.count_bound(path.source) for path in planned.paths]
        if self.read_out(planned.name):
            weights, bias_int, self.readout_scale = readout_grid(scaled, bias, self.bias_steps, bounds, self.fit)
            tensors = LayerTensors(tuple(weights), bias_int.reshape(channel_shape(shape)), None)
            neurons = Readout(bias_steps=self.bias_steps)
        else:
            z_max = 2 ** getattr(self.model, planned.name).bits - 1
            weights, bias_int, threshold, v_init, _ = integer_grid(scaled, bias, self.step(planned.name),
                                                                   self.bias_steps, bounds, z_max, self.fit)
            channel = channel_shape(shape)
            tensors = LayerTensors(tuple(weights), bias_int.reshape(channel),
                                   NeuronParams(threshold=threshold.reshape(channel), z_max=z_max,
                                                v_init=v_init.reshape(channel)))
            neurons = Neurons(threshold=_ints(threshold), v_init=_ints(v_init), z_max=z_max,
                              bias_steps=self.bias_steps)
        synapses = tuple(dataclasses.replace(f.synapse, weight=_ints(w)) for f, w in zip(folded, weights))
        return NeuronLayer(shape, synapses, _ints(bias_int), neurons, inputs), tensors

    def network(self) -> Tuple[Network, Dict[int, LayerTensors]]:
        """The integer network (what qffs-export writes; meta `layer_names`: the model node of each layer) and,
        by layer index, its neuron layers' integers as tensors that carry the parameters' gradients."""
        index: Dict[str, int] = {}
        layers: List[Layer] = []
        tensors: Dict[int, LayerTensors] = {}
        for planned in self.plan:
            inputs = tuple(index[s] for s in planned.sources)
            if planned.paths:
                layer, tensors[len(layers)] = self.neuron_layer(planned, inputs)
                layers.append(layer)
            else:
                layers.append(dataclasses.replace(planned.layer, inputs=inputs))
            index[planned.name] = len(layers) - 1
        return Network(layers, {"layer_names": [planned.name for planned in self.plan]}), tensors

    def run(self, x: Tensor, preactivations: Optional[Dict[int, Tensor]] = None) -> List[Tensor]:
        """Every layer's counts, by layer index, in x's dtype: `network()` run by `closed_form` on dataset values x,
        gradients passed straight through every floor. Given a dict, also fills it with each neuron layer's
        pre-activation (sum_p weight_p . z_p + K bias + vInit) / threshold, whose floor, clipped, is the count."""
        network, tensors = self.network()
        return closed_form(network, {i: _as(t, x.dtype) for i, t in tensors.items()}, network.input.encode(x),
                           straight_through=True, preactivations=preactivations)

    def forward(self, x: Tensor, preactivations: Optional[Dict[str, Tensor]] = None) -> Tensor:
        """The output counts times the output act's step (the float QANN's logits), or a read-out's potential over
        its scale lambda; given a dict, also fills it, by act name, with each spiking layer's pre-activation (as
        GraphModel does)."""
        by_index: Optional[Dict[int, Tensor]] = {} if preactivations is not None else None
        counts = self.run(x, by_index)
        if preactivations is not None:
            names = [planned.name for planned in self.plan]
            preactivations.update({names[i]: value for i, value in by_index.items() if i != len(names) - 1
                                   or not self.read_out(names[i])})
        if self.read_out(self.plan[-1].name):
            return counts[-1] / self.readout_scale.reshape(channel_shape(counts[-1].shape[1:])).to(x.dtype)
        return counts[-1] * self.step(self.plan[-1].name).to(x.dtype)


def _as(tensors: LayerTensors, dtype: torch.dtype) -> LayerTensors:
    """The layer's integers in another float dtype (the trainer computes in its inputs' dtype)."""
    params = tensors.params
    if params is not None:
        params = NeuronParams(threshold=params.threshold.to(dtype), z_max=params.z_max, v_init=params.v_init.to(dtype))
    return LayerTensors(tuple(w.to(dtype) for w in tensors.weights), tensors.bias.to(dtype), params)


def trained_qann(content: Dict[str, Any], model: GraphModel) -> nn.Module:
    """The QANN a model file was trained as: its integer model after the hardware-exact phase, else the model."""
    return IntegerModel.of(content, model) if content.get("hardware_exact") else model
