"""Multi-process training through torchrun: two CPU processes with the gloo backend, which take the same steps
as one process on the same global batches, for every method."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from bnnflow.models.methods import list_methods
from bnnflow.pipeline.checkpoint import load_checkpoint
from bnnflow.pipeline.data import load_data
from bnnflow.pipeline.train import build_model


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


WORKER = Path(__file__).with_name("ddp_worker.py")


def _torchrun(cwd: Path, jobs: list[str]) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(WORKER), *jobs]
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def _trained(run: Path) -> dict:
    state = load_checkpoint(run / "train" / "checkpoint.safetensors")
    return {"epoch": state.epoch, "world_size": state.extra["world_size"], "state": state.model_state}


def _assert_same_weights(a: dict, b: dict, case: str) -> None:
    assert a["state"].keys() == b["state"].keys(), case
    for key, value in a["state"].items():
        torch.testing.assert_close(value, b["state"][key], rtol=1e-5, atol=1e-5, msg=lambda m: f"{case} {key}: {m}")


def test_two_processes_take_the_steps_of_one_for_every_method(tmp_path: Path) -> None:
    """Every method, two SGD steps of a global batch of 16: two gloo processes (8 samples each) end with the
    weights, BatchNorm statistics and method state of one process on the same global batches; and a checkpoint
    of one process count resumes in the other to the weights of an uninterrupted run, which exports on the CPU."""
    from tests.pipeline import ddp_worker

    cases = list(ddp_worker.CASES)
    assert {c.split("-", 1)[1] for c in cases} >= set(list_methods())
    two, one, straight = tmp_path / "two", tmp_path / "one", tmp_path / "straight"
    ddp_worker.main([f"{one / c}={c}" for c in cases])
    # the 2-process runs, and the 1-process checkpoint of resume-rebnn (epoch 1) continued to epoch 2 in 2 processes
    _torchrun(tmp_path, [f"{two / c}={c}" for c in cases] + [f"{one / 'resume-rebnn'}=resume-rebnn:2:resume"])
    for case in cases:
        if case == "resume-rebnn":
            continue
        a, b = _trained(one / case), _trained(two / case)
        assert (a["world_size"], b["world_size"], a["epoch"], b["epoch"]) == (1, 2, 1, 1), case
        _assert_same_weights(a, b, case)
    cfg = ddp_worker.case_config("mlp-ste")
    torch.manual_seed(cfg.train.seed)
    initial = build_model(cfg, load_data(cfg.data)).state_dict()
    trained = _trained(one / "mlp-ste")["state"]
    assert not torch.allclose(initial["features.0.weight"], trained["features.0.weight"]), "the steps moved weights"

    # the 2-process checkpoint of epoch 1 continued in 1 process; both resumed runs equal an uninterrupted one
    ddp_worker.main([f"{two / 'resume-rebnn'}=resume-rebnn:2:resume", f"{straight}=resume-rebnn:2"])
    reference = _trained(straight)
    for resumed, world in ((two, 1), (one, 2)):
        got = _trained(resumed / "resume-rebnn")
        assert (got["epoch"], got["world_size"]) == (2, world)
        _assert_same_weights(reference, got, f"resumed in {world} process(es)")

    from bnnflow.pipeline.export import export
    from bnnflow.pipeline.rundir import RunDir

    figures = export(ddp_worker.case_config("resume-rebnn", 2), RunDir(two / "resume-rebnn"))
    assert (two / "resume-rebnn" / "model.qonnx").is_file() and figures["mismatches"] == 0
