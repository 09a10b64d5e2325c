# Copyright 2026 The maral-xner authors. Licensed under the Apache License, Version 2.0.
"""`MaralTrainer`: a `transformers.Trainer` for cross-lingual span NER with pluggable training objectives.

The trainer owns what every objective shares: the source (labelled) dataloader, an independent stream of target
(unlabelled) batches, span-level evaluation on any number of datasets, and checkpointing of the objective's state.
What is optimised is delegated to a `TrainingObjective` with per-step and per-epoch hooks:

- `SourceObjective` (the teacher stage, §5 of the method notes): class-weighted span cross-entropy on the
  source language plus an optional masked-LM auxiliary on target text.

Example:
    >>> trainer = MaralTrainer(model=model, args=MaralTrainingArguments("out"), train_dataset=source,
    ...                        eval_dataset={"source_dev": dev, "target_test": test}, target_dataset=target,
    ...                        processing_class=tokenizer)
    >>> trainer.train()
"""

from __future__ import annotations

import logging
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from data_loading.collator import MaralDataCollator, mask_tokens_for_mlm
from evaluation_maral import evaluate_model, flatten_metrics
from modeling_maral import MODEL_INPUT_NAMES, span_cross_entropy

logger = logging.getLogger(__name__)

TRAINER_STATE_FILE = "maral_trainer_state.pt"
METHODS = ("source_only",)


@dataclass
class MaralTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus the cross-lingual training settings.

    Args:
        method: training objective; `source_only` trains the teacher (source CE + target MLM).
        mlm_weight: weight of the target-text masked-LM auxiliary (1e-3 for the teacher in the paper; 0 disables).
        mlm_mask_rate: probability that a target subword is masked.
        mlm_hide_masked_tokens: also hide masked positions from attention (upstream behaviour).
        target_batch_size: target sentences per step (defaults to `per_device_train_batch_size`).
        eval_decoding: overlap resolution in evaluation (`greedy`, `legacy`, `none`); the model's default if unset.
    """

    method: str = field(default="source_only", metadata={"help": f"Training objective: one of {', '.join(METHODS)}."})
    mlm_weight: float = field(default=1e-3, metadata={"help": "Weight of the target-text MLM auxiliary (0 = off)."})
    mlm_mask_rate: float = field(default=0.25, metadata={"help": "Probability that a target subword is masked."})
    mlm_hide_masked_tokens: bool = field(
        default=True, metadata={"help": "Hide masked positions from attention, as the reference code does."}
    )
    target_batch_size: int | None = field(
        default=None, metadata={"help": "Target sentences per step; defaults to per_device_train_batch_size."}
    )
    eval_decoding: str | None = field(
        default=None, metadata={"help": "Decoding in evaluation: greedy, legacy or none (default: the model's)."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.method not in METHODS:
            raise ValueError(f"`--method` must be one of {', '.join(METHODS)}; got {self.method!r}.")
        if self.mlm_weight < 0:
            raise ValueError(f"`--mlm_weight` must be >= 0; got {self.mlm_weight}.")
        if not 0 < self.mlm_mask_rate < 1:
            raise ValueError(f"`--mlm_mask_rate` must be in (0, 1); got {self.mlm_mask_rate}.")
        # Span batches carry custom keys: keep every column and name the label key explicitly.
        self.remove_unused_columns = False
        self.label_names = ["labels"]


def class_weights_from_counts(counts: np.ndarray) -> torch.Tensor:
    """Span class weights `w_c = C (1/log n_c) / Σ_c' (1/log n_c')` (§2.10 of the method notes).

    Counts below 2 are raised to 2 (a class seen once would get an infinite weight).

    Example:
        >>> class_weights_from_counts(np.array([709351, 6321, 6600, 7140, 3438])).round(decimals=3).tolist()
        [0.69, 1.063, 1.057, 1.048, 1.142]
    """
    counts = np.asarray(counts, dtype=np.float64)
    if (counts < 2).any():
        logger.warning("Classes with fewer than 2 training spans get the weight of a class seen twice: %s", counts)
    inverse_logs = 1.0 / np.log(np.maximum(counts, 2.0))
    return torch.tensor(len(counts) * inverse_logs / inverse_logs.sum(), dtype=torch.float32)


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The keys of a collated batch that `MaralForSpanNER.forward` consumes."""
    return {key: batch[key] for key in MODEL_INPUT_NAMES}


