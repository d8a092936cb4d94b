"""Quantization-aware training: the loop, its schedules, checkpoints every epoch, resume, and torchrun DDP.

Determinism is by construction, so that a killed and resumed run ends with the same weights as an
uninterrupted one: the shuffling order of epoch ``e`` comes from a generator seeded with ``(seed, e)``, the
learning rate is a pure function of the fractional epoch, and the checkpoint written at the end of every
epoch holds the model, the optimizer state and the global torch RNG state (which augmentation and dropout
draw from).

Multi-process training: launch with ``torchrun --nproc-per-node N -m bnnflow.pipeline.cli train ...``. Each
process takes ``batch_size / N`` samples of every global batch (a ``DistributedSampler``), gradients are
averaged by ``DistributedDataParallel`` (gloo on CPU, nccl on GPUs), and only rank 0 evaluates and writes.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from bnnflow.errors import CheckpointError, ConfigError
from bnnflow.models import create_model
from bnnflow.models.methods import Method, create_method
from bnnflow.models.methods.oscillation import FlipRate
from bnnflow.pipeline.checkpoint import load_checkpoint, save_checkpoint
from bnnflow.pipeline.config import Config, OptimizerName, ScheduleName, TrainConfig
from bnnflow.pipeline.console import out
from bnnflow.pipeline.data import DataSplits, load_data, stack
from bnnflow.pipeline.report import plot_curves
from bnnflow.pipeline.rundir import RunDir, atomic_write_text

EVAL_BATCH = 512


def lr_at(cfg: TrainConfig, epoch: float) -> float:
    """Learning rate at a fractional epoch: linear warm-up to ``lr``, then the schedule over the rest."""
    if cfg.warmup_epochs and epoch < cfg.warmup_epochs:
        return cfg.lr * epoch / cfg.warmup_epochs
    span = max(cfg.epochs - cfg.warmup_epochs, 1)
    progress = min(max(epoch - cfg.warmup_epochs, 0.0) / span, 1.0)
    if cfg.schedule == ScheduleName.COSINE:
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    if cfg.schedule == ScheduleName.LINEAR:
        return cfg.lr * (1.0 - progress)
    if cfg.schedule == ScheduleName.STEP:
        return cfg.lr * cfg.step_gamma ** int((epoch - cfg.warmup_epochs) // cfg.step_epochs)
    return cfg.lr


def make_optimizer(model: nn.Module, cfg: TrainConfig, method: Method) -> torch.optim.Optimizer:
    """The optimizer over the method's parameter groups; each group keeps its lr as a multiple of the schedule's
    (``lr_scale``), e.g. RBONN's step u at 0.1x."""
    groups = method.param_groups(model, cfg.lr, cfg.weight_decay)
    for group in groups:
        group["lr_scale"] = group["lr"] / cfg.lr if cfg.lr else 1.0
    if cfg.optimizer == OptimizerName.SGD:
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_model(cfg: Config, data: DataSplits) -> nn.Module:
    """The configured model for a data set's input shape and class count."""
    return create_model(cfg.model.name, input_shape=data.input_shape, num_classes=data.num_classes, **cfg.model.args)


def build_method(cfg: Config) -> Method:
    """The configured training method."""
    return create_method(cfg.method.name, **cfg.method.options)


def augment(images: torch.Tensor) -> torch.Tensor:
    """Random crop with 4 pixels of zero padding and random horizontal flip, per image (global torch RNG)."""
    n, _, h, w = images.shape
    padded = nn.functional.pad(images, (4, 4, 4, 4))
    dy = torch.randint(0, 9, (n,))
    dx = torch.randint(0, 9, (n,))
    flip = torch.rand(n) < 0.5
    result = torch.empty_like(images)
    for i in range(n):
        crop = padded[i, :, dy[i]: dy[i] + h, dx[i]: dx[i] + w]
        result[i] = crop.flip(-1) if flip[i] else crop
    return result


