# Copyright 2026 The maral-xner authors. Licensed under the Apache License, Version 2.0.
"""Pseudo-labels: the settings of every teacher -> student method, the `PseudoLabelStore`, pseudo-label generation
by a model, and `PseudoLabelObjective`, the base of every student objective."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from evaluation_maral import precision_recall_f1, span_f1_counts
from modeling_maral import SentencePrediction, decode_span_indices, decode_spans
from output_layout import load_saved_state, save_atomically

from .base import TrainingObjective, batch_to_device, model_inputs, unwrap_model
from .distributed import all_gather_rows, all_reduce_sum, process_rank_and_count
from .entity_floor import DEFAULT_ENTITY_FLOOR, entity_floor_offset, lower_o_scores
from .settings import SELF_TRAINING_METHODS, SettingCheck, help_text

PRUNING_MODES = ("legacy", "greedy", "none")
TEACHER_SELECTIONS = ("source_dev", "last")
STUDENT_STARTS = ("base", "teacher")


@dataclass
class PseudoLabelSettings:
    """Settings of the methods that train a student on a teacher's pseudo-labels (`self_training`, `maral`,
    `contproto`, `mcl`): the teacher stage, the rounds, and the pseudo-labels themselves.

    Args:
        teacher_epochs: epochs of the teacher stage (defaults to `num_train_epochs`).
        teacher_selection: which teacher epoch labels the target text: `source_dev` (best source-dev span F1) or
            `last`. The target gold is never used.
        teacher_checkpoint: a trained teacher (MARAL model directory) to use instead of training one.
        score_loaded_teacher: score a `teacher_checkpoint` on the reported datasets before the student stage
            (`teacher_*` metrics); `false` saves that evaluation when the teacher's scores are known.
        student_init: `base` (a fresh encoder, as in the paper) or `teacher` (start from the teacher's weights);
            unset, the method's default (`ObjectiveSpec.default_student_init`: `teacher` for `maral`, whose fresh
            vMF student does not relearn the source task in a few epochs, `base` for the others).
        self_training_rounds: student rounds; round r's student labels the target text for round r + 1.
        pseudo_label_pruning: overlap pruning of pseudo-labels: `legacy` (reference), `greedy` or `none`.
        target_entity_floor: the entity floor (`objectives.entity_floor`), as a fraction of the source training
            data's entities per sentence. When a model finds fewer entities per sentence in the target text, its `O`
            scores are lowered by one offset until it reaches the floor: the teacher's for the pseudo-labels, and
            each student's for its own decisions (saved as `o_logit_offset` in its config). Default
            `DEFAULT_ENTITY_FLOOR` (0.5); 0 turns it off (the reference code has no floor).
        ema_start, ema_end: EMA momentum of the pseudo-label refinement (MARAL, ContProto), linear over the epochs.
    """

    teacher_epochs: float | None = field(
        default=None, metadata=help_text("Epochs of the teacher stage; unset: num_train_epochs.")
    )
    teacher_selection: str = field(
        default="source_dev",
        metadata=help_text(
            "Teacher epoch that labels the target text (never chosen on target data).", TEACHER_SELECTIONS
        ),
    )
    teacher_checkpoint: str | None = field(
        default=None, metadata=help_text("A trained teacher model directory to use instead of training one.")
    )
    score_loaded_teacher: bool = field(
        default=True, metadata=help_text("Score a --teacher_checkpoint on the dev/test sets before the student.")
    )
    student_init: str | None = field(
        default=None,
        metadata=help_text(
            "Student start: a fresh encoder (base) or the teacher's weights; unset: the method's (teacher for maral, "
            "base for the others).",
            STUDENT_STARTS,
        ),
    )
    self_training_rounds: int = field(default=1, metadata=help_text("Number of student rounds."))
    pseudo_label_pruning: str = field(
        default="legacy", metadata=help_text("Overlap pruning of pseudo-labels.", PRUNING_MODES)
    )
    target_entity_floor: float = field(
        default=DEFAULT_ENTITY_FLOOR,
        metadata=help_text(
            "Entity floor on the target text (pseudo-labels and the student's decisions), as a fraction of the "
            "source data's entities per sentence; 0: off."
        ),
    )
    ema_start: float = field(default=0.95, metadata=help_text("EMA momentum of pseudo-label refinement at the start."))
    ema_end: float = field(default=0.80, metadata=help_text("EMA momentum of pseudo-label refinement at the end."))

    help_group: ClassVar[str] = "Teacher -> student self-training"
    methods: ClassVar[tuple[str, ...]] = SELF_TRAINING_METHODS
    checks: ClassVar[tuple[SettingCheck, ...]] = (
        SettingCheck("teacher_epochs", lambda value: value is None or value > 0, "must be > 0"),
        SettingCheck("teacher_selection", lambda value: value in TEACHER_SELECTIONS, "must be source_dev or last"),
        SettingCheck("student_init", lambda value: value in (None, *STUDENT_STARTS), "must be base or teacher"),
        SettingCheck("self_training_rounds", lambda value: value >= 1, "must be >= 1"),
        SettingCheck("pseudo_label_pruning", lambda value: value in PRUNING_MODES, "unknown mode"),
        SettingCheck("target_entity_floor", lambda value: value >= 0, "must be >= 0"),
        SettingCheck("ema_start", lambda value: 0 <= value <= 1, "must be in [0, 1]"),
        SettingCheck("ema_end", lambda value: 0 <= value <= 1, "must be in [0, 1]"),
    )


# The settings every student method's model card lists.
STUDENT_CARD_SETTINGS = (
    "teacher_epochs", "teacher_selection", "teacher_checkpoint", "student_init", "self_training_rounds",
    "pseudo_label_pruning", "target_entity_floor",
)  # fmt: skip


def ema_momentum(epoch: int, num_epochs: int, start: float, end: float, first_epoch: int) -> float:
    """Linear EMA momentum from `start` (at `first_epoch`) to `end` (at `num_epochs`), §6.7.

    Example:
        >>> round(ema_momentum(2, 20, 0.95, 0.80, 1), 3), round(ema_momentum(19, 20, 0.95, 0.80, 1), 3)
        (0.942, 0.808)
    """
    span = max(num_epochs - first_epoch, 1)
    return start + (epoch - first_epoch) / span * (end - start)


def scalar_diagnostics(record: dict[str, Any], prefix: str = "self_training") -> dict[str, float]:
    """The numbers of a per-epoch diagnostics record as flat `prefix/key/subkey` scalars, for `Trainer.log`.

    Example:
        >>> scalar_diagnostics({"epoch": 1, "target_prior": {"O": 0.9, "PER": 0.1}, "bank_size": 5, "refined": True})
        {'self_training/target_prior/O': 0.9, 'self_training/target_prior/PER': 0.1, 'self_training/bank_size': 5.0, \
'self_training/refined': 1.0}
    """
    scalars: dict[str, float] = {}
    for key, value in record.items():
        name = f"{prefix}/{key}"
        if isinstance(value, dict):
            scalars.update(scalar_diagnostics(value, name))
        elif isinstance(value, (bool, int, float)) and key != "epoch":
            scalars[name] = float(value)
    return scalars


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
        o_offset: nats by which the labelling model's `O` scores were lowered (the entity floor; 0 without it).
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
        self.o_offset = 0.0
        self._sorted_ids, self._sorted_rows = torch.sort(self.sentence_ids)

    @classmethod
    def from_predictions(
        cls,
        sentence_ids: list[int],
        predictions: list[SentencePrediction],
        pruning: str = "legacy",
        o_offset: float = 0.0,
    ) -> PseudoLabelStore:
        """Soft labels from a model's predictions (§5): kept entity spans keep their distribution, every other
        span (predicted `O`, or removed by overlap pruning) becomes one-hot `O`. With `o_offset` the `O` scores are
        first lowered by that many nats (`entity_floor.lower_o_scores`)."""
        rows, counts, words = [], [], []
        for prediction in predictions:
            probabilities = lower_o_scores(prediction.probabilities, o_offset)
            labels = np.zeros_like(probabilities)
            labels[:, 0] = 1.0
            kept = decode_span_indices(prediction.span_words, probabilities, pruning)
            labels[kept] = probabilities[kept]
            rows.append(labels)
            counts.append(len(labels))
            words.append(prediction.span_words)
        store = cls(
            torch.tensor(sentence_ids, dtype=torch.long),
            torch.tensor(counts, dtype=torch.long),
            torch.from_numpy(np.concatenate(words)),
            torch.from_numpy(np.concatenate(rows)),
        )
        store.o_offset = float(o_offset)
        return store

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
            "o_offset": torch.tensor(self.o_offset, dtype=torch.float64),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> PseudoLabelStore:
        store = cls(state["sentence_ids"], state["offsets"].diff(), state["span_words"], state["probabilities"])
        store.reliable, store.visited, store.logit_cache = state["reliable"], state["visited"], state["logit_cache"]
        store.o_offset = float(state.get("o_offset", 0.0))
        if store.logit_cache.dim() == 2:  # a checkpoint with the full `(S, C)` cache: keep what selection reads
            store.logit_cache = store.logit_cache.gather(1, store.probabilities.argmax(1, keepdim=True)).squeeze(1)
        return store

    def save(self, path: str | os.PathLike) -> None:
        """Writes the store atomically (temporary file, then rename)."""
        save_atomically(self.state_dict(), path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> PseudoLabelStore:
        return cls.from_state_dict(load_saved_state(path, "a pseudo-label store"))

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
def generate_pseudo_labels(
    model,
    dataset,
    batch_size: int = 32,
    pruning: str = "legacy",
    show_progress_bar: bool = False,
    min_entities_per_sentence: float = 0.0,
) -> PseudoLabelStore:
    """Labels every scorable span of the target `dataset` with `model`'s current prediction head.

    Args:
        min_entities_per_sentence: the entity floor (`entity_floor.entity_floor_offset`); 0: the model's own
            decisions. The offset applied is the store's `o_offset`.
    """
    predictions = unwrap_model(model).predict_words(
        dataset["tokens"], batch_size=batch_size, decoding=pruning, show_progress_bar=show_progress_bar
    )
    offset = entity_floor_offset(predictions, pruning, min_entities_per_sentence)
    return PseudoLabelStore.from_predictions(dataset["sentence_id"], predictions, pruning, offset)


ENTITY_SHARE_WARNING_RATIO = DEFAULT_ENTITY_FLOOR
"""`pseudo_label_mix` warns when the pseudo-labels hold fewer entities per sentence than this fraction of the source
data's."""


