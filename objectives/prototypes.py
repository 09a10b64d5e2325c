# Copyright 2026 The maral-xner authors. Licensed under the Apache License, Version 2.0.
"""EMA class prototypes over L2-normalised span features (ContProto's `φ_c`, PRAM's `C_k`) and class means."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .distributed import all_gather_rows


class ClassPrototypes:
    """EMA class prototypes over L2-normalised features (ContProto's `φ_c`, PRAM's `C_k`).

    Prototypes start at zero (cosine 0 to everything) and are L2-normalised after every update.

    Args:
        num_labels: number of classes.
        momentum: EMA momentum (weight of the old prototype).
        per_span: `True` applies the EMA span by span in batch order (ContProto); `False` moves each class once per
            batch towards the mean of its spans (PRAM).

    Example:
        >>> prototypes = ClassPrototypes(num_labels=2, momentum=0.5)
        >>> prototypes.update(torch.tensor([[1.0, 0.0]]), torch.tensor([1]))
        >>> prototypes.vectors.tolist()
        [[0.0, 0.0], [1.0, 0.0]]
    """

    def __init__(self, num_labels: int, momentum: float, per_span: bool = True) -> None:
        self.num_labels = num_labels
        self.momentum = momentum
        self.per_span = per_span
        self.vectors = torch.zeros(num_labels, 0)

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Moves the prototypes of the classes in `labels` towards their `features` (`(M, d)`, detached); with
        several processes, towards the features of all of them (in rank order)."""
        features = all_gather_rows(features.detach().float().cpu())
        labels = all_gather_rows(labels.cpu())
        if self.vectors.size(1) != features.size(1):
            self.vectors = torch.zeros(self.num_labels, features.size(1))
        if len(labels) == 0:
            return
        counts = torch.bincount(labels, minlength=self.num_labels).float()
        if self.per_span:
            # Sequential EMA in closed form: φ ← α^n φ + (1-α) Σ_i α^(n-1-i) x_i over the class's spans in order.
            rank = (F.one_hot(labels, self.num_labels).cumsum(0).gather(1, labels.unsqueeze(1)).squeeze(1) - 1).float()
            weights = (1 - self.momentum) * self.momentum ** (counts[labels] - 1 - rank)
            decay = self.momentum**counts
            moved = torch.zeros_like(self.vectors).index_add_(0, labels, weights.unsqueeze(1) * features)
        else:
            means = torch.zeros_like(self.vectors).index_add_(0, labels, features) / counts.clamp(min=1).unsqueeze(1)
            decay = torch.where(counts > 0, torch.tensor(self.momentum), torch.tensor(1.0))
            moved = (1 - decay).unsqueeze(1) * means
        self.vectors = F.normalize(decay.unsqueeze(1) * self.vectors + moved, dim=-1)

    def similarities(self, features: torch.Tensor) -> torch.Tensor:
        """`(M, C)` cosine similarities of unit-norm `features` to the prototypes."""
        return features @ self.vectors.to(features).T

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"vectors": self.vectors}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.vectors = state["vectors"]


def class_means(sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Per-class means `sums / counts`; `+inf` for classes without members (no margin can be passed)."""
    return torch.where(counts > 0, sums / counts.clamp(min=1), torch.full_like(sums, math.inf))
