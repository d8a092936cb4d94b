"""Quantization-aware training: the loop, its schedules, checkpoints every epoch, resume, and torchrun DDP.

Determinism is by construction, so that a killed and resumed run ends with the same weights as an
uninterrupted one: the shuffling order of epoch ``e`` comes from a generator seeded with ``(seed, e)``, the
learning rate is a pure function of the fractional epoch, and the checkpoint written at the end of every
epoch holds the model, the optimizer state and the global torch RNG state (which augmentation and dropout
draw from).

Devices and processes (``pipeline/distributed.py``): the model, the batches, the teacher and every method's
state live on ``train.device``; checkpoints hold CPU tensors, so a run trained on a GPU resumes and exports on a
machine without one. Launched with ``torchrun --nproc-per-node N -m bnnflow.pipeline.cli train ...``, each
process takes its share of every global batch of ``batch_size`` (the same permutation in every process, reseeded
each epoch), gradients are averaged by ``DistributedDataParallel`` (nccl on GPUs, gloo otherwise), BatchNorm and
the methods' batch statistics are computed over the global batch, and only rank 0 evaluates and writes: N
processes take the same steps as one, and a checkpoint resumes in any number of processes.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.distributed as dist
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from bnnflow.errors import CheckpointError, ConfigError
from bnnflow.models import create_model
from bnnflow.models.methods import Method, create_method
from bnnflow.models.methods.oscillation import FlipRate
from bnnflow.pipeline.checkpoint import load_checkpoint, save_checkpoint
from bnnflow.pipeline.config import AmpMode, Config, OptimizerName, ScheduleName, TrainConfig
from bnnflow.pipeline.console import out
from bnnflow.pipeline.data import DataSplits, load_data, stack
from bnnflow.pipeline.distributed import (
    EpochBatches,
    Placement,
    all_reduce_sum,
    autocast,
    check_amp,
    loss_factor,
    place,
    synchronize_batchnorm,
)
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


def augment(images: torch.Tensor, offset: int = 0, batch: int | None = None) -> torch.Tensor:
    """Random crop with 4 pixels of zero padding and random horizontal flip, per image (global torch RNG).

    ``images`` may be one process's share of a global batch of ``batch`` images starting at ``offset``: the
    random draws are made for the whole global batch (every process holds the same RNG state) and this share's
    are used, so the global batch is augmented alike in any number of processes."""
    n, c, h, w = images.shape
    batch = n if batch is None else batch
    padded = nn.functional.pad(images, (4, 4, 4, 4))
    dy = torch.randint(0, 9, (batch,))[offset: offset + n].to(images.device)
    dx = torch.randint(0, 9, (batch,))[offset: offset + n].to(images.device)
    flip = (torch.rand(batch) < 0.5)[offset: offset + n].to(images.device)
    # every crop (and flip) as one gather: row dy_i + y, column dx_i + x (or dx_i + w - 1 - x when flipped)
    ys, xs = torch.arange(h, device=images.device), torch.arange(w, device=images.device)
    rows = dy[:, None] + ys
    cols = dx[:, None] + torch.where(flip[:, None], xs.flip(0), xs)
    return padded[torch.arange(n, device=images.device)[:, None, None, None],
                  torch.arange(c, device=images.device)[None, :, None, None], rows[:, None, :, None],
                  cols[:, None, None, :]]


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


def load_teacher(path: str, model_name: str, data: DataSplits, model_args: dict[str, Any] | None = None) -> nn.Module:
    """The model to distil from (eval mode, frozen, on the CPU): a bnnflow run's checkpoint, or a plain safetensors
    state dict of the registered model ``model_name`` built with ``model_args`` (``train.teacher_model``,
    ``train.teacher_args``), checked tensor by tensor by name and shape. It must take this data set's inputs and
    give its classes."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"train.teacher {file} does not exist; give a run's train/checkpoint.safetensors or a "
                          "safetensors state dict (with train.teacher_model)")
    try:
        with safe_open(str(file), framework="pt") as f:
            is_run = "bnnflow" in (f.metadata() or {})
    except (SafetensorError, OSError) as err:
        raise ConfigError(f"train.teacher {file} is not a safetensors file ({err}); convert the teacher's weights "
                          "with safetensors.torch.save_file(model.state_dict(), PATH)") from None
    if is_run:
        state = load_checkpoint(file)
        if (tuple(state.input_shape), state.num_classes) != (tuple(data.input_shape), data.num_classes):
            raise ConfigError(f"train.teacher {file} takes inputs {tuple(state.input_shape)} and {state.num_classes} "
                              f"classes, this data set {tuple(data.input_shape)} and {data.num_classes}")
        teacher = state.build_model()
    else:
        if not model_name:
            raise ConfigError(f"train.teacher {file} is a plain state dict, which names no model; set "
                              "train.teacher_model to the registered model it holds, e.g. resnet34")
        teacher = create_model(model_name, input_shape=data.input_shape, num_classes=data.num_classes,
                               **(model_args or {}))
        tensors = load_file(str(file))
        check_state_dict(teacher, tensors, f"train.teacher {file}", model_name)
        teacher.load_state_dict(tensors, strict=False)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


