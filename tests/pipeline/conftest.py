"""A trained, compiled and simulated digits run shared read-only by the pipeline tests; tests copy it to change it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def compiled_run(tmp_path_factory) -> Path:
    """The digits default trained 2 epochs, exported, compiled for 50,000 frames/s and simulated."""
    from bnnflow.pipeline.config import Config
    from bnnflow.pipeline.steps import prepare_run, run_steps, validate

    cfg = validate(Config().with_overrides({"train.epochs": 2, "train.threads": 1, "compile.target_fps": 50_000}))
    run = prepare_run(cfg, tmp_path_factory.mktemp("compiled") / "digits")
    run_steps(cfg, run, ["train", "export", "compile", "simulate"])
    return run.root


def copy_run(source: Path, target: Path) -> Path:
    """A private copy of a shared run (file times kept, so hashes and staleness behave as in the original)."""
    shutil.copytree(source, target)
    return target