def initialise_from(model: nn.Module, path: Path) -> None:
    """Copy the tensors of a trained run's checkpoint whose names and shapes match (a method's own parameters,
    such as ReBNN's scale, keep their initialisation), and say how many matched."""
    saved = load_checkpoint(path).model_state
    own = model.state_dict()
    matching = {k: v for k, v in saved.items() if k in own and own[k].shape == v.shape}
    if not matching:
        raise ConfigError(f"train.init_from {path}: none of its tensors fit this model; start from a run of the same "
                          "architecture")
    model.load_state_dict(matching, strict=False)
    out.info(f"initialised {len(matching)} of {len(own)} tensors from {path}")


def load_teacher(path: str, data: DataSplits) -> nn.Module:
    """A trained run's model (eval mode, frozen) to distil from; it must take this data set's inputs and classes."""
    state = load_checkpoint(Path(path))
    teacher = state.build_model()
    if (tuple(state.input_shape), state.num_classes) != (tuple(data.input_shape), data.num_classes):
        raise ConfigError(f"train.teacher {path} takes inputs {tuple(state.input_shape)} and {state.num_classes} "
                          f"classes, this data set {tuple(data.input_shape)} and {data.num_classes}")
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def distribution_loss(teacher: nn.Module, images: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    """ReActNet's distribution loss: -sum_k softmax(z_teacher)_k log_softmax(z_student)_k, batch mean; the labels
    are not used."""
    with torch.no_grad():
        target = torch.softmax(teacher(images), dim=1)
    return -(target * torch.log_softmax(outputs, dim=1)).sum(1).mean()


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float, torch.Tensor]:
    """Mean loss, accuracy and the raw outputs of the model in eval mode."""
    was_training = model.training
    model.eval()
    outputs = torch.cat([model(images[i: i + EVAL_BATCH]) for i in range(0, len(images), EVAL_BATCH)])
    model.train(was_training)
    loss = nn.functional.cross_entropy(outputs, labels).item()
    accuracy = (outputs.argmax(1) == labels).float().mean().item()
    return loss, accuracy, outputs