def check_state_dict(model: nn.Module, tensors: dict[str, torch.Tensor], source: str, model_name: str) -> None:
    """Every tensor of ``model`` in ``tensors`` with its shape, and nothing else (a missing BatchNorm batch counter
    is allowed): a one-line ``ConfigError`` naming the first tensor that differs."""
    own = model.state_dict()
    missing = [k for k in own if k not in tensors and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in tensors if k not in own]
    if missing or unexpected:
        what = f"lacks {missing[0]}" if missing else f"has {unexpected[0]}, which {model_name} does not"
        count = len(missing) + len(unexpected)
        raise ConfigError(f"{source} {what} ({count} tensor name{'s' if count > 1 else ''} differ from "
                          f"{model_name}'s); give a state dict of {model_name} with torchvision's names")
    for key, value in own.items():
        if key in tensors and tuple(tensors[key].shape) != tuple(value.shape):
            raise ConfigError(f"{source}: {key} has shape {tuple(tensors[key].shape)}, {model_name} for this data "
                              f"set needs {tuple(value.shape)}; give a teacher of this data set's input and classes")


def distribution_loss(teacher: nn.Module, images: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    """ReActNet's distribution loss: -sum_k softmax(z_teacher)_k log_softmax(z_student)_k, batch mean; the labels
    are not used."""
    with torch.no_grad():
        target = torch.softmax(teacher(images), dim=1)
    return -(target * torch.log_softmax(outputs, dim=1)).sum(1).mean()


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             device: torch.device | None = None) -> tuple[float, float, torch.Tensor]:
    """Mean loss, accuracy and the raw outputs (on the CPU) of the model in eval mode, run on ``device`` (the
    model's own by default) in float32."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    outputs = torch.cat([model(images[i: i + EVAL_BATCH].to(device)).float().cpu()
                         for i in range(0, len(images), EVAL_BATCH)])
    model.train(was_training)
    loss = nn.functional.cross_entropy(outputs, labels).item()
    accuracy = (outputs.argmax(1) == labels).float().mean().item()
    return loss, accuracy, outputs


@torch.no_grad()
def evaluate_batches(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                     device: torch.device) -> tuple[float, float]:
    """Mean loss and accuracy of the model in eval mode over ``batches`` (a loader), without holding the outputs:
    an ImageNet validation split streams through the loader's workers instead of filling memory."""
    was_training = model.training
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    for images, labels in batches:
        outputs = model(images.to(device, non_blocking=True)).float()
        labels = labels.to(device, non_blocking=True)
        loss_sum += nn.functional.cross_entropy(outputs, labels, reduction="sum").item()
        correct += int((outputs.argmax(1) == labels).sum())
        seen += len(labels)
    model.train(was_training)
    return loss_sum / max(seen, 1), correct / max(seen, 1)


