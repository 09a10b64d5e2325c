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

import hashlib
import json
import logging
import math
import os
import shutil
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from data_loading.collator import MaralDataCollator, mask_tokens_for_mlm
from evaluation_maral import evaluate_model, flatten_metrics, precision_recall_f1, span_f1_counts
from modeling_maral import (
    MODEL_INPUT_NAMES,
    SentencePrediction,
    decode_span_indices,
    decode_spans,
    span_cross_entropy,
)

logger = logging.getLogger(__name__)

TRAINER_STATE_FILE = "maral_trainer_state.pt"
# Every method of `OBJECTIVES` (the registry at the end of the objectives section), in the order of the docs.
METHODS = ("source_only", "self_training", "maral", "contproto", "pram", "mcl")


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class MaralSettings:
    """Hyper-parameters of MARAL's student stage (defaults of the reference scripts, §6.12 of the method notes).

    Args:
        tau: strength `τ` of the source prior adjustment (`τ log π_src`; the code uses `max(τ, τ_u)`).
        ul_tau: strength `τ_u` of the target prior adjustment, with priors re-estimated from pseudo-labels.
        target_loss_input: `probs` (the reference's log-softmax over probabilities) or `logits` (soft CE).
        update_soft_start: first epoch (from 0) with kNN counts and margins; refinement and anchor selection start
            one epoch later.
        ema_start, ema_end: EMA momentum of the pseudo-label refinement, linear over the epochs.
        knn_k: neighbours counted in last epoch's projection bank.
        knn_o_keep_rate: fraction of `O` spans kept in the bank.
        gmm_max_iter, gmm_reg_covar, gmm_tol: settings of the per-class 2-component GMM.
        student_mlm_weight: weight of the target MLM auxiliary in the student stage.
        mlm_mask_rate: probability that a target subword is masked (both stages).
        mlm_hide_masked_tokens: hide masked positions from attention (upstream behaviour).
        pseudo_label_pruning: overlap pruning of pseudo-labels: `legacy` (reference), `greedy` or `none`.
        prior_floor: smallest class prior before the logarithm (avoids `log 0`).
    """

    tau: float = field(default=1.0, metadata=_help("Source prior-adjustment strength τ (MARAL)."))
    ul_tau: float = field(default=0.1, metadata=_help("Target prior-adjustment strength τ_u (MARAL)."))
    target_loss_input: str = field(
        default="probs", metadata=_help("Target loss on 'probs' (reference double softmax) or 'logits'.")
    )
    update_soft_start: int = field(default=1, metadata=_help("First epoch with margins; refinement starts after."))
    ema_start: float = field(default=0.95, metadata=_help("EMA momentum of pseudo-label refinement at the start."))
    ema_end: float = field(default=0.80, metadata=_help("EMA momentum of pseudo-label refinement at the end."))
    knn_k: int = field(default=200, metadata=_help("Neighbours counted in the projection bank."))
    knn_o_keep_rate: float = field(default=0.03, metadata=_help("Fraction of O spans kept in the projection bank."))
    gmm_max_iter: int = field(default=10, metadata=_help("EM iterations of the anchor-selection GMM."))
    gmm_reg_covar: float = field(default=5e-4, metadata=_help("Variance regularisation of the anchor GMM."))
    gmm_tol: float = field(default=1e-2, metadata=_help("Convergence tolerance of the anchor GMM."))
    student_mlm_weight: float = field(default=1e-2, metadata=_help("Target MLM weight in the student stage."))
    mlm_mask_rate: float = field(default=0.25, metadata=_help("Probability that a target subword is masked."))
    mlm_hide_masked_tokens: bool = field(
        default=True, metadata=_help("Hide masked positions from attention, as the reference code does.")
    )
    pseudo_label_pruning: str = field(
        default="legacy", metadata=_help("Overlap pruning of pseudo-labels: legacy, greedy or none.")
    )
    prior_floor: float = field(default=1e-12, metadata=_help("Smallest class prior before the logarithm."))

    def validate_settings(self) -> None:
        """Raises a `ValueError` naming the flag of an invalid setting."""
        checks = [
            ("tau", self.tau >= 0, "must be >= 0"),
            ("ul_tau", self.ul_tau >= 0, "must be >= 0"),
            ("target_loss_input", self.target_loss_input in ("probs", "logits"), "must be probs or logits"),
            ("update_soft_start", self.update_soft_start >= 0, "must be >= 0"),
            ("ema_start", 0 <= self.ema_start <= 1, "must be in [0, 1]"),
            ("ema_end", 0 <= self.ema_end <= 1, "must be in [0, 1]"),
            ("knn_k", self.knn_k >= 1, "must be >= 1"),
            ("knn_o_keep_rate", 0 <= self.knn_o_keep_rate <= 1, "must be in [0, 1]"),
            ("gmm_max_iter", self.gmm_max_iter >= 1, "must be >= 1"),
            ("gmm_reg_covar", self.gmm_reg_covar > 0, "must be > 0"),
            ("student_mlm_weight", self.student_mlm_weight >= 0, "must be >= 0"),
            ("mlm_mask_rate", 0 < self.mlm_mask_rate < 1, "must be in (0, 1)"),
            ("pseudo_label_pruning", self.pseudo_label_pruning in ("legacy", "greedy", "none"), "unknown mode"),
            ("prior_floor", 0 < self.prior_floor < 1, "must be in (0, 1)"),
        ]
        for name, valid, requirement in checks:
            if not valid:
                raise ValueError(f"`--{name}` {requirement}; got {getattr(self, name)!r}.")


@dataclass
class RelatedMethodSettings:
    """Hyper-parameters of the related objectives (§8 of the method notes): ContProto, PRAM and MCL-NER.

    ContProto also uses `ema_start`/`ema_end` (its pseudo-label EMA β) and the model's `contrastive_temperature`
    (SupCon temperature, 0.07); MCL-NER uses `contrastive_temperature` for its InfoNCE terms.

    Args:
        contproto_prototype_momentum: EMA momentum α of ContProto's class prototypes.
        contproto_warmup_epochs: epochs before ContProto starts refining pseudo-labels towards prototypes.
        contproto_consistency_weight: weight of the symmetric-KL consistency between the two dropout views (L_reg).
        pram_prototype_momentum: EMA momentum λ of PRAM's class prototypes (per-batch class means of source spans).
        pram_temperature: temperature τ of PRAM's prototype-similarity distribution.
        pram_source_weight, pram_target_weight: weights α and β of the source and target consistency (JS) terms.
        pram_non_entity_rate: γ; at most γ x (number of entity spans) `O` spans enter a consistency term.
        mcl_confidence_threshold: MCL-NER trains on target spans whose teacher confidence reaches this value.
        mcl_contrast_weight: weight w₁ of the relation and sentence contrast terms (need code-switched data).
        mcl_distill_weight: weight w₂ of the squared error to the teacher's span distributions.
    """

    contproto_prototype_momentum: float = field(default=0.99, metadata=_help("ContProto prototype EMA momentum α."))
    contproto_warmup_epochs: int = field(
        default=1, metadata=_help("Epochs before ContProto refines pseudo-labels towards the prototypes.")
    )
    contproto_consistency_weight: float = field(
        default=0.0, metadata=_help("Weight of ContProto's symmetric-KL consistency between the two views.")
    )
    pram_prototype_momentum: float = field(default=0.9, metadata=_help("PRAM prototype EMA momentum λ."))
    pram_temperature: float = field(default=0.2, metadata=_help("PRAM similarity temperature τ."))
    pram_source_weight: float = field(default=1.0, metadata=_help("PRAM source consistency weight α."))
    pram_target_weight: float = field(default=1.0, metadata=_help("PRAM target consistency weight β."))
    pram_non_entity_rate: float = field(
        default=1.5, metadata=_help("PRAM non-entity down-sampling γ (O spans per entity span).")
    )
    mcl_confidence_threshold: float = field(
        default=0.9, metadata=_help("MCL-NER: smallest teacher confidence of a target span used for training.")
    )
    mcl_contrast_weight: float = field(
        default=0.1, metadata=_help("MCL-NER contrast weight w₁ (relation + sentence; needs code-switched data).")
    )
    mcl_distill_weight: float = field(default=1.0, metadata=_help("MCL-NER distillation (MSE) weight w₂."))

    def validate_related_settings(self) -> None:
        """Raises a `ValueError` naming the flag of an invalid setting."""
        checks = [
            ("contproto_prototype_momentum", 0 <= self.contproto_prototype_momentum < 1, "must be in [0, 1)"),
            ("contproto_warmup_epochs", self.contproto_warmup_epochs >= 0, "must be >= 0"),
            ("contproto_consistency_weight", self.contproto_consistency_weight >= 0, "must be >= 0"),
            ("pram_prototype_momentum", 0 <= self.pram_prototype_momentum < 1, "must be in [0, 1)"),
            ("pram_temperature", self.pram_temperature > 0, "must be > 0"),
            ("pram_source_weight", self.pram_source_weight >= 0, "must be >= 0"),
            ("pram_target_weight", self.pram_target_weight >= 0, "must be >= 0"),
            ("pram_non_entity_rate", self.pram_non_entity_rate >= 0, "must be >= 0"),
            ("mcl_confidence_threshold", 0 <= self.mcl_confidence_threshold <= 1, "must be in [0, 1]"),
            ("mcl_contrast_weight", self.mcl_contrast_weight >= 0, "must be >= 0"),
            ("mcl_distill_weight", self.mcl_distill_weight >= 0, "must be >= 0"),
        ]
        for name, valid, requirement in checks:
            if not valid:
                raise ValueError(f"`--{name}` {requirement}; got {getattr(self, name)!r}.")


