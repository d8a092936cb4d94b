"""Where training runs: the device, mixed precision, and the processes of a torchrun launch.

**Device.** ``train.device = "auto"`` takes CUDA, then Apple's MPS, then the CPU; under torchrun every process
takes the GPU of its local rank (``cuda:LOCAL_RANK``) and the process group is nccl on CUDA, gloo otherwise.

**Mixed precision.** ``train.amp`` is bf16 or fp16 autocast of the forward pass; fp16 adds a loss scaler. What a
device takes: the CPU bf16; CUDA bf16 (on GPUs that have it) and fp16; MPS fp16. A method whose per-step rule
reads raw gradients takes only bf16 (``Method.amp``): fp16's loss scaling scales those gradients and skips steps
whose gradients overflow.

**One global batch, whatever the number of processes.** Every process draws the same permutation of the
training set for an epoch (a generator seeded by the seed and the epoch; with one process it is exactly
``RandomSampler``'s), cuts it into global batches of ``train.batch_size``, and takes its contiguous share of each
(``rank_batches``). Each process's loss is scaled by its share of the global batch (``loss_factor``), so the
gradient DDP averages is the gradient of the global batch's mean loss; BatchNorm computes its statistics over
the global batch (``synchronize_batchnorm``), and the methods reduce their own batch statistics
(``models.methods.base.reduce_mean``). Two processes then take the same steps as one process on the same
global batches, to float rounding, and a checkpoint resumes in any number of processes.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import types
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from bnnflow.errors import ConfigError
from bnnflow.models.methods.base import Method
from bnnflow.pipeline.config import AmpMode, TrainConfig

AMP_DTYPES = {AmpMode.BF16: torch.bfloat16, AmpMode.FP16: torch.float16}
#: the autocast modes each device type trains with
DEVICE_AMP = {"cpu": (AmpMode.BF16,), "cuda": (AmpMode.BF16, AmpMode.FP16), "mps": (AmpMode.FP16,)}


@dataclass(frozen=True)
class Placement:
    """This process's place in a launch: its rank, the number of processes, its local rank, and its device."""

    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world > 1


def resolve_device(name: str, *, local_rank: int = 0, world: int = 1, cuda_devices: int | None = None,
                   mps: bool | None = None) -> torch.device:
    """The device ``train.device = name`` means for the process of ``local_rank``.

    ``cuda_devices`` and ``mps`` are the machine's facts (by default asked of PyTorch). A device the machine lacks
    is a ``ConfigError`` naming it and what to use instead.
    """
    cuda_devices = torch.cuda.device_count() if cuda_devices is None else cuda_devices
    mps = _mps_available() if mps is None else mps
    if name == "auto":
        name = "cuda" if cuda_devices else "mps" if mps else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not mps:
            raise ConfigError("train.device = mps, but this PyTorch has no Apple MPS device; use --device auto or cpu")
        if world > 1:
            raise ConfigError("train.device = mps takes one process; launch without torchrun, or use --device cpu")
        return torch.device("mps")
    kind, _, index = name.partition(":")
    if kind != "cuda":
        raise ConfigError(f"train.device = {name!r} is not a device (allowed: auto, cpu, cuda, cuda:N, mps)")
    if not cuda_devices:
        raise ConfigError(f"train.device = {name}, but PyTorch sees no CUDA device (a CPU-only build, or no GPU); "
                          "use --device auto or cpu")
    if index and world > 1:
        raise ConfigError(f"train.device = {name} names one GPU, but torchrun started {world} processes; use "
                          "--device cuda (each process takes the GPU of its local rank)")
    number = int(index) if index else local_rank
    if number >= cuda_devices:
        held = f"local rank {local_rank} needs" if not index else "there is no"
        raise ConfigError(f"train.device: {held} cuda:{number}, and this machine has {cuda_devices} CUDA "
                          f"device{'s' if cuda_devices != 1 else ''}; start at most {cuda_devices} processes per node")
    return torch.device("cuda", number)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def place(device_name: str) -> Placement:
    """This process's placement, initialising the process group when torchrun started several processes (nccl
    for CUDA, gloo otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank=local_rank, world=world)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(_leave_group)
    rank = dist.get_rank() if world > 1 else 0
    return Placement(rank=rank, world=world, local_rank=local_rank, device=device)


def _leave_group() -> None:
    """Destroy the process group before the interpreter exits: a gloo group left to Python's finalisation
    destroys its worker threads unjoined, and the process dies of SIGABRT after its work is done (seen when the
    two ranks finish at different times on a loaded machine; pytorch/pytorch#190489)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def check_amp(amp: AmpMode, device: torch.device, method_name: str, method_amp: tuple[str, ...]) -> None:
    """Refuse, in one line, a mixed precision the device or the method cannot train with."""
    if amp == AmpMode.OFF:
        return
    if amp.value not in method_amp:
        raise ConfigError(f"train.amp = {amp.value}: the {method_name} method trains only with "
                          f"{', '.join(method_amp) or 'amp off'} (its per-step rule reads raw gradients, which fp16's "
                          "loss scaling distorts); set train.amp to bf16 or off")
    allowed = DEVICE_AMP.get(device.type, ())
    if amp not in allowed:
        hint = f"use {' or '.join(a.value for a in allowed)} or off" if allowed else "set train.amp = off"
        raise ConfigError(f"train.amp = {amp.value} is not available on {device.type}; {hint}")
    if device.type == "cuda" and amp == AmpMode.BF16 and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"train.amp = bf16: {torch.cuda.get_device_name(device)} has no bf16; use fp16 or off")


