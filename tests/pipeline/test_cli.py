"""The command line: bad input gives one clear line, a non-zero exit, no traceback and no partial files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

QUICK = ["--epochs", "1", "--set", "data.limit_train=200", "--set", "train.threads=1"]


def _assert_clean_failure(result, exit_code: int, *needles: str) -> None:
    assert result.returncode == exit_code, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], f"expected one error line, last: {result.stderr}"
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])


BAD_CONFIGS = [
    # (TOML text, exit code, text the message must contain)
    ("[train]\nepoch = 3\n", 2, "train.epoch"),
    ("[train]\nepochs = 'three'\n", 2, "train.epochs"),
    ("[train]\nlr = -1.0\n", 2, "out of range"),
    ("[train]\noptimizer = 'lamb'\n", 2, "adam, sgd"),
    ("[trian]\n", 2, "trian"),
    ("[model]\nname = 'resnet999'\n", 2, "resnet999"),
    ("[model]\nargs = { hidden = 'wide' }\n", 2, "model.args.hidden"),
    ("[model]\nargs = { widht = 3 }\n", 2, "widht"),
    ("[data]\nname = 'mnist'\nroot = 'no/such/folder'\n", 2, "no/such/folder"),
    ("[data]\nname = 'cifar10'\n", 2, "data.root"),
    ("[train\nepochs = 3\n", 2, "not valid TOML"),
]


@pytest.mark.parametrize("text,exit_code,needle", BAD_CONFIGS)
def test_run_bad_config_fails_cleanly_without_writing(cli, tmp_path: Path, text: str, exit_code: int,
                                                      needle: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    result = cli("run", str(config), "--out", "out")
    _assert_clean_failure(result, exit_code, needle)
    assert not (tmp_path / "out").exists(), "nothing is written for a bad configuration"


def test_run_missing_config_file(cli, tmp_path: Path) -> None:
    _assert_clean_failure(cli("run", "nope.toml", "--out", "out"), 2, "nope.toml")
    assert not (tmp_path / "out").exists()


def test_run_bad_override(cli, tmp_path: Path) -> None:
    _assert_clean_failure(cli("run", "--set", "train.epochs=abc", "--out", "out"), 2, "train.epochs")
    _assert_clean_failure(cli("run", "--set", "epochs=3", "--out", "out"), 2, "SECTION.KEY")
    assert not (tmp_path / "out").exists()


def test_run_refuses_a_folder_that_is_not_a_run(cli, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thesis.tex").write_text("precious")
    _assert_clean_failure(cli("run", "--out", "out", *QUICK), 2, "not a bnnflow run")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["thesis.tex"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """One quickly trained run, shared read-only by the export tests (each copies it before damaging it)."""
    from tests.conftest import run_cli

    root = tmp_path_factory.mktemp("trained")
    result = run_cli("-q", "train", "--out", "run", *QUICK, cwd=root)
    assert result.returncode == 0, result.stderr
    return root / "run"


def _copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_export_corrupt_checkpoint(cli, tmp_path: Path, trained_run: Path) -> None:
    run = _copy_run(trained_run, tmp_path / "run")
    ckpt = run / "train" / "checkpoint.safetensors"
    ckpt.write_bytes(ckpt.read_bytes()[: len(ckpt.read_bytes()) // 2])
    before = _files(run)
    _assert_clean_failure(cli("export", str(run)), 2, "corrupt")
    assert not (run / "model.qonnx").exists()
    assert {f for f in _files(run) if not f.startswith(("summary.json", "report.html"))} <= before
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stages"]["export"]["status"] == "failed"


def test_export_foreign_checkpoint(cli, tmp_path: Path, trained_run: Path) -> None:
    run = _copy_run(trained_run, tmp_path / "run")
    save_file({"weight": torch.zeros(2)}, str(run / "train" / "checkpoint.safetensors"))
    _assert_clean_failure(cli("export", str(run)), 2, "not a bnnflow checkpoint")
    assert not (run / "model.qonnx").exists()


def test_export_not_a_run(cli, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    _assert_clean_failure(cli("export", "empty"), 2, "not a bnnflow run")


def test_export_writes_verified_qonnx(cli, tmp_path: Path, trained_run: Path) -> None:
    run = _copy_run(trained_run, tmp_path / "run")
    result = cli("-q", "export", str(run))
    assert result.returncode == 0, result.stderr
    summary = json.loads((run / "summary.json").read_text())
    export = summary["stages"]["export"]
    assert export["status"] == "ok" and export["mismatches"] == 0
    assert export["verified_samples"] == 360
    assert (run / "model.qonnx").stat().st_size > 0
    assert "export" in (run / "report.html").read_text()


def test_installed_command_runs_in_a_fresh_interpreter(tmp_path: Path) -> None:
    """The real ``python -m bnnflow.pipeline.cli`` process: one clean error line and exit code 2."""
    from tests.conftest import run_cli

    result = run_cli("run", "--set", "train.epochs=abc", "--out", "out", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().startswith("error: config: train.epochs")
    assert not (tmp_path / "out").exists()


def test_models_lists_registry(cli) -> None:
    result = cli("models")
    assert result.returncode == 0
    names = [line.split("(")[0] for line in result.stdout.splitlines()]
    assert {"digits_mlp", "tfc", "sfc", "lfc", "cnv"} <= set(names)


def test_debug_shows_traceback(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    result = run_cli("--debug", "run", "--set", "train.epochs=abc", "--out", "out", cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_compile_file_never_silently_replaces_a_run_of_another_model(cli, tmp_path: Path, compiled_run: Path) -> None:
    """A QONNX file compiled into a folder that holds another model's run is refused without --force; the default
    folders of two files of one name in different folders differ."""
    import onnx

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "model.onnx").write_bytes((compiled_run / "model.qonnx").read_bytes())
    other = onnx.load(compiled_run / "model.qonnx")
    other.producer_name = "another exporter"  # another file's content: another model as far as a run can tell
    onnx.save(other, tmp_path / "b" / "model.onnx")
    first = cli("compile", "a/model.onnx", "--out", "r")
    assert first.returncode == 0, first.stderr
    again = cli("compile", "a/model.onnx", "--out", "r", "--board", "icebreaker", "--target-fps", "1000")
    assert again.returncode == 0, again.stderr  # the same model again: reopened with the new settings
    assert "compile.board = 'icebreaker'" in again.stderr
    refused = cli("compile", "b/model.onnx", "--out", "r")
    _assert_clean_failure(refused, 2, "a run compiled from", "--force")
    replaced = cli("compile", "b/model.onnx", "--out", "r", "--force")
    assert replaced.returncode == 0, replaced.stderr
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["stages"]["import"]["source"] == str(tmp_path / "b" / "model.onnx")
    assert cli("-q", "compile", "a/model.onnx").returncode == 0
    assert cli("-q", "compile", "b/model.onnx").returncode == 0
    defaults = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(defaults) == 2 and all(name.startswith("model-") for name in defaults)