@dataclass
class MaralTrainingArguments(TrainingArguments, MaralSettings, RelatedMethodSettings):
    """`TrainingArguments` plus the cross-lingual training settings (and `MaralSettings` for the student).

    Args:
        method: the training objective (`OBJECTIVES`): `source_only` trains the teacher alone (source CE + target
            MLM) and `pram` is end-to-end; `self_training`, `maral`, `contproto` and `mcl` add pseudo-labelling by the
            teacher and a student stage.
        mlm_weight: weight of the target-text MLM auxiliary in the teacher stage (1e-3 in the paper; 0 disables).
        target_batch_size: target sentences per step (defaults to `per_device_train_batch_size`).
        eval_decoding: overlap resolution in evaluation (`greedy`, `legacy`, `none`); the model's default if unset.
        teacher_epochs: epochs of the teacher stage (defaults to `num_train_epochs`).
        teacher_selection: which teacher epoch labels the target text: `source_dev` (best source-dev span F1) or
            `last`. The target gold is never used.
        teacher_checkpoint: a trained teacher (MARAL model directory) to use instead of training one.
        student_init: `base` (a fresh encoder, as in the paper) or `teacher` (start from the teacher's weights).
        self_training_rounds: student rounds; round r's student labels the target text for round r + 1.
        head_learning_rate: learning rate of every parameter outside the pretrained encoder (span representation
            embeddings, span classifier, projection head, MLM head); defaults to `learning_rate`. Freshly
            initialised heads often need a larger rate than the encoder when training budgets are small.
    """

    method: str = field(default="source_only", metadata=_help(f"Training objective: one of {', '.join(METHODS)}."))
    mlm_weight: float = field(default=1e-3, metadata=_help("Target MLM weight in the teacher stage (0 = off)."))
    target_batch_size: int | None = field(
        default=None, metadata=_help("Target sentences per step; defaults to per_device_train_batch_size.")
    )
    eval_decoding: str | None = field(
        default=None, metadata=_help("Decoding in evaluation: greedy, legacy or none (default: the model's).")
    )
    teacher_epochs: float | None = field(
        default=None, metadata=_help("Epochs of the teacher stage (default: num_train_epochs).")
    )
    teacher_selection: str = field(
        default="source_dev", metadata=_help("Teacher epoch that labels the target text: source_dev or last.")
    )
    teacher_checkpoint: str | None = field(
        default=None, metadata=_help("A trained teacher model directory to use instead of training one.")
    )
    student_init: str = field(default="base", metadata=_help("Student start: base (fresh encoder) or teacher."))
    self_training_rounds: int = field(default=1, metadata=_help("Number of student rounds."))
    head_learning_rate: float | None = field(
        default=None,
        metadata=_help("Learning rate of the new layers (span heads, embeddings, MLM head); default: learning_rate."),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.method not in METHODS:
            raise ValueError(f"`--method` must be one of {', '.join(METHODS)}; got {self.method!r}.")
        if self.mlm_weight < 0:
            raise ValueError(f"`--mlm_weight` must be >= 0; got {self.mlm_weight}.")
        if self.teacher_selection not in ("source_dev", "last"):
            raise ValueError(f"`--teacher_selection` must be source_dev or last; got {self.teacher_selection!r}.")
        if self.student_init not in ("base", "teacher"):
            raise ValueError(f"`--student_init` must be base or teacher; got {self.student_init!r}.")
        if self.self_training_rounds < 1:
            raise ValueError(f"`--self_training_rounds` must be >= 1; got {self.self_training_rounds}.")
        if self.head_learning_rate is not None and self.head_learning_rate <= 0:
            raise ValueError(f"`--head_learning_rate` must be > 0; got {self.head_learning_rate}.")
        if self.teacher_epochs is not None and self.teacher_epochs <= 0:
            raise ValueError(f"`--teacher_epochs` must be > 0; got {self.teacher_epochs}.")
        self.validate_settings()
        self.validate_related_settings()
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


# ---------------------------------------------------------------------------------------------------------------
# Multi-process consistency (torchrun / accelerate launch): every process holds the same self-training state
# ---------------------------------------------------------------------------------------------------------------


def process_rank_and_count() -> tuple[int, int]:
    """`(rank, world_size)` of this process; `(0, 1)` without `torch.distributed`."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of `tensor` over all processes (the tensor itself with one process)."""
    if process_rank_and_count()[1] == 1:
        return tensor
    device = torch.device("cuda", torch.cuda.current_device()) if torch.distributed.get_backend() == "nccl" else None
    reduced = tensor.to(device) if device is not None else tensor.clone()
    torch.distributed.all_reduce(reduced)
    return reduced.to(tensor.device)


def all_gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """The rows of `tensor` from all processes, concatenated in rank order (sizes may differ between processes)."""
    if process_rank_and_count()[1] == 1:
        return tensor
    gathered: list[Any] = [None] * process_rank_and_count()[1]
    torch.distributed.all_gather_object(gathered, tensor.detach().cpu())
    return torch.cat(gathered).to(tensor.device)


def wait_for_all_processes() -> None:
    """A barrier (no-op with one process): files written by the main process are visible to all after it."""
    if process_rank_and_count()[1] > 1:
        torch.distributed.barrier()


def batch_to_device(batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    """Every tensor of a collated batch on `device` (tensors already there are not copied)."""
    return {key: value.to(device) for key, value in batch.items()}


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The keys of a collated batch that `MaralForSpanNER.forward` consumes."""
    return {key: batch[key] for key in MODEL_INPUT_NAMES}


class TargetBatchStream:
    """An endless, reshuffled stream of target-text batches, independent of the source dataloader (§6.4).

    Its position and random state are part of the trainer checkpoint, so a resumed run sees the same batches. With
    several processes, all draw the same global batch of `batch_size x world_size` sentences and each takes its own
    slice, so 2 processes x `b` see the sentences 1 process x `2b` sees.
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
        rank, world_size = process_rank_and_count()
        global_size = self.batch_size * world_size
        remaining = len(self.order) - self.position
        if remaining <= 0 or (world_size > 1 and remaining < global_size):
            self.order = torch.randperm(len(self.dataset), generator=self.generator)
            self.position = 0
        indices = self.order[self.position : self.position + global_size]
        self.position += len(indices)
        local = indices[rank * self.batch_size : (rank + 1) * self.batch_size].tolist()
        columns = self.dataset[local]  # one batched read instead of one per row
        return self.collator([dict(zip(columns, values)) for values in zip(*columns.values())])

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


# ---------------------------------------------------------------------------------------------------------------
# Pseudo-labels
# ---------------------------------------------------------------------------------------------------------------


class PseudoLabelStore:
    """Soft pseudo-labels of every scorable target span, keyed by sentence id.

    Spans are stored flat (sentence after sentence, each in enumeration order) with row offsets per sentence,
    so memory grows with the number of real spans, not with `N x 512 x C` padding.

    Attributes:
        sentence_ids: `(N,)` sentence ids in storage order.
        offsets: `(N + 1,)` first row of each sentence.
        span_words: `(S, 2)` inclusive word indices of every span (int16, or int32 for sentences of 32k+ words).
        probabilities: `(S, C)` soft pseudo-labels `Q`.
        reliable: `(S,)` anchor mask used by the target loss.
        visited: `(S,)` spans seen by the student since the store was created.
        logit_cache: `(S,)` vMF logit of each span's pseudo-class at its last visit (the entry of `Λ` that anchor
            selection reads; the upstream code keeps all `C` logits, of which it only ever reads this one).
    """

    def __init__(
        self,
        sentence_ids: torch.Tensor,
        span_counts: torch.Tensor,
        span_words: torch.Tensor,
        probabilities: torch.Tensor,
    ) -> None:
        if len(torch.unique(sentence_ids)) != len(sentence_ids):
            raise ValueError("Pseudo-labels need unique sentence ids; the target dataset repeats some.")
        self.sentence_ids = sentence_ids.long()
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(span_counts.long(), 0)])
        # Word indices fit in 16 bits for any realistic sentence (4 bytes per span instead of 16).
        small = len(span_words) == 0 or int(span_words.max()) < torch.iinfo(torch.int16).max
        self.span_words = span_words.to(torch.int16 if small else torch.int32)
        self.probabilities = probabilities.float()
        num_spans = len(probabilities)
        self.reliable = torch.ones(num_spans, dtype=torch.bool)
        self.visited = torch.zeros(num_spans, dtype=torch.bool)
        self.logit_cache = torch.ones(num_spans)
        self._sorted_ids, self._sorted_rows = torch.sort(self.sentence_ids)

    @classmethod
    def from_predictions(
        cls, sentence_ids: list[int], predictions: list[SentencePrediction], pruning: str = "legacy"
    ) -> PseudoLabelStore:
        """Soft labels from a model's predictions (§5): kept entity spans keep their distribution, every other
        span (predicted `O`, or removed by overlap pruning) becomes one-hot `O`."""
        rows, counts, words = [], [], []
        for prediction in predictions:
            labels = np.zeros_like(prediction.probabilities)
            labels[:, 0] = 1.0
            kept = decode_span_indices(prediction.span_words, prediction.probabilities, pruning)
            labels[kept] = prediction.probabilities[kept]
            rows.append(labels)
            counts.append(len(labels))
            words.append(prediction.span_words)
        return cls(
            torch.tensor(sentence_ids, dtype=torch.long),
            torch.tensor(counts, dtype=torch.long),
            torch.from_numpy(np.concatenate(words)),
            torch.from_numpy(np.concatenate(rows)),
        )

    def __len__(self) -> int:
        return len(self.probabilities)

    @property
    def num_labels(self) -> int:
        return self.probabilities.size(1)

    def batch_rows(self, sentence_ids: torch.Tensor, span_mask: torch.Tensor) -> torch.Tensor:
        """Store row of every span of a collated batch (-1 for padding).

        Raises:
            ValueError: if a sentence is unknown or its span count differs from the stored one (the tokenizer,
                `max_span_width` or `max_seq_length` changed between labelling and training).
        """
        position = torch.searchsorted(self._sorted_ids, sentence_ids.cpu())
        position = position.clamp(max=len(self._sorted_ids) - 1)
        if not torch.equal(self._sorted_ids[position], sentence_ids.cpu()):
            raise ValueError("A target batch holds sentences without pseudo-labels: relabel the target text.")
        sentence_rows = self._sorted_rows[position]
        starts, ends = self.offsets[sentence_rows], self.offsets[sentence_rows + 1]
        counts = span_mask.sum(1).cpu()
        if not torch.equal(counts, ends - starts):
            raise ValueError(
                "The spans of a target batch differ from the pseudo-labelled ones: use the same tokenizer, "
                "max_span_width and max_seq_length for labelling and training."
            )
        columns = torch.arange(span_mask.size(1))
        rows = starts.unsqueeze(1) + columns.unsqueeze(0)
        return torch.where(span_mask.cpu(), rows, -1)

    def sentence_slices(self):
        """`(sentence_id, row_start, row_end)` for every sentence."""
        for index, sentence_id in enumerate(self.sentence_ids.tolist()):
            yield sentence_id, int(self.offsets[index]), int(self.offsets[index + 1])

    def class_mass(self) -> torch.Tensor:
        """Sum of the soft labels of all spans per class."""
        return self.probabilities.sum(0)

    def nbytes(self) -> int:
        """Bytes held by the store's tensors."""
        tensors = (self.sentence_ids, self.offsets, self.span_words, self.probabilities, self.reliable)
        return sum(t.element_size() * t.nelement() for t in (*tensors, self.visited, self.logit_cache))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "sentence_ids": self.sentence_ids,
            "offsets": self.offsets,
            "span_words": self.span_words,
            "probabilities": self.probabilities,
            "reliable": self.reliable,
            "visited": self.visited,
            "logit_cache": self.logit_cache,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> PseudoLabelStore:
        store = cls(state["sentence_ids"], state["offsets"].diff(), state["span_words"], state["probabilities"])
        store.reliable, store.visited, store.logit_cache = state["reliable"], state["visited"], state["logit_cache"]
        if store.logit_cache.dim() == 2:  # a checkpoint with the full `(S, C)` cache: keep what selection reads
            store.logit_cache = store.logit_cache.gather(1, store.probabilities.argmax(1, keepdim=True)).squeeze(1)
        return store

    def save(self, path: str | os.PathLike) -> None:
        """Writes the store atomically (temporary file, then rename)."""
        temporary = f"{path}.tmp"
        torch.save(self.state_dict(), temporary)
        os.replace(temporary, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> PseudoLabelStore:
        return cls.from_state_dict(torch.load(path, weights_only=True))

    def oracle_metrics(
        self, gold_by_sentence: dict[int, list[tuple[int, int, int]]], pruning: str
    ) -> dict[str, float]:
        """Span P/R/F1 of the current hard pseudo-labels against gold spans (diagnostics only)."""
        predictions, golds = [], []
        probabilities = self.probabilities.numpy()
        words = self.span_words.numpy()
        for sentence_id, start, end in self.sentence_slices():
            entities = decode_spans(words[start:end], probabilities[start:end], pruning)
            predictions.append(SentencePrediction(entities, words[start:end], probabilities[start:end], None))
            golds.append(gold_by_sentence.get(sentence_id, []))
        correct, predicted, gold = span_f1_counts(predictions, golds)
        precision, recall, f1 = precision_recall_f1(sum(correct.values()), sum(predicted.values()), sum(gold.values()))
        return {"precision": precision, "recall": recall, "f1": f1}


@torch.no_grad()
def generate_pseudo_labels(model, dataset, batch_size: int = 32, pruning: str = "legacy") -> PseudoLabelStore:
    """Labels every scorable span of the target `dataset` with `model`'s current prediction head."""
    predictions = _unwrap(model).predict_words(dataset["tokens"], batch_size=batch_size, decoding=pruning)
    return PseudoLabelStore.from_predictions(dataset["sentence_id"], predictions, pruning)


# ---------------------------------------------------------------------------------------------------------------
# Progressive adaptation: reliable-anchor selection and margins
# ---------------------------------------------------------------------------------------------------------------


def fit_two_gaussians(
    values: torch.Tensor, max_iter: int = 10, reg_covar: float = 5e-4, tol: float = 1e-2
) -> torch.Tensor:
    """Posterior of the higher-mean component of a 1-D, 2-component Gaussian mixture (EM, k-means start).

    Mirrors scikit-learn's `GaussianMixture(2, max_iter, reg_covar, tol)` on one feature, but deterministic:
    k-means starts from the minimum and maximum.

    Args:
        values: `(M,)` scores, M ≥ 2 and not all equal.

    Returns:
        `(M,)` posterior probability of belonging to the component with the larger mean.
    """
    x = values.to(torch.float64)
    centers = torch.stack([x.min(), x.max()])
    for _ in range(10):
        assignment = (x.unsqueeze(1) - centers).abs().argmin(1)
        centers = torch.stack([x[assignment == k].mean() if (assignment == k).any() else centers[k] for k in (0, 1)])
    responsibilities = F.one_hot(assignment, 2).to(torch.float64)
    previous_bound = -math.inf
    for _ in range(max_iter):
        weights = responsibilities.sum(0) + 10 * torch.finfo(torch.float64).eps
        means = (responsibilities * x.unsqueeze(1)).sum(0) / weights
        variances = (responsibilities * (x.unsqueeze(1) - means) ** 2).sum(0) / weights + reg_covar
        log_joint = (
            torch.log(weights / len(x))
            - 0.5 * torch.log(2 * math.pi * variances)
            - 0.5 * (x.unsqueeze(1) - means) ** 2 / variances
        )
        log_norm = torch.logsumexp(log_joint, dim=1, keepdim=True)
        responsibilities = torch.exp(log_joint - log_norm)
        bound = log_norm.mean().item()
        if abs(bound - previous_bound) < tol:
            break
        previous_bound = bound
    return responsibilities[:, int(torch.argmax(means))]


def select_reliable_spans(
    store: PseudoLabelStore, max_iter: int = 10, reg_covar: float = 5e-4, tol: float = 1e-2
) -> torch.Tensor:
    """Reliable anchors (§6.6): per pseudo-class, a 2-component GMM on min-max-normalised cached logits of that
    class; a span is reliable when the higher-mean component's posterior exceeds 0.5.

    Classes with one span or constant scores keep all their spans; spans never visited are not reliable.
    """
    hard_labels = store.probabilities.argmax(1)
    scores = store.logit_cache.double()
    reliable = torch.zeros(len(store), dtype=torch.bool)
    for label in range(store.num_labels):
        members = torch.nonzero(store.visited & (hard_labels == label)).squeeze(1)
        if len(members) == 0:
            continue
        class_scores = scores[members]
        low, high = class_scores.min(), class_scores.max()
        if len(members) < 2 or high - low <= 0:
            reliable[members] = True
            continue
        posterior = fit_two_gaussians((class_scores - low) / (high - low), max_iter, reg_covar, tol)
        reliable[members] = posterior > 0.5
    return reliable


def ema_momentum(epoch: int, num_epochs: int, start: float, end: float, first_epoch: int) -> float:
    """Linear EMA momentum from `start` (at `first_epoch`) to `end` (at `num_epochs`), §6.7.

    Example:
        >>> round(ema_momentum(2, 20, 0.95, 0.80, 1), 3), round(ema_momentum(19, 20, 0.95, 0.80, 1), 3)
        (0.942, 0.808)
    """
    span = max(num_epochs - first_epoch, 1)
    return start + (epoch - first_epoch) / span * (end - start)


def class_margins(sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Class-wise margins `Σ value / (count + 1)` (one extra zero per class, §6.8)."""
    return sums / (counts + 1)


def l1_normalize(values: torch.Tensor) -> torch.Tensor:
    """Rows divided by their sum (all-zero rows stay zero)."""
    return values / values.sum(-1, keepdim=True).clamp(min=1e-12)


def refinement_targets(
    logits: torch.Tensor, neighbour_counts: torch.Tensor, proto_margins: torch.Tensor, neighbour_margins: torch.Tensor
) -> torch.Tensor:
    """Update direction `u` of §6.7: average of the global (logit > prototype margin, `O` forced when it is the
    argmax) and local (neighbour count > neighbour margin) class masks, L1-normalised."""
    global_view = (logits > proto_margins).to(logits.dtype)
    global_view[:, 0] = torch.where(logits.argmax(1) == 0, 1.0, global_view[:, 0])
    local_view = (neighbour_counts > neighbour_margins).to(logits.dtype)
    return l1_normalize((l1_normalize(global_view) + l1_normalize(local_view)) / 2)


def knn_label_counts(queries: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, k: int, num_labels: int):
    """Label counts among the `k` most similar bank entries (inner product = cosine for unit vectors)."""
    k = min(k, len(bank))
    neighbours = (queries @ bank.T).topk(k, dim=1).indices
    return F.one_hot(bank_labels[neighbours], num_labels).sum(1).to(queries.dtype)


def soft_cross_entropy(logits: torch.Tensor, soft_labels: torch.Tensor) -> torch.Tensor:
    """Mean over rows of `-Σ_c q_c log softmax(logits)_c` (0, not NaN, for no rows).

    Example:
        >>> soft_cross_entropy(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]])).item()  # -log(1/2)
        0.6931471824645996
    """
    if len(logits) == 0:
        return logits.sum() * 0.0
    return -(soft_labels * logits.log_softmax(-1)).sum(-1).mean()


def target_span_loss(
    adjusted_logits: torch.Tensor,
    soft_labels: torch.Tensor,
    kept: torch.Tensor,
    filtered: torch.Tensor,
    loss_input: str = "probs",
) -> torch.Tensor:
    """Target loss of §6.5: soft cross-entropy on the selected spans, towards `O` for the filtered ones.

    Args:
        adjusted_logits: `(M, C)` prior-adjusted vMF logits.
        soft_labels: `(M, C)` pseudo-labels.
        kept: `(M,)` spans trained towards their soft label.
        filtered: `(M,)` entity spans removed by overlap pruning, trained towards `O`.
        loss_input: `"probs"` applies log-softmax to the *probabilities* (the reference code's double softmax, a
            weak, noise-robust signal); `"logits"` is plain soft cross-entropy.
    """
    targets = torch.where(
        filtered.unsqueeze(1),
        F.one_hot(torch.zeros_like(filtered, dtype=torch.long), soft_labels.size(1)).to(soft_labels),
        soft_labels,
    )
    selected = kept | filtered
    scores = adjusted_logits.softmax(-1) if loss_input == "probs" else adjusted_logits
    return soft_cross_entropy(scores[selected], targets[selected])


# ---------------------------------------------------------------------------------------------------------------
# MARAL student objective
# ---------------------------------------------------------------------------------------------------------------


class PseudoLabelObjective(TrainingObjective):
    """Shared part of the student objectives that train on a `PseudoLabelStore`: the store, the target-batch row
    lookup, once-per-epoch hook guards (a resumed epoch is not started twice), per-epoch history and state.

    Args:
        store: the target pseudo-labels.
        class_weights: `(C,)` source span class weights.
        pruning: overlap pruning used to decode pseudo-labels (oracle diagnostics).
        gold_by_sentence: optional gold spans of the target text, for the oracle diagnostics only.
    """

    def __init__(
        self,
        store: PseudoLabelStore,
        class_weights: torch.Tensor | None,
        pruning: str,
        gold_by_sentence: dict[int, list[tuple[int, int, int]]] | None = None,
    ) -> None:
        self.store = store
        self.class_weights = class_weights
        self.pruning = pruning
        self.gold_by_sentence = gold_by_sentence
        self.epoch = -1
        self.finished_epoch = -1
        self.history: list[dict[str, Any]] = []
        self.loss_term_sums: dict[str, list[float]] = {}  # name -> [sum, steps] over the current epoch
        self._touched_rows: list[torch.Tensor] = []  # store rows read or changed in this step
        self._pending_sums: dict[str, torch.Tensor] = {}  # this step's additions to per-epoch sums

    def on_epoch_begin(self, trainer, epoch):
        if epoch > self.epoch:  # not when resuming inside an epoch whose start-of-epoch work is done
            self._finish_pending_epoch(trainer)
            self.epoch = epoch
            self.loss_term_sums = {}
            self.start_epoch(trainer, epoch)

    def observe_loss_terms(self, terms):
        for name, value in terms.items():
            total = self.loss_term_sums.setdefault(name, [0.0, 0])
            total[0] += value
            total[1] += 1

    def on_train_end(self, trainer):
        self._finish_pending_epoch(trainer)

    def _finish_pending_epoch(self, trainer) -> None:
        """After resuming from a checkpoint saved at the last step of an epoch (`Trainer` saves step checkpoints
        before the epoch-end callbacks), that epoch's end-of-epoch work is still to do."""
        if self.finished_epoch < self.epoch:
            self.on_epoch_end(trainer, self.epoch)

    def on_epoch_end(self, trainer, epoch):
        if epoch > self.finished_epoch:
            self.finished_epoch = epoch
            self.end_epoch(trainer, epoch)
            record = {"epoch": epoch, **self.diagnostics(trainer)}
            record["loss_terms"] = {name: total / steps for name, (total, steps) in self.loss_term_sums.items()}
            record["visited_fraction"] = float(self.store.visited.float().mean())
            if self.gold_by_sentence is not None:
                record["pseudo_label_oracle"] = self.store.oracle_metrics(self.gold_by_sentence, self.pruning)
            self.history.append(record)

    def start_epoch(self, trainer, epoch: int) -> None:
        """Start-of-epoch work (called once per epoch)."""

    def end_epoch(self, trainer, epoch: int) -> None:
        """End-of-epoch work (called once per epoch, before the diagnostics)."""

    def diagnostics(self, trainer) -> dict[str, Any]:
        """Objective-specific entries of the per-epoch record."""
        return {}

    def target_forward(self, model, batch: dict[str, torch.Tensor], device, return_projections: bool = True):
        """Scores a target batch and looks up its pseudo-label rows (marking them visited).

        Returns:
            `(output, span_mask, rows)` with `rows` the store rows of the batch's real spans, in mask order.
        """
        batch = batch_to_device(batch, device)
        output = model(**model_inputs(batch), return_projections=return_projections)
        mask = batch["span_mask"]
        rows = self.store.batch_rows(batch["sentence_ids"], mask)[mask.cpu()]
        self.store.visited[rows] = True
        self._touched_rows.append(rows)
        return output, mask, rows

    def add_to_sum(self, name: str, value: torch.Tensor) -> None:
        """Adds `value` to the per-epoch sum attribute `name` at the end of the step (summed over processes)."""
        value = value.detach().double().cpu()
        self._pending_sums[name] = self._pending_sums[name] + value if name in self._pending_sums else value

    def after_step(self) -> None:
        """Adds the step's sums and, with several processes, copies every process's store rows to all."""
        for name, value in self._pending_sums.items():
            setattr(self, name, getattr(self, name) + all_reduce_sum(value))
        self._pending_sums = {}
        rows = torch.cat(self._touched_rows) if self._touched_rows else torch.zeros(0, dtype=torch.long)
        self._touched_rows = []
        if process_rank_and_count()[1] > 1:
            all_rows = all_gather_rows(rows)
            self.store.probabilities[all_rows] = all_gather_rows(self.store.probabilities[rows])
            self.store.logit_cache[all_rows] = all_gather_rows(self.store.logit_cache[rows])
            self.store.visited[all_rows] = True

    def state_dict(self):
        return {
            "store": self.store.state_dict(),
            "epoch": torch.tensor(self.epoch),
            "finished_epoch": torch.tensor(self.finished_epoch),
            "history": json.dumps(self.history),
            "loss_term_sums": json.dumps(self.loss_term_sums),
        }

    def load_state_dict(self, state):
        self.store = PseudoLabelStore.from_state_dict(state["store"])
        self.epoch, self.finished_epoch = int(state["epoch"]), int(state["finished_epoch"])
        self.history = json.loads(state["history"])
        self.loss_term_sums = json.loads(state.get("loss_term_sums", "{}"))


