"""The baselines every newer method is measured against: plain STE, XNOR-Net, Bi-Real Net, IR-Net, ReActNet.

Each is a ``Method`` (see ``base.py`` for what a method may change and how ``freeze`` removes it); the math, with
the sign(0) = +1 convention of bnnflow (the papers' code uses ``torch.sign``, which gives 0):

- ``ste`` (BinaryNet, Courbariaux et al. 2016): w_b = sign(w), a_b = sign(a); backward 1{|x| <= 1} for both.
  No scale: the BatchNorm after each layer absorbs it. Plain Brevitas, the reference for every other method.
- ``xnor`` (XNOR-Net, Rastegari et al., ECCV 2016): w_b = alpha_c sign(w), alpha_c = mean |W_c| per output
  channel, recomputed from the latent weight every step (gradient through alpha unless ``detach_scale``).
  The input scaling map K is not used, as in most later work.
- ``bireal`` (Bi-Real Net, Liu et al., ECCV 2018): ApproxSign backward for activations (2 - 2|x| on |x| < 1) and
  the magnitude-aware weight gradient: alpha_c = mean |W_c| kept in the graph. (The real-valued shortcut around
  every binary conv is the backbone's, ``birealnet18``.)
- ``irnet`` (IR-Net, Qin et al., CVPR 2020): Libra-PB: each filter standardized before sign (balanced +-1, maximum
  entropy) and scaled by 2^round(log2 mean |w_std|) (a shift in hardware, detached); EDE backward
  k t (1 - tanh^2(t x)) for weights and activations, t from 0.1 to 10 over the epochs, k = max(1/t, 1).
- ``reactnet`` (ReActNet, Liu et al., ECCV 2020): RSign, sign(x + b_c) with a learnable per-channel bias b
  (kept in the exported graph as an Add, which the compiler folds into the threshold; not added where the
  backbone has its own, as ``reactnet18`` does); ApproxSign backward;
  alpha_c = mean |W_c| detached; two-step training (``two_step``: the first half of the epochs with real-valued
  weights and binary activations, W32A1, then W1A1). Its distribution loss from a real-valued teacher is the
  training loop's (``train.teacher``), since ReBNN, RBONN and DWR use it too; RPReLU belongs to the backbone (the
  ReActNet block form).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from bnnflow.errors import ConfigError
from bnnflow.models.methods import estimators, register_method
from bnnflow.models.methods.base import (
    ChannelScale,
    Method,
    StandardizeFilters,
    binary_acts,
    binary_layers,
    mean_abs_per_channel,
    scalable_layers,
    set_act_estimator,
    set_channel_scale,
    set_weight_estimator,
)


@register_method
class PlainSTE(Method):
    """Plain Brevitas binarization: sign forward, clipped STE backward, no scale."""

    name = "ste"


@register_method
class XnorNet(Method):
    """XNOR-Net: per-output-channel alpha = mean |W| on every binary layer followed by a BatchNorm."""

    name = "xnor"

    def __init__(self, detach_scale: bool = False) -> None:
        self.detach_scale = detach_scale

    def prepare(self, model: nn.Module) -> None:
        for _, layer in scalable_layers(model):
            set_channel_scale(layer, _mean_abs_scale(layer, self.detach_scale))


def _mean_abs_scale(layer: nn.Module, detach: bool) -> ChannelScale:
    fn = (lambda w: mean_abs_per_channel(w).detach()) if detach else mean_abs_per_channel
    return ChannelScale(layer.weight.shape[0], learnable=False, from_weight=fn)


@register_method
class BiReal(Method):
    """Bi-Real Net's training: ApproxSign for activations, magnitude-aware (mean |W| in the graph) weights."""

    name = "bireal"

    def prepare(self, model: nn.Module) -> None:
        for _, act in binary_acts(model):
            set_act_estimator(act, estimators.approx_sign)
        for _, layer in scalable_layers(model):
            set_channel_scale(layer, _mean_abs_scale(layer, detach=False))


