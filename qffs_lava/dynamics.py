"""The QFFS dynamics, written once: Algorithm 1 (the neuron), the read-out and Algorithm 2 (event max pool).

Every backend (the torch simulator, the Lava ProcessModels) calls these functions, so
the paper's two algorithms live here and nowhere else. They are pure functions over
integer arrays and use only operators and methods that numpy arrays and torch tensors
share, so one code path serves both libraries. Batch dimensions lead; the neuron or
pool dimension is last.

Spec: docs/format.md, "Semantics".
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence, Tuple

import numpy as np

Array = Any  # a numpy array or a torch tensor; the functions return the same kind

#: Loihi 2 holds the membrane potential in 24-bit signed registers and saturates.
V_MIN = -(2**23)
V_MAX = 2**23 - 1


def round_half_up(x: Array) -> Array:
    """floor(x + 1/2): round to nearest, halves up, as QFFS rounds everywhere (numpy's and torch's round
    send halves to even)."""
    return (x + 0.5) // 1


class NeuronParams(NamedTuple):
    """QFFS neuron parameters (scalars or arrays broadcastable to the neuron shape).

    threshold: th > 0, the spike threshold; a spike subtracts it from v.
    z_max:     the bound on the net spike count z (2^b - 1 for b-bit activations).
    v_init:    the pre-charge, th // 2, so the neuron rounds to nearest like the ANN.
    """

    threshold: Array
    z_max: Array
    v_init: Array


class Mechanisms(NamedTuple):
    """Which of QFFS's mechanisms a simulation uses; the paper's ablation study leaves some out.

    negative_spikes: Algorithm 1's -1 spike when v < 0 and z > 0 (off: never).
    count_bound:     z <= z_max (off: a neuron fires whenever v >= th).
    precharge:       v starts at v_init = th // 2 (off: at 0).
    The SNN semantics of docs/format.md are all three on (`ALL_MECHANISMS`).
    """

    negative_spikes: bool = True
    count_bound: bool = True
    precharge: bool = True

    def params(self, params: NeuronParams) -> NeuronParams:
        """The neuron parameters these mechanisms give: z_max unbounded without the bound, v_init 0 without
        the pre-charge."""
        return NeuronParams(threshold=params.threshold, z_max=params.z_max if self.count_bound else UNBOUNDED,
                            v_init=params.v_init if self.precharge else params.v_init * 0)


ALL_MECHANISMS = Mechanisms()
UNBOUNDED = 2**31 - 1  # a count bound no simulation reaches
#: The paper's ablations by name (qffs-run --ablate): each leaves one mechanism out.
ABLATIONS = {"negative-spikes": "negative_spikes", "count-bound": "count_bound", "precharge": "precharge"}


def without(*names: str) -> Mechanisms:
    """All mechanisms but the named ones (keys of ABLATIONS)."""
    return Mechanisms(**{ABLATIONS[name]: False for name in names})


class NeuronState(NamedTuple):
    """QFFS neuron state: membrane potential v and net spike count z (0 <= z <= z_max)."""

    v: Array
    z: Array


def bias_active(t: int, start: int, steps: int) -> bool:
    """Whether step t (1-based) is in the bias window start .. start + steps - 1 (K steps)."""
    return start <= t < start + steps


def neuron_init(zeros: Array, params: NeuronParams) -> NeuronState:
    """State before the first step: v = v_init, z = 0, shaped and typed like `zeros`."""
    return NeuronState(v=zeros + params.v_init, z=zeros + 0)


def neuron_step(current: Array, state: NeuronState, params: NeuronParams,
                negative_spikes: bool = True) -> Tuple[Array, NeuronState]:
    """One step of the QFFS neuron (the paper's Algorithm 1). Returns (spikes, new state).

        v <- clip(v + I, V_MIN, V_MAX)                       # 24-bit saturation
        if   v >= th and z < z_max:  s = +1; v -= th; z += 1  # bounded positive spike
        elif v <  0  and z > 0:      s = -1; v += th; z -= 1  # negative spike cancels noise
        else:                        s =  0

    Since th > 0 the two conditions exclude each other. After the input stops, the
    neuron settles at z = clip(floor((sum(I) + v_init) / th), 0, z_max). With
    negative_spikes False (an ablation) the second branch never fires.
    """
    v = (state.v + current).clip(V_MIN, V_MAX)
    fire = (v >= params.threshold) & (state.z < params.z_max)
    one = params.threshold ** 0  # 1 in the threshold's type, so spikes keep the state's dtype
    spikes = fire * one
    if negative_spikes:
        spikes = spikes - ((v < 0) & (state.z > 0)) * one
    return spikes, NeuronState(v=v - spikes * params.threshold, z=state.z + spikes)


def integrated(spikes: Array, state: NeuronState, params: NeuronParams) -> Array:
    """The membrane potential a `neuron_step` integrated, before its spike: v + s th of the state it returned
    (the value the 24-bit register held that step)."""
    return state.v + spikes * params.threshold


def settled_count(total_input: Array, params: NeuronParams, straight_through: bool = False) -> Array:
    """Where a neuron's count ends after its input stops: clip(floor((sum I + v_init) / th), 0, z_max).

    This is the integer quantized ANN's activation; it holds while v stays inside 24 bits.
    With straight_through (torch tensors, for training), the value is the same and its gradient
    is that of the value it rounds, clip((sum I + v_init) / th - 1/2, 0, z_max).
    """
    count = ((total_input + params.v_init) // params.threshold).clip(0, params.z_max)
    if not straight_through:
        return count
    smooth = ((total_input + params.v_init) / params.threshold - 0.5).clip(0, params.z_max)
    return count.detach() + (smooth - smooth.detach())


class ReadoutState(NamedTuple):
    """Read-out state: the membrane potential v, the running sum of its input current."""

    v: Array


def readout_init(zeros: Array) -> ReadoutState:
    """State before the first step: v = 0, shaped and typed like `zeros` (a read-out has no pre-charge)."""
    return ReadoutState(v=zeros + 0)


def readout_step(current: Array, state: ReadoutState) -> Tuple[Array, ReadoutState]:
    """One step of the read-out, the integrate-but-not-fire output of the paper's Figure 7. Returns (spikes, new
    state); the spikes are always 0:

        v <- clip(v + I, V_MIN, V_MAX)        # integrate, never fire, never reset (24-bit saturation)

    so v(t) = sum_{tau <= t} I(tau) while it stays inside 24 bits (the exporter refuses a network whose
    worst-case v does not: `ir.loihi.membrane_bounds`).

    Why argmax(v) is the integer QANN's prediction once the layers before have settled. The current is
    I(tau) = sum_j W_j . s_j(tau) + b [tau in the bias window], and a source's spikes sum to its net count,
    sum_{tau <= t} s_j(tau) = c_j(t) (the graded input: x_int per step for K steps). So, by linearity,

        v(t) = sum_j W_j . c_j(t) + n_b(t) b,     n_b(t) = the bias steps up to t (K after the window).

    Once every source has settled at its closed-form count z_j (the graded input at K x_int) and the window has
    passed, v(t) = sum_j W_j . z_j + K b: exactly the integer pre-activation `settled_potential` computes, with
    no scale between them (a QFFS neuron divides this sum by its threshold; the read-out does not). Both
    predictions are the argmax of the same integers, lowest index on ties, so they are equal; in
    pipelined time a layer at depth d sees at step t + d what it sees at t synchronously (its bias window
    shifted to d+1 .. d+K), so the same holds D steps later.
    """
    v = (state.v + current).clip(V_MIN, V_MAX)
    return v * 0, ReadoutState(v=v)


def settled_potential(total_input: Array) -> Array:
    """Where a read-out's potential ends after its input stops: sum I, the integer pre-activation
    sum_j W_j . z_j + K b (`readout_step`). It holds while v stays inside 24 bits."""
    return total_input


class PoolParams(NamedTuple):
    """Event max pool wiring.

    window_index: (n_out, k) integers; row j lists the flat input positions in output
    j's pooling window. Padding positions repeat a valid position of the same window,
    which leaves the maximum unchanged (`pool_windows` builds it).
    """

    window_index: Array


class PoolState(NamedTuple):
    """Event max pool state: cumulative input counts c (..., n_in), previous max m (..., n_out)."""

    counts: Array
    max_count: Array


def pool_init(zeros_in: Array, zeros_out: Array) -> PoolState:
    """State before the first step: all counts and maxima zero."""
    return PoolState(counts=zeros_in + 0, max_count=zeros_out + 0)


def window_max(counts: Array, params: PoolParams) -> Array:
    """M_j = max over output j's window of the counts: the max pool of the flat input."""
    gathered = counts[..., params.window_index]
    result = gathered[..., 0]
    for k in range(1, gathered.shape[-1]):
        result = result.clip(min=gathered[..., k])
    return result