class SelfTrainingObjective(PseudoLabelObjective):
    """Plain self-training baseline (ContProto's "w/o proto & cl"): the teacher's soft pseudo-labels stay fixed;
    the student's MLP classifier is trained on source class-weighted CE + soft CE on every target span.
    No contrastive head, no anchor selection, no refinement.
    """

    name = "self_training"

    def compute_loss(self, trainer, model, inputs):
        output = model(**model_inputs(inputs), return_projections=False)
        source_loss = span_cross_entropy(output.logits, inputs["labels"], inputs["span_mask"], self.class_weights)
        device = trainer.args.device
        target_batch = trainer.target_stream.next_batch()
        target_output, mask, rows = self.target_forward(model, target_batch, device, return_projections=False)
        soft_labels = self.store.probabilities[rows].to(device)
        target_loss = soft_cross_entropy(target_output.logits[mask].float(), soft_labels)
        loss = source_loss + target_loss
        return loss, {"source_loss": source_loss.item(), "target_loss": target_loss.item()}


class MaralObjective(PseudoLabelObjective):
    """MARAL's student stage (§6): vMF head with prior-adjusted logits on source gold and target pseudo-labels,
    progressive adaptation (GMM anchors, prototype and neighbour margins, EMA refinement) and target MLM.

    Args:
        store: the target pseudo-labels (refined in place during training).
        source_class_counts: `(C,)` span counts per class of the source training set (source priors).
        class_weights: `(C,)` source span class weights.
        settings: `MaralSettings`.
        num_epochs: epochs of the stage (for the EMA schedule).
        seed: seed of the estimator initialisation, the bank sampling and the MLM masking.
        gold_by_sentence: optional gold spans of the target text, for the oracle diagnostics only.
    """

    name = "maral"

    def __init__(
        self,
        store: PseudoLabelStore,
        source_class_counts: np.ndarray,
        class_weights: torch.Tensor | None,
        settings: MaralSettings,
        num_epochs: int,
        seed: int = 0,
        gold_by_sentence: dict[int, list[tuple[int, int, int]]] | None = None,
    ) -> None:
        super().__init__(store, class_weights, settings.pseudo_label_pruning, gold_by_sentence)
        self.settings = settings
        self.num_epochs = num_epochs
        self.source_tau = max(settings.tau, settings.ul_tau)
        num_labels = store.num_labels
        self.source_log_prior = torch.log(
            self._normalize_prior(torch.as_tensor(source_class_counts, dtype=torch.float64))
        )
        self.target_prior = self._normalize_prior(store.class_mass().double())
        self.proto_margins = torch.zeros(num_labels)
        self.neighbour_margins = torch.zeros(num_labels)
        self.bank = torch.zeros(0, 0)
        self.bank_labels = torch.zeros(0, dtype=torch.long)
        self.estimator_generator = torch.Generator().manual_seed(seed)
        self.sampling_generator = torch.Generator().manual_seed(seed + 1)
        self.mask_generator = torch.Generator().manual_seed(seed + 2)
        self._reset_epoch_accumulators()

    # -- epoch hooks ---------------------------------------------------------------------------------------------

    def on_train_begin(self, trainer):
        model = _unwrap(trainer.model)
        model.config.prediction_head = "vmf"
        if self.epoch < 0:
            model.reset_vmf_estimator(0, self.estimator_generator)
            model.reset_vmf_estimator(1, self.estimator_generator)

    def start_epoch(self, trainer, epoch):
        _unwrap(trainer.model).rotate_vmf_estimators(self.estimator_generator)
        if epoch > self.settings.update_soft_start:
            self.store.reliable = select_reliable_spans(
                self.store, self.settings.gmm_max_iter, self.settings.gmm_reg_covar, self.settings.gmm_tol
            )
        self._reset_epoch_accumulators()

    def end_epoch(self, trainer, epoch):
        if self.prior_sum.sum() > 0:
            self.target_prior = self._normalize_prior(self.prior_sum)
        if epoch >= self.settings.update_soft_start:
            self.proto_margins = class_margins(self.proto_sums, self.proto_counts).float()
        self.bank = torch.cat(self.bank_features) if self.bank_features else self.bank
        self.bank_labels = torch.cat(self.bank_label_list) if self.bank_label_list else self.bank_labels
        if epoch >= self.settings.update_soft_start and self.neighbour_counts.sum() > 0:
            self.neighbour_margins = class_margins(self.neighbour_sums, self.neighbour_counts).float()

    def diagnostics(self, trainer) -> dict[str, Any]:
        labels = _unwrap(trainer.model).config.labels
        hard = self.store.probabilities.argmax(1)
        return {
            "target_prior": dict(zip(labels, self.target_prior.tolist())),
            "proto_margins": dict(zip(labels, self.proto_margins.tolist())),
            "neighbour_margins": dict(zip(labels, self.neighbour_margins.tolist())),
            "reliable_fraction": {
                label: float(self.store.reliable[hard == index].float().mean()) if (hard == index).any() else None
                for index, label in enumerate(labels)
            },
            "bank_size": len(self.bank),
        }

    # -- the step ------------------------------------------------------------------------------------------------

    def compute_loss(self, trainer, model, inputs):
        core = _unwrap(model)
        device = trainer.args.device
        source_loss, source_bank = self._source_step(core, model, inputs)
        target_batch = trainer.target_stream.next_batch()
        target_loss, target_bank = self._target_step(core, model, target_batch, device)
        self._add_to_bank(*source_bank)
        self._add_to_bank(*target_bank)
        loss = source_loss + target_loss
        logs = {"source_loss": source_loss.item(), "target_loss": target_loss.item()}
        if self.settings.student_mlm_weight > 0:
            mlm_loss = self._mlm_loss(core, target_batch, trainer, device)
            loss = loss + self.settings.student_mlm_weight * mlm_loss
            logs["mlm_loss"] = mlm_loss.item()
        return loss, logs

    def _source_step(self, core, model, inputs):
        output = model(**model_inputs(inputs))
        mask = inputs["span_mask"]
        labels = inputs["labels"].clamp(min=0)
        core.update_vmf_statistics(output.projections[mask], labels[mask])
        logits = core.vmf_logits(output.projections)
        adjusted = logits + self.source_tau * self.source_log_prior.to(logits)
        loss = span_cross_entropy(adjusted, labels, mask, self.class_weights)
        keep = mask & ((labels != 0) | self._bernoulli(mask.shape, mask.device))
        return loss, (output.projections[keep].detach(), labels[keep])

    def _target_step(self, core, model, batch, device):
        batch = batch_to_device(batch, device)  # moved once; target_forward reuses these tensors
        output, mask, real_rows = self.target_forward(model, batch, device)
        soft = self.store.probabilities[real_rows].to(device)
        hard = soft.argmax(1)
        projections = output.projections[mask]
        core.update_vmf_statistics(projections, hard)
        logits = core.vmf_logits(projections)
        detached = logits.detach()
        self.add_to_sum(
            "proto_sums",
            torch.zeros_like(self.proto_sums).index_add_(
                0, hard.cpu(), detached.gather(1, hard.unsqueeze(1)).squeeze(1).double().cpu()
            ),
        )
        self.add_to_sum("proto_counts", torch.bincount(hard.cpu(), minlength=len(self.proto_counts)))
        if self.epoch >= self.settings.update_soft_start and len(self.bank):
            counts = knn_label_counts(
                projections.detach(),
                self.bank.to(device),
                self.bank_labels.to(device),
                self.settings.knn_k,
                self.store.num_labels,
            )
            self.add_to_sum(
                "neighbour_sums",
                torch.zeros_like(self.neighbour_sums).index_add_(
                    0, hard.cpu(), counts.gather(1, hard.unsqueeze(1)).squeeze(1).double().cpu()
                ),
            )
            self.add_to_sum("neighbour_counts", torch.bincount(hard.cpu(), minlength=len(self.neighbour_counts)))
            if self.epoch > self.settings.update_soft_start:
                soft = self._refine(real_rows, soft, detached, counts)
        self._cache_pseudo_class_logits(real_rows, detached, soft)
        self.add_to_sum("prior_sum", soft.sum(0))
        loss = self._target_loss(batch, mask, real_rows, soft, logits)
        keep = (hard != 0) | self._bernoulli(hard.shape, hard.device)
        return loss, (projections[keep].detach(), hard[keep])

    def _cache_pseudo_class_logits(self, real_rows, logits, soft):
        """Caches each span's logit for its pseudo-class after this step's refinement (`soft` holds the store's rows
        as they now are), the score anchor selection reads at the next epoch start (the pseudo-labels only change
        while their span is in a batch)."""
        pseudo_class_logits = logits.gather(1, soft.argmax(1, keepdim=True)).squeeze(1)
        self.store.logit_cache[real_rows] = pseudo_class_logits.float().cpu()

    def _refine(self, real_rows, soft, logits, neighbour_counts):
        """EMA-moves the soft labels of unreliable spans towards the classes that pass the margins (§6.7)."""
        device = soft.device
        directions = refinement_targets(
            logits.float(), neighbour_counts.float(), self.proto_margins.to(device), self.neighbour_margins.to(device)
        )
        directions[self.store.reliable[real_rows].to(device)] = 0
        momentum = ema_momentum(
            self.epoch,
            self.num_epochs,
            self.settings.ema_start,
            self.settings.ema_end,
            self.settings.update_soft_start,
        )
        moved = directions.sum(1) > 0
        refined = torch.where(moved.unsqueeze(1), l1_normalize(momentum * soft + (1 - momentum) * directions), soft)
        self.store.probabilities[real_rows] = refined.cpu()
        return refined

    def _target_loss(self, batch, mask, real_rows, soft, logits):
        reliable = self.store.reliable[real_rows].to(soft.device)
        pruned_entity = self._pruned_entity_mask(batch, mask, soft)
        hard = soft.argmax(1)
        kept = reliable & (pruned_entity | (hard == 0))
        filtered = reliable & (hard != 0) & ~pruned_entity
        adjusted = logits + self.settings.ul_tau * torch.log(self.target_prior).to(logits)
        return target_span_loss(adjusted, soft, kept, filtered, self.settings.target_loss_input)

    def _pruned_entity_mask(self, batch, mask, soft):
        """True for the real spans that survive overlap pruning of the soft labels as entities."""
        counts = mask.sum(1).tolist()
        soft_numpy = soft.detach().cpu().numpy()
        words = batch["span_words"].cpu().numpy()
        survived = np.zeros(len(soft_numpy), dtype=bool)
        start = 0
        for row, count in enumerate(counts):
            kept = decode_span_indices(
                words[row, :count], soft_numpy[start : start + count], self.settings.pseudo_label_pruning
            )
            survived[np.asarray(kept, dtype=np.int64) + start] = True
            start += count
        return torch.from_numpy(survived).to(soft.device)

    def _mlm_loss(self, core, batch, trainer, device):
        masked_ids, attention, labels = mask_tokens_for_mlm(
            batch["input_ids"],
            batch["attention_mask"],
            trainer.processing_class,
            self.settings.mlm_mask_rate,
            self.mask_generator,
            self.settings.mlm_hide_masked_tokens,
        )
        return core.mlm_loss(masked_ids.to(device), attention.to(device), labels.to(device))

    # -- helpers -------------------------------------------------------------------------------------------------

    def _normalize_prior(self, mass: torch.Tensor) -> torch.Tensor:
        prior = mass.double() / mass.sum().clamp(min=1e-300)
        return prior.clamp(min=self.settings.prior_floor).float()

    def _bernoulli(self, shape, device) -> torch.Tensor:
        draws = torch.rand(shape, generator=self.sampling_generator)
        return (draws < self.settings.knn_o_keep_rate).to(device)

    def _add_to_bank(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        self.bank_features.append(all_gather_rows(features.float().cpu()))
        self.bank_label_list.append(all_gather_rows(labels.cpu()))

    def _reset_epoch_accumulators(self) -> None:
        num_labels = self.store.num_labels
        self.prior_sum = torch.zeros(num_labels, dtype=torch.float64)
        self.proto_sums = torch.zeros(num_labels, dtype=torch.float64)
        self.proto_counts = torch.zeros(num_labels, dtype=torch.float64)
        self.neighbour_sums = torch.zeros(num_labels, dtype=torch.float64)
        self.neighbour_counts = torch.zeros(num_labels, dtype=torch.float64)
        self.bank_features: list[torch.Tensor] = []
        self.bank_label_list: list[torch.Tensor] = []

    # -- state ---------------------------------------------------------------------------------------------------

    STATE_TENSORS = (
        "target_prior",
        "proto_margins",
        "neighbour_margins",
        "bank",
        "bank_labels",
        "prior_sum",
        "proto_sums",
        "proto_counts",
        "neighbour_sums",
        "neighbour_counts",
    )

    def _generators(self) -> tuple[torch.Generator, ...]:
        return self.estimator_generator, self.sampling_generator, self.mask_generator

    def state_dict(self):
        bank_features = torch.cat(self.bank_features) if self.bank_features else torch.zeros(0, 0)
        bank_labels = torch.cat(self.bank_label_list) if self.bank_label_list else torch.zeros(0, dtype=torch.long)
        return {
            **super().state_dict(),
            **{name: getattr(self, name) for name in self.STATE_TENSORS},
            "epoch_bank": bank_features,
            "epoch_bank_labels": bank_labels,
            "generators": [generator.get_state() for generator in self._generators()],
        }

    def load_state_dict(self, state):
        super().load_state_dict(state)
        for name in self.STATE_TENSORS:
            setattr(self, name, state[name])
        self.bank_features = [state["epoch_bank"]] if len(state["epoch_bank"]) else []
        self.bank_label_list = [state["epoch_bank_labels"]] if len(state["epoch_bank_labels"]) else []
        for generator, generator_state in zip(self._generators(), state["generators"]):
            generator.set_state(generator_state)


# ---------------------------------------------------------------------------------------------------------------
# Pieces shared by the related objectives: prototypes, contrastive and consistency losses
# ---------------------------------------------------------------------------------------------------------------


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


def supervised_contrastive_loss(features: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """SupCon (Khosla et al., 2020) over unit-norm features: every anchor with a positive (same label, not itself)
    gets `-mean_p log(exp(z·z_p/T) / Σ_{a≠anchor} exp(z·z_a/T))`; the loss is the mean over those anchors
    (0 when there is none).

    Example:
        >>> features = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
        >>> round(supervised_contrastive_loss(features, torch.tensor([0, 0, 1]), 1.0).item(), 4)  # -log(e/(e+1))
        0.3133
    """
    count = len(features)
    self_pairs = torch.eye(count, dtype=torch.bool, device=features.device)
    positives = (labels.unsqueeze(0) == labels.unsqueeze(1)) & ~self_pairs
    anchors = positives.any(1)
    if not anchors.any():
        return features.sum() * 0.0
    similarity = (features.float() @ features.float().T / temperature).masked_fill(self_pairs, -math.inf)
    log_probability = similarity - torch.logsumexp(similarity, dim=1, keepdim=True)
    positive_log_probability = log_probability.masked_fill(~positives, 0.0).sum(1)
    return -(positive_log_probability[anchors] / positives.sum(1)[anchors]).mean()


def info_nce(anchors: torch.Tensor, positives: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between paired unit-norm rows (row i of `anchors` ↔ row i of `positives`, the other rows of
    the batch are the negatives); 0 for no pairs.

    Example:
        >>> pairs = torch.eye(2)
        >>> round(info_nce(pairs, pairs, 1.0).item(), 4)  # -log(e/(e+1))
        0.3133
    """
    if len(anchors) == 0:
        return anchors.sum() * 0.0
    logits = anchors.float() @ positives.float().T / temperature
    targets = torch.arange(len(anchors), device=anchors.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def symmetric_kl(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """`(KL(p_a‖p_b) + KL(p_b‖p_a)) / 2`, averaged over rows (R-Drop style consistency of two dropout views)."""
    if len(logits_a) == 0:
        return logits_a.sum() * 0.0
    log_a, log_b = logits_a.float().log_softmax(-1), logits_b.float().log_softmax(-1)
    kl_ab = (log_a.exp() * (log_a - log_b)).sum(-1)
    kl_ba = (log_b.exp() * (log_b - log_a)).sum(-1)
    return ((kl_ab + kl_ba) / 2).mean()


def jensen_shannon_divergence(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Mean over rows of `JS(p‖q) = (KL(p‖m) + KL(q‖m)) / 2` with `m = (p + q) / 2` (natural log; 0 for no rows).

    Example:
        >>> round(jensen_shannon_divergence(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])).item(), 4)
        0.6931
    """
    if len(p) == 0:
        return p.sum() * 0.0
    middle = (p + q) / 2

    def kl_to_middle(distribution: torch.Tensor) -> torch.Tensor:
        return (distribution * (torch.log(distribution + eps) - torch.log(middle + eps))).sum(-1)

    return ((kl_to_middle(p) + kl_to_middle(q)) / 2).mean()


def downsample_non_entities(labels: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    """Keeps every entity span (label ≠ 0) and at most `rate x #entities` random `O` spans; returns the keep mask.

    Example:
        >>> keep = downsample_non_entities(torch.tensor([0, 0, 0, 0, 2]), 2.0, torch.Generator().manual_seed(0))
        >>> int(keep.sum()), bool(keep[4])
        (3, True)
    """
    is_entity = labels != 0
    budget = int(rate * int(is_entity.sum()))
    non_entities = torch.nonzero(~is_entity).squeeze(1)
    chosen = non_entities[torch.randperm(len(non_entities), generator=generator)[:budget].to(labels.device)]
    keep = is_entity.clone()
    keep[chosen] = True
    return keep


def prototype_refinement(
    soft_labels: torch.Tensor, similarities: torch.Tensor, margins: torch.Tensor, momentum: float
) -> torch.Tensor:
    """ContProto's pseudo-label update: each row moves by EMA (`momentum` β) towards the one-hot of its most similar
    prototype when that prototype is `O` or the similarity exceeds the class margin; other rows stay.

    Example:
        >>> soft = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
        >>> similarity = torch.tensor([[0.1, 0.9], [0.1, 0.3]])
        >>> prototype_refinement(soft, similarity, torch.tensor([0.0, 0.5]), 0.5).tolist()
        [[0.5, 0.5], [1.0, 0.0]]
    """
    nearest = similarities.argmax(1)
    nearest_similarity = similarities.gather(1, nearest.unsqueeze(1)).squeeze(1)
    passes = (nearest == 0) | (nearest_similarity > margins.to(similarities)[nearest])
    target = F.one_hot(nearest, soft_labels.size(1)).to(soft_labels)
    return torch.where(passes.unsqueeze(1), momentum * soft_labels + (1 - momentum) * target, soft_labels)


def class_means(sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Per-class means `sums / counts`; `+inf` for classes without members (no margin can be passed)."""
    return torch.where(counts > 0, sums / counts.clamp(min=1), torch.full_like(sums, math.inf))


# ---------------------------------------------------------------------------------------------------------------
# Related objectives (§8 of the method notes)
# ---------------------------------------------------------------------------------------------------------------


class ContProtoObjective(PseudoLabelObjective):
    """ContProto (Zhou et al., ACL 2023) in the span framework: every source and target batch passes twice (two
    dropout views); class-weighted CE on source gold + soft CE on the target pseudo-labels (logits), SupCon over the
    projections of both views (source labels = gold, target labels = the current prediction), EMA prototypes, and
    from epoch `contproto_warmup_epochs` on, pseudo-labels moved towards the nearest prototype when it is `O` or
    passes its class's automatic margin (mean similarity of last epoch's spans of that pseudo-class).

    The upstream target-gold span weights are not ported (§8): every target span has weight 1.
    """

    name = "contproto"

    def __init__(
        self,
        store: PseudoLabelStore,
        class_weights: torch.Tensor | None,
        settings: MaralTrainingArguments,
        num_epochs: int,
        temperature: float,
        gold_by_sentence: dict[int, list[tuple[int, int, int]]] | None = None,
    ) -> None:
        super().__init__(store, class_weights, settings.pseudo_label_pruning, gold_by_sentence)
        self.settings = settings
        self.num_epochs = num_epochs
        self.temperature = temperature
        self.prototypes = ClassPrototypes(store.num_labels, settings.contproto_prototype_momentum, per_span=True)
        self.margins = torch.full((store.num_labels,), math.inf)
        self._reset_similarity_sums()

    def start_epoch(self, trainer, epoch):
        self._reset_similarity_sums()

    def end_epoch(self, trainer, epoch):
        self.margins = class_means(self.similarity_sums, self.similarity_counts).float()

    def diagnostics(self, trainer) -> dict[str, Any]:
        labels = _unwrap(trainer.model).config.labels
        return {"prototype_margins": dict(zip(labels, [None if math.isinf(m) else m for m in self.margins.tolist()]))}

    def compute_loss(self, trainer, model, inputs):
        device = trainer.args.device
        mask, gold = inputs["span_mask"], inputs["labels"].clamp(min=0)
        source_views = [model(**model_inputs(inputs)) for _ in range(2)]
        source_loss = sum(span_cross_entropy(view.logits, gold, mask, self.class_weights) for view in source_views) / 2
        target_batch = trainer.target_stream.next_batch()
        target_batch = batch_to_device(target_batch, device)  # moved once for both views
        first_view, target_mask, rows = self.target_forward(model, target_batch, device)
        second_view = model(**model_inputs(target_batch))
        target_views = [first_view, second_view]
        soft = self.store.probabilities[rows].to(device)
        target_loss = sum(soft_cross_entropy(view.logits[target_mask].float(), soft) for view in target_views) / 2
        predicted = first_view.logits[target_mask].detach().argmax(1)
        features = torch.cat(
            [view.projections[mask] for view in source_views]
            + [view.projections[target_mask] for view in target_views]
        )
        contrast_labels = torch.cat([gold[mask], gold[mask], predicted, predicted])
        contrastive_loss = supervised_contrastive_loss(features, contrast_labels, self.temperature)
        loss = source_loss + target_loss + contrastive_loss
        logs = {
            "source_loss": source_loss.item(),
            "target_loss": target_loss.item(),
            "contrastive_loss": contrastive_loss.item(),
        }
        if self.settings.contproto_consistency_weight > 0:
            consistency = symmetric_kl(
                torch.cat([source_views[0].logits[mask], first_view.logits[target_mask]]),
                torch.cat([source_views[1].logits[mask], second_view.logits[target_mask]]),
            )
            loss = loss + self.settings.contproto_consistency_weight * consistency
            logs["consistency_loss"] = consistency.item()
        target_features = first_view.projections[target_mask].detach()
        self.prototypes.update(
            torch.cat([source_views[0].projections[mask].detach(), target_features]),
            torch.cat([gold[mask], predicted]),
        )
        self._update_pseudo_labels(rows, soft, target_features)
        return loss, logs

    def _update_pseudo_labels(self, rows: torch.Tensor, soft: torch.Tensor, features: torch.Tensor) -> None:
        """Accumulates this epoch's margin statistics and, after the warm-up, refines the batch's pseudo-labels."""
        similarities = self.prototypes.similarities(features).cpu()
        hard = soft.argmax(1).cpu()
        self.add_to_sum(
            "similarity_sums",
            torch.zeros_like(self.similarity_sums).index_add_(
                0, hard, similarities.gather(1, hard.unsqueeze(1)).squeeze(1).double()
            ),
        )
        self.add_to_sum("similarity_counts", torch.bincount(hard, minlength=self.store.num_labels))
        warmup = self.settings.contproto_warmup_epochs
        if self.epoch >= warmup:
            momentum = ema_momentum(
                self.epoch, self.num_epochs, self.settings.ema_start, self.settings.ema_end, warmup
            )
            self.store.probabilities[rows] = prototype_refinement(soft.cpu(), similarities, self.margins, momentum)

    def _reset_similarity_sums(self) -> None:
        self.similarity_sums = torch.zeros(self.store.num_labels, dtype=torch.float64)
        self.similarity_counts = torch.zeros(self.store.num_labels, dtype=torch.float64)

    def state_dict(self):
        return {
            **super().state_dict(),
            "prototypes": self.prototypes.state_dict(),
            "margins": self.margins,
            "similarity_sums": self.similarity_sums,
            "similarity_counts": self.similarity_counts,
        }

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.prototypes.load_state_dict(state["prototypes"])
        self.margins = state["margins"]
        self.similarity_sums, self.similarity_counts = state["similarity_sums"], state["similarity_counts"]


def attribution_consistency(
    logits: torch.Tensor, features: torch.Tensor, prototypes: ClassPrototypes, temperature: float
) -> torch.Tensor:
    """PRAM's attribution-prediction consistency: `JS(softmax(cos(h, C)/τ) ‖ softmax(logits))`, with gradients
    through both the features and the classifier."""
    similarity_distribution = (prototypes.similarities(features.float()) / temperature).softmax(-1)
    return jensen_shannon_divergence(similarity_distribution, logits.float().softmax(-1))


class PramObjective(TrainingObjective):
    """PRAM (Huang et al., Findings ACL 2023) in the span framework, end-to-end without a teacher: class-weighted CE
    on source gold spans + α JS(q‖p) on source spans + β JS(q‖p) on target spans, where `q` is the softmax of the
    cosine similarities of a span's projection to EMA prototypes of the source classes and `p` the classifier's
    distribution; `O` spans are down-sampled to at most γ per entity span (target labels = the prediction).
    """

    name = "pram"

    def __init__(
        self, class_weights: torch.Tensor | None, num_labels: int, settings: MaralTrainingArguments, seed: int = 0
    ) -> None:
        self.class_weights = class_weights
        self.settings = settings
        self.prototypes = ClassPrototypes(num_labels, settings.pram_prototype_momentum, per_span=False)
        self.sampling_generator = torch.Generator().manual_seed(seed)

    def compute_loss(self, trainer, model, inputs):
        settings = self.settings
        output = model(**model_inputs(inputs))
        mask, gold = inputs["span_mask"], inputs["labels"].clamp(min=0)
        source_loss = span_cross_entropy(output.logits, gold, mask, self.class_weights)
        features, logits, labels = output.projections[mask], output.logits[mask], gold[mask]
        self.prototypes.update(features, labels)
        keep = downsample_non_entities(labels, settings.pram_non_entity_rate, self.sampling_generator)
        source_consistency = attribution_consistency(
            logits[keep], features[keep], self.prototypes, settings.pram_temperature
        )
        target_batch = batch_to_device(trainer.target_stream.next_batch(), trainer.args.device)
        target_output = model(**model_inputs(target_batch))
        target_mask = target_batch["span_mask"]
        target_logits, target_features = target_output.logits[target_mask], target_output.projections[target_mask]
        keep = downsample_non_entities(
            target_logits.detach().argmax(1), settings.pram_non_entity_rate, self.sampling_generator
        )
        target_consistency = attribution_consistency(
            target_logits[keep], target_features[keep], self.prototypes, settings.pram_temperature
        )
        loss = (
            source_loss
            + settings.pram_source_weight * source_consistency
            + settings.pram_target_weight * target_consistency
        )
        return loss, {
            "source_loss": source_loss.item(),
            "source_consistency": source_consistency.item(),
            "target_consistency": target_consistency.item(),
        }

    def state_dict(self):
        return {"prototypes": self.prototypes.state_dict(), "generator": self.sampling_generator.get_state()}

    def load_state_dict(self, state):
        self.prototypes.load_state_dict(state["prototypes"])
        self.sampling_generator.set_state(state["generator"])


def entity_positions(span_labels: torch.Tensor) -> list[torch.Tensor]:
    """Per sentence, the span positions of gold entities (label > 0), in span order."""
    return [torch.nonzero(row > 0).squeeze(1) for row in span_labels]


class MclObjective(PseudoLabelObjective):
    """MCL-NER's student stage (Mo et al., AAAI 2024) in the span framework (a span = a start-end relation):
    source class-weighted CE + CE on the target spans whose teacher confidence reaches `mcl_confidence_threshold`
    (hard pseudo-labels) + w₂ x squared error between the student's and the teacher's span distributions; with
    code-switched counterparts of the source sentences, + w₁ x (relation contrast between each source entity span
    and its counterpart + sentence-level InfoNCE between a source sentence and its counterpart).

    Args:
        store: the teacher's pseudo-labels (kept fixed).
        class_weights: source span class weights.
        settings: the training arguments.
        temperature: InfoNCE temperature.
        code_switched: `{source sentence_id: {"tokens", "spans"}}` (see `data_loading.code_switch`), or `None`.
        gold_by_sentence: optional target gold spans, for the oracle diagnostics only.
    """

    name = "mcl"

    def __init__(
        self,
        store: PseudoLabelStore,
        class_weights: torch.Tensor | None,
        settings: MaralTrainingArguments,
        temperature: float,
        code_switched: dict[int, dict[str, Any]] | None = None,
        gold_by_sentence: dict[int, list[tuple[int, int, int]]] | None = None,
    ) -> None:
        super().__init__(store, class_weights, settings.pseudo_label_pruning, gold_by_sentence)
        self.settings = settings
        self.temperature = temperature
        self.code_switched = code_switched
        if not code_switched:
            logger.info(
                "MCL-NER: no code-switched data (--code_switched_file or --bilingual_dictionary): the relation and "
                "sentence contrast terms are off."
            )

    def compute_loss(self, trainer, model, inputs):
        settings, device = self.settings, trainer.args.device
        use_contrast = bool(self.code_switched) and settings.mcl_contrast_weight > 0
        output = model(
            **model_inputs(inputs), return_projections=use_contrast, return_sentence_embeddings=use_contrast
        )
        source_loss = span_cross_entropy(output.logits, inputs["labels"], inputs["span_mask"], self.class_weights)
        target_output, mask, rows = self.target_forward(
            model, trainer.target_stream.next_batch(), device, return_projections=False
        )
        teacher = self.store.probabilities[rows].to(device)
        logits = target_output.logits[mask].float()
        confidence, pseudo_labels = teacher.max(1)
        confident = confidence >= settings.mcl_confidence_threshold
        target_loss = (
            F.cross_entropy(logits[confident], pseudo_labels[confident]) if confident.any() else logits.sum() * 0.0
        )
        distillation = F.mse_loss(logits.softmax(-1), teacher) if len(logits) else logits.sum() * 0.0
        loss = source_loss + target_loss + settings.mcl_distill_weight * distillation
        logs = {
            "source_loss": source_loss.item(),
            "target_loss": target_loss.item(),
            "distillation_loss": distillation.item(),
            "confident_fraction": float(confident.float().mean()) if len(confident) else 0.0,
        }
        if use_contrast:
            relation, sentence = self._contrast(trainer, model, inputs, output, device)
            loss = loss + settings.mcl_contrast_weight * (relation + sentence)
            logs.update(relation_contrast=relation.item(), sentence_contrast=sentence.item())
        return loss, logs

    def _contrast(self, trainer, model, inputs, output, device):
        """Relation (entity span ↔ counterpart span) and sentence (sentence ↔ counterpart) InfoNCE terms."""
        sentence_ids = inputs["sentence_ids"].tolist()
        paired = [index for index, sentence_id in enumerate(sentence_ids) if sentence_id in self.code_switched]
        if not paired:
            zero = output.logits.sum() * 0.0
            return zero, zero
        rows = [self.code_switched[sentence_ids[index]] for index in paired]
        switched_batch = batch_to_device(trainer.data_collator(rows), device)
        switched = model(**model_inputs(switched_batch), return_sentence_embeddings=True)
        source_entities = entity_positions(inputs["labels"][paired])
        switched_entities = entity_positions(switched_batch["labels"])
        anchors, positives = [], []
        for row, (source_positions, switched_positions) in enumerate(zip(source_entities, switched_entities)):
            if len(source_positions) == len(switched_positions):  # else truncation dropped one side's entity
                anchors.append(output.projections[paired[row], source_positions])
                positives.append(switched.projections[row, switched_positions])
        if anchors:
            relation = info_nce(torch.cat(anchors), torch.cat(positives), self.temperature)
        else:
            relation = output.logits.sum() * 0.0
        sentence = info_nce(output.sentence_embeddings[paired], switched.sentence_embeddings, self.temperature)
        return relation, sentence


# ---------------------------------------------------------------------------------------------------------------
# The registry of objectives
# ---------------------------------------------------------------------------------------------------------------


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
        summary: one line for the docs.
        self_training: `True` when the method is a student trained on a teacher's pseudo-labels (teacher stage,
            then `--self_training_rounds` student rounds); `False` for single-stage training.
        build: `build(context)` returns the `TrainingObjective`.
    """

    name: str
    summary: str
    self_training: bool
    build: Any


OBJECTIVES: dict[str, ObjectiveSpec] = {}


def register_objective(name: str, summary: str, self_training: bool):
    """Decorator registering `build(context) -> TrainingObjective` as `--method name`."""

    def decorator(build):
        OBJECTIVES[name] = ObjectiveSpec(name, summary, self_training, build)
        return build

    return decorator


def build_objective(method: str, context: ObjectiveContext) -> TrainingObjective:
    """The objective of `--method` (see `OBJECTIVES`)."""
    if method not in OBJECTIVES:
        raise ValueError(f"`--method` must be one of {', '.join(OBJECTIVES)}; got {method!r}.")
    spec = OBJECTIVES[method]
    if spec.self_training and context.store is None:
        raise ValueError(f"--method {method} trains a student on pseudo-labels: build it with a PseudoLabelStore.")
    return spec.build(context)


def _needs_target_text(method: str, context: ObjectiveContext) -> None:
    if not context.has_target_text:
        raise ValueError(f"--method {method} needs --target_unlabeled_file (the target-language text).")


@register_objective("source_only", "Teacher alone: source class-weighted CE + target MLM.", self_training=False)
def _build_source_only(context: ObjectiveContext) -> TrainingObjective:
    args = context.args
    return SourceObjective(
        class_weights=context.class_weights,
        mlm_weight=args.mlm_weight if context.has_target_text else 0.0,
        mlm_mask_rate=args.mlm_mask_rate,
        hide_masked_tokens=args.mlm_hide_masked_tokens,
        seed=args.seed,
    )


@register_objective("self_training", "Student on the teacher's fixed soft pseudo-labels.", self_training=True)
def _build_self_training(context: ObjectiveContext) -> TrainingObjective:
    return SelfTrainingObjective(
        context.store, context.class_weights, context.args.pseudo_label_pruning, context.gold_by_sentence
    )


@register_objective("maral", "MARAL: vMF head, adaptive reweighting, progressive adaptation.", self_training=True)
def _build_maral(context: ObjectiveContext) -> TrainingObjective:
    return MaralObjective(
        context.store,
        context.source_class_counts,
        context.class_weights,
        settings=context.args,
        num_epochs=context.num_epochs,
        seed=context.seed,
        gold_by_sentence=context.gold_by_sentence,
    )


@register_objective("contproto", "ContProto: two-view SupCon + prototype pseudo-label refinement.", self_training=True)
def _build_contproto(context: ObjectiveContext) -> TrainingObjective:
    return ContProtoObjective(
        context.store,
        context.class_weights,
        context.args,
        context.num_epochs,
        context.temperature,
        context.gold_by_sentence,
    )


@register_objective("pram", "PRAM: prototype attribution-prediction consistency, end-to-end.", self_training=False)
def _build_pram(context: ObjectiveContext) -> TrainingObjective:
    _needs_target_text("pram", context)
    return PramObjective(context.class_weights, context.num_labels, context.args, seed=context.seed)


@register_objective("mcl", "MCL-NER, span form: confident-label CE + distillation + contrast.", self_training=True)
def _build_mcl(context: ObjectiveContext) -> TrainingObjective:
    return MclObjective(
        context.store,
        context.class_weights,
        context.args,
        context.temperature,
        context.code_switched,
        context.gold_by_sentence,
    )


def with_length_column(dataset, column: str):
    """Adds the number of words of each sentence as `column` (for `--train_sampling_strategy group_by_length`)."""
    if column in dataset.column_names:
        return dataset
    return dataset.add_column(column, [len(tokens) for tokens in dataset["tokens"]])


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

    def on_train_end(self, args, state, control, **kwargs):
        self.trainer.objective.on_train_end(self.trainer)


class MaralTrainer(Trainer):
    """Trainer for `MaralForSpanNER` on source-language gold spans and target-language text.

    Args:
        model: a `MaralForSpanNER`.
        args: `MaralTrainingArguments`.
        train_dataset: labelled source dataset (`tokens`, `spans`).
        eval_dataset: a dataset or a dict of named datasets (e.g. `source_dev`, `target_test`); each is scored
            with span F1 and seqeval (`eval_<name>_span_f1`, `eval_<name>_seqeval_f1`, ...).
        target_dataset: unlabelled target dataset (`tokens`, optionally `gold_spans` for diagnostics only).
        objective: the `TrainingObjective`; defaults to the objective of `args.method` when it is a single-stage
            method (`source_only`, `pram`), else to the teacher's `SourceObjective`.
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
        if train_dataset is not None and args.train_sampling_strategy == "group_by_length":
            train_dataset = with_length_column(train_dataset, args.length_column_name)
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )
        # Without an explicit objective: the method's own for single-stage methods, the teacher's otherwise.
        default_method = "source_only" if OBJECTIVES[args.method].self_training else args.method
        self.objective = objective or build_objective(
            default_method,
            ObjectiveContext(
                args,
                config.num_labels,
                class_weights,
                has_target_text=target_dataset is not None,
                temperature=config.contrastive_temperature,
            ),
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

    def create_optimizer(self, model=None):
        """`Trainer`'s optimizer, with `head_learning_rate` for the parameters outside the encoder when it is set."""
        if self.optimizer is not None or self.args.head_learning_rate is None:
            return super().create_optimizer(model)
        optimized = self.model if model is None else model
        decayed = set(self.get_decay_parameter_names(optimized))
        groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = defaultdict(list)
        for name, parameter in optimized.named_parameters():
            if parameter.requires_grad:
                groups[(not name.startswith("encoder."), name in decayed)].append(parameter)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, optimized)
        self.optimizer = optimizer_cls(
            [
                {
                    "params": parameters,
                    "lr": self.args.head_learning_rate if is_head else self.args.learning_rate,
                    "weight_decay": self.args.weight_decay if is_decayed else 0.0,
                }
                for (is_head, is_decayed), parameters in groups.items()
            ],
            **optimizer_kwargs,
        )
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Delegates to the objective and remembers its loss terms for the next log line."""
        loss, terms = self.objective.compute_loss(self, model, inputs)
        self.objective.after_step()
        self.objective.observe_loss_terms(terms)
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


# ---------------------------------------------------------------------------------------------------------------
# Teacher -> student self-training rounds
# ---------------------------------------------------------------------------------------------------------------

STAGE_MARKER = "stage.json"
# Arguments that do not change what a stage trains (a finished stage is reused when everything else matches).
STAGE_INDEPENDENT_ARGUMENTS = frozenset(
    {
        "output_dir",
        "logging_dir",
        "run_name",
        "resume_from_checkpoint",
        "do_eval",
        "do_predict",
        "push_to_hub",
        "hub_model_id",
        "hub_token",
        "report_to",
        "logging_steps",
        "disable_tqdm",
        "per_device_eval_batch_size",
    }
)


def dataset_fingerprint(dataset) -> str:
    """A content hash of a span dataset (words and spans), to tell whether a finished stage used the same data."""
    digest = hashlib.sha256()
    for row in dataset.select_columns([c for c in ("sentence_id", "tokens", "spans") if c in dataset.column_names]):
        digest.update(json.dumps(row, sort_keys=True).encode())
    return digest.hexdigest()


def file_fingerprint(directory: str | os.PathLike) -> list[Any]:
    """Size and modification time of the model files in `directory` (a retrained teacher changes them)."""
    files = sorted(Path(directory).glob("*.safetensors")) + [Path(directory) / "config.json"]
    return [(path.name, path.stat().st_size, path.stat().st_mtime_ns) for path in files if path.is_file()]


PSEUDO_LABEL_FILE = "pseudo_labels.pt"
SELF_TRAINING_LOG = "self_training_log.jsonl"


def gold_spans_by_sentence(dataset) -> dict[int, list[tuple[int, int, int]]] | None:
    """`{sentence_id: [(start, end, label)]}` from a target dataset's `gold_spans` column (diagnostics only)."""
    if "gold_spans" not in dataset.column_names:
        return None
    return {
        row["sentence_id"]: [(span["start"], span["end"], span["label"]) for span in row["gold_spans"]]
        for row in dataset.select_columns(["sentence_id", "gold_spans"])
    }


def evaluate_datasets(model, datasets: dict[str, Any], prefix: str, batch_size: int, decoding: str | None):
    """Flat span-F1/seqeval metrics of `model` on named datasets, keys `<prefix>_<name>_...`."""
    metrics: dict[str, float] = {}
    for name, dataset in datasets.items():
        scores, _ = evaluate_model(model, dataset, batch_size, decoding=decoding)
        metrics.update(flatten_metrics(scores, f"{prefix}_{name}"))
    return metrics


class SelfTrainingPipeline:
    """Teacher -> student self-training (§1, §5, §6 of the method notes), one folder per stage.

    `args.output_dir` receives `teacher/` (model, `pseudo_labels.pt`, `stage.json`), `rounds/round_<r>/` (the
    round's student, the pseudo-labels it gives the next round, the student objective's final state in
    `maral_trainer_state.pt`, `stage.json`) and `self_training_log.jsonl`. A stage
    is built in `<folder>.partial` and renamed when complete, so an interrupted stage never looks finished and a
    rerun skips the finished ones when its settings, data and teacher are the same (`stage.json` holds their
    fingerprint; otherwise the stage is trained again), and with `--resume_from_checkpoint` the unfinished stage
    resumes from its last checkpoint.

    Args:
        args: `MaralTrainingArguments` (a self-training `method`: `self_training`, `maral`, `contproto`, `mcl`).
        build_model: `build_model(path)` returns a fresh model on the base encoder (`path=None`) or loads the model
            saved at `path`, with the run's settings (frozen embeddings etc.).
        source_train: labelled source dataset.
        target_dataset: unlabelled target dataset (its `gold_spans`, if any, only feed the oracle diagnostics).
        source_class_counts: span counts per class of `source_train` (source priors).
        class_weights: source span class weights.
        eval_datasets: datasets evaluated during training (`source_dev` selects the teacher epoch).
        report_datasets: datasets scored after every stage (per-round metrics).
        code_switched: code-switched counterparts of the source sentences (`--method mcl`).
    """

    def __init__(
        self,
        args: MaralTrainingArguments,
        build_model,
        source_train,
        target_dataset,
        source_class_counts: np.ndarray,
        class_weights: torch.Tensor | None,
        eval_datasets: dict[str, Any] | None = None,
        report_datasets: dict[str, Any] | None = None,
        code_switched: dict[int, dict[str, Any]] | None = None,
    ) -> None:
        if target_dataset is None:
            raise ValueError(f"--method {args.method} needs --target_unlabeled_file (the target-language text).")
        self.args = args
        self.build_model = build_model
        self.source_train = source_train
        self.target_dataset = target_dataset
        self.source_class_counts = source_class_counts
        self.class_weights = class_weights
        self.eval_datasets = eval_datasets or {}
        self.report_datasets = report_datasets or self.eval_datasets
        self.output_dir = Path(args.output_dir)
        self.code_switched = code_switched
        self.gold = gold_spans_by_sentence(target_dataset)

    def run(self):
        """Trains the teacher (or loads `--teacher_checkpoint`) and every round; returns the last student and the
        per-stage metrics."""
        results: dict[str, float] = {}
        self.fingerprint = self._settings_fingerprint()
        teacher_dir = self._run_stage("teacher", self._teacher_stage)
        results.update(self._stage_metrics(teacher_dir))
        labels_dir = teacher_dir
        for round_index in range(1, self.args.self_training_rounds + 1):
            round_dir = self._run_stage(
                f"rounds/round_{round_index}",
                lambda stage_dir, resume, r=round_index, source=labels_dir: self._student_stage(
                    stage_dir, resume, r, teacher_dir, source
                ),
            )
            results.update(self._stage_metrics(round_dir))
            labels_dir = round_dir
        self._write_log()
        return self.build_model(str(labels_dir)), results

    # -- stages --------------------------------------------------------------------------------------------------

    def _settings_fingerprint(self) -> str:
        """Hash of everything a stage's result depends on: the training arguments, the data and the teacher."""
        arguments = {
            key: value for key, value in self.args.to_dict().items() if key not in STAGE_INDEPENDENT_ARGUMENTS
        }
        if self.args.teacher_checkpoint:
            arguments["teacher_files"] = file_fingerprint(self.args.teacher_checkpoint)
        arguments["source_data"] = dataset_fingerprint(self.source_train)
        arguments["target_data"] = dataset_fingerprint(self.target_dataset)
        arguments["code_switched"] = len(self.code_switched or {})
        return hashlib.sha256(json.dumps(arguments, sort_keys=True, default=str).encode()).hexdigest()

    def _run_stage(self, relative: str, train) -> Path:
        final = self.output_dir / relative
        if (final / STAGE_MARKER).is_file():
            finished = json.loads((final / STAGE_MARKER).read_text())
            if finished.get("fingerprint") == self.fingerprint:
                logger.info("Stage %s is finished (%s): skipping it.", relative, final)
                return final
            logger.warning(
                "Stage %s in %s was trained with other settings, data or teacher: training it again (the old stage "
                "is replaced once the new one is complete).",
                relative,
                final,
            )
        partial = final.with_name(final.name + ".partial")
        resume = bool(self.args.resume_from_checkpoint) and partial.is_dir()
        wait_for_all_processes()  # every process has decided before the main one changes the folder
        if self.is_main_process:
            if partial.exists() and not resume:
                shutil.rmtree(partial)
            partial.mkdir(parents=True, exist_ok=True)
        wait_for_all_processes()
        logger.info("Stage %s: training in %s", relative, partial)
        metrics = train(partial, resume)
        if self.is_main_process:
            for checkpoint in partial.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
                shutil.rmtree(checkpoint)
            marker = {"stage": relative, "fingerprint": self.fingerprint, "metrics": metrics}
            (partial / STAGE_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
            if final.exists():
                shutil.rmtree(final)  # an unfinished leftover of an earlier run (no stage marker)
            os.replace(partial, final)
        wait_for_all_processes()
        return final

    @property
    def is_main_process(self) -> bool:
        """Only the main process writes stage folders (all processes train and label)."""
        return self.args.should_save

    def _teacher_stage(self, stage_dir: Path, resume: bool) -> dict[str, float]:
        args = self.args
        if args.teacher_checkpoint:
            teacher = self.build_model(args.teacher_checkpoint)
            logger.info("Using the trained teacher %s.", args.teacher_checkpoint)
        else:
            select = args.teacher_selection == "source_dev" and "source_dev" in self.eval_datasets
            if args.teacher_selection == "source_dev" and not select:
                logger.warning("--teacher_selection source_dev needs --source_validation_file: using the last epoch.")
            stage_args = replace(
                args,
                output_dir=str(stage_dir),
                num_train_epochs=args.teacher_epochs or args.num_train_epochs,
                eval_strategy="epoch" if select else "no",
                save_strategy="epoch" if select else "no",
                load_best_model_at_end=select,
                metric_for_best_model="eval_source_dev_span_f1" if select else None,
                greater_is_better=True if select else None,
                save_total_limit=1 if select else None,
            )
            teacher = self.build_model(None)
            trainer = MaralTrainer(
                model=teacher,
                args=stage_args,
                train_dataset=self.source_train,
                eval_dataset={"source_dev": self.eval_datasets["source_dev"]} if select else None,
                target_dataset=self.target_dataset,
                class_weights=self.class_weights,
                processing_class=teacher.tokenizer,
            )
            trainer.train(resume_from_checkpoint=self._last_checkpoint(stage_dir, resume))
            teacher = trainer.model
        if self.is_main_process:
            teacher.save_pretrained(stage_dir)
        store = self._label_target(teacher, stage_dir)
        metrics = self._report(teacher, "teacher")
        if self.gold is not None:
            oracle = store.oracle_metrics(self.gold, args.pseudo_label_pruning)
            metrics["teacher_pseudo_label_oracle_f1"] = oracle["f1"]
            self._append_log(stage_dir, [{"stage": "teacher", "pseudo_label_oracle": oracle}])
        return metrics

    def _student_stage(
        self, stage_dir: Path, resume: bool, round_index: int, teacher_dir: Path, labels_dir: Path
    ) -> dict[str, float]:
        args = self.args
        student = self.build_model(str(teacher_dir) if args.student_init == "teacher" else None)
        store = PseudoLabelStore.load(labels_dir / PSEUDO_LABEL_FILE)
        objective = build_objective(
            args.method,
            ObjectiveContext(
                args,
                student.config.num_labels,
                self.class_weights,
                source_class_counts=self.source_class_counts,
                store=store,
                has_target_text=True,
                round_index=round_index,
                temperature=student.config.contrastive_temperature,
                code_switched=self.code_switched,
                gold_by_sentence=self.gold,
            ),
        )
        trainer = MaralTrainer(
            model=student,
            args=replace(args, output_dir=str(stage_dir)),
            train_dataset=self.source_train,
            eval_dataset=self.eval_datasets or None,
            target_dataset=self.target_dataset,
            objective=objective,
            class_weights=self.class_weights,
            processing_class=student.tokenizer,
        )
        trainer.train(resume_from_checkpoint=self._last_checkpoint(stage_dir, resume))
        student = trainer.model
        if self.is_main_process:
            student.save_pretrained(stage_dir)
            # The objective's final state (refined pseudo-labels, reliable mask, priors, margins, bank).
            torch.save(trainer.trainer_state_dict(), stage_dir / TRAINER_STATE_FILE)
        self._label_target(student, stage_dir)
        self._append_log(stage_dir, [{"stage": f"round_{round_index}", **record} for record in objective.history])
        return self._report(student, f"round_{round_index}")

    # -- helpers -------------------------------------------------------------------------------------------------

    def _label_target(self, model, stage_dir: Path) -> PseudoLabelStore:
        store = generate_pseudo_labels(
            model, self.target_dataset, self.args.per_device_eval_batch_size, self.args.pseudo_label_pruning
        )
        if self.is_main_process:
            store.save(stage_dir / PSEUDO_LABEL_FILE)
        logger.info("Pseudo-labelled %d target spans (%.1f MB).", len(store), store.nbytes() / 2**20)
        return store

    def _report(self, model, prefix: str) -> dict[str, float]:
        return evaluate_datasets(
            model, self.report_datasets, prefix, self.args.per_device_eval_batch_size, self.args.eval_decoding
        )

    @staticmethod
    def _last_checkpoint(stage_dir: Path, resume: bool) -> str | None:
        return get_last_checkpoint(str(stage_dir)) if resume else None

    @staticmethod
    def _stage_metrics(stage_dir: Path) -> dict[str, float]:
        return json.loads((stage_dir / STAGE_MARKER).read_text())["metrics"]

    def _append_log(self, stage_dir: Path, records: list[dict[str, Any]]) -> None:
        if not self.is_main_process:
            return
        with (stage_dir / SELF_TRAINING_LOG).open("a", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record) + "\n")

    def _write_log(self) -> None:
        """Concatenates the stages' logs into `<output_dir>/self_training_log.jsonl`."""
        stage_logs = [self.output_dir / "teacher" / SELF_TRAINING_LOG]
        stage_logs += sorted(
            (self.output_dir / "rounds").glob(f"round_*/{SELF_TRAINING_LOG}"),
            key=lambda path: int(path.parent.name.split("_")[1]),
        )
        lines = [line for path in stage_logs if path.is_file() for line in path.read_text().splitlines()]
        if self.is_main_process:
            (self.output_dir / SELF_TRAINING_LOG).write_text("".join(line + "\n" for line in lines))
        wait_for_all_processes()
