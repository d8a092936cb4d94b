"""Bad input, one case per kind: each gets the documented exit code and one line on stderr naming the problem,
never a traceback; nothing half-written is left behind, and no file the user had is gone or changed.

Each case prepares its input in a fresh folder (holding a copy of a compiled digits run at ``run/``) and returns
the command line; the harness runs bnnflow's real entry point there and checks all of the above.
"""

from __future__ import annotations

import gzip
import hashlib
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from bnnflow.pipeline.manifest import RUNNER_FILES
from tests.pipeline.conftest import copy_run
from tests.pipeline.test_data import IDX_LABELS_MAGIC, _idx_bytes, _make_mnist

QUICK = ["--epochs", "1", "--set", "data.limit_train=100", "--set", "train.threads=1", "--steps", "train"]


@dataclass(frozen=True)
class Case:
    id: str
    #: (the case's folder, the run copied into it, processes to stop afterwards) -> the command line
    setup: Callable[[Path, Path, list], list[str]]
    code: int
    #: text the error line must contain
    needle: str


def _config(text: str) -> Callable[[Path, Path, list], list[str]]:
    def setup(tmp: Path, run: Path, later: list) -> list[str]:
        (tmp / "bad.toml").write_text(text)
        return ["run", "bad.toml", "--out", "new"]
    return setup


def _flip_checkpoint(run: Path) -> None:
    ckpt = run / "train" / "checkpoint.safetensors"
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0x10
    ckpt.write_bytes(bytes(data))


def _mnist(tmp: Path, **damage: bytes) -> list[str]:
    _make_mnist(tmp / "mnist" / "MNIST" / "raw")
    for name, payload in damage.items():
        (tmp / "mnist" / "MNIST" / "raw" / name).write_bytes(payload)
    return ["run", "--data", "mnist", "--data-dir", "mnist", "--model", "tfc", "--out", "new", *QUICK]


def _mnist_bad_gz(tmp: Path, run: Path, later: list) -> list[str]:
    _make_mnist(tmp / "mnist" / "MNIST" / "raw", gz=True)
    path = tmp / "mnist" / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz"
    data = bytearray(path.read_bytes())
    start = data.index(0, 10) + 1 if data[3] & 0x08 else 10  # after the header and the file name it stores
    data[start] = 0xFF  # the first deflate block gets the reserved block type; the gzip header stays intact
    path.write_bytes(bytes(data))
    return ["run", "--data", "mnist", "--data-dir", "mnist", "--model", "tfc", "--out", "new", *QUICK]


def _wrong_labels(tmp: Path, run: Path, later: list) -> list[str]:
    return _mnist(tmp, **{"train-labels-idx1-ubyte": _idx_bytes(IDX_LABELS_MAGIC, np.array([1, 12, 3, 4, 5]))})


def _cifar_not_pickle(tmp: Path, run: Path, later: list) -> list[str]:
    folder = tmp / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(b"not a pickle")
    return ["run", "--data", "cifar10", "--data-dir", "cifar", "--model", "cnv", "--out", "new", *QUICK]


