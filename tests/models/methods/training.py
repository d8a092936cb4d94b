"""A few training steps through every hook of a method, for the method tests."""

from __future__ import annotations

import torch

SHAPE = (1, 8, 8)


def train_steps(model: torch.nn.Module, method, steps: int = 3) -> None:
    """Adam at lr 1e-2 on one random digits-shaped batch, with the method's loss term and step hooks."""
    optimizer = torch.optim.Adam(method.param_groups(model, 1e-2, 0.0), lr=1e-2)
    x, y = torch.rand(32, *SHAPE), torch.randint(0, 10, (32,))
    model.train()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x), y) + method.extra_loss(model)
        optimizer.zero_grad()
        loss.backward()
        method.after_backward(model)
        optimizer.step()
        method.after_step(model)
