"""Checkpoints: one safetensors file with the model, the optimizer state, the RNG state and a JSON header.

Never a pickle: safetensors holds only tensors, and everything else (model name and arguments, epoch,
optimizer hyper-parameters) is JSON in the file's metadata under the key ``bnnflow``. A checkpoint holds all
that ``--resume`` needs to continue a run bit for bit, and all that ``export`` needs to rebuild the model.

safetensors checks the file's layout, not its bytes: a flipped bit in a weight loads without a word. So the
metadata also holds ``bnnflow_sha256``, the sha256 of the header and of every tensor (name, dtype, shape and
bytes), and every load recomputes it: a damaged checkpoint is refused before it is resumed or exported.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from bnnflow.errors import CheckpointError
from bnnflow.models import create_model
from bnnflow.pipeline.rundir import atomic_path

FORMAT = "bnnflow-checkpoint"
FORMAT_VERSION = 2  # 2: with bnnflow_sha256; 1 (no checksum) is still read, unchecked, with a warning
DIGEST_KEY = "bnnflow_sha256"


def payload_sha256(header_json: str, tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of what a checkpoint means: its JSON header, then each tensor's name, dtype, shape and bytes."""
    digest = hashlib.sha256(header_json.encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"\0{name}\0{tensor.dtype}\0{list(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass
class Checkpoint:
    """What a checkpoint holds, unpacked."""

    model_name: str
    model_args: dict[str, Any]
    input_shape: tuple[int, ...]
    num_classes: int
    epoch: int
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any] | None
    rng_state: torch.Tensor | None
    extra: dict[str, Any]
    method_name: str = "ste"
    method_options: dict[str, Any] = field(default_factory=dict)

    def build_model(self, frozen: bool = True) -> nn.Module:
        """The model with its trained weights, in eval mode; ``frozen``: with the training method's machinery
        folded away (what export takes), else as it trains (what resume takes)."""
        from bnnflow.models.methods import create_method

        model = create_model(self.model_name, input_shape=self.input_shape, num_classes=self.num_classes,
                             **self.model_args)
        method = create_method(self.method_name, **self.method_options)
        method.prepare(model)
        try:
            model.load_state_dict(self.model_state)
        except RuntimeError as err:
            first = str(err).splitlines()[0]
            raise CheckpointError(f"checkpoint weights do not fit model {self.model_name} trained with "
                                  f"{self.method_name}: {first}") from None
        if frozen:
            method.freeze(model)
        return model.eval()


def save_checkpoint(path: Path, model: nn.Module, model_name: str, model_args: dict[str, Any],
                    input_shape: tuple[int, ...], num_classes: int, epoch: int,
                    optimizer: torch.optim.Optimizer | None = None, extra: dict[str, Any] | None = None,
                    method: tuple[str, dict[str, Any]] = ("ste", {})) -> None:
    """Write a checkpoint atomically (temporary file, then rename); ``method`` is the training method's name and
    options, which rebuilding the model needs (its extra parameters are in the state dict)."""
    # CPU tensors whatever the training device: a checkpoint of a GPU run loads and exports on any machine
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    header: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": {"name": model_name, "args": model_args, "input_shape": list(input_shape),
                  "num_classes": num_classes},
        "epoch": epoch,
        "method": {"name": method[0], "options": method[1]},
        "extra": extra or {},
    }
    if optimizer is not None:
        opt_state = optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for index, state in opt_state["state"].items():
            for name, value in state.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim.{index}.{name}"] = value.detach().cpu().contiguous()
                else:
                    scalars.setdefault(str(index), {})[name] = value
        header["optimizer"] = {"param_groups": opt_state["param_groups"], "scalars": scalars}
        tensors["rng.torch"] = torch.get_rng_state()
    header_json = json.dumps(header)
    metadata = {"bnnflow": header_json, DIGEST_KEY: payload_sha256(header_json, tensors)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint; a missing, corrupt or foreign file is a ``CheckpointError``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; train first (`bnnflow train`)")
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} is corrupt or not a safetensors file ({err}); "
                              "retrain, or resume from an intact copy") from None
    try:
        header = json.loads(metadata["bnnflow"])
        if header.get("format") != FORMAT:
            raise KeyError("format")
    except (KeyError, json.JSONDecodeError, AttributeError):
        raise CheckpointError(f"{path} is a safetensors file but not a bnnflow checkpoint "
                              "(no bnnflow header); point to RUN/train/checkpoint.safetensors") from None
    version = header.get("format_version")
    if version == FORMAT_VERSION:
        if metadata.get(DIGEST_KEY) != payload_sha256(metadata["bnnflow"], tensors):
            raise CheckpointError(f"checkpoint {path} is damaged: its content does not match the checksum written "
                                  "with it; resume from an intact copy, or retrain")
    elif version == 1:
        from bnnflow.pipeline.console import out

        out.info(f"warning: {path} was written by bnnflow before checkpoints carried a checksum; it cannot be "
                 "checked for damage")
    else:
        raise CheckpointError(f"{path} has checkpoint format version {version}, this bnnflow reads versions 1 "
                              f"and {FORMAT_VERSION}")
    try:
        return _unpack(header, tensors)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path} has an incomplete bnnflow header (missing {err}); retrain or use another "
                              "checkpoint") from None


def _unpack(header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Checkpoint:
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    optimizer_state = None
    if "optimizer" in header:
        state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value
        for index, scalars in header["optimizer"]["scalars"].items():
            state.setdefault(int(index), {}).update(scalars)
        optimizer_state = {"state": state, "param_groups": header["optimizer"]["param_groups"]}
    return Checkpoint(
        model_name=header["model"]["name"],
        model_args=header["model"]["args"],
        input_shape=tuple(header["model"]["input_shape"]),
        num_classes=int(header["model"]["num_classes"]),
        epoch=int(header["epoch"]),
        model_state=model_state,
        optimizer_state=optimizer_state,
        rng_state=tensors.get("rng.torch"),
        extra=header.get("extra", {}),
        method_name=header.get("method", {}).get("name", "ste"),
        method_options=header.get("method", {}).get("options", {}),
    )