def _hold_lock(tmp: Path, run: Path, later: list) -> list[str]:
    code = ("import sys, time; from pathlib import Path; from bnnflow.pipeline.runlock import run_lock\n"
            "with run_lock(Path(sys.argv[1]), 'bnnflow run --out run'):\n print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, text=True)
    later.append(holder)
    assert holder.stdout.readline().strip() == "held"
    return ["export", "run"]


def _metrics_damaged(tmp: Path, run: Path, later: list) -> list[str]:
    (run / "train" / "metrics.jsonl").write_text('{"epoch": 0, "lr": 0.01}\n{"epoch": 1, "lr"')
    return ["train", "--out", "run", "--resume", "--epochs", "2", "--set", "train.threads=1", "--set",
            "compile.target_fps=50000"]


def _foreign_qonnx(tmp: Path, run: Path, later: list, op: str = "Sin", name: str = "weird") -> list[str]:
    """The run's model.qonnx with an op the compiler has no integer form for between two quantized layers."""
    model = onnx.load(run / "model.qonnx")
    nodes = list(model.graph.node)
    layer = next(i for i, node in enumerate(nodes) if node.op_type == "MatMul")
    inserted = helper.make_node(op, [nodes[layer].output[0]], [f"{op}_out"], name=name)
    for node in nodes[layer + 1:]:
        node.input[:] = [f"{op}_out" if x == nodes[layer].output[0] else x for x in node.input]
    model.graph.node.insert(layer + 1, inserted)
    if not name:
        for node in model.graph.node:
            node.name = ""
    onnx.save(model, tmp / "foreign.onnx")
    return ["compile", "foreign.onnx", "--out", "new"]


def _non_binary_weight(tmp: Path, run: Path, later: list) -> list[str]:
    model = onnx.load(run / "dataflow.onnx")
    mvtu = next(n for n in model.graph.node if n.op_type == "MVTU" and any(
        a.name == "binaryXnorMode" and a.i == 1 for a in n.attribute))
    init = next(i for i in model.graph.initializer if i.name == mvtu.input[1])
    weights = numpy_helper.to_array(init).copy()
    weights.flat[0] = 5
    init.CopyFrom(numpy_helper.from_array(weights, init.name))
    onnx.save(model, tmp / "bad_dataflow.onnx")
    np.save(tmp / "x.npy", np.load(run / "verify" / "compile.npz")["hw_input"][:4])
    return ["simulate", "bad_dataflow.onnx", "--inputs", "x.npy"]


def _hw_inputs(tmp: Path, run: Path, transform: Callable[[np.ndarray], np.ndarray]) -> None:
    np.save(tmp / "x.npy", transform(np.load(run / "verify" / "compile.npz")["hw_input"][:4]))


def _sim(tmp: Path, run: Path, *extra: str, inputs: Callable[[np.ndarray], np.ndarray] = lambda x: x) -> list[str]:
    _hw_inputs(tmp, run, inputs)
    return ["simulate", "run/dataflow.onnx", "--inputs", "x.npy", *extra]


def _expect_wrong_shape(tmp: Path, run: Path, later: list) -> list[str]:
    np.save(tmp / "y.npy", np.zeros((3, 7), dtype=np.int64))
    return _sim(tmp, run, "--expect", "y.npy")


def _record_onto_file(tmp: Path, run: Path, later: list) -> list[str]:
    (tmp / "golden").write_text("a file of mine")
    return _sim(tmp, run, "--record", "golden")


def _changed_after_export(tmp: Path, run: Path, later: list) -> list[str]:
    model = onnx.load(run / "model.qonnx")
    model.producer_name = "edited by hand"
    onnx.save(model, run / "model.qonnx")
    return ["compile", "run"]


def _stale_rtl(tmp: Path, run: Path, later: list) -> list[str]:
    from bnnflow.pipeline.rundir import RunDir
    from bnnflow.pipeline.steps import run_steps

    cfg = RunDir(run).read_config().with_overrides({"fpga.cosim_samples": 8})
    run_steps(cfg, RunDir(run), ["rtl"])
    RunDir(run).write_config(cfg)
    cfg = cfg.with_overrides({"compile.target_fps": 100_000})
    run_steps(cfg, RunDir(run), ["compile"])
    RunDir(run).write_config(cfg)
    return ["bitstream", "run"]


def _other_model_in_out(tmp: Path, run: Path, later: list) -> list[str]:
    (tmp / "model.onnx").write_bytes((run / "model.qonnx").read_bytes())
    return ["compile", "model.onnx", "--out", "run"]


def _damaged(rel: str, text: str, *argv: str) -> Callable[[Path, Path, list], list[str]]:
    def setup(tmp: Path, run: Path, later: list) -> list[str]:
        (run / rel).write_text(text)
        return list(argv)
    return setup


def _write_file(rel: str, text: str, argv: list[str]) -> Callable[[Path, Path, list], list[str]]:
    def setup(tmp: Path, run: Path, later: list) -> list[str]:
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_text(text)
        return argv
    return setup


def _just(*argv: str) -> Callable[[Path, Path, list], list[str]]:
    return lambda tmp, run, later: list(argv)


CASES = [
    # configuration and command line
    Case("config-unknown-key", _config("[train]\nepoch = 3\n"), 2, "train.epoch"),
    Case("config-wrong-type", _config("[train]\nepochs = 'three'\n"), 2, "train.epochs"),
    Case("config-out-of-range", _config("[train]\nlr = -1.0\n"), 2, "out of range"),
    Case("config-bad-choice", _config("[train]\noptimizer = 'lamb'\n"), 2, "adam, sgd"),
    Case("config-unknown-section", _config("[trian]\n"), 2, "trian"),
    Case("config-unknown-model", _config("[model]\nname = 'resnet999'\n"), 2, "resnet999"),
    Case("config-model-arg-type", _config("[model]\nargs = { hidden = 'wide' }\n"), 2, "model.args.hidden"),
    Case("config-not-toml", _config("[train\nepochs = 3\n"), 2, "not valid TOML"),
    Case("config-missing-file", _just("run", "nope.toml", "--out", "new"), 2, "nope.toml"),
    Case("set-without-equals", _just("run", "--set", "epochs", "--out", "new"), 2, "KEY=VALUE"),
    Case("set-unknown-section", _just("run", "--set", "epochs=3", "--out", "new"), 2, "SECTION.KEY"),
    Case("epochs-zero", _just("run", "--epochs", "0", "--out", "new"), 2, "train.epochs"),
    Case("unknown-option", _just("run", "--bogus"), 2, "--bogus"),
    Case("unknown-step", _just("run", "--steps", "train,deploy", "--out", "new"), 2, "unknown step 'deploy'"),
    Case("out-is-a-file", _write_file("out.txt", "mine", ["run", "--out", "out.txt", *QUICK]), 2, "is a file"),
    Case("out-below-a-file", _write_file("f", "mine", ["run", "--out", "f/run", *QUICK]), 2, "cannot create"),
    Case("out-not-a-run", _write_file("mine/thesis.tex", "x", ["run", "--out", "mine", *QUICK]), 2,
         "not a bnnflow run"),
    Case("run-other-config", _just("run", "--out", "run", *QUICK), 2, "different configuration"),
    Case("force-with-user-file", _write_file("run/notes.txt", "mine", ["run", "--out", "run", "--force", *QUICK]), 2,
         "notes.txt, which bnnflow did not write"),
    Case("run-in-use", _hold_lock, 2, "in use by another bnnflow process"),
    Case("damaged-manifest", _damaged("manifest.json", "{not json", "simulate", "run"), 2, "manifest.json is damaged"),
    Case("damaged-summary", _damaged("summary.json", "{not json", "simulate", "run"), 2, "summary.json is not valid"),
    # data
    Case("mnist-missing-folder", _just("run", "--data", "mnist", "--data-dir", "nowhere", "--out", "new"), 2,
         "nowhere"),
    Case("cifar-without-root", _just("run", "--data", "cifar10", "--model", "cnv", "--out", "new"), 2, "data.root"),
    Case("mnist-label-out-of-range", _wrong_labels, 2, "label 12 at index 1 is outside the 10 classes"),
    Case("mnist-corrupt-gz", _mnist_bad_gz, 2, "could not be read"),
    Case("mnist-truncated", lambda tmp, run, later: _mnist(tmp, **{"t10k-images-idx3-ubyte": b"\x00\x00\x08\x03"}), 2,
         "truncated"),
    Case("cifar-not-a-pickle", _cifar_not_pickle, 2, "not a CIFAR-10 python batch"),
    # checkpoints and training
    Case("export-flipped-bit", lambda tmp, run, later: (_flip_checkpoint(run), ["export", "run"])[1], 2, "damaged"),
    Case("resume-flipped-bit", lambda tmp, run, later: (_flip_checkpoint(run), [
        "train", "--out", "run", "--resume", "--epochs", "2", "--set", "train.threads=1", "--set",
        "compile.target_fps=50000"])[1], 2, "damaged"),
    Case("export-truncated-checkpoint", _damaged("train/checkpoint.safetensors", "trunc", "export", "run"), 2,
         "corrupt"),
    Case("export-not-a-run", _write_file("empty/x.txt", "mine", ["export", "empty"]), 2, "not a bnnflow run"),
    Case("train-again-without-resume", _just("train", "--out", "run", "--epochs", "2", "--set", "train.threads=1",
                                              "--set", "compile.target_fps=50000"), 2, "--resume"),
    Case("resume-damaged-metrics", _metrics_damaged, 2, "metrics.jsonl is damaged at line 2"),
    # ONNX files and compiling
    Case("compile-missing-onnx", _just("compile", "missing.onnx"), 2, "missing.onnx does not exist"),
    Case("compile-malformed-onnx", _write_file("broken.onnx", "garbage", ["compile", "broken.onnx"]), 2,
         "broken.onnx is not an ONNX file"),
    Case("compile-unsupported-op", _foreign_qonnx, 3, "Sin"),
    Case("compile-unnamed-node", lambda tmp, run, later: _foreign_qonnx(tmp, run, later, "Cos", ""), 3,
         "node Cos_0 (Cos) is not supported between quantized layers"),
    Case("compile-inputs-wrong-shape", lambda tmp, run, later: (np.save(tmp / "x.npy", np.zeros((2, 3))), [
        "compile", "run/model.qonnx", "--inputs", "x.npy", "--out", "new"])[1], 2, "inputs have shape (2, 3)"),
    Case("compile-onto-another-models-run", _other_model_in_out, 2, "holds a trained run"),
    Case("compile-unknown-board", _just("compile", "run", "--board", "de10-nano"), 2, "ulx3s"),
    Case("compile-input-changed-after-export", _changed_after_export, 2, "was changed after bnnflow's export step"),
    # simulating
    Case("simulate-batch-zero", lambda tmp, run, later: _sim(tmp, run, "--batch", "0"), 2, "--batch"),
    Case("simulate-out-is-a-folder", lambda tmp, run, later: _sim(tmp, run, "--out", "run"), 2, "is a folder"),
    Case("simulate-record-onto-a-file", _record_onto_file, 2, "is a file"),
    Case("simulate-expect-wrong-shape", _expect_wrong_shape, 2, "expected outputs have shape (3, 7)"),
    Case("simulate-inputs-not-npy", _write_file("x.npy", "text", ["simulate", "run/dataflow.onnx", "--inputs", "x.npy"]),
         2, "not a numpy .npy array"),
    Case("simulate-inputs-wrong-shape", lambda tmp, run, later: _sim(tmp, run, inputs=lambda x: x[:, :2]), 2,
         "inputs have shape"),
    Case("simulate-inputs-not-integers", lambda tmp, run, later: _sim(tmp, run, inputs=lambda x: x + 0.5), 2,
         "non-integer"),
    Case("simulate-inputs-out-of-range", lambda tmp, run, later: _sim(tmp, run, inputs=lambda x: x + 1000), 2,
         "outside"),
    Case("simulate-two-input-sources", lambda tmp, run, later: _sim(tmp, run, "--split", "test"), 2, "exactly one"),
    Case("simulate-not-a-dataflow-graph", _just("simulate", "run/model.qonnx", "--split", "test"), 2, "run directory"),
    Case("simulate-non-binary-xnor-weight", _non_binary_weight, 3, "has weight 5"),
    Case("simulate-golden-missing", _write_file("gold/inputs.npy", "", ["simulate", "run", "--golden", "gold"]), 2,
         "golden"),
    # hardware stages
    Case("rtl-without-dataflow", _write_file("bare/x", "", ["rtl", "bare"]), 2, "not a bnnflow run"),
    Case("rtl-folder-holds-user-file", _write_file("run/rtl/notes.txt", "mine", ["rtl", "run"]), 2,
         "rtl/notes.txt, which bnnflow did not write"),
    Case("bitstream-stale-rtl", _stale_rtl, 2, "out of date"),
    Case("bitstream-unknown-board", _just("bitstream", "run", "--board", "nexys"), 2, "nexys"),
    Case("fpga-run-without-rtl", _just("fpga-run", "run", "--port", "/dev/ttyUSB9"), 2, "bnnflow rtl"),
    Case("finn-unknown-board", _just("finn", "run", "--board", "Pynq-Z9"), 2, "Pynq-Z9"),
    Case("edge-bench-before-export", _just("edge", "bench", "run"), 2, "bnnflow edge export"),
    Case("edge-bundle-unknown-target", _just("edge", "bundle", "run", "--target", "arduino"), 2, "arduino"),
    Case("report-not-a-run", _write_file("plain/a.txt", "x", ["report", "plain"]), 2, "not a bnnflow run"),
]


def _files(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _runner_file(rel: str) -> bool:
    """summary.json, report.html and manifest.json of a run record a failed stage: they may change."""
    return rel.startswith("run/") and rel.removeprefix("run/") in RUNNER_FILES


def test_there_are_forty_kinds_of_bad_input() -> None:
    assert len({case.id for case in CASES}) == len(CASES) >= 40


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_line_and_loses_nothing(cli, tmp_path: Path, compiled_run: Path, case: Case) -> None:
    run = copy_run(compiled_run, tmp_path / "run")
    later: list[subprocess.Popen] = []
    try:
        argv = case.setup(tmp_path, run, later)
        before = _files(tmp_path)
        folders = {p for p in tmp_path.rglob("*") if p.is_dir()}
        result = cli(*argv)
    finally:
        for process in later:
            process.kill()
            process.wait()
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert result.returncode == case.code, result.stderr
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert case.needle in errors[0], errors[0]
    after = _files(tmp_path)
    changed = {rel for rel, sha in before.items() if after.get(rel) != sha and not _runner_file(rel)}
    assert not changed, f"files gone or changed: {sorted(changed)}"
    added = {rel for rel in after if rel not in before and not _runner_file(rel)}
    assert not added, f"files left behind: {sorted(added)}"
    assert {p for p in tmp_path.rglob("*") if p.is_dir()} <= folders, "folders left behind"


def test_the_corrupt_gz_case_damages_the_deflate_stream(tmp_path: Path) -> None:
    """The case must reach zlib (what raised zlib.error before), not stop at the gzip header."""
    _mnist_bad_gz(tmp_path, tmp_path, [])
    with pytest.raises(zlib.error):
        gzip.decompress((tmp_path / "mnist" / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz").read_bytes())
