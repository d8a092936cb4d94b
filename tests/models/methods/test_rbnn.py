"""RBNN's mechanics: the rotation closes the angle to the binary vertex and flips about half the signs, the
training-aware derivative matches its formula, the method keeps the freeze/export/checkpoint invariants, and a
short run on the digits learns."""

from __future__ import annotations

import math

import brevitas.nn as qnn
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from bnnflow.models import create_model
from bnnflow.models.layers import linear_head, quant_act
from bnnflow.models.methods import create_method, estimators
from bnnflow.models.methods.base import latent_weight
from bnnflow.models.methods.rbnn import ACT_STANDARDIZE_LIMITS, RotateFilters, rotation, rotation_shape
from bnnflow.models.quantizers import BinaryWeightQuant, InputQuant
from bnnflow.pipeline.execute import execute
from bnnflow.pipeline.export import export_model

INPUT_SHAPE = (1, 8, 8)
# (model, act_standardize): the MLP and a small CNN, with and without the per-sample mean subtraction
INVARIANT_CASES = [("mlp", False), ("mlp", True), ("cnn", False), ("cnn", True)]
# (epoch, epochs): the first epoch (t = 1e-2, k = 100, a wide STE) and the last (t near 10, a narrow spike)
SCHEDULE_POINTS = [(0, 100), (50, 100), (99, 100)]


class TinyCNN(nn.Module):
    """Two binary 3x3 convs on 8x8 digits, then the class layer: the conv path of RBNN (N = C_in k k)."""

    def __init__(self) -> None:
        super().__init__()
        self.input_shape = INPUT_SHAPE
        self.input_quant = qnn.QuantIdentity(act_quant=InputQuant, bit_width=8, return_quant_tensor=True)
        layers: list[nn.Module] = []
        for c_in, c_out in ((1, 8), (8, 16)):
            layers += [qnn.QuantConv2d(c_in, c_out, 3, bias=False, weight_quant=BinaryWeightQuant,
                                       weight_bit_width=1), nn.BatchNorm2d(c_out), quant_act(1)]
        self.convs = nn.Sequential(*layers)
        self.head = nn.Sequential(*linear_head(16 * 4 * 4, [], 10, 1, 1))

    def forward(self, x):
        return self.head(self.convs(self.input_quant(x)).flatten(1))


def _model(kind: str) -> nn.Module:
    return create_model("digits_mlp", input_shape=INPUT_SHAPE, num_classes=10) if kind == "mlp" else TinyCNN()


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_digits()
    return torch.tensor(data.images / 16, dtype=torch.float32)[:, None], torch.tensor(data.target)