def _power_of_two_scale(w: torch.Tensor) -> torch.Tensor:
    """IR-Net's 2^round(log2 mean |w_std|) per output channel, detached (a bit shift, not a learned value)."""
    std = StandardizeFilters()(w)
    return torch.pow(2.0, torch.round(torch.log2(mean_abs_per_channel(std)))).detach()


@register_method
class IRNet(Method):
    """IR-Net: Libra-PB (standardized filters, power-of-two scale) and the EDE backward for weights and acts."""

    name = "irnet"

    def __init__(self, t_min: float = 0.1, t_max: float = 10.0) -> None:
        if not 0 < t_min < t_max:
            raise ValueError(f"EDE needs 0 < t_min < t_max, got {t_min} and {t_max}")
        self.t_min, self.t_max = t_min, t_max
        self.t, self.k = t_min, max(1 / t_min, 1.0)

    def _derivative(self, x: torch.Tensor) -> torch.Tensor:
        return estimators.ede(self.t, self.k)(x)

    def prepare(self, model: nn.Module) -> None:
        for _, layer in binary_layers(model):
            set_weight_estimator(layer, self._derivative, StandardizeFilters())
        for _, layer in scalable_layers(model):
            set_channel_scale(layer, ChannelScale(layer.weight.shape[0], learnable=False,
                                                  from_weight=_power_of_two_scale))
        for _, act in binary_acts(model):
            set_act_estimator(act, self._derivative)

    def on_epoch_start(self, model: nn.Module, epoch: int, epochs: int) -> None:
        self.t, self.k = estimators.ede_schedule(epoch, epochs, self.t_min, self.t_max)


class LearnableBias(nn.Module):
    """ReActNet's per-channel shift before a sign (RSign): a forward pre-hook adding ``bias`` to the input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        x = args[0]
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x + self.bias.reshape(shape), *args[1:])


def _channels_into(model: nn.Module, act: nn.Module, example: torch.Tensor) -> int:
    """The channel count of what flows into ``act`` (dimension 1), found by one forward pass."""
    seen: list[int] = []
    handle = act.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
    was_training = model.training
    with torch.no_grad():
        model.eval()
        model(example)
    model.train(was_training)
    handle.remove()
    return seen[0]


def _backbone_has_rsign(model: nn.Module, act_name: str) -> bool:
    """Whether the unit holding this sign shifts its input already (the ReActNet backbones' ``move0``)."""
    parent = model.get_submodule(act_name.rpartition(".")[0])
    return hasattr(parent, "move0")


@register_method
class ReActNet(Method):
    """ReActNet: RSign, ApproxSign, detached mean |W| scale and two-step training."""

    name = "reactnet"

    def __init__(self, two_step: bool = True) -> None:
        self.two_step = two_step
        self.layers: list[nn.Module] = []  # kept: a layer whose quantizer is disabled no longer reports 1 bit

    def prepare(self, model: nn.Module) -> None:
        self.layers = [layer for _, layer in binary_layers(model)]
        input_shape = getattr(model, "input_shape", None)
        if input_shape is None:
            raise ConfigError("reactnet needs a model with an input_shape attribute (every bnnflow model has one)")
        example = torch.zeros(1, *input_shape, device=next(model.parameters()).device)
        for name, act in binary_acts(model):
            if not _backbone_has_rsign(model, name):
                bias = LearnableBias(_channels_into(model, act, example))
                act.rsign = bias  # registered, so the bias is trained, saved and exported
                act.register_forward_pre_hook(bias)
            set_act_estimator(act, estimators.approx_sign)
        for _, layer in scalable_layers(model):
            set_channel_scale(layer, _mean_abs_scale(layer, detach=True))

    def on_epoch_start(self, model: nn.Module, epoch: int, epochs: int) -> None:
        real_weights = self.two_step and epoch < math.ceil(epochs / 2)
        for layer in self.layers:
            layer.weight_quant.disable_quant = real_weights

    def freeze(self, model: nn.Module) -> None:
        for layer in self.layers:
            layer.weight_quant.disable_quant = False
        super().freeze(model)
