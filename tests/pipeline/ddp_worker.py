"""Trains the cases of ``test_ddp.py`` with the real training loop, in however many processes run it.

``python -m torch.distributed.run --nproc-per-node N tests/pipeline/ddp_worker.py RUN=CASE[:EPOCHS[:resume]]
...`` trains each case into the folder RUN (rank 0 owns it, as under ``bnnflow train``), for EPOCHS epochs
(the case's own by default), continuing the run there with ``resume``; one process (``main`` called in the
test's own process) is the reference.

Every case is two SGD steps of a global batch of 16 on the first 32 digits (one epoch), so that weights after
the same steps can be compared across process counts. The ``resume`` cases train 2 epochs on a constant
schedule, so that a run of 1 epoch resumed to 2 takes the steps of an uninterrupted run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bnnflow.models.methods import list_methods
from bnnflow.pipeline.config import Config
from bnnflow.pipeline.rundir import RunDir
from bnnflow.pipeline.steps import prepare_run
from bnnflow.pipeline.train import train

BASE = {"data.limit_train": 32, "data.limit_test": 16, "train.batch_size": 16, "train.epochs": 1,
        "train.optimizer": "sgd", "train.lr": 0.1, "train.threads": 1, "train.device": "cpu"}
MLP = {"model.name": "digits_mlp", "model.args": {"hidden": 24, "depth": 2}}
CONV = {"model.name": "resnet20", "model.args": {"widths": [4, 8, 8], "blocks": [1, 1, 1], "stem_width": 4}}
#: case name -> config overrides: every method on the MLP; the methods with per-layer state on a conv net too
CASES = {f"mlp-{m}": {**BASE, **MLP, "method.name": m} for m in list_methods()}
CASES |= {f"conv-{m}": {**BASE, **CONV, "method.name": m} for m in ("rebnn", "rbnn", "rbonn", "reactnet")}
CASES["resume-rebnn"] = {**BASE, **MLP, "method.name": "rebnn", "train.schedule": "constant"}


def case_config(case: str, epochs: int | None = None) -> Config:
    overrides = dict(CASES[case])
    if epochs is not None:
        overrides["train.epochs"] = epochs
    return Config().with_overrides(overrides)


def main(jobs: list[str]) -> None:
    rank = int(os.environ.get("RANK", "0"))
    for job in jobs:
        folder, _, spec = job.partition("=")
        case, _, rest = spec.partition(":")
        epochs, _, mode = rest.partition(":")
        resume = mode == "resume"
        cfg = case_config(case, int(epochs) if epochs else None)
        run = prepare_run(cfg, Path(folder)) if rank == 0 and not resume else RunDir(Path(folder))
        train(cfg, run, resume=resume)


if __name__ == "__main__":
    main(sys.argv[1:])
