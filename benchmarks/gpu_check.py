"""Check that training runs on this machine's GPUs: one command, exit 0 only when it did.

    python benchmarks/gpu_check.py [--gpus N] [--out runs/gpu-check]

1. Trains ResNet-20 (binary, CIFAR-10's layout) for one epoch on CIFAR-shaped data (the bundled digits resized to
   3x32x32: nothing to download) with mixed precision (bf16 where the GPU has it, else fp16 with its loss scaler),
   DDP over all GPUs (``--gpus``, default every one PyTorch sees) through torchrun: ``bnnflow train --device cuda``.
2. Checks that every epoch ran on CUDA in as many processes as GPUs, with the amp asked for, and that the
   checkpoint was written and passes its checksum.
3. Exports that checkpoint in a process that sees no GPU (``CUDA_VISIBLE_DEVICES=""``) and checks model.qonnx
   against PyTorch, as ``bnnflow export`` does.

Exit 0 when all of that held; otherwise 1, with one line saying which check failed (no GPU at all: 1 too, saying
so). Writes ``gpu_check.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

TRAIN = ["--model", "resnet20", "--set", "data.image_size=32", "--set", "data.channels=3", "--epochs", "1",
         "--device", "cuda", "--set", "train.batch_size=128"]


class CheckFailed(Exception):
    """One of the checks did not hold; the message says which."""


def _run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise CheckFailed(f"`{' '.join(cmd[:6])} ...` exited with {done.returncode}: {last}")


def check(out: Path, gpus: int) -> dict:
    """Train on ``gpus`` GPUs, check the run, export on the CPU; the figures, or ``CheckFailed``."""
    from bnnflow.pipeline.checkpoint import load_checkpoint

    amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    run = out / "run"
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(gpus),
          "-m", "bnnflow.pipeline.cli", "-q", "train", "--out", str(run), "--force", *TRAIN,
          "--set", f"train.amp={amp}"])
    rows = [json.loads(line) for line in (run / "train" / "metrics.jsonl").read_text().splitlines()]
    wrong = [r for r in rows if not str(r.get("device", "")).startswith("cuda") or r.get("world_size") != gpus
             or r.get("amp") != amp]
    if not rows or wrong:
        raise CheckFailed(f"training did not run on {gpus} GPU(s) with {amp}: metrics.jsonl says {wrong or rows}")
    state = load_checkpoint(run / "train" / "checkpoint.safetensors")  # raises on a damaged file
    if state.epoch != 1 or not str(state.extra.get("device", "")).startswith("cuda"):
        raise CheckFailed(f"the checkpoint is not the GPU run's first epoch (epoch {state.epoch}, {state.extra})")
    cpu_only = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    _run([sys.executable, "-m", "bnnflow.pipeline.cli", "-q", "export", str(run)], env=cpu_only)
    summary = json.loads((run / "summary.json").read_text())["stages"]["export"]
    if summary.get("status") != "ok" or summary.get("mismatches"):
        raise CheckFailed(f"the CPU export of the GPU checkpoint did not verify: {summary}")
    return {"gpus": gpus, "gpu_name": torch.cuda.get_device_name(0), "amp": amp,
            "images_per_second": rows[-1]["images_per_second"], "test_accuracy": rows[-1]["test_accuracy"],
            "export": {k: summary.get(k) for k in ("status", "mismatches", "exact")}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=0, help="processes, one per GPU (0 = every GPU)")
    parser.add_argument("--out", type=Path, default=Path("runs/gpu-check"))
    args = parser.parse_args(argv)
    available = torch.cuda.device_count()
    gpus = args.gpus or available
    try:
        if not available:
            raise CheckFailed("PyTorch sees no CUDA device (a CPU-only build, or no GPU): nothing was trained")
        if gpus > available:
            raise CheckFailed(f"--gpus {gpus}, but PyTorch sees {available} CUDA device(s)")
        result = {"ok": True, **check(args.out.absolute(), gpus)}
    except CheckFailed as err:
        result = {"ok": False, "failed": str(err)}
        print(f"gpu check failed: {err}", file=sys.stderr)
    else:
        print(f"gpu check passed: trained on {gpus} x {result['gpu_name']} with {result['amp']} "
              f"({result['images_per_second']:,.0f} images/s), checkpoint exported on the CPU "
              f"({result['export']['mismatches']} mismatches)")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
