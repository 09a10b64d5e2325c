# Copyright 2026 The maral-xner authors. Licensed under the Apache License, Version 2.0.
"""`TrainingObjective`: what a training stage optimises, and the batch helpers every objective uses."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from modeling_maral import MODEL_INPUT_NAMES

if TYPE_CHECKING:
    from trainer_maral import MaralTrainer


def batch_to_device(batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    """Every tensor of a collated batch on `device` (tensors already there are not copied)."""
    return {key: value.to(device) for key, value in batch.items()}


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The keys of a collated batch that `MaralForSpanNER.forward` consumes."""
    return {key: batch[key] for key in MODEL_INPUT_NAMES}


def unwrap_model(model):
    """The `MaralForSpanNER` inside a DDP (or other `.module`) wrapper; the model itself otherwise."""
    return getattr(model, "module", model)


class TrainingObjective:
    """What a training stage optimises, with hooks the trainer calls.

    Subclasses implement `compute_loss`; the epoch hooks and `state_dict`/`load_state_dict` (saved in every
    checkpoint) are optional.
    """

    name = "objective"

    def on_train_begin(self, trainer: MaralTrainer) -> None:
        """Called once before the first step (after a resume, too)."""

    def on_epoch_begin(self, trainer: MaralTrainer, epoch: int) -> None:
        """Called at the start of every epoch (`epoch` counts from 0)."""

    def on_epoch_end(self, trainer: MaralTrainer, epoch: int) -> None:
        """Called at the end of every epoch."""

    def on_train_end(self, trainer: MaralTrainer) -> None:
        """Called once after the last step."""

    def compute_loss(
        self, trainer: MaralTrainer, model, inputs: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Returns the loss of one step and the named loss terms to log."""
        raise NotImplementedError

    def observe_loss_terms(self, terms: dict[str, float]) -> None:
        """Receives the loss terms of every step (objectives with per-epoch diagnostics average them)."""

    def after_step(self) -> None:
        """Called after every `compute_loss`: objectives with state merge what all processes changed."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores what `state_dict` returned."""