def _distributed() -> tuple[int, int]:
    """(rank, world size), initialising the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _read_metrics(path: Path, before_epoch: int) -> list[dict[str, Any]]:
    """The metrics of the epochs before ``before_epoch``, which a resumed run continues."""
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if isinstance(row, dict) and isinstance(row["epoch"], int) and row["epoch"] < before_epoch:
                rows.append(row)
        except (ValueError, KeyError, TypeError):
            raise CheckpointError(f"{path} is damaged at line {number} (not an epoch's JSON record); restore it, or "
                                  "delete it to resume without the curves of the earlier epochs") from None
    return rows


def _write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def train(cfg: Config, run: RunDir, *, resume: bool = False, data: DataSplits | None = None) -> dict[str, Any]:
    """Train the configured model into ``run``; returns the key figures for summary.json.

    Args:
        cfg: the resolved configuration.
        run: the run directory; ``train/`` inside it receives the checkpoint, metrics and curves.
        resume: continue from ``train/checkpoint.safetensors`` when it exists (a finished run is not retrained).
        data: the loaded data set, when the caller has it already.
    """
    tcfg = cfg.train
    rank, world = _distributed()
    if tcfg.batch_size % world:
        raise ConfigError(f"train.batch_size = {tcfg.batch_size} must be divisible by the {world} processes")
    if tcfg.threads:
        torch.set_num_threads(tcfg.threads)
    data = data or load_data(cfg.data)
    torch.manual_seed(tcfg.seed)
    model = build_model(cfg, data)
    method = build_method(cfg)
    method.prepare(model)
    if tcfg.init_from:
        initialise_from(model, Path(tcfg.init_from))
    optimizer = make_optimizer(model, tcfg, method)
    teacher = load_teacher(tcfg.teacher, data) if tcfg.teacher else None
    start_epoch = 0
    if resume and run.checkpoint.is_file():
        state = load_checkpoint(run.checkpoint)
        if (state.model_name, state.method_name) != (cfg.model.name, cfg.method.name) or state.optimizer_state is None:
            raise CheckpointError(f"{run.checkpoint} was not written by this run's training; "
                                  "remove --resume or use a fresh --out folder")
        model.load_state_dict(state.model_state)
        optimizer.load_state_dict(state.optimizer_state)
        torch.set_rng_state(state.rng_state)
        start_epoch = state.epoch
        if start_epoch >= tcfg.epochs:
            out.info(f"{run.root}: training finished ({start_epoch} of {tcfg.epochs} epochs); nothing to resume")
        else:
            out.info(f"resuming {run.root} at epoch {start_epoch + 1} of {tcfg.epochs}")
    history = _read_metrics(run.metrics, start_epoch) if rank == 0 else []
    flips = FlipRate(model)  # weight oscillation: the share of binary weights whose sign an optimizer step flips

    net: nn.Module = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    test_images, test_labels = stack(data.test)
    model_args = {**cfg.model.args}
    started = time.perf_counter()
    with out.progress() as progress:
        epochs_task = progress.add_task("train", total=tcfg.epochs, completed=start_epoch, status="")
        for epoch in range(start_epoch, tcfg.epochs):
            epoch_started = time.perf_counter()
            method.on_epoch_start(model, epoch, tcfg.epochs)
            generator = torch.Generator().manual_seed(tcfg.seed * 100_003 + epoch)
            if world > 1:
                sampler = DistributedSampler(data.train, num_replicas=world, rank=rank, seed=tcfg.seed)
                sampler.set_epoch(epoch)
            else:
                sampler = RandomSampler(data.train, generator=generator)
            loader = DataLoader(data.train, batch_size=tcfg.batch_size // world, sampler=sampler)
            net.train()
            loss_sum, correct, seen = 0.0, 0, 0
            flip_sum, flip_steps = 0.0, 0
            for step, (images, labels) in enumerate(loader):
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(tcfg, epoch + step / len(loader)) * group.get("lr_scale", 1.0)
                if cfg.data.augment and images.dim() == 4:
                    images = augment(images)
                outputs = net(images)
                if teacher is not None:
                    loss = distribution_loss(teacher, images, outputs)
                else:
                    loss = nn.functional.cross_entropy(outputs, labels, label_smoothing=tcfg.label_smoothing)
                extra = method.extra_loss(model)
                if extra is not None:
                    loss = loss + extra
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                method.after_backward(model)
                optimizer.step()
                method.after_step(model)
                flip_sum, flip_steps = flip_sum + flips.update(), flip_steps + 1
                loss_sum += loss.item() * len(labels)
                correct += (outputs.argmax(1) == labels).sum().item()
                seen += len(labels)
            if rank == 0:
                test_loss, test_acc, _ = evaluate(model, test_images, test_labels)
                history.append({
                    "epoch": epoch, "lr": lr_at(tcfg, epoch), "train_loss": loss_sum / seen,
                    "train_accuracy": correct / seen, "test_loss": test_loss, "test_accuracy": test_acc,
                    "flip_rate": flip_sum / flip_steps if flip_steps else None,
                    "seconds": round(time.perf_counter() - epoch_started, 3), "world_size": world,
                })
                _write_metrics(run.metrics, history)
                save_checkpoint(run.checkpoint, model, cfg.model.name, model_args, data.input_shape,
                                data.num_classes, epoch + 1, optimizer, extra={"world_size": world},
                                method=(cfg.method.name, dict(cfg.method.options)))
                progress.update(epochs_task, advance=1, status=f"loss {loss_sum / seen:.3f} test acc {test_acc:.2%}")
            if world > 1:
                dist.barrier()
    if rank == 0 and history:
        plot_curves(history, run.curves)
    final = history[-1] if history else {}
    expected = {"expected_accuracy": cfg.recipe.expected_accuracy} if cfg.recipe.expected_accuracy else {}
    return {
        "model": cfg.model.name,
        "method": cfg.method.name,
        "dataset": cfg.data.name.value,
        "epochs": tcfg.epochs,
        "test_accuracy": final.get("test_accuracy"),
        "train_accuracy": final.get("train_accuracy"),
        "flip_rate": final.get("flip_rate"),
        "test_samples": len(data.test),
        "train_seconds": round(time.perf_counter() - started, 2),
        "world_size": world,
        **expected,
    }