class TargetBatchStream:
    """An endless, reshuffled stream of target-text batches, independent of the source dataloader (§6.4).

    Its position and random state are part of the trainer checkpoint, so a resumed run sees the same batches.
    """

    def __init__(self, dataset, collator: MaralDataCollator, batch_size: int, seed: int) -> None:
        if len(dataset) == 0:
            raise ValueError("The target dataset is empty: pass a `target_unlabeled_file` with sentences.")
        self.dataset = dataset
        self.collator = collator
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(len(dataset), generator=self.generator)
        self.position = 0

    def next_batch(self) -> dict[str, torch.Tensor]:
        """The next `batch_size` target sentences (a new permutation starts when one is used up)."""
        if self.position >= len(self.order):
            self.order = torch.randperm(len(self.dataset), generator=self.generator)
            self.position = 0
        indices = self.order[self.position : self.position + self.batch_size].tolist()
        self.position += len(indices)
        return self.collator([self.dataset[index] for index in indices])

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "order": self.order, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.order, self.position = state["order"], state["position"]


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

    def compute_loss(
        self, trainer: MaralTrainer, model, inputs: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Returns the loss of one step and the named loss terms to log."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores what `state_dict` returned."""


class SourceObjective(TrainingObjective):
    """Teacher stage: class-weighted span CE on source gold spans + `mlm_weight` x target MLM.

    Args:
        class_weights: `(num_labels,)` span class weights (see `class_weights_from_counts`), or `None`.
        mlm_weight: weight of the masked-LM auxiliary on target text (needs the trainer's target stream).
        mlm_mask_rate: masking probability.
        hide_masked_tokens: hide masked positions from attention.
        seed: seed of the masking generator.
    """

    name = "source_only"

    def __init__(
        self,
        class_weights: torch.Tensor | None = None,
        mlm_weight: float = 1e-3,
        mlm_mask_rate: float = 0.25,
        hide_masked_tokens: bool = True,
        seed: int = 0,
    ) -> None:
        self.class_weights = class_weights
        self.mlm_weight = mlm_weight
        self.mlm_mask_rate = mlm_mask_rate
        self.hide_masked_tokens = hide_masked_tokens
        self.mask_generator = torch.Generator().manual_seed(seed)

    def compute_loss(self, trainer, model, inputs):
        output = model(**model_inputs(inputs), return_projections=False)
        source_loss = span_cross_entropy(output.logits, inputs["labels"], inputs["span_mask"], self.class_weights)
        logs = {"source_loss": source_loss.item()}
        loss = source_loss
        if self.mlm_weight > 0 and trainer.target_stream is not None:
            mlm_loss = self.target_mlm_loss(trainer, model, trainer.target_stream.next_batch())
            logs["mlm_loss"] = mlm_loss.item()
            loss = loss + self.mlm_weight * mlm_loss
        return loss, logs

    def target_mlm_loss(self, trainer, model, target_batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Masked-LM loss on a batch of target sentences."""
        masked_ids, attention, labels = mask_tokens_for_mlm(
            target_batch["input_ids"],
            target_batch["attention_mask"],
            trainer.processing_class,
            self.mlm_mask_rate,
            self.mask_generator,
            self.hide_masked_tokens,
        )
        device = trainer.args.device
        return _unwrap(model).mlm_loss(masked_ids.to(device), attention.to(device), labels.to(device))

    def state_dict(self):
        return {"mask_generator": self.mask_generator.get_state()}

    def load_state_dict(self, state):
        self.mask_generator.set_state(state["mask_generator"])


def _unwrap(model):
    return getattr(model, "module", model)


class ObjectiveCallback(TrainerCallback):
    """Forwards the trainer's epoch events to its objective."""

    def __init__(self, trainer: MaralTrainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer.objective.on_train_begin(self.trainer)

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.trainer.objective.on_epoch_begin(self.trainer, int(math.floor(state.epoch or 0)))

    def on_epoch_end(self, args, state, control, **kwargs):
        self.trainer.objective.on_epoch_end(self.trainer, int(round(state.epoch or 0)) - 1)


class MaralTrainer(Trainer):
    """Trainer for `MaralForSpanNER` on source-language gold spans and target-language text.

    Args:
        model: a `MaralForSpanNER`.
        args: `MaralTrainingArguments`.
        train_dataset: labelled source dataset (`tokens`, `spans`).
        eval_dataset: a dataset or a dict of named datasets (e.g. `source_dev`, `target_test`); each is scored
            with span F1 and seqeval (`eval_<name>_span_f1`, `eval_<name>_seqeval_f1`, ...).
        target_dataset: unlabelled target dataset (`tokens`, optionally `gold_spans` for diagnostics only).
        objective: the `TrainingObjective`; defaults to `SourceObjective` built from `args` and `class_weights`.
        class_weights: span class weights of the source loss.
        processing_class: the fast tokenizer.
        **kwargs: passed to `transformers.Trainer`.
    """

    # Objectives return per-batch means and ignore `num_items_in_batch`; without this, `Trainer` (seeing the model's
    # `**kwargs`) would treat the loss as already scaled and sum the micro-batch losses under gradient accumulation.
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        model=None,
        args: MaralTrainingArguments | None = None,
        train_dataset=None,
        eval_dataset=None,
        target_dataset=None,
        objective: TrainingObjective | None = None,
        class_weights: torch.Tensor | None = None,
        processing_class=None,
        data_collator=None,
        **kwargs: Any,
    ) -> None:
        args = args if args is not None else MaralTrainingArguments(output_dir="outputs/maral")
        if processing_class is None:
            processing_class = model.tokenizer
        model.set_tokenizer(processing_class)
        config = model.config
        data_collator = data_collator or MaralDataCollator(
            processing_class, config.max_span_width, config.max_seq_length
        )
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )
        self.objective = objective or SourceObjective(
            class_weights=class_weights,
            mlm_weight=args.mlm_weight if target_dataset is not None else 0.0,
            mlm_mask_rate=args.mlm_mask_rate,
            hide_masked_tokens=args.mlm_hide_masked_tokens,
            seed=args.seed,
        )
        self.target_dataset = target_dataset
        self.target_stream = (
            TargetBatchStream(
                target_dataset,
                MaralDataCollator(processing_class, config.max_span_width, config.max_seq_length, label_column=None),
                args.target_batch_size or args.per_device_train_batch_size,
                args.seed + 1,
            )
            if target_dataset is not None
            else None
        )
        self._loss_terms: dict[str, list[float]] = defaultdict(list)
        self.include_per_label_metrics = False
        self.add_callback(ObjectiveCallback(self))

    # -- training -----------------------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Delegates to the objective and remembers its loss terms for the next log line."""
        loss, terms = self.objective.compute_loss(self, model, inputs)
        for name, value in terms.items():
            self._loss_terms[name].append(value)
        return (loss, None) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds the mean of each objective loss term since the last training log."""
        if "loss" in logs and self._loss_terms:
            logs.update({name: round(float(np.mean(values)), 6) for name, values in self._loss_terms.items()})
            self._loss_terms.clear()
        super().log(logs, start_time)

    # -- evaluation ---------------------------------------------------------------------------------------------

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Span F1 and seqeval P/R/F1 on one dataset or on each dataset of a dict (`<prefix>_<name>_...`)."""
        dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        if isinstance(dataset, str):
            dataset = self.eval_dataset[dataset]
        if isinstance(dataset, dict):
            metrics: dict[str, float] = {}
            for name, named_dataset in dataset.items():
                metrics.update(self.evaluate(named_dataset, ignore_keys, f"{metric_key_prefix}_{name}"))
            return metrics
        if dataset is None:
            raise ValueError("No evaluation dataset: pass `eval_dataset` to the trainer or to `evaluate`.")
        scores, _ = evaluate_model(
            self.model, dataset, self.args.per_device_eval_batch_size, decoding=self.args.eval_decoding
        )
        if not self.include_per_label_metrics:
            scores.pop("per_label")
        metrics = flatten_metrics(scores, metric_key_prefix)
        if self.state.epoch is not None:
            metrics["epoch"] = self.state.epoch
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    # -- checkpoints --------------------------------------------------------------------------------------------

    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        checkpoint_dir = os.path.join(self._get_output_dir(trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        if self.args.should_save and os.path.isdir(checkpoint_dir):
            torch.save(self.trainer_state_dict(), os.path.join(checkpoint_dir, TRAINER_STATE_FILE))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        state_path = os.path.join(resume_from_checkpoint, TRAINER_STATE_FILE)
        if os.path.isfile(state_path):
            self.load_trainer_state_dict(torch.load(state_path, weights_only=True))
        else:
            logger.warning(
                "%s has no %s: the objective's state starts fresh.", resume_from_checkpoint, TRAINER_STATE_FILE
            )

    def trainer_state_dict(self) -> dict[str, Any]:
        """Objective and target-stream state (saved next to every checkpoint)."""
        return {
            "objective": self.objective.name,
            "objective_state": self.objective.state_dict(),
            "target_stream": self.target_stream.state_dict() if self.target_stream is not None else None,
        }

    def load_trainer_state_dict(self, state: dict[str, Any]) -> None:
        if state["objective"] != self.objective.name:
            raise ValueError(
                f"The checkpoint was written by objective {state['objective']!r}, not {self.objective.name!r}: "
                "resume with the same `--method`."
            )
        self.objective.load_state_dict(state["objective_state"])
        if self.target_stream is not None and state["target_stream"] is not None:
            self.target_stream.load_state_dict(state["target_stream"])
