"""Multi-process training through torchrun: two CPU processes with the gloo backend."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bnnflow.pipeline.checkpoint import load_checkpoint


def test_torchrun_two_processes_train_and_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "bnnflow.pipeline.cli", "-q", "train", "--out", str(out), "--epochs", "3",
           "--set", "train.threads=1", "--set", "train.batch_size=64"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2], "rank 0 alone writes one line per epoch"
    assert all(r["world_size"] == 2 for r in rows)
    # Each process saw half of every global batch: 1,437 training images / 2 ranks / 32 per rank = 23 steps.
    state = load_checkpoint(out / "train" / "checkpoint.safetensors")
    assert state.epoch == 3 and state.extra["world_size"] == 2
    steps = {int(s["step"].item()) for s in state.optimizer_state["state"].values()}
    assert steps == {3 * 23}
    assert rows[-1]["test_accuracy"] > 0.8, "gradients averaged over both ranks still train the network"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stages"]["train"]["status"] == "ok"
