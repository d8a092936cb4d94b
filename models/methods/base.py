"""The training-method interface and the pieces the methods share.

A method changes a model's binary layers in place and takes part in the training loop through hooks::

    method.prepare(model)                      # once, before the optimizer exists: parametrizations, scales, hooks
    groups = method.param_groups(model, cfg)   # optimizer groups (a method may give a parameter its own lr)
    for epoch: method.on_epoch_start(model, epoch, epochs)           # schedules, RBNN's rotation
        for batch: loss = task_loss + method.extra_loss(model)       # e.g. ReBNN's reconstruction term
                   loss.backward(); method.after_backward(model)     # gradients are still there
                   optimizer.step();  method.after_step(model)       # e.g. ReBNN's flip statistics
    method.freeze(model)                       # before export: training-only machinery folded away

What a method may touch, and how ``freeze`` removes it (so every method exports to the same 1-bit QONNX as
plain Brevitas):

- **weights**: a ``torch.nn.utils.parametrize`` parametrization on a binary layer's ``weight`` that ends in
  ``surrogate_sign`` (values exactly +-1). Freezing keeps the parametrized value, so the layer's weight becomes
  the binary weight itself (RBNN's rotation precomputed, RBONN's recurrent step gone).
- **activations**: a forward pre-hook on a binary ``QuantIdentity`` that passes its input through
  ``surrogate_sign`` (the estimator) or adds a learnable bias (ReActNet's RSign). Estimator hooks are removed;
  a bias is kept as a hook, which the exporter traces into an ``Add``.
- **per-channel scales** (XNOR's mean |W|, ReBNN's and RBNN's learned alpha): a ``ChannelScale`` applied to the
  layer's output by a forward hook, folded into the BatchNorm that follows the layer when frozen.

Devices and processes: a method keeps its state in parameters and buffers of the model (so ``model.to(device)``
moves all of it and checkpoints hold it) and makes new tensors on the device of the ones it reads. Under
torchrun, a statistic a method computes from the batch goes through ``reduce_mean`` so that every process holds
the global batch's value (the parameters' gradients are averaged by DDP already); the training loop scales each
process's loss so that the gradient a tensor hook sees, averaged over the processes, is the global batch's.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import brevitas.nn as qnn
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.utils import parametrize

from bnnflow.errors import UnsupportedGraphError
from bnnflow.models.methods.estimators import Derivative, surrogate_sign

BinaryLayer = qnn.QuantConv2d | qnn.QuantLinear


class Method:
    """A training method: the base class is plain Brevitas (sign forward, clipped STE backward, no scale).

    Subclasses set ``name`` and take their options as keyword arguments of ``__init__`` (checked against the
    signature, as model arguments are). ``limits`` says which pipeline paths a trained model cannot take, and
    why; empty when it exports to a plain 1-bit graph.
    """

    name: ClassVar[str] = ""
    limits: ClassVar[str] = ""
    #: the mixed precisions (``train.amp``) the method's math allows
    amp: ClassVar[tuple[str, ...]] = ("bf16", "fp16")

    def prepare(self, model: nn.Module) -> None:
        """Change the model's binary layers in place, before the optimizer is built."""

    def param_groups(self, model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """Optimizer parameter groups; by default one group of everything."""
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr,
                 "weight_decay": weight_decay}]

    def on_epoch_start(self, model: nn.Module, epoch: int, epochs: int) -> None:
        """Called before the first batch of every epoch (0-based)."""

    def extra_loss(self, model: nn.Module) -> torch.Tensor | None:
        """A term added to the task loss of every training step, or None."""
        return None

    def after_backward(self, model: nn.Module) -> None:
        """Called after ``loss.backward()``, before the optimizer step: the gradients are available."""

    def after_step(self, model: nn.Module) -> None:
        """Called after the optimizer step."""

    def freeze(self, model: nn.Module) -> None:
        """Fold every training-only piece away (see the module docstring); the model then exports as 1-bit."""
        freeze_model(model)

    def options(self) -> dict[str, Any]:
        """The method's options as given, for the checkpoint and the run's report."""
        return dict(getattr(self, "_options", {}))


def reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of ``tensor`` over the processes of a torchrun launch (``tensor`` itself in one process): a batch
    statistic of one process's share becomes the global batch's."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    total = tensor.clone()
    dist.all_reduce(total)
    return total / dist.get_world_size()


# ---------------------------------------------------------------------------------------------------------------
# Finding the binary layers


def is_binary_layer(module: nn.Module) -> bool:
    """A Brevitas conv or linear layer whose weights are 1-bit."""
    return isinstance(module, (qnn.QuantConv2d, qnn.QuantLinear)) and module.weight_quant.bit_width() == 1


def is_binary_act(module: nn.Module) -> bool:
    """A Brevitas ``QuantIdentity`` that binarizes (bit width 1)."""
    return isinstance(module, qnn.QuantIdentity) and module.act_quant.bit_width() == 1


def binary_layers(model: nn.Module) -> list[tuple[str, BinaryLayer]]:
    """(name, layer) of every binary conv / linear layer, in registration order."""
    return [(name, m) for name, m in model.named_modules() if is_binary_layer(m)]


def binary_acts(model: nn.Module) -> list[tuple[str, qnn.QuantIdentity]]:
    """(name, module) of every binary activation quantizer, in registration order."""
    return [(name, m) for name, m in model.named_modules() if is_binary_act(m)]


def next_batchnorm(model: nn.Module, layer: nn.Module) -> nn.BatchNorm1d | nn.BatchNorm2d | None:
    """The BatchNorm registered right after ``layer`` when it normalizes the layer's output channels.

    bnnflow's families register every binary layer's BatchNorm right after it (``Sequential`` order, or the
    ``conv``/``bn`` attribute order of a residual unit), and feed the layer's output straight into it."""
    modules = list(model.modules())
    index = next(i for i, m in enumerate(modules) if m is layer)
    own = {id(m) for m in layer.modules()}  # a Brevitas layer's quantizers come right after it
    after = next((m for m in modules[index + 1:] if id(m) not in own), None)
    channels = layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features
    if isinstance(after, (nn.BatchNorm1d, nn.BatchNorm2d)) and after.num_features == channels:
        return after
    return None


def scalable_layers(model: nn.Module) -> list[tuple[str, BinaryLayer]]:
    """The binary layers a per-channel scale may go on: those followed by a BatchNorm to fold it into (the
    class layer is not: a per-class scale would change the argmax the hardware computes on integers)."""
    return [(name, layer) for name, layer in binary_layers(model) if next_batchnorm(model, layer) is not None]


# ---------------------------------------------------------------------------------------------------------------
# Weights: parametrizations ending in a surrogate sign


class SurrogateWeight(nn.Module):
    """A weight parametrization: ``surrogate_sign(transform(w), derivative)``.

    ``transform`` is the method's preprocessing of the latent weight (identity, IR-Net's standardization, RBNN's
    rotation); the output is exactly +-1, so Brevitas's binary quantizer after it changes nothing."""

    def __init__(self, derivative: Derivative, transform: nn.Module | None = None) -> None:
        super().__init__()
        self.derivative = derivative
        self.transform = transform if transform is not None else nn.Identity()

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return surrogate_sign(self.transform(w), self.derivative)


class StandardizeFilters(nn.Module):
    """``(w - mean) / std`` per output filter (IR-Net's Libra-PB, RBNN's first step): balances the signs."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        flat = w.flatten(1)
        mean, std = flat.mean(1), flat.std(1)
        shape = (-1,) + (1,) * (w.dim() - 1)
        return (w - mean.reshape(shape)) / (std.reshape(shape) + 1e-12)


def latent_weight(layer: BinaryLayer) -> torch.Tensor:
    """The trainable latent weight of a layer (the parametrization's original when there is one)."""
    if parametrize.is_parametrized(layer, "weight"):
        return layer.parametrizations.weight.original
    return layer.weight


def set_weight_estimator(layer: BinaryLayer, derivative: Derivative, transform: nn.Module | None = None) -> None:
    """Binarize ``layer``'s weight with a surrogate sign (replacing an earlier one)."""
    if parametrize.is_parametrized(layer, "weight"):
        parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)
    parametrize.register_parametrization(layer, "weight", SurrogateWeight(derivative, transform))


# ---------------------------------------------------------------------------------------------------------------
# Activations: forward pre-hooks


