"""Exporting a backbone for the model tests: BatchNorm statistics made non-trivial, then the 1-bit QONNX graph."""

from __future__ import annotations

import torch
from torch import nn

from bnnflow.pipeline.export import export_model


def export_with_random_statistics(model: nn.Module, shape: tuple[int, ...]):
    """Export ``model`` (eval mode) after giving every BatchNorm random running statistics, so that thresholds
    are not all at zero; returns the qonnx ``ModelWrapper``, its nodes and a tensor -> producing node map."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    wrapper = export_model(model.eval(), shape)
    nodes = list(wrapper.graph.node)
    return wrapper, nodes, {o: n for n in nodes for o in n.output}


def weight_producers(nodes: list, producer: dict, ops: tuple[str, ...]) -> list[str]:
    """The op type that makes each ``ops`` node's weight input ("float" for a plain initializer), in graph order."""
    return [getattr(producer.get(n.input[1]), "op_type", "float") for n in nodes if n.op_type in ops]
