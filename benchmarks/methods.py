"""Every training method against plain STE on the digits default, and each method's layer against plain PyTorch.

    python benchmarks/methods.py [--epochs 30] [--seeds 3] [--cifar-epochs 3] [--out runs/bench/methods]

1. **Digits** (the default MLP, 64-128-128-128-10): every registered method, ``--seeds`` seeds each, the same
   budget of ``--epochs`` epochs at batch 64. Each method trains with its paper's recipe scaled to the budget:
   the optimizer, learning rate, schedule and weight decay of its config in ``configs/`` (``RECIPES``), the
   warm-up scaled by budget / recipe epochs; nothing is tuned for any one method. Printed: test accuracy and the
   weight flip rate (oscillation: the share of binary weights an optimizer step flips, averaged over the last
   quarter of the epochs), mean and spread (sample standard deviation) over the seeds.
2. **CIFAR-shaped**: the same for BNN-PYNQ's CNV on the digits set resized to 3x32x32 (a real, bundled task in
   CIFAR-10's shape: ``data.image_size = 32``, ``data.channels = 3``, bilinear upsampling with the grey level on
   all three channels), ``--cifar-epochs`` epochs, one seed (``--cifar-epochs 0`` skips it).
3. **Training speed**: steps/s of one binary 3x3 conv layer (sign -> conv 128->128 -> BatchNorm, 16x16 maps,
   batch 32: a CIFAR stage-2 layer) as bnnflow builds it (Brevitas layer + the method's parametrizations and
   hooks) against a plain PyTorch implementation of the same method on ``nn.Conv2d`` (``PlainLayer``), in
   interleaved rounds, printed as plain / bnnflow time. The same ratio for the digits MLP's 128x128 linear layer
   is printed too: there Brevitas's fixed per-call cost dominates a layer that small.

Writes ``methods.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import brevitas.nn as qnn
import torch
from torch import nn
from torch.nn import functional as F

from bnnflow.models.layers import quant_act
from bnnflow.models.methods import create_method, estimators, list_methods
from bnnflow.models.quantizers import weight_quant
from bnnflow.pipeline.config import Config, load_config
from bnnflow.pipeline.rundir import RunDir
from bnnflow.pipeline.train import train

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
#: the recipe whose optimizer settings each method trains with (plain STE: BNN-PYNQ's, as Brevitas trains it)
RECIPES = {"ste": "bnn-pynq-mnist-tfc", "xnor": "xnor-imagenet-resnet18", "bireal": "bireal-imagenet-resnet18",
           "irnet": "irnet-cifar10-resnet18", "reactnet": "reactnet-imagenet-resnet18",
           "rebnn": "rebnn-imagenet-resnet18", "rbonn": "rbonn-imagenet-resnet18", "rbnn": "rbnn-cifar10-resnet20",
           "ftbnn": "ftbnn-imagenet-resnet18", "dwr": "dwr-imagenet-resnet18"}
RECIPE_KEYS = ("optimizer", "lr", "momentum", "weight_decay", "schedule")
#: the digits as CIFAR-10-shaped images, through the data loader's own resizing (``pipeline/image_shape.py``)
CIFAR_SHAPED = {"data.image_size": 32, "data.channels": 3}


def recipe_overrides(method: str, epochs: int) -> dict[str, object]:
    """The method's recipe (optimizer, lr, schedule, weight decay) with the budget's epochs and scaled warm-up."""
    recipe = load_config(CONFIGS / f"{RECIPES[method]}.toml").train
    overrides: dict[str, object] = {f"train.{k}": getattr(recipe, k) for k in RECIPE_KEYS}
    overrides = {k: v.value if hasattr(v, "value") else v for k, v in overrides.items()}
    overrides["train.warmup_epochs"] = round(recipe.warmup_epochs * epochs / recipe.epochs)
    return {**overrides, "method.name": method, "train.epochs": epochs}


def train_once(overrides: dict[str, object]) -> dict[str, float]:
    """Train in a scratch run directory; test accuracy and the flip rate over the last quarter of the epochs."""
    cfg = Config().with_overrides({"train.threads": 1, **overrides})
    with tempfile.TemporaryDirectory(prefix="bnnflow-methods-") as tmp:
        run = RunDir(Path(tmp))
        run.root.mkdir(exist_ok=True)
        summary = train(cfg, run)
        rows = [json.loads(line) for line in run.metrics.read_text().splitlines()]
    late = [r["flip_rate"] for r in rows[-max(1, len(rows) // 4):] if r["flip_rate"] is not None]
    return {"test_accuracy": summary["test_accuracy"], "flip_rate": sum(late) / len(late) if late else math.nan}


def spread(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


# ---------------------------------------------------------------------------------------------------------------
# Training speed: bnnflow's layer against plain PyTorch


class BnnflowLayer(nn.Module):
    """sign -> binary conv or linear -> BatchNorm, as bnnflow's model families build a binary layer."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.input_shape = shape
        channels = shape[0]
        self.act = quant_act(1)
        if len(shape) == 3:
            self.layer = qnn.QuantConv2d(channels, channels, 3, padding=1, bias=False, weight_quant=weight_quant(1),
                                         weight_bit_width=1)
            self.bn: nn.Module = nn.BatchNorm2d(channels)
        else:
            self.layer = qnn.QuantLinear(channels, channels, bias=False, weight_quant=weight_quant(1),
                                         weight_bit_width=1)
            self.bn = nn.BatchNorm1d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.layer(self.act(x)))


