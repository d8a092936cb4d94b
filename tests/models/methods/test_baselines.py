"""What makes each baseline itself, checked against the papers' formulas computed here independently: XNOR-Net's
per-channel mean |W| scale, ReActNet's two training steps and RSign, Bi-Real's approximate sign gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bnnflow.models import create_model
from bnnflow.models.methods import create_method
from bnnflow.models.methods.base import binary_acts, binary_layers, latent_weight

SHAPE = (1, 8, 8)


def _prepared(name: str, **options):
    torch.manual_seed(0)
    model = create_model("digits_mlp", input_shape=SHAPE, num_classes=10, hidden=16, depth=2)
    method = create_method(name, **options)
    method.prepare(model)
    return model.train(), method


def _values(t) -> torch.Tensor:
    return getattr(t, "value", t)  # a Brevitas QuantTensor's values


def _second_layer_io(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.nn.Module]:
    """(input, output, layer) of the second binary layer, whose input is the first layer's signs."""
    layer = binary_layers(model)[1][1]
    seen = {}
    handle = layer.register_forward_hook(lambda m, args, y: seen.update(x=_values(args[0]), y=_values(y)))
    model(torch.rand(16, *SHAPE))
    handle.remove()
    return seen["x"], seen["y"], layer


def test_xnor_scales_each_output_channel_by_its_mean_absolute_weight() -> None:
    model, _ = _prepared("xnor")
    x, y, layer = _second_layer_io(model)
    assert set(x.unique().tolist()) <= {-1.0, 1.0}
    w = latent_weight(layer)
    signs = torch.where(w >= 0, 1.0, -1.0)
    quant = _values(layer.quant_weight())  # Brevitas's binary weight: sign(w) times its constant scale
    unit = quant.abs().max()
    torch.testing.assert_close(quant, signs * unit)
    alpha = w.abs().mean(dim=1)  # ||W_c||_1 / n, per output channel
    torch.testing.assert_close(y, F.linear(x, signs * unit) * alpha)


def test_xnor_scale_gradient_is_kept_unless_detached() -> None:
    grads = {}
    for detach in (False, True):
        model, _ = _prepared("xnor", detach_scale=detach)
        _, y, layer = _second_layer_io(model)
        y.pow(2).sum().backward()
        grads[detach] = latent_weight(layer).grad.clone()
    assert not torch.allclose(grads[False], grads[True]), "d alpha / dW adds to the weights' gradient"


def test_reactnet_trains_real_weights_first_then_binary_ones() -> None:
    model, method = _prepared("reactnet")
    layer = binary_layers(model)[1][1]
    w = latent_weight(layer)
    for epoch, binary in ((0, False), (1, False), (2, True), (3, True)):  # 4 epochs: W32A1 for the first half
        method.on_epoch_start(model, epoch, 4)
        quant = _values(layer.quant_weight())
        if binary:
            assert torch.equal(quant.abs(), torch.full_like(quant, quant.abs().max().item()))
            assert torch.equal(quant.sign(), torch.where(w >= 0, 1.0, -1.0))
        else:
            torch.testing.assert_close(quant, w)
    single = create_method("reactnet", two_step=False)
    single.prepare(model)
    single.on_epoch_start(model, 0, 4)
    assert set(_values(layer.quant_weight()).abs().unique().tolist()) == {_values(layer.quant_weight()).abs().max().item()}


def test_reactnet_rsign_shifts_every_sign_by_a_trained_bias() -> None:
    model, method = _prepared("reactnet")
    acts = binary_acts(model)
    assert acts and all(hasattr(act, "rsign") for _, act in acts)
    act = acts[0][1]
    names = {name for name, _ in model.named_parameters()}
    assert f"{acts[0][0]}.rsign.bias" in names, "the bias is a parameter of the model: trained and saved"
    with torch.no_grad():
        act.rsign.bias.fill_(0.5)
    x = torch.tensor([[-0.6, -0.4, 0.2] + [0.0] * (act.rsign.bias.numel() - 3)])
    out = _values(act(x))
    assert out[0, :3].tolist() == [-1.0, 1.0, 1.0], "sign(x + b): -0.4 + 0.5 is positive"


@pytest.mark.parametrize("name,derivative", [
    ("bireal", lambda x: torch.where(x.abs() < 1, 2 - 2 * x.abs(), torch.zeros_like(x))),  # d/dx of Bi-Real's F
    ("ste", lambda x: (x.abs() <= 1).to(x.dtype)),  # the plain clipped straight-through estimator
])
def test_activation_gradient_is_the_methods_approximation_of_sign(name: str, derivative) -> None:
    model, _ = _prepared(name)
    act = binary_acts(model)[0][1]
    x = torch.linspace(-1.5, 1.5, 61).reshape(1, -1).requires_grad_()
    _values(act(x)).sum().backward()
    torch.testing.assert_close(x.grad, derivative(x.detach()))
