"""Learned step size quantization (LSQ, Esser et al. 2019), per tensor.

    q = clip(round(x / s), q_min, q_max),   y = s * q

`round` is round half up (floor(x + 1/2)), which is what the SNN's half-threshold
pre-charge computes. Gradients (straight-through inside the range):

    dy/dx = 1 if q_min <= x/s <= q_max else 0
    dy/ds = (round(x/s) - x/s  inside,  q_min below,  q_max above) * g,   g = 1/sqrt(N * q_max)

with N the number of features per sample (activations) or of weights. The step is
initialised on the first batch to s = 2 mean|x| / sqrt(q_max); under torchrun, mean|x| is the
mean over every rank's batch, so all ranks start alike (as one process on the global batch would).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from qffs_lava.distributed import all_mean
from qffs_lava.dynamics import round_half_up


def straight_through(value: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """Exactly `value` in the forward pass, with the gradient of `surrogate` in the backward pass."""
    return value.detach() + (surrogate - surrogate.detach())


def grad_scaled(step: torch.Tensor, grad_scale: float) -> torch.Tensor:
    """Exactly the step's value, its gradient multiplied by g (LSQ's step gradient scale)."""
    return straight_through(step, step * grad_scale)


def step_grad_scale(features: int, q_max: int) -> float:
    """LSQ's g = 1 / sqrt(N * q_max)."""
    return 1.0 / math.sqrt(features * q_max)


def lsq_quantize(x: torch.Tensor, step: torch.Tensor, q_min: int, q_max: int, grad_scale: float) -> torch.Tensor:
    """y = s * clip(round(x/s), q_min, q_max) with the LSQ gradients of the module docstring."""
    scaled_step = grad_scaled(step, grad_scale)
    v = (x / scaled_step).clamp(q_min, q_max)
    q = straight_through(round_half_up(v), v)
    return q * scaled_step


class LsqQuantizer(nn.Module):
    """A per-tensor LSQ quantizer with a learned step `step`.

    Unsigned (activations): levels 0 .. 2^b - 1. Signed (weights): -2^(b-1) .. 2^(b-1) - 1.
    """

    def __init__(self, bits: int, signed: bool = False, per_sample: bool = True):
        super().__init__()
        if not 1 <= bits <= 8:
            raise ValueError(f"bits must be in 1..8, got {bits}")
        self.bits, self.signed, self.per_sample = bits, signed, per_sample
        self.q_min = -(2 ** (bits - 1)) if signed else 0
        self.q_max = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
        if self.q_max < 1:
            raise ValueError("a signed quantizer needs at least 2 bits")
        self.step = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not bool(self.initialized):
            if not self.training:
                raise RuntimeError("LSQ step is not initialised: run one training batch first")
            with torch.no_grad():
                self.step.copy_(2 * all_mean(x.detach().abs().float().mean()).clamp_min(1e-8) / math.sqrt(self.q_max))
                self.initialized.fill_(True)
        features = x[0].numel() if self.per_sample else x.numel()
        return lsq_quantize(x, self.step, self.q_min, self.q_max, step_grad_scale(features, self.q_max))

    def levels(self, x: torch.Tensor) -> torch.Tensor:
        """The integer levels q = clip(round(x/s), q_min, q_max), no gradient."""
        return round_half_up(x / self.step.detach()).clamp(self.q_min, self.q_max)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}"
