"""What training a shortlisted student will cost, estimated before any training.

The shortlist ranks by capacity, so it favours the heaviest candidate that fits the latency budget, and a
candidate that runs in 0.5 ms may still take 87 s an epoch to train. One timed training step per candidate at
the data's image size and the training batch size (forward, cross-entropy, backward, AdamW step, on a copy of
the untrained network so the timed artefacts are untouched), plus one forward of the teacher (the distillation's
extra cost per step), gives the default recipe's time: a baseline and a distillation of ``epochs`` each over
the training set. It is an estimate of the loop's compute on this machine, without data loading, evaluation or
the distiller's own heads; ``shortlist.train_budget_min`` keeps candidates over it out of the ranking.
"""

from __future__ import annotations

import copy
import math
import time

import torch
import torch.nn.functional as F
from torch import nn


def step_seconds(net: nn.Module, images: torch.Tensor, num_classes: int) -> float:
    """The faster of two timed training steps after one untimed one (allocations, kernel selection)."""
    model = copy.deepcopy(net).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    labels = torch.arange(len(images)) % num_classes
    times = []
    for _ in range(3):
        start = time.perf_counter()
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return min(times[1:])


def forward_seconds(net: nn.Module, images: torch.Tensor) -> float:
    """The teacher's frozen forward in a distillation step."""
    net.eval()
    with torch.inference_mode():
        net(images)
        start = time.perf_counter()
        net(images)
        return time.perf_counter() - start


def recipe_minutes(step_s: float, teacher_forward_s: float, train_images: int, batch_size: int,
                   epochs: int) -> float:
    """A baseline and a distillation of ``epochs`` epochs each: every distillation step adds the teacher's forward."""
    steps = math.ceil(train_images / batch_size) * epochs
    return steps * (2 * step_s + teacher_forward_s) / 60


def over_train_budget(minutes: float | None, budget_min: float | None) -> str | None:
    """The reason a candidate would not train within the budget, or None."""
    if minutes is None or budget_min is None or minutes <= budget_min:
        return None
    return f"training ~{minutes:.1f} min > train_budget_min {budget_min:g}"
