"""LSQ forward values and gradients against hand-computed numbers."""

import math

import pytest
import torch

from qffs_lava.ann.lsq import LsqQuantizer, lsq_quantize, round_half_up


def test_round_half_up_differs_from_torch_round_on_halves():
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, 0.49, -1.51])
    assert round_half_up(x).tolist() == [1.0, 2.0, 3.0, 0.0, 0.0, -2.0]
    assert torch.round(x).tolist() == [0.0, 2.0, 2.0, -0.0, 0.0, -2.0]


def test_forward_values_and_gradients_by_hand():
    # s = 0.5, 2 bits: levels 0..3. x/s = -2, 0.4, 1.0, 1.48, 4.0, 0.5, 1.5
    x = torch.tensor([[-1.0, 0.2, 0.5, 0.74, 2.0, 0.25, 0.75]], requires_grad=True)
    step = torch.tensor(0.5, requires_grad=True)
    g = 1 / math.sqrt(7 * 3)
    y = lsq_quantize(x, step, 0, 3, g)
    assert y.tolist() == [[0.0, 0.0, 0.5, 0.5, 1.5, 0.5, 1.0]]  # 0.5 and 1.5 round up
    y.sum().backward()
    # straight-through inside [0, 3], zero outside
    assert x.grad.tolist() == [[0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0]]
    # dy/ds: q_min below, round(v) - v inside, q_max above; times g
    per_element = [0.0, 0.0 - 0.4, 1.0 - 1.0, 1.0 - 1.48, 3.0, 1.0 - 0.5, 2.0 - 1.5]
    assert step.grad.item() == pytest.approx(g * sum(per_element), rel=1e-6)


def test_signed_weight_quantizer_range_and_gradient_scale():
    quantizer = LsqQuantizer(8, signed=True, per_sample=False)
    assert (quantizer.q_min, quantizer.q_max) == (-128, 127)
    with torch.no_grad():
        quantizer.step.fill_(0.5)
        quantizer.initialized.fill_(True)
    # w/s = -140, -0.4, 0.6, 128: clipped low, rounds to 0, rounds to 1, clipped high
    w = torch.tensor([[-70.0, -0.2], [0.3, 64.0]], requires_grad=True)
    y = quantizer(w)
    assert y.tolist() == [[-64.0, 0.0], [0.5, 63.5]]
    y.sum().backward()
    assert w.grad.tolist() == [[0.0, 1.0], [1.0, 0.0]]
    # -128 + (0 - -0.4) + (1 - 0.6) + 127, scaled by 1/sqrt(all 4 weights * 127)
    assert quantizer.step.grad.item() == pytest.approx(-0.2 / math.sqrt(4 * 127), rel=1e-5)


def test_activation_quantizer_initialises_on_first_training_batch_only():
    quantizer = LsqQuantizer(2)
    x = torch.tensor([[0.3, -0.6, 1.2, 0.9]])
    with pytest.raises(RuntimeError, match="not initialised"):
        quantizer.eval()(x)
    quantizer.train()(x)
    assert quantizer.step.item() == pytest.approx(2 * 0.75 / math.sqrt(3))
    quantizer(x * 10)  # a second batch does not re-initialise
    assert quantizer.step.item() == pytest.approx(2 * 0.75 / math.sqrt(3))
    assert quantizer.levels(x).tolist() == [[0.0, 0.0, 1.0, 1.0]]


@pytest.mark.parametrize("bits", [0, 9])
def test_bits_outside_range_are_refused(bits):
    with pytest.raises(ValueError, match="1..8"):
        LsqQuantizer(bits)
