"""Every registered method keeps the contract of models/methods/base.py on the digits MLP.

- it trains (a few steps change the weights and keep the loss finite);
- ``freeze`` leaves the eval outputs as they were, and the model exports to 1-bit QONNX (BipolarQuant weights),
  which the compiler streamlines to XNOR-popcount and thresholds unless the method's ``limits`` say why not;
- a state dict of a prepared model loads into a freshly prepared one and gives the same outputs;
- unknown methods and options are one-line config errors.
"""

from __future__ import annotations

import pytest
import torch

from bnnflow.errors import ConfigError
from bnnflow.models import create_model
from bnnflow.models.methods import create_method, list_methods
from bnnflow.pipeline.compile.streamline import streamline_model
from bnnflow.pipeline.export import export_model

SHAPE = (1, 8, 8)


def _trained(name: str, steps: int = 5) -> tuple[torch.nn.Module, object]:
    torch.manual_seed(0)
    model = create_model("digits_mlp", input_shape=SHAPE, num_classes=10)
    method = create_method(name)
    method.prepare(model)
    optimizer = torch.optim.Adam([g for g in method.param_groups(model, 1e-2, 0.0)], lr=1e-2)
    x, y = torch.rand(32, *SHAPE), torch.randint(0, 10, (32,))
    method.on_epoch_start(model, 1, 2)  # the second of two epochs: two-step methods binarize their weights
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        extra = method.extra_loss(model)
        loss = loss + extra if extra is not None else loss
        optimizer.zero_grad()
        loss.backward()
        method.after_backward(model)
        optimizer.step()
        method.after_step(model)
        assert torch.isfinite(loss)
    return model, method


@pytest.mark.parametrize("name", list_methods())
def test_method_freezes_to_the_same_outputs_and_exports_1_bit(name):
    model, method = _trained(name)
    x = torch.rand(16, *SHAPE)
    model.eval()
    before = model(x)
    method.freeze(model)
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)
    graph = export_model(model, SHAPE)
    assert sum(n.op_type == "BipolarQuant" for n in graph.graph.node) >= 4  # 3 hidden layers' weights and acts
    # every method's default form compiles (FTBNN's FPReLU too, its slopes of one sign: its limits name the
    # forms the compiler refuses, grouped convs and slopes of both signs, tested in test_ftbnn)
    streamlined = streamline_model(graph)
    assert "MultiThreshold" in {n.op_type for n in streamlined.graph.node}


@pytest.mark.parametrize("name", list_methods())
def test_method_state_round_trips_through_a_state_dict(name):
    model, _ = _trained(name)
    fresh = create_model("digits_mlp", input_shape=SHAPE, num_classes=10)
    create_method(name).prepare(fresh)
    fresh.load_state_dict(model.state_dict())
    x = torch.rand(8, *SHAPE)
    torch.testing.assert_close(fresh.eval()(x), model.eval()(x))


def test_unknown_method_and_option_are_config_errors():
    with pytest.raises(ConfigError, match="not a training method"):
        create_method("nosuch")
    with pytest.raises(ConfigError, match="method.options.nosuch is not an argument of irnet"):
        create_method("irnet", nosuch=1)
    with pytest.raises(ConfigError, match="method.options.t_min must be float"):
        create_method("irnet", t_min="high")
    with pytest.raises(ConfigError, match="t_min < t_max"):
        create_method("irnet", t_min=5.0, t_max=1.0)


def test_irnet_balances_the_signs_of_every_filter():
    """Libra-PB: standardized filters split +-1 evenly (maximum entropy) even when the latent weights are skewed."""
    torch.manual_seed(0)
    model = create_model("digits_mlp", input_shape=SHAPE, num_classes=10)
    layer = model.features[3]
    with torch.no_grad():
        layer.weight.copy_(torch.rand_like(layer.weight) - 0.2)  # 80 % positive
    plain = (layer.weight >= 0).float().mean(1)
    create_method("irnet").prepare(model)
    balanced = (layer.weight >= 0).float().mean(1)  # the parametrized binary weight
    assert plain.mean() > 0.75
    assert (balanced - 0.5).abs().max() < 0.15 and abs(balanced.mean().item() - 0.5) < 0.05
