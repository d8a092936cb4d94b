"""Checkpoints carry a checksum of their header and tensors: one flipped bit anywhere is refused, never loaded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from bnnflow.errors import CheckpointError
from bnnflow.models import create_model
from bnnflow.pipeline.checkpoint import load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = create_model("digits_mlp", input_shape=(1, 8, 8), num_classes=10, hidden=16, depth=1)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.rand(4, 1, 8, 8)).sum().backward()
    optimizer.step()
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.safetensors"
    save_checkpoint(path, model, "digits_mlp", {"hidden": 16, "depth": 1}, (1, 8, 8), 10, 3, optimizer)
    return path


def _flip(data: bytes, bit: int) -> bytes:
    flipped = bytearray(data)
    flipped[bit // 8] ^= 1 << (bit % 8)
    return bytes(flipped)


def test_intact_checkpoint_loads(checkpoint: Path) -> None:
    state = load_checkpoint(checkpoint)
    assert state.epoch == 3 and state.model_args == {"hidden": 16, "depth": 1}
    assert state.build_model() is not None


def test_every_sampled_flipped_bit_is_refused(checkpoint: Path, tmp_path: Path) -> None:
    """Bits sampled over the whole file (header, metadata, weights, optimizer state, RNG state), and every bit of
    the safetensors length prefix and of the last bytes."""
    data = checkpoint.read_bytes()
    header_bytes = 8 + int.from_bytes(data[:8], "little")
    rng = np.random.default_rng(0)
    bits = {*range(64), *range(8 * len(data) - 64, 8 * len(data)), *rng.integers(0, 8 * header_bytes, 150).tolist(),
            *rng.integers(8 * header_bytes, 8 * len(data), 150).tolist()}
    damaged = tmp_path / "damaged.safetensors"
    for bit in sorted(bits):
        damaged.write_bytes(_flip(data, bit))
        with pytest.raises(CheckpointError):
            load_checkpoint(damaged)


def test_a_checkpoint_of_the_first_format_loads_unchecked(checkpoint: Path, tmp_path: Path, capsys) -> None:
    with safe_open(str(checkpoint), framework="pt") as f:
        metadata = f.metadata()
    header = json.loads(metadata["bnnflow"])
    header["format_version"] = 1
    old = tmp_path / "v1.safetensors"
    save_file(load_file(str(checkpoint)), str(old), metadata={"bnnflow": json.dumps(header)})  # no DIGEST_KEY
    assert load_checkpoint(old).epoch == 3
    assert "cannot be checked for damage" in capsys.readouterr().err