def check_placement(train_cfg: TrainConfig, method: Method) -> torch.device:
    """The device this process would train on, after checking it exists and takes the configured amp with the
    method: ``validate`` calls it so that a bad device or amp stops a command before anything is written."""
    device = resolve_device(train_cfg.device, local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                            world=int(os.environ.get("WORLD_SIZE", "1")))
    check_amp(train_cfg.amp, device, method.name, method.amp)
    return device


def autocast(amp: AmpMode, device: torch.device) -> contextlib.AbstractContextManager:
    """The forward pass's autocast context (a no-op context with amp off)."""
    if amp == AmpMode.OFF:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[amp])


# ---------------------------------------------------------------------------------------------------------------
# One global batch across the processes


def shares(size: int, world: int) -> list[int]:
    """How ``size`` samples split over ``world`` processes: contiguous, sizes differing by at most one."""
    base, extra = divmod(size, world)
    return [base + (r < extra) for r in range(world)]


@dataclass(frozen=True)
class Share:
    """A process's part of one global batch: its sample indices, where they start in the batch, the batch size."""

    indices: list[int]
    offset: int
    batch: int


def rank_batches(n: int, batch_size: int, world: int, rank: int, generator: torch.Generator) -> list[Share]:
    """This rank's share of every global batch of an epoch.

    The permutation is ``torch.randperm(n, generator)``, the one ``RandomSampler`` draws with that generator, so
    one process trains on exactly the batches it always did. With several processes a last global batch smaller
    than the number of processes is left out (a process would get no sample)."""
    order = torch.randperm(n, generator=generator).tolist()
    result = []
    for start in range(0, n, batch_size):
        batch = order[start: start + batch_size]
        if world > 1 and len(batch) < world:
            continue
        sizes = shares(len(batch), world)
        offset = sum(sizes[:rank])
        result.append(Share(batch[offset: offset + sizes[rank]], offset, len(batch)))
    return result


def loss_factor(share: Share, world: int) -> float:
    """What a process's mean loss is multiplied by so that DDP's average of the gradients is the gradient of the
    global batch's mean loss: ``n_rank * world / n_batch`` (exactly 1 when the batch splits evenly)."""
    return len(share.indices) * world / share.batch


class EpochBatches(torch.utils.data.Sampler):
    """A DataLoader ``batch_sampler`` yielding this rank's shares of an epoch's global batches; ``set_epoch``
    picks the epoch (the loader and its workers persist across epochs)."""

    def __init__(self, n: int, batch_size: int, world: int, rank: int, seed: int) -> None:
        self.n, self.batch_size, self.world, self.rank, self.seed = n, batch_size, world, rank, seed
        self.shares: list[Share] = []
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        self.shares = rank_batches(self.n, self.batch_size, self.world, self.rank, generator)

    def __iter__(self):
        return iter([share.indices for share in self.shares])

    def __len__(self) -> int:
        return len(self.shares)


# ---------------------------------------------------------------------------------------------------------------
# BatchNorm over the global batch


class _AllReduceSum(torch.autograd.Function):
    """A sum over the processes that autograd differentiates: the gradient of a sum that every process uses is the
    sum of the processes' gradients."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.contiguous().clone()
        dist.all_reduce(total)
        return total


def _all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    return _AllReduceSum.apply(tensor)


def _global_batch_norm(self: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Training-mode BatchNorm whose mean and variance are those of the global batch (all processes), in float32;
    otherwise the module's own forward."""
    if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return type(self).forward(self, x)
    dtype = x.dtype
    x = x.float()
    dims = [0, *range(2, x.dim())]
    shape = (1, -1) + (1,) * (x.dim() - 2)
    count = torch.tensor([x.numel() / max(x.shape[1], 1)], dtype=x.dtype, device=x.device)
    summed = _all_reduce_sum(torch.cat([x.sum(dims), count]))
    n = summed[-1]
    mean = summed[:-1] / n
    centered = x - mean.reshape(shape)
    var = _all_reduce_sum(centered.pow(2).sum(dims)) / n
    y = centered * torch.rsqrt(var + self.eps).reshape(shape)
    if self.affine:
        y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
    if self.track_running_stats:
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
            unbiased = var.detach() * n / (n - 1).clamp_min(1)
            self.running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)
    return y.to(dtype)


def synchronize_batchnorm(model: nn.Module) -> int:
    """Make every BatchNorm of ``model`` normalise over the global batch while several processes train; the
    modules keep their class, parameters, hooks and evaluation forward. Returns how many there are.

    ``torch.nn.SyncBatchNorm`` does the same on GPUs only; this runs on any device and backend (gloo too)."""
    count = 0
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.forward = types.MethodType(_global_batch_norm, module)
            count += 1
    return count


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sums of plain numbers over the processes (the epoch's loss, correct and seen counts)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()
