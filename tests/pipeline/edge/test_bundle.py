"""Deploy bundles unpacked and run as a board would: in a fresh virtual environment with only onnxruntime and
numpy (x86 stands in for the board), and the bit-packed model with the kernel built from the bundle's source."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from bnnflow.pipeline.edge import runtime


@pytest.fixture(scope="module")
def exported_run(digits_run: Path) -> Path:
    from bnnflow.pipeline.edge.stage import edge_export_run
    from bnnflow.pipeline.rundir import RunDir

    run = RunDir(digits_run)
    edge_export_run(run.read_config(), run)
    return digits_run


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> Path:
    """A fresh virtual environment with onnxruntime and numpy only (pip, from the package index)."""
    venv = tmp_path_factory.mktemp("venv") / "bare"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    onnxruntime = f"onnxruntime=={runtime.ort.__version__}"
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", onnxruntime, f"numpy=={np.__version__}"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return python


def _unpack(archive: Path, into: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    (folder,) = into.iterdir()
    return folder


def _predicted(stdout: str) -> list[str]:
    return [line.split(": ", 1)[1] for line in stdout.splitlines() if ": " in line and line.split(":")[0].isdigit()]


@pytest.mark.parametrize("target", ["rpi", "jetson"])
def test_bundle_runs_with_only_onnxruntime_and_numpy(cli, exported_run: Path, bare_python: Path, tmp_path: Path,
                                                     target: str) -> None:
    done = cli("edge", "bundle", str(exported_run), "--target", target)
    assert done.returncode == 0, done.stderr
    folder = _unpack(exported_run / "edge" / f"bundle-{target}.tar.gz", tmp_path)
    assert {p.name for p in folder.iterdir()} >= {"run.py", "README.md", "labels.txt", "bundle.json", "reference.onnx",
                                                  "int8.onnx", "bitpacked.onnx", "sample_inputs.npy", "kernel"}
    manifest = json.loads((folder / "bundle.json").read_text())
    assert manifest["default_model"] == {"rpi": "int8.onnx", "jetson": "reference.onnx"}[target]
    readme = (folder / "README.md").read_text()
    assert ("Raspberry Pi OS" if target == "rpi" else "JetPack") in readme and "xnor_conv.c" in readme
    ran = subprocess.run([str(bare_python), "run.py", "--model", "reference.onnx", "--bench", "5"], cwd=folder,
                         capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    inputs = np.load(folder / "sample_inputs.npy")
    scores = runtime.run_batches(runtime.session(exported_run / "edge" / "reference.onnx"), inputs)
    labels = (folder / "labels.txt").read_text().splitlines()
    assert _predicted(ran.stdout) == [labels[i] for i in scores.reshape(len(inputs), -1).argmax(axis=1)]
    assert "p50" in ran.stdout
    default = subprocess.run([str(bare_python), "run.py"], cwd=folder, capture_output=True, text=True)
    assert default.returncode == 0 and len(_predicted(default.stdout)) == len(inputs), default.stderr
    if target == "jetson":  # no GPU here: the runner says it falls back
        assert "not available here; running on CPUExecutionProvider" in default.stderr
    # without onnxruntime-extensions the bit-packed model is refused in one line, not a traceback
    refused = subprocess.run([str(bare_python), "run.py", "--model", "bitpacked.onnx"], cwd=folder,
                             capture_output=True, text=True)
    assert refused.returncode != 0 and "onnxruntime-extensions" in refused.stderr and "Traceback" not in refused.stderr


def test_bundle_bitpacked_model_with_the_kernel_built_from_its_source(cli, exported_run: Path, tmp_path: Path) -> None:
    compiler = shutil.which("cc") or shutil.which("gcc")
    assert compiler, "the edge kernel needs a C compiler (the Dockerfile installs g++)"
    assert cli("edge", "bundle", str(exported_run)).returncode == 0
    folder = _unpack(exported_run / "edge" / "bundle-rpi.tar.gz", tmp_path)
    subprocess.run([compiler, "-O3", "-march=native", "-std=c99", "-shared", "-fPIC", "kernel/xnor_conv.c", "-o",
                    "kernel/libbnn_xnor.so"], cwd=folder, check=True)
    exact = subprocess.run([sys.executable, "run.py", "--model", "reference.onnx"], cwd=folder, capture_output=True,
                           text=True)
    packed = subprocess.run([sys.executable, "run.py", "--model", "bitpacked.onnx"], cwd=folder, capture_output=True,
                            text=True)
    assert packed.returncode == 0, packed.stderr
    assert _predicted(packed.stdout) == _predicted(exact.stdout) and _predicted(exact.stdout)


def test_unknown_target_and_missing_export(cli, exported_run: Path, tmp_path: Path) -> None:
    unknown = cli("edge", "bundle", str(exported_run), "--target", "coral")
    assert unknown.returncode == 2 and "rpi" in unknown.stderr and "Traceback" not in unknown.stderr
    bare = tmp_path / "copy"
    shutil.copytree(exported_run, bare)
    (bare / "edge" / "int8.onnx").unlink()
    missing = cli("edge", "bundle", str(bare))
    assert missing.returncode == 2 and "bnnflow edge export" in missing.stderr


def test_bundle_runs_a_residual_network_on_the_kernel(tmp_path: Path) -> None:
    """Bi-Real-18 (its convs on BinaryConv2dAffine / BinaryConv2dChain, the bundle's own copy of the ops) predicts
    as its reference model does, from an unpacked bundle."""
    import warnings

    import torch

    from bnnflow.models import create_model
    from bnnflow.pipeline.edge.bundle import write_bundle
    from bnnflow.pipeline.edge.int8 import int8_model
    from bnnflow.pipeline.edge.variants import bitpacked_model, reference_model
    from bnnflow.pipeline.export import export_model

    torch.manual_seed(0)
    model = create_model("birealnet18", input_shape=(3, 32, 32), num_classes=10).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = reference_model(export_model(model, (3, 32, 32)))
    edge = tmp_path / "edge"
    edge.mkdir()
    reference.save(str(edge / "reference.onnx"))
    bitpacked_model(reference)[0].save(str(edge / "bitpacked.onnx"))
    inputs = np.random.default_rng(0).random((6, 3, 32, 32), dtype=np.float32)
    int8_model(reference, inputs[:2], edge / "int8.onnx")
    archive = write_bundle(edge, "rpi", [f"class{i}" for i in range(10)], inputs, "birealnet", {})
    folder = _unpack(archive, tmp_path / "unpacked")
    subprocess.run(["cc", "-O3", "-march=native", "-std=c99", "-shared", "-fPIC", "kernel/xnor_conv.c", "-o",
                    "kernel/libbnn_xnor.so"], cwd=folder, check=True)
    runs = {m: subprocess.run([sys.executable, "run.py", "--model", m], cwd=folder, capture_output=True, text=True)
            for m in ("reference.onnx", "bitpacked.onnx")}
    assert runs["bitpacked.onnx"].returncode == 0, runs["bitpacked.onnx"].stderr
    assert len(_predicted(runs["reference.onnx"].stdout)) == 6
    assert _predicted(runs["bitpacked.onnx"].stdout) == _predicted(runs["reference.onnx"].stdout)