def _train(model: nn.Module, method, images: torch.Tensor, labels: torch.Tensor, steps: int, epochs: int,
           lr: float) -> None:
    """The training loop's hook sequence, ``epochs`` epochs of ``steps // epochs`` batches of 64."""
    optimizer = torch.optim.Adam(method.param_groups(model, lr, 0.0))
    generator = torch.Generator().manual_seed(0)
    model.train()
    for step in range(steps):
        if step % (steps // epochs) == 0:
            method.on_epoch_start(model, step // (steps // epochs), epochs)
        batch = torch.randint(0, len(images), (64,), generator=generator)
        loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        method.after_backward(model)
        optimizer.step()
        method.after_step(model)


def _cosine_to_sign(w: torch.Tensor) -> float:
    """Mean over filters of cos(w_i, sign(w_i)) = ||w_i||_1 / (||w_i||_2 sqrt(n))."""
    flat = w.flatten(1)
    return float((flat.abs().sum(1) / (flat.norm(dim=1) * math.sqrt(flat.shape[1]))).mean())


def test_rotation_shape_is_the_most_square_factorization():
    assert rotation_shape(64) == (8, 8)
    assert rotation_shape(128) == (8, 16)
    assert rotation_shape(72) == (8, 9)
    assert rotation_shape(13) == (1, 13)


def test_rotate_filters_blends_by_abs_sin_theta_with_orthogonal_rotations():
    torch.manual_seed(0)
    w = torch.randn(6, 4, 3, 3)
    rot = RotateFilters(6, 36)
    torch.testing.assert_close(rot.R1 @ rot.R1.t(), torch.eye(6), atol=1e-5, rtol=0)
    torch.testing.assert_close(rot.R2 @ rot.R2.t(), torch.eye(6), atol=1e-5, rtol=0)
    torch.manual_seed(0)
    torch.randn(6, 4, 3, 3)
    torch.testing.assert_close(RotateFilters(6, 36).R1, rot.R1, rtol=0, atol=0)  # seeded by torch's RNG
    w2 = rot.standardize(w)
    assert torch.all((rot.theta >= 0) & (rot.theta < math.pi / 2))  # the released code's U(0, pi/2) start
    with torch.no_grad():
        rot.theta.fill_(math.pi / 2)
    torch.testing.assert_close(rot(w), rot.rotate(w2))  # theta = pi/2: fully rotated
    with torch.no_grad():
        rot.theta.zero_()
    torch.testing.assert_close(rot(w), w2)
    with torch.no_grad():
        rot.theta.fill_(math.pi / 6)  # |sin| = 1/2: halfway
    torch.testing.assert_close(rot(w), (w2 + rot.rotate(w2)) / 2)


def test_rotation_update_lowers_the_angle_to_the_sign():
    torch.manual_seed(0)
    w = torch.randn(32, 16, 3, 3)  # trained weights are bell-shaped; for Gaussian filters cos = sqrt(2/pi)
    rot = RotateFilters(32, 16 * 9)
    w2 = rot.standardize(w)
    before = _cosine_to_sign(w2)
    previous = _cosine_to_sign(rot.rotate(w2))
    for _ in range(3):  # three epochs: every update can only raise sum ||R1^T X_i R2||_1 from where it starts
        rot.update(w, iterations=3)
        after = _cosine_to_sign(rot.rotate(w2))
        assert after >= previous - 1e-6, (previous, after)
        previous = after
    assert after > before + 0.02, f"mean cos(x, sign x): {before:.4f} unrotated, {after:.4f} rotated"


def test_first_rotation_flips_a_large_share_of_the_weight_signs():
    torch.manual_seed(0)
    model = _model("mlp")
    method = create_method("rbnn")
    method.prepare(model)
    method.on_epoch_start(model, 0, 10)
    layer = method.layers[1]
    with torch.no_grad():
        unrotated = torch.sign(rotation(layer).standardize(latent_weight(layer)))
        flipped = float((layer.weight != unrotated).float().mean())  # theta = pi/2: the binary weight is rotated
    assert flipped > 0.2, f"the first rotation flipped {flipped:.1%} of the signs (the paper reports about 50%)"


@pytest.mark.parametrize("epoch,epochs", SCHEDULE_POINTS)
def test_training_aware_gradient_matches_its_formula(epoch, epochs):
    t, k = estimators.rbnn_schedule(epoch, epochs)
    x = torch.tensor([-3.0, -0.5, -0.1, -0.01, 0.0, 0.01, 0.1, 0.5, 3.0], dtype=torch.float64, requires_grad=True)
    for derivative, (tt, kk) in ((estimators.training_aware(t, k), (t, k)),
                                 (estimators.training_aware(max(t, 1.0), 1.0), (max(t, 1.0), 1.0))):
        (grad,) = torch.autograd.grad(estimators.surrogate_sign(x, derivative).sum(), x)
        expected = [kk * max(0.0, math.sqrt(2) * tt - tt * tt * abs(v)) for v in x.tolist()]
        np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("epoch,epochs", SCHEDULE_POINTS)
def test_method_uses_the_scheduled_derivatives(epoch, epochs):
    model = _model("mlp")
    method = create_method("rbnn", rotation_iterations=0)
    method.prepare(model)
    method.on_epoch_start(model, epoch, epochs)
    t, k = estimators.rbnn_schedule(epoch, epochs)
    x = torch.linspace(-2, 2, 41)
    torch.testing.assert_close(method.weight_derivative(x), estimators.training_aware(t, k)(x))
    torch.testing.assert_close(method.act_derivative(x), estimators.training_aware(max(t, 1.0), 1.0)(x))


def test_alpha_goes_on_hidden_layers_only_and_limits_follow_the_option():
    model = _model("mlp")
    method = create_method("rbnn")
    method.prepare(model)
    scaled = [hasattr(layer, "channel_scale") for layer in method.layers]
    assert scaled == [True, True, True, False]  # not the class layer: alpha would change the argmax
    first = method.layers[0]
    torch.testing.assert_close(first.channel_scale.alpha, latent_weight(first).abs().mean(1))
    assert create_method("rbnn").limits == ""
    assert create_method("rbnn", act_standardize=True).limits == ACT_STANDARDIZE_LIMITS


@pytest.mark.parametrize("kind,act_standardize", INVARIANT_CASES)
def test_freeze_export_and_checkpoint_keep_the_outputs(kind, act_standardize, digits):
    images, labels = digits
    torch.manual_seed(0)
    model = _model(kind)
    method = create_method("rbnn", act_standardize=act_standardize)
    method.prepare(model)
    _train(model, method, images, labels, steps=6, epochs=3, lr=0.05)
    model.eval()
    sample = images[:32]
    with torch.no_grad():
        expected = model(sample)

    torch.manual_seed(1)
    fresh = _model(kind)
    create_method("rbnn", act_standardize=act_standardize).prepare(fresh)
    fresh.load_state_dict(model.state_dict())
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(sample), expected, rtol=0, atol=0)

    method.freeze(model)
    with torch.no_grad():
        torch.testing.assert_close(model(sample), expected, rtol=1e-5, atol=1e-5)
    wrapper = export_model(model, INPUT_SHAPE)
    ops = {n.op_type for n in wrapper.graph.node}
    for node in wrapper.graph.node:
        if node.op_type in ("Conv", "MatMul", "Gemm"):
            assert wrapper.find_producer(node.input[1]).op_type == "BipolarQuant", node.name
    assert ("ReduceMean" in ops) == act_standardize
    got = execute(wrapper, sample.numpy(), batch=len(sample))[wrapper.graph.output[0].name]
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-5)


def test_short_training_on_digits_learns(digits):
    images, labels = digits
    torch.manual_seed(0)
    model = _model("mlp")
    method = create_method("rbnn")
    method.prepare(model)
    _train(model, method, images[:1400], labels[:1400], steps=100, epochs=4, lr=0.03)
    model.eval()
    with torch.no_grad():
        accuracy = float((model(images[1400:]).argmax(1) == labels[1400:]).float().mean())
    assert accuracy > 0.5, f"held-out accuracy {accuracy:.1%} after 100 steps (chance is 10%)"