class ActEstimatorHook:
    """A forward pre-hook putting a surrogate sign in front of a binary ``QuantIdentity``; removed when frozen."""

    def __init__(self, derivative: Derivative) -> None:
        self.derivative = derivative

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        if not module.training:
            return args
        return (surrogate_sign(args[0], self.derivative), *args[1:])


def set_act_estimator(module: qnn.QuantIdentity, derivative: Derivative) -> None:
    """Give a binary activation the backward pass ``derivative`` (replacing an earlier one)."""
    handles = _hooks(module)
    if "estimator" in handles:
        handles.pop("estimator").remove()
    handles["estimator"] = module.register_forward_pre_hook(ActEstimatorHook(derivative))


def _hooks(module: nn.Module) -> dict[str, Any]:
    if not hasattr(module, "_bnnflow_hooks"):
        module._bnnflow_hooks = {}
    return module._bnnflow_hooks


# ---------------------------------------------------------------------------------------------------------------
# Per-channel output scales


class ChannelScale(nn.Module):
    """Multiplies a layer's output channels by ``alpha``: a learned parameter, or a function of the latent weight
    (``from_weight``, e.g. XNOR's mean |W|), recomputed on every forward."""

    def __init__(self, channels: int, init: torch.Tensor | None = None, learnable: bool = True,
                 from_weight: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__()
        self.from_weight = from_weight
        value = init.detach().clone() if init is not None else torch.ones(channels)
        if learnable:
            self.alpha = nn.Parameter(value)
        else:
            self.register_buffer("alpha", value)

    def value(self, layer: BinaryLayer) -> torch.Tensor:
        """The per-channel scale, shape [C]."""
        if self.from_weight is not None:
            return self.from_weight(latent_weight(layer))
        return self.alpha

    def apply_to(self, layer: BinaryLayer, y: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (y.dim() - 2)
        return y * self.value(layer).reshape(shape)


def set_channel_scale(layer: BinaryLayer, scale: ChannelScale) -> None:
    """Scale ``layer``'s output channels (a module registered as ``layer.channel_scale``, saved with the model)."""
    layer.channel_scale = scale
    handles = _hooks(layer)
    if "scale" in handles:
        handles.pop("scale").remove()
    handles["scale"] = layer.register_forward_hook(lambda module, args, y: module.channel_scale.apply_to(module, y))


def mean_abs_per_channel(w: torch.Tensor) -> torch.Tensor:
    """mean |W| over everything but the output channel: XNOR-Net's alpha."""
    return w.abs().flatten(1).mean(1)


# ---------------------------------------------------------------------------------------------------------------
# Freezing


@torch.no_grad()
def fold_scale_into_batchnorm(model: nn.Module, layer: BinaryLayer) -> None:
    """``BN(alpha * z)`` as ``BN'(z)``: gamma' = gamma * alpha, mean' = mean / alpha (exact in eval mode)."""
    bn = next_batchnorm(model, layer)
    if bn is None:
        raise UnsupportedGraphError(f"a per-channel scale on {type(layer).__name__} has no BatchNorm after it to "
                                    "fold into; put a BatchNorm after every scaled binary layer")
    alpha = layer.channel_scale.value(layer).detach().to(bn.running_mean.dtype)
    if torch.any(alpha == 0):
        raise UnsupportedGraphError("a per-channel weight scale is exactly 0, so its layer's output carries no "
                                    "information; retrain (the scale must stay non-zero)")
    if bn.weight is None:
        raise UnsupportedGraphError("the BatchNorm after a scaled binary layer has no affine weight to fold into")
    bn.weight.mul_(alpha)
    bn.running_mean.div_(alpha)


def freeze_model(model: nn.Module) -> None:
    """Fold every scale into its BatchNorm, bake parametrized weights in, and drop estimator hooks."""
    for _, layer in binary_layers(model):
        if hasattr(layer, "channel_scale"):
            fold_scale_into_batchnorm(model, layer)
            _hooks(layer).pop("scale").remove()
            del layer.channel_scale
        if parametrize.is_parametrized(layer, "weight"):
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
    for _, act in binary_acts(model):
        handle = _hooks(act).pop("estimator", None)
        if handle is not None:
            handle.remove()
