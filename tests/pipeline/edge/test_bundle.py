"""Deploy bundles unpacked and run as a board would: in a fresh virtual environment with only onnxruntime and
numpy (x86 stands in for the board), and the bit-packed model with the kernel built from the bundle's source;
run.py's own check refuses an altered model, and outputs that differ from the ones the bundle expects."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from bnnflow.pipeline.edge import runtime

SIMULATOR_MATCH = "all 8 outputs of {} equal those of bnnflow's simulator"


@pytest.fixture(scope="module")
def exported_run(digits_run: Path) -> Path:
    """The digits run after `bnnflow edge export`, run as the command (in this process), so that the run's
    records of its files agree with them whichever edge test exported first."""
    from bnnflow.pipeline.cli import main

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["bnnflow", "edge", "export", str(digits_run)])
        try:
            main()
        except SystemExit as exc:
            assert not exc.code, exc.code
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


@pytest.fixture(scope="module")
def rpi_bundle(exported_run: Path, tmp_path_factory) -> Path:
    """The run's rpi bundle, unpacked once: a test that alters it works on a copy (``_copy``)."""
    from bnnflow.pipeline.edge.stage import edge_bundle_run
    from bnnflow.pipeline.rundir import RunDir

    run = RunDir(exported_run)
    archive = exported_run / edge_bundle_run(run.read_config(), run, "rpi")["bundle"]
    return _unpack(archive, tmp_path_factory.mktemp("rpi-bundle"))


def _unpack(archive: Path, into: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    (folder,) = into.iterdir()
    return folder


def _copy(folder: Path, into: Path) -> Path:
    return Path(shutil.copytree(folder, into / folder.name))


def _run(python: Path, folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "run.py", *args], cwd=folder, capture_output=True, text=True)


def _refused(done: subprocess.CompletedProcess, code: int) -> str:
    """The one line a run.py that stopped with exit ``code`` wrote on stderr (no traceback)."""
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr
    return done.stderr


def _predicted(stdout: str) -> list[str]:
    return [line.split(": ", 1)[1] for line in stdout.splitlines() if ": " in line and line.split(":")[0].isdigit()]


def _build_kernel(folder: Path) -> None:
    compiler = shutil.which("cc") or shutil.which("gcc")
    assert compiler, "the edge kernel needs a C compiler (the Dockerfile installs g++)"
    subprocess.run([compiler, "-O3", "-march=native", "-std=c99", "-shared", "-fPIC", "kernel/xnor_conv.c", "-o",
                    "kernel/libbnn_xnor.so"], cwd=folder, check=True)


@pytest.mark.parametrize("target", ["rpi", "jetson"])
def test_bundle_runs_with_only_onnxruntime_and_numpy(cli, exported_run: Path, bare_python: Path, tmp_path: Path,
                                                     target: str) -> None:
    done = cli("edge", "bundle", str(exported_run), "--target", target)
    assert done.returncode == 0, done.stderr
    folder = _unpack(exported_run / "edge" / f"bundle-{target}.tar.gz", tmp_path)
    assert {p.name for p in folder.iterdir()} >= {"run.py", "README.md", "labels.txt", "bundle.json", "reference.onnx",
                                                  "int8.onnx", "bitpacked.onnx", "sample_inputs.npy", "expected.json",
                                                  "kernel"}
    manifest = json.loads((folder / "bundle.json").read_text())
    assert manifest["default_model"] == {"rpi": "int8.onnx", "jetson": "reference.onnx"}[target]
    assert manifest["sha256"] == {m: hashlib.sha256((folder / m).read_bytes()).hexdigest()
                                  for m in ("reference.onnx", "int8.onnx", "bitpacked.onnx")}
    version = runtime.ort.__version__
    readme = (folder / "README.md").read_text()
    assert ("Raspberry Pi OS" if target == "rpi" else "JetPack") in readme and "xnor_conv.c" in readme
    assert (f"pip install onnxruntime=={version} numpy" if target == "rpi" else f"onnxruntime-gpu {version}") in readme
    assert "sudo apt install -y build-essential" in readme and manifest["onnxruntime"] == version
    ran = _run(bare_python, folder, "--model", "reference.onnx", "--bench", "5")
    assert ran.returncode == 0, ran.stderr
    inputs = np.load(folder / "sample_inputs.npy")
    scores = runtime.run_batches(runtime.session(exported_run / "edge" / "reference.onnx"), inputs)
    labels = (folder / "labels.txt").read_text().splitlines()
    assert _predicted(ran.stdout) == [labels[i] for i in scores.reshape(len(inputs), -1).argmax(axis=1)]
    assert SIMULATOR_MATCH.format("reference.onnx") in ran.stdout and "p50" in ran.stdout
    default = _run(bare_python, folder)
    assert default.returncode == 0 and len(_predicted(default.stdout)) == len(inputs), default.stderr
    checked = {"rpi": "all 8 outputs of int8.onnx are within its tolerance",
               "jetson": SIMULATOR_MATCH.format("reference.onnx")}[target]
    assert checked in default.stdout
    if target == "jetson":  # no GPU here: the runner says it falls back
        assert "not available here; running on CPUExecutionProvider" in default.stderr
    # without onnxruntime-extensions the bit-packed model is refused in one line, not a traceback
    assert "onnxruntime-extensions" in _refused(_run(bare_python, folder, "--model", "bitpacked.onnx"), 1)


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _change_one_weight(path: Path) -> None:
    """Still a valid model: the first weight of the first float initializer, negated."""
    model = onnx.load(str(path))
    init = next(i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and i.dims)
    weights = numpy_helper.to_array(init).copy()
    weights.flat[0] = -weights.flat[0] or 1.0
    init.CopyFrom(numpy_helper.from_array(weights, init.name))
    onnx.save(model, str(path))


