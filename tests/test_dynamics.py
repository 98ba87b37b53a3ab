"""The QFFS neuron (Algorithm 1) and event max pool (Algorithm 2) against hand traces,
their closed forms, torch's own max pool, and each other across numpy and torch."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from profiles import examples

from qffs_lava.dynamics import (
    V_MAX,
    V_MIN,
    NeuronParams,
    neuron_init,
    neuron_step,
    pool_init,
    pool_step,
    pool_windows,
    settled_count,
)


def run_neuron(currents, params, zeros):
    """Feed currents (steps, ...) through one neuron layer; return spikes, v and z per step."""
    state = neuron_init(zeros, params)
    spikes, vs, zs = [], [], []
    for current in currents:
        s, state = neuron_step(current, state, params)
        spikes.append(s)
        vs.append(state.v)
        zs.append(state.z)
    return spikes, vs, zs


def scalar_trace(inputs, threshold, z_max):
    params = NeuronParams(threshold=threshold, z_max=z_max, v_init=threshold // 2)
    spikes, vs, zs = run_neuron(
        [np.array([i]) for i in inputs], params, np.zeros(1, dtype=np.int64)
    )
    return [int(s[0]) for s in spikes], [int(v[0]) for v in vs], [int(z[0]) for z in zs]


# The paper's section 4.3 examples, threshold 1 scaled to 10 so that v_init = th // 2 = 5
# is an integer: an ANN input of 0.4 should give 4 spikes in 10 steps.


def test_paper_example_late_input_spikes_after_the_window():
    # -1 x9 then +13: a plain IF neuron emits 1 spike in the 10 steps instead of 4.
    inputs = [-10] * 9 + [130] + [0] * 5
    spikes, vs, zs = scalar_trace(inputs, threshold=10, z_max=10)
    assert spikes == [0] * 9 + [1, 1, 1, 1, 0, 0]
    assert sum(spikes[:10]) == 1  # the occasional noise: too few spikes inside the window
    assert vs[8] == -85  # negative v but z == 0: no negative spike
    assert zs[-1] == 4  # the extended simulation recovers the count
    assert vs[-1] == 5


def test_paper_example_extra_spikes_are_cancelled_by_negative_spikes():
    # +1 x8 then -2 x2: the sum is 4, but a plain IF neuron emits 8 spikes.
    inputs = [10] * 8 + [-20] * 2 + [0] * 4
    spikes, vs, zs = scalar_trace(inputs, threshold=10, z_max=10)
    assert spikes == [1] * 8 + [-1] * 4 + [0] * 2
    assert max(zs) == 8  # the wrong spikes were emitted ...
    assert zs[-1] == 4  # ... and cancelled: the count ends where the ANN is
    assert vs[-1] == 5
    assert min(zs) >= 0


def test_count_is_bounded_by_z_max():
    inputs = [10] * 8 + [-20] * 2 + [0] * 4
    spikes, vs, zs = scalar_trace(inputs, threshold=10, z_max=3)
    assert spikes == [1, 1, 1] + [0] * 11
    assert max(zs) == 3 and zs[-1] == 3
    assert vs[7] == 55  # the excess stays in the membrane instead of spiking
    assert vs[-1] == 15


def test_count_never_goes_below_zero():
    spikes, vs, zs = scalar_trace([-30, 10, -30, 0, 0], threshold=10, z_max=3)
    assert spikes == [0, 0, 0, 0, 0]
    assert zs == [0] * 5 and vs == [-25, -15, -45, -45, -45]


def test_membrane_saturates_at_24_bits():
    params = NeuronParams(threshold=2**22, z_max=1, v_init=0)
    state = neuron_init(np.zeros(2, dtype=np.int64), params)
    spikes, state = neuron_step(np.array([2**30, -(2**30)]), state, params)
    assert spikes.tolist() == [1, 0]
    assert state.v.tolist() == [V_MAX - 2**22, V_MIN]


neuron_cases = st.integers(1, 40).flatmap(
    lambda th: st.tuples(
        st.just(th),
        st.integers(1, 15),
        st.lists(st.integers(-4 * th, 4 * th), min_size=1, max_size=30),
    )
)


@settings(max_examples=examples(300), deadline=None)
@given(neuron_cases)
def test_neuron_settles_at_the_quantized_activation(case):
    threshold, z_max, inputs = case
    params = NeuronParams(threshold=threshold, z_max=z_max, v_init=threshold // 2)
    spikes, vs, zs = scalar_trace(inputs + [0] * (z_max + 1), threshold, z_max)
    expected = min(max((sum(inputs) + threshold // 2) // threshold, 0), z_max)
    assert zs[-1] == expected
    assert int(settled_count(np.array(sum(inputs)), params)) == expected
    assert all(0 <= z <= z_max for z in zs)
    assert set(spikes) <= {-1, 0, 1}
    # the membrane keeps the rest: v + th * z is what went in
    assert vs[-1] + threshold * zs[-1] == threshold // 2 + sum(inputs)


def torch_max_pool(counts, shape, kernel, stride, padding):
    x = torch.as_tensor(counts, dtype=torch.float64).reshape(-1, *shape)
    return F.max_pool2d(x, kernel, stride, padding).reshape(x.shape[0], -1).to(torch.int64).numpy()


pool_cases = st.tuples(
    st.integers(1, 3),  # channels
    st.integers(2, 7),  # height
    st.integers(2, 7),  # width
    st.integers(1, 3),  # kernel h
    st.integers(1, 3),  # kernel w
    st.integers(1, 3),  # stride h
    st.integers(1, 3),  # stride w
    st.integers(0, 2**31 - 1),  # seed
).filter(lambda c: c[3] <= c[1] and c[4] <= c[2])


@settings(max_examples=examples(200), deadline=None)
@given(pool_cases, st.booleans())
def test_event_max_pool_tracks_max_of_cumulative_counts(case, padded):
    channels, height, width, kh, kw, sh, sw, seed = case
    padding = (kh // 2, kw // 2) if padded else (0, 0)
    shape = (channels, height, width)
    params, out_shape = pool_windows(shape, (kh, kw), (sh, sw), padding)
    rng = np.random.default_rng(seed)
    n_in, n_out = channels * height * width, int(np.prod(out_shape))
    spikes_in = rng.integers(-1, 2, size=(12, 2, n_in))
    state = pool_init(np.zeros((2, n_in), np.int64), np.zeros((2, n_out), np.int64))
    emitted = np.zeros((2, n_out), np.int64)
    for s_in in spikes_in:
        s_out, state = pool_step(s_in, state, params)
        assert set(np.unique(s_out).tolist()) <= {-1, 0, 1}
        emitted += s_out
        np.testing.assert_array_equal(
            emitted, torch_max_pool(state.counts, shape, (kh, kw), (sh, sw), padding)
        )


def test_pool_windows_refuses_bad_geometry():
    with pytest.raises(ValueError, match="padding"):
        pool_windows((1, 4, 4), (2, 2), (2, 2), (2, 0))
    with pytest.raises(ValueError, match="does not fit"):
        pool_windows((1, 2, 2), (3, 3), (1, 1))


@settings(max_examples=examples(50), deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_numpy_and_torch_give_identical_results(seed):
    rng = np.random.default_rng(seed)
    steps, batch, shape = 10, 3, (2, 5, 5)
    n = int(np.prod(shape))
    threshold = rng.integers(1, 30, size=n)
    params_np = NeuronParams(threshold=threshold, z_max=rng.integers(1, 8, size=n), v_init=threshold // 2)
    params_t = NeuronParams(*(torch.as_tensor(p) for p in params_np))
    pool, out_shape = pool_windows(shape, (2, 2), (2, 2))
    currents = rng.integers(-40, 40, size=(steps, batch, n))

    def run(currents, params, zeros_in, zeros_out):
        neuron = neuron_init(zeros_in, params)
        pooled = pool_init(zeros_in, zeros_out)
        trace = []
        for current in currents:
            spikes, neuron = neuron_step(current, neuron, params)
            pooled_spikes, pooled = pool_step(spikes, pooled, pool)
            trace.append((spikes, neuron.v, neuron.z, pooled_spikes))
        return trace

    n_out = int(np.prod(out_shape))
    trace_np = run(currents, params_np, np.zeros((batch, n), np.int64), np.zeros((batch, n_out), np.int64))
    trace_t = run(
        torch.as_tensor(currents),
        params_t,
        torch.zeros((batch, n), dtype=torch.int64),
        torch.zeros((batch, n_out), dtype=torch.int64),
    )
    for step_np, step_t in zip(trace_np, trace_t):
        for a, b in zip(step_np, step_t):
            assert isinstance(b, torch.Tensor)
            np.testing.assert_array_equal(a, b.numpy())