def pool_step(spikes_in: Array, state: PoolState, params: PoolParams) -> Tuple[Array, PoolState]:
    """One step of event max pooling (the paper's Algorithm 2). Returns (spikes, new state).

        c <- c + s_in;   M = maxpool(c);   s_out = M - m;   m <- M

    so the output's cumulative sum equals the max pool of the cumulative input counts,
    and when the inputs are in {-1, 0, +1} so is the output.
    """
    counts = state.counts + spikes_in
    maximum = window_max(counts, params)
    return maximum - state.max_count, PoolState(counts=counts, max_count=maximum)


def window_output_size(size: int, kernel: int, stride: int, padding: int = 0, dilation: int = 1) -> int:
    """Output length of a conv or pool window sliding over `size` inputs, torch's floor mode:

        (size + 2 padding - dilation (kernel - 1) - 1) // stride + 1
    """
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def pool_windows(
    in_shape: Sequence[int],
    kernel: Tuple[int, int],
    stride: Tuple[int, int],
    padding: Tuple[int, int] = (0, 0),
) -> Tuple[PoolParams, Tuple[int, int, int]]:
    """Build the window index of a 2-D max pool over a flat (C, H, W) input.

    Output size follows torch's MaxPool2d (floor mode, `window_output_size`).
    Returns the params and the output shape (C, Ho, Wo). Both the input and the output
    are flattened in C, H, W order; a backend with another layout permutes the index.
    """
    channels, height, width = (int(n) for n in in_shape)
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    if kh < 1 or kw < 1 or sh < 1 or sw < 1:
        raise ValueError(f"pool kernel {kernel} and stride {stride} must be positive")
    if not (0 <= ph <= kh // 2 and 0 <= pw <= kw // 2):
        raise ValueError(f"pool padding {padding} must be between 0 and half the kernel {kernel}")
    out_h, out_w = window_output_size(height, kh, sh, ph), window_output_size(width, kw, sw, pw)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"pool kernel {kernel} does not fit the input {tuple(in_shape)}")
    rows = np.arange(out_h)[:, None] * sh - ph + np.arange(kh)[None, :]  # (Ho, kh)
    cols = np.arange(out_w)[:, None] * sw - pw + np.arange(kw)[None, :]  # (Wo, kw)
    # A padded row (column) is moved to the nearest edge, which lies in the same window
    # because padding is at most half the kernel.
    rows, cols = rows.clip(0, height - 1), cols.clip(0, width - 1)
    flat = (
        np.arange(channels)[:, None, None, None, None] * (height * width)
        + rows[None, :, None, :, None] * width
        + cols[None, None, :, None, :]
    )  # (C, Ho, Wo, kh, kw)
    return PoolParams(flat.reshape(channels * out_h * out_w, kh * kw)), (channels, out_h, out_w)
