# Copyright 2026 The maral-xner authors. Licensed under the Apache License, Version 2.0.
"""The registry of training methods: `--method NAME` -> an `ObjectiveSpec` that builds the `TrainingObjective`.

Every objective registers itself with `register_objective` where it is defined; `objectives/__init__.py` imports
the built-in ones, so `OBJECTIVES` (and `methods()`) list them in the order of the docs. A method's spec carries
what the rest of the code asks about it: whether it trains a student on pseudo-labels, its display name and model
card description, its settings dataclass and the settings its model card lists.

Example (a user objective; see "How the code is organised" in the README):
    >>> @register_objective("my_method", display_name="my method", summary="Source CE only.", self_training=False)
    ... class MyObjective(TrainingObjective):
    ...     @classmethod
    ...     def from_context(cls, context):
    ...         return cls()
    ...     def compute_loss(self, trainer, model, inputs):
    ...         output = model(**model_inputs(inputs), return_projections=False)
    ...         loss = span_cross_entropy(output.logits, inputs["labels"], inputs["span_mask"])
    ...         return loss, {"source_loss": loss.item()}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from trainer_maral import MaralTrainingArguments

    from .base import TrainingObjective
    from .pseudo_labels import PseudoLabelStore


@dataclass
class ObjectiveContext:
    """What an objective may be built from.

    Args:
        args: the run's `MaralTrainingArguments`.
        num_labels: number of classes (with `O`).
        class_weights: source span class weights.
        source_class_counts: span counts per class of the source training set.
        store: the pseudo-labels a student trains on (self-training methods).
        has_target_text: whether the trainer has a target-text stream.
        round_index: self-training round (1-based; 0 for single-stage training).
        temperature: the model's contrastive temperature.
        code_switched: code-switched counterparts of the source sentences (MCL-NER).
        gold_by_sentence: target gold spans, for oracle diagnostics only.
    """

    args: MaralTrainingArguments
    num_labels: int
    class_weights: torch.Tensor | None = None
    source_class_counts: np.ndarray | None = None
    store: PseudoLabelStore | None = None
    has_target_text: bool = False
    round_index: int = 0
    temperature: float = 0.07
    code_switched: dict[int, dict[str, Any]] | None = None
    gold_by_sentence: dict[int, list[tuple[int, int, int]]] | None = None

    @property
    def num_epochs(self) -> int:
        return math.ceil(self.args.num_train_epochs)

    @property
    def seed(self) -> int:
        return self.args.seed + self.round_index


@dataclass(frozen=True)
class ObjectiveSpec:
    """A registered training method.

    Attributes:
        name: the `--method` value.
        display_name: how the method is named in model cards.
        summary: one line for the docs.
        self_training: `True` when the method is a student trained on a teacher's pseudo-labels (teacher stage,
            then `--self_training_rounds` student rounds); `False` for single-stage training.
        objective_class: the `TrainingObjective` subclass; `objective_class.from_context(context)` builds it.
        needs_target_text: whether the method cannot train without target-language text.
        card_description: Markdown paragraph(s) for the model card's "How it was trained"; `{source}` and
            `{target}` are replaced by the language names.
        card_settings: the run settings the model card lists for this method (beyond the common ones).
        default_student_init: the student's start when `--student_init` is not given (`base` or `teacher`).
    """

    name: str
    display_name: str
    summary: str
    self_training: bool
    objective_class: type
    needs_target_text: bool = False
    card_description: str = ""
    card_settings: tuple[str, ...] = ()
    default_student_init: str = "base"

    def build(self, context: ObjectiveContext) -> TrainingObjective:
        """The objective for `context`.

        Raises:
            ValueError: when the method needs target text or pseudo-labels that the context does not have.
        """
        if self.self_training and context.store is None:
            raise ValueError(
                f"--method {self.name} trains a student on pseudo-labels: build it with a PseudoLabelStore."
            )
        require_target_text(self.name, context.has_target_text or context.store is not None)
        return self.objective_class.from_context(context)


OBJECTIVES: dict[str, ObjectiveSpec] = {}


def register_objective(
    name: str,
    *,
    display_name: str,
    summary: str,
    self_training: bool,
    needs_target_text: bool | None = None,
    card_description: str = "",
    card_settings: tuple[str, ...] = (),
    default_student_init: str = "base",
):
    """Class decorator registering a `TrainingObjective` subclass as `--method name` (see `ObjectiveSpec`).

    `needs_target_text` defaults to `self_training` (a student always reads target text).
    """

    def decorator(objective_class: type) -> type:
        objective_class.name = name
        OBJECTIVES[name] = ObjectiveSpec(
            name=name,
            display_name=display_name,
            summary=summary,
            self_training=self_training,
            objective_class=objective_class,
            needs_target_text=self_training if needs_target_text is None else needs_target_text,
            card_description=card_description,
            card_settings=card_settings,
            default_student_init=default_student_init,
        )
        return objective_class

    return decorator


def methods() -> tuple[str, ...]:
    """Every registered `--method`, in registration order."""
    return tuple(OBJECTIVES)


def objective_spec(method: str) -> ObjectiveSpec:
    """The spec of `--method`.

    Raises:
        ValueError: naming the flag and the registered methods.
    """
    if method not in OBJECTIVES:
        raise ValueError(f"`--method` must be one of {', '.join(OBJECTIVES)}; got {method!r}.")
    return OBJECTIVES[method]


def build_objective(method: str, context: ObjectiveContext) -> TrainingObjective:
    """The objective of `--method` (see `OBJECTIVES`)."""
    return objective_spec(method).build(context)


def require_target_text(method: str, has_target_text: bool) -> None:
    """The one check that a method which needs target-language text was given some.

    Raises:
        ValueError: naming `--target_unlabeled_file` and `--target_dataset_name`.
    """
    if OBJECTIVES[method].needs_target_text and not has_target_text:
        raise ValueError(
            f"--method {method} needs --target_unlabeled_file (the target-language text), or --target_dataset_name "
            "with a train split."
        )
