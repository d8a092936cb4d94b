"""A trained, compiled digits run shared by the edge tests (training it once keeps the suite short)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> Path:
    """The digits default, trained 2 epochs and compiled (50,000 frames/s), verified on the whole test split."""
    from bnnflow.pipeline.config import Config
    from bnnflow.pipeline.steps import prepare_run, run_steps, validate

    cfg = validate(Config().with_overrides({"train.epochs": 2, "train.threads": 1, "compile.target_fps": 50_000,
                                            "compile.verify_samples": 0}))
    run = prepare_run(cfg, tmp_path_factory.mktemp("edge") / "digits")
    run_steps(cfg, run, ["train", "export", "compile"])
    return run.root