def pseudo_label_mix(
    class_mass: torch.Tensor | np.ndarray,
    num_target_sentences: int,
    source_class_counts: np.ndarray,
    num_source_sentences: int,
    labels: list[str],
) -> tuple[str, bool]:
    """Compares the entities per sentence of the pseudo-labels with those of the source data (needs no target
    labels).

    A teacher that finds far fewer entities in the target text than the source data holds is likely to miss many
    of them there; a student trained on its pseudo-labels then learns to miss them too (high precision, low recall).
    Entities are counted per sentence rather than per span, so that text split into characters (whose sentences have
    many more spans) compares with text split into words.

    Args:
        class_mass: `(num_labels,)` summed soft labels of all target spans (`PseudoLabelStore.class_mass`).
        num_target_sentences: sentences of the target text.
        source_class_counts: `(num_labels,)` gold span counts of the source training data.
        num_source_sentences: sentences of the source training data.
        labels: the label names, `O` first.

    Returns:
        A one-line report (entities per sentence, per class, pseudo-labels against source), and whether the
        pseudo-labels hold fewer than `ENTITY_SHARE_WARNING_RATIO` times the source's entities per sentence.

    Example:
        >>> pseudo_label_mix(np.array([98.0, 1.0, 1.0]), 4, np.array([90, 5, 5]), 5, ["O", "PER", "LOC"])
        ('entities per sentence: pseudo-labels 0.50, source 2.00 (PER 0.25/1.00, LOC 0.25/1.00)', True)
    """
    target = np.asarray(class_mass, dtype=np.float64)[1:] / max(num_target_sentences, 1)
    source = np.asarray(source_class_counts, dtype=np.float64)[1:] / max(num_source_sentences, 1)
    classes = ", ".join(f"{label} {target[i]:.2f}/{source[i]:.2f}" for i, label in enumerate(labels[1:]))
    report = f"entities per sentence: pseudo-labels {target.sum():.2f}, source {source.sum():.2f} ({classes})"
    return report, bool(target.sum() < ENTITY_SHARE_WARNING_RATIO * source.sum())


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
            trainer.log(scalar_diagnostics(record))  # to every `report_to` integration (TensorBoard, W&B, ...)

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