def _another_model(path: Path) -> None:
    shutil.copyfile(path.with_name("int8.onnx"), path)


@pytest.mark.parametrize("alter", [_flip_a_byte, _change_one_weight, _another_model],
                         ids=["flipped-byte", "one-weight-changed", "another-model"])
def test_run_refuses_a_model_altered_after_the_bundle_was_written(rpi_bundle: Path, bare_python: Path,
                                                                  tmp_path: Path, alter) -> None:
    folder = _copy(rpi_bundle, tmp_path)
    alter(folder / "reference.onnx")
    done = _run(bare_python, folder)  # the default, int8.onnx: every model is checked, not only the one run
    line = _refused(done, 3)
    assert "reference.onnx differs from the file bnnflow wrote" in line and "bnnflow edge bundle" in line
    assert not done.stdout


def _alter_expected(model: str, sample: int) -> Callable[[Path], None]:
    def alter(folder: Path) -> None:
        path = folder / "expected.json"
        record = json.loads(path.read_text())
        entry = record["models"][model]
        entry["scores"][sample][0] += 3 * entry["tolerance"][sample]
        path.write_text(json.dumps(record))
    return alter


def _swap_inputs(folder: Path) -> None:
    inputs = np.load(folder / "sample_inputs.npy")
    np.save(folder / "sample_inputs.npy", inputs[[1, 0, *range(2, len(inputs))]])


@pytest.mark.parametrize("alter, model, differ", [
    (_alter_expected("reference.onnx", 3), "reference.onnx", "1 of 8 outputs of reference.onnx differ from those "
                                                             "of bnnflow's simulator (first at index 3)"),
    (_alter_expected("int8.onnx", 5), "int8.onnx", "1 of 8 outputs of int8.onnx differ"),
    (_swap_inputs, "int8.onnx", "2 of 8 outputs of int8.onnx differ"),
    (_swap_inputs, "reference.onnx", "2 of 8 outputs of reference.onnx differ"),
], ids=["reference-score", "int8-score", "swapped-inputs-int8", "swapped-inputs-reference"])
def test_run_check_fails_when_outputs_differ_from_the_expected(rpi_bundle: Path, bare_python: Path, tmp_path: Path,
                                                               alter, model: str, differ: str) -> None:
    folder = _copy(rpi_bundle, tmp_path)
    alter(folder)
    done = _run(bare_python, folder, "--model", model)
    assert differ in _refused(done, 4) and len(_predicted(done.stdout)) == 8


def test_run_refuses_bad_arguments_in_one_line(rpi_bundle: Path, bare_python: Path, tmp_path: Path) -> None:
    inputs = np.load(rpi_bundle / "sample_inputs.npy")
    np.save(tmp_path / "wrong.npy", np.zeros((2, 5), np.float32))
    (tmp_path / "text.npy").write_text("not an array")
    assert "no input file" in _refused(_run(bare_python, rpi_bundle, "--input", str(tmp_path / "none.npy")), 2)
    assert "the model takes (N, 1, 8, 8)" in _refused(_run(bare_python, rpi_bundle, "--input",
                                                           str(tmp_path / "wrong.npy")), 2)
    assert "not a .npy array" in _refused(_run(bare_python, rpi_bundle, "--input", str(tmp_path / "text.npy")), 2)
    assert "invalid choice: 'float.onnx'" in _refused(_run(bare_python, rpi_bundle, "--model", "float.onnx"), 2)
    # the user's own inputs (here the samples in another order) run, with nothing said about a check
    np.save(tmp_path / "mine.npy", inputs[::-1])
    mine = _run(bare_python, rpi_bundle, "--input", str(tmp_path / "mine.npy"))
    assert mine.returncode == 0 and not mine.stderr and "run.py" not in mine.stdout
    assert len(_predicted(mine.stdout)) == len(inputs)


