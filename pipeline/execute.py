"""Running graphs with qonnx's own executor on many inputs at once.

Brevitas exports at batch size 1, and qonnx's executor checks the input against the graph's declared shape,
so ``with_batch`` rewrites the batch dimension everywhere it is written down (inputs, outputs, intermediate
shapes, constant ``Reshape`` shapes, ``Im2Col``'s recorded input shape). The executor itself is untouched:
it is the independent judge of every level of the verification ladder. Its "sanitizing" of quantized tensors
is turned off while it runs: that step rounds values to their annotated integer types, which would hide a
non-integer result instead of exposing it (and it takes most of the executor's time on large tensors).
"""

from __future__ import annotations

import copy
import os
import re
from contextlib import contextmanager
from typing import Iterator

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.util.basic import get_by_name

from bnnflow.pipeline.console import out


def with_batch(model: ModelWrapper, batch: int) -> ModelWrapper:
    """A copy of ``model`` whose every tensor has batch size ``batch`` (dimension 0)."""
    model = copy.deepcopy(model)
    graph = model.graph
    dynamic = {i.name for i in graph.input}  # tensors that depend on the input carry the batch dimension
    for node in graph.node:
        if any(name in dynamic for name in node.input):
            dynamic.update(node.output)
    for info in list(graph.input) + list(graph.output) + list(graph.value_info):
        dims = info.type.tensor_type.shape.dim
        if info.name in dynamic and len(dims) > 0:
            dims[0].dim_value = batch
    for node in graph.node:
        if node.op_type == "Reshape":
            shape = model.get_initializer(node.input[1])
            if shape is not None and shape[0] not in (-1, 0):
                shape = shape.copy()
                shape[0] = batch
                model.set_initializer(node.input[1], shape)
        elif node.op_type == "Im2Col":
            attr = get_by_name(node.attribute, "input_shape")
            attr.s = re.sub(rb"^\(\s*\d+", b"(%d" % batch, attr.s)
    return model


def execute(model: ModelWrapper, inputs: np.ndarray, outputs: list[str] | None = None,
            batch: int = 256, progress: str | None = None) -> dict[str, np.ndarray]:
    """Run ``inputs`` (N, ...) through ``model``, ``batch`` samples per call; returns the named tensors.

    Args:
        model: the graph; its first input takes ``inputs``.
        inputs: all samples, stacked on axis 0.
        outputs: tensor names to return (intermediate ones too); default: the graph's first output.
        batch: samples per executor call (1 for graphs with ``Im2Col``); the last call is zero-padded and the
            padding dropped.
        progress: a label for a progress bar over the samples (none when omitted).
    """
    in_name = model.graph.input[0].name
    if any(node.op_type == "Im2Col" for node in model.graph.node):
        batch = 1  # qonnx's Im2Col reshapes its result as if batch-major and mixes samples when N > 1
    outputs = list(dict.fromkeys(outputs or [model.graph.output[0].name]))
    batch = max(1, min(batch, len(inputs)))
    batched = with_batch(model, batch)
    intermediate = any(name not in (o.name for o in model.graph.output) for name in outputs)
    results: dict[str, list[np.ndarray]] = {name: [] for name in outputs}
    with _unsanitized(), out.progress() as bar:
        task = bar.add_task(progress or "", total=len(inputs), status="", visible=progress is not None)
        for start in range(0, len(inputs), batch):
            chunk = np.asarray(inputs[start: start + batch], dtype=np.float32)
            padded = np.zeros((batch, *chunk.shape[1:]), dtype=np.float32)
            padded[: len(chunk)] = chunk
            context = execute_onnx(batched, {in_name: padded}, return_full_exec_context=intermediate)
            for name in outputs:
                results[name].append(context[name][: len(chunk)])
            bar.advance(task, len(chunk))
    return {name: np.concatenate(parts) for name, parts in results.items()}


@contextmanager
def _unsanitized() -> Iterator[None]:
    previous = os.environ.get("SANITIZE_QUANT_TENSORS")
    os.environ["SANITIZE_QUANT_TENSORS"] = "0"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["SANITIZE_QUANT_TENSORS"]
        else:
            os.environ["SANITIZE_QUANT_TENSORS"] = previous
