"""TFC, SFC, LFC and CNV each train for one epoch on a small slice and export QONNX that qonnx executes with
0 mismatches; the default digits MLP does the same for two epochs.

Real MNIST / CIFAR-10 are not on this machine and nothing is downloaded, so tiny synthetic sets of seeded random
pixels are written in torchvision's on-disk layouts (real IDX files, real CIFAR python pickles) and read by the
package's own loaders.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from qonnx.core.modelwrapper import ModelWrapper

from bnnflow.models import create_model
from bnnflow.pipeline.config import Config
from bnnflow.pipeline.data import load_data, stack
from bnnflow.pipeline.execute import execute
from bnnflow.pipeline.export import export_model
from bnnflow.pipeline.steps import prepare_run, run_steps, validate
from tests.models.exported import check_input_quant

MNIST_TRAIN, MNIST_TEST = 160, 80  # samples written to disk
CIFAR_PER_BATCH, CIFAR_TEST = 16, 40

QONNX_DOMAIN = "qonnx.custom_op.general"

# (model, data set, limit_train, limit_test, hidden FC layers, conv layers)
ZOO = [
    ("tfc", "mnist", 128, 64, 3, 0),
    ("sfc", "mnist", 128, 64, 3, 0),
    ("lfc", "mnist", 128, 64, 3, 0),
    ("cnv", "cifar10", 64, 32, 2, 6),
]

# LogitScale.log_scale values: the one the CNV run above trains to (seed 0) and a few others of that size. Any
# value must export bit-exactly; these are ones where torch's float32 exp and onnxruntime's differ on this CPU.
LOG_SCALES = [-3.1337786, -3.14, -2.31, -1.98]


def _write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _write_cifar_batch(path: Path, rng: np.random.Generator, n: int) -> None:
    batch = {b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
             b"labels": rng.integers(0, 10, size=n).tolist()}
    with open(path, "wb") as f:
        pickle.dump(batch, f)


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory) -> Path:
    """ROOT/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte with seeded random pixels and labels."""
    root = tmp_path_factory.mktemp("mnist")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", MNIST_TRAIN), ("t10k", MNIST_TEST)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), 0x00000803)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8), 0x00000801)
    return root


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
    """ROOT/cifar-10-batches-py/{data_batch_1..5,test_batch} with seeded random pixels and labels."""
    root = tmp_path_factory.mktemp("cifar")
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(1, 6):
        _write_cifar_batch(folder / f"data_batch_{i}", rng, CIFAR_PER_BATCH)
    _write_cifar_batch(folder / "test_batch", rng, CIFAR_TEST)
    return root


def _run(cfg: Config, out: Path):
    cfg = validate(cfg)
    run = prepare_run(cfg, out)
    summary = run_steps(cfg, run, ["train", "export"])
    return run, summary


def _check_graph(path: Path, hidden: int, convs: int) -> onnx.ModelProto:
    """Standard QONNX: a Relu and an 8-bit unsigned Quant on the input, BipolarQuant for every binary weight and act."""
    model = onnx.load(str(path))
    nodes = list(model.graph.node)
    op_types = [n.op_type for n in nodes]
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}

    # only standard ONNX ops and qonnx's Quant / BipolarQuant; nothing of FINN's (MultiThreshold etc.)
    assert "MultiThreshold" not in op_types
    for node in nodes:
        assert node.domain in ("", "ai.onnx", QONNX_DOMAIN), (node.op_type, node.domain)
        if node.domain == QONNX_DOMAIN:
            assert node.op_type in ("Quant", "BipolarQuant"), node.op_type

    # one weight quantizer per quantized layer (hidden FCs + class layer + convs), one act per hidden layer
    bipolar = [n for n in nodes if n.op_type == "BipolarQuant"]
    assert len(bipolar) == 2 * (hidden + convs) + 1
    assert all(n.domain == QONNX_DOMAIN for n in bipolar)
    for node in bipolar:
        assert np.all(inits[node.input[1]] == 1.0)  # scale 1: exactly {-1, +1}

    # the input: graph input (through a Flatten or not) -> Relu -> one unsigned 8-bit Quant with scale 1/256
    quants = [n for n in nodes if n.op_type == "Quant"]
    assert len(quants) == 1
    assert quants[0].domain == QONNX_DOMAIN
    assert check_input_quant(model.graph, bits=8).output == quants[0].output

    # forms FINN can read: every Conv has kernel_shape, every Gemm has a bias
    for node in nodes:
        if node.op_type == "Gemm":
            assert len(node.input) == 3, node.name
    conv_nodes = [n for n in nodes if n.op_type == "Conv"]
    assert len(conv_nodes) == convs
    for node in conv_nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert list(attrs["kernel_shape"]) == [3, 3], node.name
    return model


def _check_reexecution(run, n: int = 4) -> None:
    """qonnx executes the saved model.qonnx file and reproduces the verified PyTorch outputs bit for bit."""
    arrays = np.load(run.root / "verify" / "export.npz")
    cfg = run.read_config()
    images, labels = stack(load_data(cfg.data).test)
    np.testing.assert_array_equal(arrays["labels"], labels.numpy())
    np.testing.assert_array_equal(arrays["torch"], arrays["qonnx"])
    wrapper = ModelWrapper(str(run.qonnx))
    got = execute(wrapper, images[:n].numpy(), batch=n)[wrapper.graph.output[0].name]
    np.testing.assert_array_equal(got, arrays["torch"][:n])


@pytest.mark.parametrize("name,dataset,limit_train,limit_test,hidden,convs", ZOO, ids=[z[0] for z in ZOO])
def test_zoo_trains_one_epoch_and_exports_verified_qonnx(name, dataset, limit_train, limit_test, hidden, convs,
                                                          mnist_root, cifar_root, tmp_path):
    root = mnist_root if dataset == "mnist" else cifar_root
    cfg = Config.from_dict({"model": {"name": name}}).with_overrides({
        "data.name": dataset,
        "data.root": str(root),
        "data.limit_train": limit_train,
        "data.limit_test": limit_test,
        "train.epochs": 1,
        "train.batch_size": 32,
    })
    run, summary = _run(cfg, tmp_path / "run")

    train, export = summary["stages"]["train"], summary["stages"]["export"]
    assert train["status"] == "ok"
    assert train["model"] == name
    assert train["epochs"] == 1
    assert train["test_samples"] == limit_test
    assert run.checkpoint.is_file()
    assert export["status"] == "ok"
    assert export["exact"]  # quantized inputs and weights on power-of-two scales, no bias: verified bit for bit
    assert export["mismatches"] == 0
    assert export["label_mismatches"] == 0
    assert export["verified_samples"] == limit_test
    assert run.qonnx.is_file()

    model = _check_graph(run.qonnx, hidden, convs)
    op_types = {n.op_type for n in model.graph.node}
    assert "BipolarQuant" in op_types
    if name == "cnv":
        assert "Gemm" not in op_types
        assert [n.op_type for n in model.graph.node].count("MaxPool") == 2
        assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][1:] == [3, 32, 32]
    else:
        assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][1:] == [1, 28, 28]
    _check_reexecution(run)
    if name in ("tfc", "cnv"):
        _check_compiled(cfg, run, limit_test, hidden, convs)


def _check_compiled(cfg, run, limit_test: int, hidden: int, convs: int) -> None:
    """The trained model compiles exactly, and its estimates are written and plotted."""
    compiled = run_steps(run.read_config(), run, ["compile"])["stages"]["compile"]
    assert compiled["status"] == "ok"
    assert compiled["verified_samples"] == limit_test
    assert compiled["streamlined_mismatches"] == 0 and compiled["dataflow_mismatches"] == 0
    estimates = json.loads((run.compile_dir / "estimates.json").read_text())
    ops = [layer["op"] for layer in estimates["layers"]]
    assert ops.count("MVTU") == hidden + 1 + convs and ops.count("SlidingWindow") == convs
    assert round(estimates["frames_per_second"], 1) == compiled["frames_per_second"]
    assert estimates["luts"] <= 0.8 * 83_640 and estimates["ram_blocks"] <= 208  # fits the default ULX3S
    assert (run.compile_dir / "estimates.png").stat().st_size > 10_000


def test_digits_mlp_default_two_epochs_exports_standard_qonnx(tmp_path):
    cfg = Config().with_overrides({"train.epochs": 2})
    assert cfg.model.name == "digits_mlp"
    run, summary = _run(cfg, tmp_path / "run")

    train, export = summary["stages"]["train"], summary["stages"]["export"]
    assert train["status"] == "ok"
    assert train["epochs"] == 2
    assert export["status"] == "ok"
    assert export["exact"]
    assert export["mismatches"] == 0
    assert export["verified_samples"] == train["test_samples"] == 360  # 20% of the 1,797 digits
    assert len(run.metrics.read_text().splitlines()) == 2

    model = _check_graph(run.qonnx, hidden=3, convs=0)
    op_types = {n.op_type for n in model.graph.node}
    assert {"Quant", "BipolarQuant"} <= op_types
    assert "Gemm" not in op_types
    _check_reexecution(run)


@pytest.mark.parametrize("log_scale", LOG_SCALES)
def test_export_logit_scale_matches_pytorch_bit_for_bit(log_scale):
    """The class scores are integer accumulators times exp(log_scale); the exported graph must hold the very
    float32 that PyTorch multiplies by, or verification fails on every sample with a nonzero score."""
    torch.manual_seed(0)
    model = create_model("digits_mlp", input_shape=(1, 8, 8), num_classes=10, hidden=16, depth=1)
    with torch.no_grad():
        model.features[-1].log_scale.fill_(log_scale)
    model.eval()
    images = torch.from_numpy(
        (np.random.default_rng(0).integers(0, 17, size=(16, 1, 8, 8)) / 16.0).astype(np.float32))
    with torch.no_grad():
        expected = model(images).numpy()
    wrapper = export_model(model, (1, 8, 8))
    got = execute(wrapper, images.numpy(), batch=16)[wrapper.graph.output[0].name]
    np.testing.assert_array_equal(got, expected)
