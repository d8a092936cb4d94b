"""Export: a trained checkpoint to a 1-bit QONNX graph, checked against PyTorch with qonnx's own executor.

Brevitas's TorchScript exporter is used (``dynamo=False``): on torch >= 2.9 the dynamo exporter is the
default and writes a ``Gemm`` without its bias input and a ``Conv`` without ``kernel_shape``, both of which
FINN rejects. The graph is then cleaned with qonnx's ``cleanup_model`` (constant
folding, shape inference, readable tensor names) and written atomically.

Verification runs qonnx's executor, which bnnflow did not write, on the whole test split and compares with the
PyTorch eval forward. The class scores are integer accumulators times one float scalar, so both sides compute
the same float bit for bit and the comparison is exact (``np.array_equal`` per sample), not a tolerance.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bnnflow.errors import UnsupportedGraphError, VerificationError
from bnnflow.nodes import node_ref
from bnnflow.pipeline.checkpoint import load_checkpoint
from bnnflow.pipeline.compile.linear import exact_sum
from bnnflow.pipeline.config import Config
from bnnflow.pipeline.console import out
from bnnflow.pipeline.data import load_data, stack
from bnnflow.pipeline.execute import execute
from bnnflow.pipeline.rundir import RunDir, atomic_path


def export_model(model: nn.Module, input_shape: tuple[int, ...]):
    """The in-memory layer: a Brevitas model (eval mode) to a cleaned qonnx ``ModelWrapper``."""
    from brevitas.export import export_qonnx
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    model.eval()
    with tempfile.TemporaryDirectory(prefix="bnnflow-export-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = str(Path(tmp) / "brevitas.onnx")
        export_qonnx(model, input_t=torch.zeros(1, *input_shape), export_path=path, dynamo=False)
        wrapper = cleanup_model(fold_constants(ModelWrapper(path)))
    check_finn_form(wrapper)
    return wrapper


#: what qonnx's cleanup keeps unfolded: the quantizers of constant weights are the exported model's content
KEPT_CONSTANT_OPS = ("Quant", "BipolarQuant", "QuantizeLinear", "DequantizeLinear")


def fold_constants(wrapper):
    """Every node that reads only constants, replaced by its value, in one pass with qonnx's own node executor.

    qonnx's ``FoldConstants`` (in ``cleanup_model``) does the same one node per pass, re-inferring every shape
    after each: quadratic in the graph, over a minute for a ResNet-20 whose activations add constant subgraphs
    (FTBNN's FPReLU). After this pass it finds nothing left to fold.
    """
    from qonnx.core.onnx_exec import execute_node
    from qonnx.transformation.infer_shapes import InferShapes

    wrapper = wrapper.transform(InferShapes())  # the node executor reads its outputs' shapes
    opset = wrapper.model.opset_import[0].version
    context = wrapper.make_empty_exec_context()
    folded = []
    for node in wrapper.graph.node:
        if not node.input or node.op_type in KEPT_CONSTANT_OPS or \
                any(wrapper.get_initializer(name) is None for name in node.input if name):
            continue
        for name in node.input:
            wrapper.get_tensor_shape(name, fix_missing_init_shape=True)
        execute_node(node, context, wrapper.graph, opset_version=opset)
        for name in node.output:
            wrapper.set_initializer(name, context[name])
        folded.append(node)
    for node in folded:
        wrapper.graph.node.remove(node)
    return wrapper


def check_finn_form(wrapper) -> None:
    """Refuse the two node forms FINN cannot read (a bias-less ``Gemm``, a ``Conv`` without ``kernel_shape``)."""
    for node in wrapper.graph.node:
        if node.op_type == "Gemm" and len(node.input) < 3:
            raise UnsupportedGraphError(f"node {node_ref(wrapper, node)} has no bias input, which FINN rejects; "
                                        "export with dynamo=False")
        if node.op_type == "Conv" and not any(a.name == "kernel_shape" for a in node.attribute):
            raise UnsupportedGraphError(f"node {node_ref(wrapper, node)} has no kernel_shape, which FINN rejects; "
                                        "export with dynamo=False")


#: relative tolerance of the export check for networks with full-precision layers (float sums differ in order)
FLOAT_RTOL = 1e-4


#: ops that copy or select values without arithmetic, through which a layer's input keeps its quantizer's grid
_MOVES = ("MaxPool", "Flatten", "Reshape", "Transpose", "Pad", "Slice", "Identity", "Squeeze", "Unsqueeze")


def _grid(wrapper, tensor: str) -> tuple[np.ndarray, float] | None:
    """(scale, largest |code|) of the quantizer that last set ``tensor``'s values, through data movement only;
    None for a float tensor."""
    from qonnx.util.basic import get_by_name

    producer = wrapper.find_producer(tensor)
    while producer is not None and producer.op_type in _MOVES:
        producer = wrapper.find_producer(producer.input[0])
    if producer is None or producer.op_type not in ("Quant", "BipolarQuant"):
        return None
    scale = wrapper.get_initializer(producer.input[1])
    if scale is None:
        return None
    if producer.op_type == "BipolarQuant":
        return scale, 1.0
    bits = wrapper.get_initializer(producer.input[3])
    signed = get_by_name(producer.attribute, "signed")
    return scale, float(2.0 ** (int(bits) - (1 if signed is None or signed.i else 0)))


def is_integer_network(wrapper) -> bool:
    """Whether PyTorch and qonnx must agree exactly: every Conv / MatMul / Gemm multiplies quantized inputs by
    quantized weights, both on power-of-two scales, without a bias, and no partial sum leaves float32's exact
    integers (2**24 steps), so every order of summation gives the same float.

    Otherwise (a float stem or classifier, 1x1 float shortcuts as in Bi-Real Net, a scale that is no power of two
    on a wide layer) the two sum floats in different orders and differ by about 1e-5 of the outputs.
    """
    for node in wrapper.graph.node:
        if node.op_type not in ("Conv", "MatMul", "Gemm"):
            continue
        x, w = _grid(wrapper, node.input[0]), _grid(wrapper, node.input[1])
        if w is None or x is None or (len(node.input) > 2 and node.input[2]):
            return False
        shape = wrapper.get_tensor_shape(node.input[1])
        if node.op_type == "Conv":
            taps = int(np.prod(shape[1:]))
        else:
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            taps = int(shape[1] if trans_b else shape[0])
        if not exact_sum(x[0], w[0], taps * x[1] * w[1]):
            return False
    return True


def compare_outputs(expected: np.ndarray, got: np.ndarray, rtol: float = 0.0) -> dict[str, Any]:
    """Per-sample comparison (exact, or within ``rtol`` of the largest output): how many differ, the first that
    does, and label disagreements."""
    if rtol:
        scale = np.abs(expected).max(axis=tuple(range(1, expected.ndim)), keepdims=True) + 1e-12
        differs = ~np.all(np.abs(expected - got) <= rtol * scale, axis=tuple(range(1, expected.ndim)))
    else:
        differs = ~np.all(expected == got, axis=tuple(range(1, expected.ndim)))
    first = int(np.argmax(differs)) if differs.any() else None
    return {
        "mismatches": int(differs.sum()),
        "first_mismatch": first,
        "label_mismatches": int((expected.argmax(1) != got.argmax(1)).sum()),
        "max_abs_diff": float(np.abs(expected - got).max()) if len(expected) else 0.0,
    }


def export(cfg: Config, run: RunDir) -> dict[str, Any]:
    """The export stage: ``RUN/train/checkpoint.safetensors`` to ``RUN/model.qonnx``, verified when configured."""
    state = load_checkpoint(run.checkpoint)
    model = state.build_model()
    wrapper = export_model(model, state.input_shape)
    with atomic_path(run.qonnx) as tmp:
        wrapper.save(str(tmp))
    figures: dict[str, Any] = {
        "qonnx": run.qonnx.name,
        "nodes": len(wrapper.graph.node),
        "op_types": sorted({n.op_type for n in wrapper.graph.node}),
    }
    if not cfg.export.verify:
        return figures
    images, labels = stack(load_data(cfg.data).test)
    out.info(f"verifying {run.qonnx.name} with qonnx's executor on {len(images)} test samples")
    with torch.no_grad():
        expected = torch.cat([model(images[i: i + 512]) for i in range(0, len(images), 512)]).numpy()
    started = time.perf_counter()
    got = execute(wrapper, images.numpy(), batch=cfg.export.verify_batch, progress="model.qonnx")[
        wrapper.graph.output[0].name]
    exact = is_integer_network(wrapper)
    comparison = compare_outputs(expected, got, 0.0 if exact else FLOAT_RTOL)
    figures.update(comparison, exact=exact, verified_samples=len(images),
                   qonnx_seconds=round(time.perf_counter() - started, 2),
                   qonnx_accuracy=float((got.argmax(1) == labels.numpy()).mean()))
    verify_dir = run.root / "verify"
    verify_dir.mkdir(exist_ok=True)
    with atomic_path(verify_dir / "export.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, torch=expected, qonnx=got, labels=labels.numpy())
    if comparison["mismatches"]:
        raise VerificationError(
            f"export: qonnx output differs from PyTorch{'' if exact else f' (beyond {FLOAT_RTOL:g} relative)'} on "
            f"{comparison['mismatches']} of {len(images)} samples "
            f"(first at index {comparison['first_mismatch']}); arrays in {verify_dir / 'export.npz'}"
        )
    return figures
