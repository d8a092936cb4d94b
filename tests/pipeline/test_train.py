"""Training: schedules, checkpoints, and resume after a kill ending with the same weights."""

from __future__ import annotations

import math
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from bnnflow.errors import CheckpointError
from bnnflow.pipeline.checkpoint import load_checkpoint
from bnnflow.pipeline.config import TrainConfig
from bnnflow.pipeline.train import lr_at
from tests.conftest import CLI

SCHEDULE_CASES = [
    # (schedule, warmup, epoch, expected fraction of lr)
    ("constant", 0, 7.0, 1.0),
    ("cosine", 0, 0.0, 1.0),
    ("cosine", 0, 5.0, 0.5),
    ("cosine", 0, 10.0, 0.0),
    ("linear", 0, 2.5, 0.75),
    ("step", 0, 3.9, 1.0),
    ("step", 0, 4.0, 0.1),
    ("step", 0, 8.0, 0.01),
    ("cosine", 2, 1.0, 0.5),
    ("cosine", 2, 2.0, 1.0),
    ("cosine", 2, 6.0, 0.5),
]


@pytest.mark.parametrize("schedule,warmup,epoch,fraction", SCHEDULE_CASES)
def test_lr_at_follows_schedule(schedule: str, warmup: int, epoch: float, fraction: float) -> None:
    cfg = TrainConfig(epochs=10, lr=0.2, schedule=schedule, warmup_epochs=warmup, step_epochs=4, step_gamma=0.1)
    assert math.isclose(lr_at(cfg, epoch), 0.2 * fraction, abs_tol=1e-12)


def _train_args(out: Path, epochs: int) -> list[str]:
    return ["-q", "train", "--out", str(out), "--epochs", str(epochs), "--set", "data.limit_train=600",
            "--set", "train.threads=1"]


def _metric_lines(out: Path) -> int:
    metrics = out / "train" / "metrics.jsonl"
    return len(metrics.read_text().splitlines()) if metrics.is_file() else 0


def test_train_resume_after_kill_matches_uninterrupted(tmp_path: Path) -> None:
    epochs = 12
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    done = subprocess.run([*CLI, *_train_args(straight, epochs)], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    proc = subprocess.Popen([*CLI, *_train_args(killed, epochs)], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while _metric_lines(killed) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    interrupted_at = load_checkpoint(killed / "train" / "checkpoint.safetensors").epoch
    assert 2 <= interrupted_at < epochs, "the kill must land mid-run"

    resumed = subprocess.run([*CLI, *_train_args(killed, epochs), "--resume"], cwd=tmp_path, capture_output=True,
                             text=True)
    assert resumed.returncode == 0, resumed.stderr
    a = load_file(straight / "train" / "checkpoint.safetensors")
    b = load_file(killed / "train" / "checkpoint.safetensors")
    assert a.keys() == b.keys()
    for key in a:  # model, optimizer state and RNG state, bit for bit
        assert torch.equal(a[key], b[key]), key
    assert _metric_lines(killed) == epochs
    assert not list((killed / "train").glob(".*.tmp")), "no temporary files are left behind"


def test_train_without_resume_refuses_existing_training(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = subprocess.run([*CLI, *_train_args(out, 1)], cwd=tmp_path, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    before = (out / "train" / "checkpoint.safetensors").read_bytes()
    again = subprocess.run([*CLI, *_train_args(out, 1)], cwd=tmp_path, capture_output=True, text=True)
    assert again.returncode == 2
    assert "--resume" in again.stderr and "Traceback" not in again.stderr
    assert (out / "train" / "checkpoint.safetensors").read_bytes() == before


def test_load_checkpoint_rejects_foreign_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(3)}, str(path))
    with pytest.raises(CheckpointError, match="not a bnnflow checkpoint"):
        load_checkpoint(path)


def test_load_checkpoint_rejects_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)


def test_load_checkpoint_reports_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_reopening_a_run_removes_half_written_files(tmp_path: Path) -> None:
    """A process killed inside ``atomic_path`` leaves its temporary file; the next command on the run removes it."""
    from bnnflow.pipeline.config import Config
    from bnnflow.pipeline.steps import prepare_run

    run = prepare_run(Config(), tmp_path / "run")
    stale = run.train_dir / ".checkpoint.safetensors.k1ll3d.tmp"
    stale.parent.mkdir()
    stale.write_bytes(b"half a checkpoint")
    keep = run.train_dir / "notes.txt"
    keep.write_text("mine")
    prepare_run(Config(), run.root)
    assert not stale.exists() and keep.read_text() == "mine"