class PlainLayer(nn.Module):
    """The same layer and method written directly in PyTorch: ``F.conv2d`` / ``F.linear`` on signs made by the
    method's estimator, its weight transform and scale inline, as the papers' own code does."""

    def __init__(self, shape: tuple[int, ...], method: str) -> None:
        super().__init__()
        self.method, self.conv = method, len(shape) == 3
        c = shape[0]
        self.weight = nn.Parameter(torch.randn(c, c, 3, 3) * 0.05 if self.conv else torch.randn(c, c) * 0.05)
        self.bn = nn.BatchNorm2d(c) if self.conv else nn.BatchNorm1d(c)
        view = (-1,) + (1,) * (self.weight.dim() - 1)
        self.view = view
        if method in ("rebnn", "rbonn", "rbnn"):
            self.alpha = nn.Parameter(self.weight.detach().abs().flatten(1).mean(1))
        if method == "reactnet":
            self.move = nn.Parameter(torch.zeros(c))
        if method == "rbonn":
            self.u = nn.Parameter(torch.full((c,), 0.2))
            self.register_buffer("g_prev", torch.zeros_like(self.weight))
        if method == "rbnn":
            n = self.weight[0].numel()
            a = max(d for d in range(1, int(math.isqrt(n)) + 1) if n % d == 0)
            self.ab = (a, n // a)
            self.register_buffer("r1", torch.linalg.qr(torch.randn(a, a))[0])
            self.register_buffer("r2", torch.linalg.qr(torch.randn(n // a, n // a))[0])
            self.theta = nn.Parameter(torch.full((c,), math.pi / 2))
        if method == "ftbnn":
            self.slopes = nn.Parameter(torch.stack([torch.ones(c), torch.full((c,), 0.25)]))
            self.shifts = nn.Parameter(torch.zeros(2, c))

    def _channel(self, v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return v.reshape((1, -1) + (1,) * (like.dim() - 2))

    def act(self, x: torch.Tensor) -> torch.Tensor:
        if self.method == "reactnet":
            x = x + self._channel(self.move, x)
        derivative = {"bireal": estimators.approx_sign, "reactnet": estimators.approx_sign,
                      "rebnn": estimators.approx_sign, "rbonn": estimators.approx_sign,
                      "ftbnn": estimators.approx_sign, "dwr": estimators.approx_sign,
                      "irnet": estimators.ede(1.0, 1.0), "rbnn": estimators.training_aware(1.0, 1.0)}
        return estimators.surrogate_sign(x, derivative.get(self.method, estimators.clipped_ste))

    def binary_weight(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(signs, per-channel scale or None)."""
        w, m = self.weight, self.method
        if m in ("irnet", "rbnn"):
            flat = w.flatten(1)
            w = (w - flat.mean(1).reshape(self.view)) / flat.std(1).reshape(self.view)
        if m == "rbnn":
            x = w.reshape(w.shape[0], *self.ab)
            rotated = (self.r1.t() @ x @ self.r2).reshape(w.shape).detach()
            w = w + torch.sin(self.theta).abs().reshape(self.view) * (rotated - w)
            return estimators.surrogate_sign(w, estimators.training_aware(1.0, 1.0)), self.alpha
        if m == "irnet":
            scale = torch.pow(2.0, torch.round(torch.log2(w.abs().flatten(1).mean(1)))).detach()
            return estimators.surrogate_sign(w, estimators.ede(1.0, 1.0)), scale
        if m == "rbonn":
            rank = torch.argsort(torch.argsort(self.alpha.detach()))
            gate = (rank < int(0.4 * len(rank))).to(w.dtype)
            w = w - (self.u * gate).reshape(self.view) * self.g_prev
        signs = estimators.surrogate_sign(w, estimators.clipped_ste)
        if m in ("xnor", "bireal"):
            return signs, w.abs().flatten(1).mean(1)
        if m == "reactnet":
            return signs, w.abs().flatten(1).mean(1).detach()
        if m in ("rebnn", "rbonn"):
            return signs, self.alpha
        return signs, None

    def extra_loss(self) -> torch.Tensor | None:
        if self.method not in ("rebnn", "rbonn"):
            return None
        b = torch.where(self.weight >= 0, 1.0, -1.0).detach()
        return (1e-4 / 2 * (self.weight - self.alpha.reshape(self.view) * b).pow(2)).sum()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        signs, scale = self.binary_weight()
        a = self.act(x)
        y = F.conv2d(a, signs, padding=1) if self.conv else F.linear(a, signs)
        if scale is not None:
            y = y * self._channel(scale, y)
        y = self.bn(y)
        if self.method == "ftbnn":
            y = y - self._channel(self.shifts[0], y)
            y = torch.where(y >= 0, y * self._channel(self.slopes[0], y), y * self._channel(self.slopes[1], y))
            y = y + self._channel(self.shifts[1], y)
        return y


def _timed_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, extra, after) -> float:
    started = time.perf_counter()
    loss = model(x).square().mean()
    more = extra()
    if more is not None:
        loss = loss + more
    optimizer.zero_grad()
    loss.backward()
    after()
    optimizer.step()
    return time.perf_counter() - started


def layer_speed(method: str, shape: tuple[int, ...], batch: int, rounds: int) -> dict[str, float]:
    """Median seconds per training step of bnnflow's layer and the plain one, measured in alternating rounds."""
    torch.manual_seed(0)
    ours = BnnflowLayer(shape)
    bnnflow_method = create_method(method)
    bnnflow_method.prepare(ours)
    bnnflow_method.on_epoch_start(ours, 1, 2)
    plain = PlainLayer(shape, method)
    x = torch.randn(batch, *shape)
    opt_ours = torch.optim.Adam([g for g in bnnflow_method.param_groups(ours, 1e-3, 0.0)], lr=1e-3)
    opt_plain = torch.optim.Adam(plain.parameters(), lr=1e-3)

    def plain_after() -> None:
        if method == "rbonn":
            plain.g_prev.copy_(plain.weight.grad)

    def ours_after() -> None:
        bnnflow_method.after_backward(ours)

    times: dict[str, list[float]] = {"bnnflow": [], "plain": []}
    for i in range(rounds + 2):
        t_ours = _timed_step(ours, opt_ours, x, lambda: bnnflow_method.extra_loss(ours), ours_after)
        bnnflow_method.after_step(ours)
        t_plain = _timed_step(plain, opt_plain, x, plain.extra_loss, plain_after)
        if i >= 2:  # the first rounds warm caches and allocators up
            times["bnnflow"].append(t_ours)
            times["plain"].append(t_plain)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="digits budget per run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cifar-epochs", type=int, default=3, help="CNV on CIFAR-shaped digits (0 skips it)")
    parser.add_argument("--methods", default="all", help="comma-separated method names, or all")
    parser.add_argument("--speed-rounds", type=int, default=10, help="timed training steps per layer (0 skips)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/methods"))
    args = parser.parse_args(argv)
    methods = list_methods() if args.methods == "all" else args.methods.split(",")
    unknown = sorted(set(methods) - set(list_methods()))
    if unknown:
        sys.exit(f"methods benchmark: unknown method {unknown[0]} (known: {', '.join(list_methods())})")
    torch.set_num_threads(1)
    report: dict = {"epochs": args.epochs, "seeds": args.seeds, "digits": {}, "cifar_shaped": {}, "speed": {}}

    print(f"digits default, {args.epochs} epochs, seeds 0..{args.seeds - 1} (mean +- std)")
    print(f"{'method':<10}{'test accuracy':>22}{'flip rate (late)':>26}")
    for method in methods:
        runs = [train_once({**recipe_overrides(method, args.epochs), "train.seed": seed}) for seed in range(args.seeds)]
        acc = spread([r["test_accuracy"] for r in runs])
        flips = spread([r["flip_rate"] for r in runs])
        report["digits"][method] = {"runs": runs, "accuracy_mean": acc[0], "accuracy_std": acc[1],
                                    "flip_rate_mean": flips[0], "flip_rate_std": flips[1]}
        print(f"{method:<10}{acc[0]:>14.2%} +- {acc[1]:.2%}{flips[0]:>17.5f} +- {flips[1]:.5f}", flush=True)

    if args.cifar_epochs:
        print(f"\nCNV on CIFAR-shaped digits (3x32x32), {args.cifar_epochs} epochs, seed 0")
        for method in methods:
            result = train_once({**recipe_overrides(method, args.cifar_epochs), **CIFAR_SHAPED, "model.name": "cnv"})
            report["cifar_shaped"][method] = result
            print(f"{method:<10}{result['test_accuracy']:>14.2%}{result['flip_rate']:>25.5f}", flush=True)

    if args.speed_rounds:
        print("\ntraining step time, plain PyTorch / bnnflow (1.0 = as fast; below 1 bnnflow is slower)")
        print(f"{'method':<10}{'conv 128x16x16 b32':>22}{'linear 128 b64':>18}")
        for method in methods:
            conv = layer_speed(method, (128, 16, 16), 32, args.speed_rounds)
            linear = layer_speed(method, (128,), 64, args.speed_rounds)
            report["speed"][method] = {"conv": conv, "linear": linear,
                                       "conv_plain_over_bnnflow": conv["plain"] / conv["bnnflow"],
                                       "linear_plain_over_bnnflow": linear["plain"] / linear["bnnflow"]}
            print(f"{method:<10}{conv['plain'] / conv['bnnflow']:>21.2f}x{linear['plain'] / linear['bnnflow']:>17.2f}x",
                  flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "methods.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