def test_bundle_bitpacked_model_with_the_kernel_built_from_its_source(rpi_bundle: Path, tmp_path: Path) -> None:
    folder = _copy(rpi_bundle, tmp_path)
    _build_kernel(folder)
    exact = _run(Path(sys.executable), folder, "--model", "reference.onnx")
    packed = _run(Path(sys.executable), folder, "--model", "bitpacked.onnx")
    assert packed.returncode == 0, packed.stderr
    assert _predicted(packed.stdout) == _predicted(exact.stdout) and _predicted(exact.stdout)
    assert SIMULATOR_MATCH.format("bitpacked.onnx") in packed.stdout


def test_unknown_target_and_missing_export(cli, exported_run: Path, tmp_path: Path) -> None:
    unknown = cli("edge", "bundle", str(exported_run), "--target", "coral")
    assert unknown.returncode == 2 and "rpi" in unknown.stderr and "Traceback" not in unknown.stderr
    bare = tmp_path / "copy"
    shutil.copytree(exported_run, bare)
    (bare / "edge" / "int8.onnx").unlink()
    missing = cli("edge", "bundle", str(bare))
    assert missing.returncode == 2 and "bnnflow edge export" in missing.stderr


def test_bundle_is_refused_when_a_model_no_longer_equals_the_simulator(exported_run: Path, tmp_path: Path) -> None:
    """bnnflow runs run.py's check before it packs: an exact model that drifted from the simulator ships nowhere."""
    from bnnflow.errors import VerificationError
    from bnnflow.pipeline.edge.stage import edge_bundle_run
    from bnnflow.pipeline.rundir import RunDir

    run = RunDir(shutil.copytree(exported_run, tmp_path / "copy", ignore=shutil.ignore_patterns("bundle-*")))
    _another_model(run.root / "edge" / "reference.onnx")
    with pytest.raises(VerificationError, match="reference.onnx differs from bnnflow's simulator on 8 of 8"):
        edge_bundle_run(run.read_config(), run, "rpi")
    assert not list((run.root / "edge").glob("bundle-*"))


def test_bundle_runs_a_residual_network_on_the_kernel(tmp_path: Path) -> None:
    """Bi-Real-18 (its convs on BinaryConv2dAffine / BinaryConv2dChain, the bundle's own copy of the ops) equals
    model.qonnx from an unpacked bundle, as its reference model does."""
    import warnings

    import torch

    from bnnflow.models import create_model
    from bnnflow.pipeline.edge.bundle import write_bundle
    from bnnflow.pipeline.edge.expected import expected_record, qonnx_expectation
    from bnnflow.pipeline.edge.int8 import int8_model
    from bnnflow.pipeline.edge.variants import bitpacked_model, reference_model
    from bnnflow.pipeline.export import export_model

    torch.manual_seed(0)
    model = create_model("birealnet18", input_shape=(3, 32, 32), num_classes=10).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qonnx = export_model(model, (3, 32, 32))
    reference = reference_model(qonnx)
    edge = tmp_path / "edge"
    edge.mkdir()
    reference.save(str(edge / "reference.onnx"))
    bitpacked_model(reference)[0].save(str(edge / "bitpacked.onnx"))
    inputs = np.random.default_rng(0).random((6, 3, 32, 32), dtype=np.float32)
    int8_model(reference, inputs[:2], edge / "int8.onnx")
    expected = expected_record(edge, inputs, qonnx_expectation(qonnx, inputs))
    archive = write_bundle(edge, "rpi", [f"class{i}" for i in range(10)], inputs, "birealnet", {}, expected)
    folder = _unpack(archive, tmp_path / "unpacked")
    _build_kernel(folder)
    runs = {m: _run(Path(sys.executable), folder, "--model", m) for m in ("reference.onnx", "bitpacked.onnx")}
    for name, ran in runs.items():
        assert ran.returncode == 0 and f"all 6 outputs of {name} equal those of model.qonnx" in ran.stdout, ran.stderr
    assert _predicted(runs["bitpacked.onnx"].stdout) == _predicted(runs["reference.onnx"].stdout)
