"""The exact edge variants of the ``hw = true`` networks (residual joins, padded binary convs, multi-bit streams)
under ONNX Runtime, against the bit-exact simulator: the model.qonnx tensor where the float tail starts equals
the simulator's outputs (mapped through the compile stage's boundary) bit for bit, and the scores after the float
classifier agree to its rounding."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper

from bnnflow.pipeline.edge import runtime
from bnnflow.pipeline.edge.simulated import simulator_outputs
from bnnflow.pipeline.edge.stage import mismatches
from bnnflow.pipeline.edge.variants import bitpacked_model, reference_model

NARROW = dict(widths=[16, 32, 64, 128], stem_width=16)  # ResNet-18's layout at a width the test can afford

NETWORKS = [
    ("resnet20", dict(hw=True)),
    ("resnet20_bireal", dict(hw=True)),
    ("vgg_small", dict(hw=True, widths=[32, 32, 64, 64, 128, 128])),
    ("cifar_resnet18", dict(hw=True, **NARROW)),
    ("cnv", dict(act_bits=2)),
    ("cnv", dict(act_bits=2, weight_bits=2)),
]


def _compiled(name: str, kwargs: dict):
    """The network with random weights and BatchNorms (some zero scales), exported and compiled."""
    from bnnflow.models import create_model
    from bnnflow.pipeline.compile.stage import compile_model
    from bnnflow.pipeline.config import CompileConfig
    from bnnflow.pipeline.export import export_model

    torch.manual_seed(1)
    model = create_model(name, input_shape=(3, 32, 32), num_classes=10, **kwargs)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            c = module.num_features
            module.weight.data = torch.randn(c)
            module.weight.data[::7] = 0
            module.bias.data = torch.randn(c) * 0.5
            module.running_mean.data = torch.randn(c) * 3
            module.running_var.data = torch.rand(c) * 5 + 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qonnx_model = export_model(model.eval(), (3, 32, 32))
    streamlined, dataflow, _ = compile_model(qonnx_model, CompileConfig(board="ulx3s", target_fps=1000))
    return qonnx_model, streamlined, dataflow


def _run(graph, path: Path, images: np.ndarray, extra: str | None) -> list[np.ndarray]:
    """The variant's outputs under ONNX Runtime, with tensor ``extra`` as a second output."""
    if extra is not None:
        graph.graph.output.append(helper.make_tensor_value_info(extra, TensorProto.FLOAT, None))
    graph.save(str(path))
    sess = runtime.session(path)
    name = sess.get_inputs()[0].name
    runs = [sess.run(None, {name: x[None]}) for x in images]
    return [np.concatenate([r[i] for r in runs]) for i in range(len(runs[0]))]


def _id(name: str, kwargs: dict) -> str:
    return "-".join([name, *(f"{k}{v}" for k, v in kwargs.items() if k not in NARROW and k != "widths")])


@pytest.mark.parametrize("name,kwargs", NETWORKS, ids=[_id(*network) for network in NETWORKS])
def test_exact_variants_equal_the_simulator(tmp_path: Path, name: str, kwargs: dict) -> None:
    qonnx_model, streamlined, dataflow = _compiled(name, kwargs)
    images = np.random.default_rng(0).random((8, 3, 32, 32), dtype=np.float32)
    expected, label, boundary = simulator_outputs(qonnx_model, streamlined, dataflow, images)
    reference = reference_model(qonnx_model)
    bitpacked, replaced = bitpacked_model(reference)
    # the kernel takes +-1 activations only: at 2 bits bitpacked is the reference's standard ops, exact as they are
    assert (replaced == 0) == (kwargs.get("act_bits", 1) > 1)
    for variant, graph in (("reference", reference), ("bitpacked", bitpacked)):
        outputs = _run(graph, tmp_path / f"{variant}.onnx", images, boundary[0] if boundary else None)
        scores = outputs[0].reshape(len(images), -1)
        if label:
            assert np.array_equal(scores.argmax(axis=1), expected[:, 0]), variant
        else:
            assert mismatches(expected, scores) == 0, variant
        if boundary is not None:  # the integer part's last value, to the bit
            assert np.array_equal(outputs[1].reshape(boundary[1].shape), boundary[1]), variant
