"""The sign estimators: forward sign with sign(0) = +1, and each backward pass equal to its formula."""

from __future__ import annotations

import math

import pytest
import torch

from bnnflow.models.methods import estimators

POINTS = torch.tensor([-2.0, -1.0, -0.7, -0.2, 0.0, 0.05, 0.3, 0.99, 1.0, 1.5])


def _autograd_derivative(derivative) -> torch.Tensor:
    x = POINTS.clone().requires_grad_(True)
    estimators.surrogate_sign(x, derivative).sum().backward()
    return x.grad


def test_forward_is_sign_with_zero_positive():
    y = estimators.surrogate_sign(POINTS, estimators.clipped_ste)
    assert torch.equal(y, torch.where(POINTS >= 0, 1.0, -1.0)) and y[POINTS == 0].item() == 1.0


def test_clipped_ste_gradient():
    assert torch.equal(_autograd_derivative(estimators.clipped_ste), (POINTS.abs() <= 1).float())


def test_approx_sign_gradient_is_the_derivative_of_the_piecewise_quadratic():
    def f(x: float) -> float:  # Bi-Real's F
        return -1.0 if x < -1 else (x * x + 2 * x if x < 0 else (-x * x + 2 * x if x < 1 else 1.0))

    h = 1e-4
    numeric = torch.tensor([(f(x + h) - f(x - h)) / (2 * h) for x in POINTS.tolist()])
    got = _autograd_derivative(estimators.approx_sign)
    torch.testing.assert_close(got, torch.clamp(2 - 2 * POINTS.abs(), min=0))
    kinks = (POINTS.abs() == 1) | (POINTS == 0)  # F is not differentiable at -1, 0, 1
    torch.testing.assert_close(got[~kinks], numeric[~kinks], atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("epoch", [0, 50, 99])
def test_training_aware_gradient(epoch):
    t, k = estimators.rbnn_schedule(epoch, 100)
    want = torch.tensor([k * max(0.0, math.sqrt(2) * t - t * t * abs(x)) for x in POINTS.tolist()])
    torch.testing.assert_close(_autograd_derivative(estimators.training_aware(t, k)), want)


@pytest.mark.parametrize("epoch", [0, 50, 99])
def test_ede_gradient_is_the_derivative_of_k_tanh_tx(epoch):
    t, k = estimators.ede_schedule(epoch, 100)
    x = POINTS.clone().requires_grad_(True)
    (k * torch.tanh(t * x)).sum().backward()
    torch.testing.assert_close(_autograd_derivative(estimators.ede(t, k)), x.grad)


def test_schedules_rise_geometrically_between_their_bounds():
    assert estimators.rbnn_schedule(0, 10) == pytest.approx((1e-2, 100.0))
    assert estimators.rbnn_schedule(10, 10) == pytest.approx((10.0, 1.0))
    assert estimators.ede_schedule(5, 10)[0] == pytest.approx(1.0)  # halfway between 0.1 and 10 in log scale