def _in_memory(dataset: Dataset) -> bool:
    base = dataset.dataset if isinstance(dataset, torch.utils.data.Subset) else dataset
    return isinstance(base, TensorDataset)


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


def _prepare_images(images: torch.Tensor, placement: Placement, channels_last: bool) -> torch.Tensor:
    images = images.to(placement.device, non_blocking=True)
    if channels_last and images.dim() == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    return images


def _move(module: nn.Module, placement: Placement, channels_last: bool) -> nn.Module:
    module = module.to(placement.device)
    return module.to(memory_format=torch.channels_last) if channels_last else module


def train(cfg: Config, run: RunDir, *, resume: bool = False, data: DataSplits | None = None) -> dict[str, Any]:
    """Train the configured model into ``run``; returns the key figures for summary.json.

    Args:
        cfg: the resolved configuration.
        run: the run directory; ``train/`` inside it receives the checkpoint, metrics and curves.
        resume: continue from ``train/checkpoint.safetensors`` when it exists (a finished run is not retrained).
        data: the loaded data set, when the caller has it already.
    """
    tcfg = cfg.train
    placement = place(tcfg.device)
    rank, world, device = placement.rank, placement.world, placement.device
    if tcfg.threads:
        torch.set_num_threads(tcfg.threads)
    data = data or load_data(cfg.data)
    torch.manual_seed(tcfg.seed)
    model = build_model(cfg, data)
    method = build_method(cfg)
    check_amp(tcfg.amp, device, cfg.method.name, method.amp)
    method.prepare(model)
    if tcfg.init_from:
        initialise_from(model, Path(tcfg.init_from))
    model = _move(model, placement, tcfg.channels_last)
    optimizer = make_optimizer(model, tcfg, method)
    teacher = None
    if tcfg.teacher:
        teacher = _move(load_teacher(tcfg.teacher, tcfg.teacher_model, data, tcfg.teacher_args), placement,
                        tcfg.channels_last)
    start_epoch = 0
    if resume and run.checkpoint.is_file():
        state = load_checkpoint(run.checkpoint)
        if (state.model_name, state.method_name) != (cfg.model.name, cfg.method.name) or state.optimizer_state is None:
            raise CheckpointError(f"{run.checkpoint} was not written by this run's training; "
                                  "remove --resume or use a fresh --out folder")
        model.load_state_dict(state.model_state)
        optimizer.load_state_dict(state.optimizer_state)  # moves the state to the parameters' device
        torch.set_rng_state(state.rng_state)
        start_epoch = state.epoch
        if start_epoch >= tcfg.epochs:
            out.info(f"{run.root}: training finished ({start_epoch} of {tcfg.epochs} epochs); nothing to resume")
        else:
            out.info(f"resuming {run.root} at epoch {start_epoch + 1} of {tcfg.epochs}")
    history = _read_metrics(run.metrics, start_epoch) if rank == 0 else []
    flips = FlipRate(model)  # weight oscillation: the share of binary weights whose sign an optimizer step flips

    net: nn.Module = model
    if world > 1:
        synchronize_batchnorm(model)
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    scaler = torch.amp.GradScaler(device.type, enabled=tcfg.amp == AmpMode.FP16)
    test_images, test_labels, test_loader = None, None, None
    if rank == 0 and _in_memory(data.test):
        test_images, test_labels = stack(data.test)
    elif rank == 0:  # image folders: decoded by the loader's workers, batch by batch
        test_loader = DataLoader(data.test, batch_size=EVAL_BATCH, num_workers=tcfg.workers,
                                 pin_memory=device.type == "cuda", persistent_workers=tcfg.workers > 0)
    batches = EpochBatches(len(data.train), tcfg.batch_size, world, rank, tcfg.seed)
    # the loader's own generator seeds its workers, so the global RNG (augmentation) is the same with any workers
    loader = DataLoader(data.train, batch_sampler=batches, num_workers=tcfg.workers,
                        pin_memory=device.type == "cuda", persistent_workers=tcfg.workers > 0,
                        generator=torch.Generator().manual_seed(tcfg.seed))
    model_args = {**cfg.model.args}
    started = time.perf_counter()
    with out.progress() as progress:
        epochs_task = progress.add_task("train", total=tcfg.epochs, completed=start_epoch, status="")
        for epoch in range(start_epoch, tcfg.epochs):
            epoch_started = time.perf_counter()
            method.on_epoch_start(model, epoch, tcfg.epochs)
            batches.set_epoch(epoch)
            net.train()
            # summed on the device and read once an epoch: a read every step would wait for the GPU every step
            loss_sum = torch.zeros((), dtype=torch.float32 if device.type == "mps" else torch.float64, device=device)
            correct = torch.zeros((), dtype=torch.int64, device=device)
            seen, flip_sum, flip_steps = 0, 0.0, 0
            for step, ((images, labels), share) in enumerate(zip(loader, batches.shares)):
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(tcfg, epoch + step / len(batches)) * group.get("lr_scale", 1.0)
                images = _prepare_images(images, placement, tcfg.channels_last)
                labels = labels.to(device, non_blocking=True)
                if cfg.data.augment and images.dim() == 4:
                    images = augment(images, share.offset, share.batch)
                with autocast(tcfg.amp, device):
                    outputs = net(images)
                    if teacher is not None:
                        task = distribution_loss(teacher, images, outputs)
                    else:
                        task = nn.functional.cross_entropy(outputs, labels, label_smoothing=tcfg.label_smoothing)
                extra = method.extra_loss(model)  # a function of the weights, the same in every process
                loss = task if extra is None else task + extra
                factor = loss_factor(share, world)  # this process's share of the global batch's mean loss
                total = loss if factor == 1 else task * factor + (0 if extra is None else extra)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(total).backward()
                scaler.unscale_(optimizer)  # the methods read true gradients (a no-op without fp16)
                method.after_backward(model)
                scaler.step(optimizer)
                scaler.update()
                method.after_step(model)
                flip_sum, flip_steps = flip_sum + flips.update(), flip_steps + 1
                loss_sum += loss.detach().to(loss_sum.dtype) * len(labels)
                correct += (outputs.argmax(1) == labels).sum()
                seen += len(labels)
            loss_sum, correct, seen = all_reduce_sum([loss_sum.item(), correct.item(), seen], device)
            train_seconds = time.perf_counter() - epoch_started
            images_per_second = seen / train_seconds if train_seconds > 0 else 0.0
            if rank == 0:
                if test_loader is None:
                    test_loss, test_acc, _ = evaluate(model, test_images, test_labels, device)
                else:
                    test_loss, test_acc = evaluate_batches(model, test_loader, device)
                history.append({
                    "epoch": epoch, "lr": lr_at(tcfg, epoch), "train_loss": loss_sum / seen,
                    "train_accuracy": correct / seen, "test_loss": test_loss, "test_accuracy": test_acc,
                    "flip_rate": flip_sum / flip_steps if flip_steps else None,
                    "seconds": round(time.perf_counter() - epoch_started, 3), "world_size": world,
                    "images_per_second": round(images_per_second, 1), "device": str(device), "amp": tcfg.amp.value,
                })
                _write_metrics(run.metrics, history)
                save_checkpoint(run.checkpoint, model, cfg.model.name, model_args, data.input_shape,
                                data.num_classes, epoch + 1, optimizer,
                                extra={"world_size": world, "device": str(device), "amp": tcfg.amp.value},
                                method=(cfg.method.name, dict(cfg.method.options)))
                progress.update(epochs_task, advance=1, status=f"loss {loss_sum / seen:.3f} test acc {test_acc:.2%} "
                                f"{images_per_second:,.0f} img/s")
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
        "images_per_second": final.get("images_per_second"),
        "test_samples": len(data.test),
        "train_seconds": round(time.perf_counter() - started, 2),
        "world_size": world,
        "device": str(device),
        **expected,
    }
