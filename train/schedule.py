"""Optimiser and learning-rate schedule of the authors' code, stepped every iteration.

Adam (not AdamW) with coupled weight decay 5e-7 on every trainable parameter; the learning rate rises
linearly from 1e-6 to 2e-4 over the first 4 of 24 epochs, then follows a cosine to 1e-6 over the other 20.
With another number of epochs the warm-up keeps its share (1/6 of all steps), so the shape is unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

LR_MAX = 2e-4
LR_MIN = 1e-6
WEIGHT_DECAY = 5e-7
WARMUP_FRACTION = 4 / 24


@dataclass(frozen=True)
class Schedule:
    total_steps: int
    warmup_steps: int
    lr_max: float = LR_MAX
    lr_min: float = LR_MIN

    def lr(self, step: int) -> float:
        """Learning rate for the update at 0-based iteration `step`."""
        if step < self.warmup_steps:
            return self.lr_min + (self.lr_max - self.lr_min) * step / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return self.lr_min + 0.5 * (self.lr_max - self.lr_min) * (1 + math.cos(math.pi * min(1.0, progress)))


def make_schedule(epochs: int, steps_per_epoch: int | list[int], warmup_fraction: float = WARMUP_FRACTION,
                  lr_max: float = LR_MAX, lr_min: float = LR_MIN) -> Schedule:
    """The schedule of `epochs` epochs of `steps_per_epoch` steps, or of one count per epoch when their sizes
    differ (a second language that joins late): the warm-up is a share of the actual total either way."""
    total = epochs * steps_per_epoch if isinstance(steps_per_epoch, int) else sum(steps_per_epoch)
    return Schedule(total, round(total * warmup_fraction), lr_max, lr_min)


def make_optimizer(model: torch.nn.Module, weight_decay: float = WEIGHT_DECAY) -> torch.optim.Adam:
    """Adam over the trainable parameters (a fixed logit scale is not one); the schedule sets lr each step."""
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=LR_MIN,
                            weight_decay=weight_decay)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
