"""The stage runner over a run folder: skipping what is up to date, rerunning what an earlier stage changed,
refusing stale or altered inputs, and never deleting or replacing a file bnnflow did not write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bnnflow.errors import ConfigError
from bnnflow.pipeline.config import Config
from bnnflow.pipeline.manifest import Manifest
from bnnflow.pipeline.rundir import RunDir
from bnnflow.pipeline.staleness import out_of_date
from bnnflow.pipeline.steps import STAGES, prepare_run, run_steps
from tests.pipeline.conftest import copy_run

QUICK = {"train.epochs": 1, "train.threads": 1, "data.limit_train": 200}


def _status(run: Path) -> dict[str, str]:
    return {name: entry["status"] for name, entry in json.loads((run / "summary.json").read_text())["stages"].items()}


def test_every_file_of_a_run_is_owned_by_a_stage(compiled_run: Path) -> None:
    manifest = Manifest(compiled_run)
    assert manifest.foreign() == []
    assert manifest.owner("model.qonnx") == "export" and manifest.owner("dataflow.onnx") == "compile"
    assert manifest.owner("train/checkpoint.safetensors") == "train" and manifest.owner("sim/report.json") == "simulate"


def test_rerun_skips_stages_that_are_up_to_date(compiled_run: Path, tmp_path: Path, capsys) -> None:
    run = RunDir(copy_run(compiled_run, tmp_path / "run"))
    cfg = run.read_config()
    before = (run.root / "sim" / "report.json").stat().st_mtime_ns
    run_steps(cfg, run, ["train", "export", "compile", "simulate"], skip_current=True)
    err = capsys.readouterr().err
    assert err.count("skipped: up to date") == 4
    assert (run.root / "sim" / "report.json").stat().st_mtime_ns == before


def test_a_new_export_reruns_what_depends_on_it(compiled_run: Path, tmp_path: Path, capsys) -> None:
    """compile after a changed model.qonnx: simulate is stale, refused alone, and rerun by `run`."""
    run = RunDir(copy_run(compiled_run, tmp_path / "run"))
    cfg = run.read_config()
    cfg_other = cfg.with_overrides({"compile.target_fps": 100_000})
    run_steps(cfg_other, run, ["compile"])  # as `bnnflow compile RUN --target-fps 100000` does
    run.write_config(cfg_other)
    assert _status(run.root)["simulate"] == "stale"
    manifest = Manifest(run.root)
    assert "dataflow.onnx changed" in out_of_date("simulate", STAGES["simulate"].keys, cfg_other, run, manifest)
    with pytest.raises(ConfigError, match="rtl"):  # a bitstream needs RTL made from this dataflow.onnx
        run_steps(cfg_other, run, ["bitstream"])
    capsys.readouterr()
    run_steps(cfg_other, run, ["train", "export", "compile", "simulate"], skip_current=True)
    err = capsys.readouterr().err
    assert "[simulate] runs again: dataflow.onnx changed since it last ran" in err
    assert err.count("skipped: up to date") == 3
    assert _status(run.root)["simulate"] == "ok"


def test_an_input_changed_after_it_was_written_is_refused(compiled_run: Path, tmp_path: Path) -> None:
    run = RunDir(copy_run(compiled_run, tmp_path / "run"))
    data = bytearray(run.dataflow.read_bytes())
    data[-1] ^= 1
    run.dataflow.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="dataflow.onnx was changed after bnnflow's compile step wrote it"):
        run_steps(run.read_config(), run, ["simulate"])
    assert _status(run.root)["simulate"] == "failed"


def test_a_changed_checkpoint_makes_every_later_stage_refuse(compiled_run: Path, tmp_path: Path) -> None:
    """The chain is checked upwards: simulate refuses because export no longer matches the checkpoint."""
    run = RunDir(copy_run(compiled_run, tmp_path / "run"))
    ckpt = run.checkpoint.read_bytes()
    run.checkpoint.write_bytes(ckpt[:-1] + bytes([ckpt[-1] ^ 1]))
    with pytest.raises(ConfigError, match="checkpoint.safetensors changed since the export step"):
        run_steps(run.read_config(), run, ["simulate"])


def test_a_stage_does_not_replace_a_folder_holding_a_user_file(compiled_run: Path, tmp_path: Path) -> None:
    run = RunDir(copy_run(compiled_run, tmp_path / "run"))
    notes = run.root / "sim" / "notes.txt"
    notes.write_text("mine")
    with pytest.raises(ConfigError, match="sim/notes.txt, which bnnflow did not write"):
        run_steps(run.read_config(), run, ["simulate"])
    assert notes.read_text() == "mine"


def test_force_removes_only_what_bnnflow_wrote(compiled_run: Path, tmp_path: Path) -> None:
    root = copy_run(compiled_run, tmp_path / "run")
    other = Config().with_overrides(QUICK)
    notes = root / "verify" / "notes.txt"
    notes.write_text("mine")
    before = {p for p in root.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match="notes.txt, which bnnflow did not write"):
        prepare_run(other, root, force=True)
    assert {p for p in root.rglob("*") if p.is_file()} == before  # nothing deleted
    notes.unlink()
    run = prepare_run(other, root, force=True)
    assert sorted(p.name for p in run.root.iterdir()) == ["config.toml", "manifest.json"]
    assert run.read_config() == other


def test_a_folder_that_is_not_a_run_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("[train]\nepochs = 1\n")  # someone else's config, no manifest
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(ConfigError, match="not a bnnflow run"):
        prepare_run(Config(), tmp_path, force=True)
    assert (tmp_path / "thesis.tex").read_text() == "precious"


def test_a_half_built_folder_of_a_killed_stage_is_removed_on_reopening(compiled_run: Path, tmp_path: Path) -> None:
    """The RTL and FINN folders are built beside the run as ``.NAME.tmp`` and swapped in; a kill leaves one."""
    run = RunDir(copy_run(compiled_run, tmp_path / "run"))
    half = run.root / ".rtl.tmp"
    half.mkdir()
    (half / "bnn_mvtu.v").write_text("module half")
    assert Manifest(run.root).foreign() == []  # a temporary is not a file of the user's
    prepare_run(run.read_config(), run.root)
    assert not half.exists()
