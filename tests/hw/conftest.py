"""Shared helpers of the hardware tests: dataflow graphs built the real way (export, streamline, convert)."""

from __future__ import annotations

import copy
import warnings

import torch
from qonnx.core.modelwrapper import ModelWrapper

from bnnflow.hw.convert import to_dataflow
from bnnflow.models import create_model
from bnnflow.pipeline.compile.streamline import streamline_model
from bnnflow.pipeline.export import export_model


def build_dataflow(name: str, input_shape: tuple[int, ...]) -> ModelWrapper:
    """A zoo model with seeded random weights, as a dataflow graph at PE = SIMD = 1."""
    torch.manual_seed(0)
    model = create_model(name, input_shape=input_shape, num_classes=10).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return to_dataflow(streamline_model(export_model(model, input_shape)))


def fresh(model: ModelWrapper) -> ModelWrapper:
    """An independent copy, so a test can fold it without touching a shared fixture."""
    return ModelWrapper(copy.deepcopy(model.model))
