# Copyright 2026 The maral-xner authors. Licensed under the Apache License, Version 2.0.
"""`MaralTrainer`: a `transformers.Trainer` for cross-lingual span NER whose loss is a pluggable `TrainingObjective`.

The trainer owns what every method shares: the source (labelled) dataloader, an independent stream of target
(unlabelled) batches (`TargetBatchStream`), the objective's epoch hooks (`ObjectiveCallback`), a learning rate of
its own for the new span heads, span-level evaluation on any number of datasets, and checkpoints that carry the
objective's state. *What* is optimised comes from `objectives/` (one file per `--method`): `compute_loss` delegates
to the objective. A single-stage method (`source_only`, `pram`) is one `MaralTrainer` run; a teacher -> student
method (`self_training`, `maral`, `contproto`, `mcl`) is a sequence of them driven by
`self_training_maral.SelfTrainingPipeline`.

Example:
    >>> trainer = MaralTrainer(model=model, args=MaralTrainingArguments("out"), train_dataset=source,
    ...                        eval_dataset={"source_dev": dev, "target_test": test}, target_dataset=target,
    ...                        processing_class=tokenizer)
    >>> trainer.train()
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from data_loading.collator import MaralDataCollator
from evaluation_maral import evaluate_datasets
from modeling_maral import DECODING_MODES
from objectives import (
    OBJECTIVES,
    ContProtoSettings,
    MaralSettings,
    MclSettings,
    MlmSettings,
    ObjectiveContext,
    PramSettings,
    PseudoLabelSettings,
    TrainingObjective,
    build_objective,
    class_weights_from_counts,
    methods,
)
from objectives.distributed import account_for_every_forward_pass, process_rank_and_count, wait_for_all_processes
from objectives.settings import (
    SettingCheck,
    help_text,
    is_non_negative,
    is_positive,
    unused_settings,
    validate_settings,
)
from output_layout import TRAINER_STATE_FILE, load_saved_state, save_atomically

logger = logging.getLogger(__name__)

METHODS = methods()
"""Every `--method`, in the order of the docs (derived from the registry `OBJECTIVES`)."""


@dataclass
class MaralTrainingArguments(
    PseudoLabelSettings, MlmSettings, MaralSettings, ContProtoSettings, PramSettings, MclSettings, TrainingArguments
):
    """`TrainingArguments` plus the cross-lingual settings: the method, and the settings of every method (each
    defined beside its objective: `MlmSettings`, `PseudoLabelSettings`, `MaralSettings`, `ContProtoSettings`,
    `PramSettings`, `MclSettings`). `TrainingArguments` comes first in the field order, so
    `MaralTrainingArguments("out")` names the output folder as with `TrainingArguments`.

    Args:
        method: the training objective (`OBJECTIVES`): `source_only` trains the teacher alone (source CE + target
            MLM) and `pram` is end-to-end; `self_training`, `maral`, `contproto` and `mcl` add pseudo-labelling by the
            teacher and a student stage.
        target_batch_size: target sentences per step (defaults to `per_device_train_batch_size`).
        eval_decoding: overlap resolution in evaluation (`greedy`, `legacy`, `none`); the model's default if unset.
        head_learning_rate: learning rate of every parameter outside the pretrained encoder (span representation
            embeddings, span classifier, projection head, MLM head); defaults to `learning_rate`. Freshly
            initialised heads often need a larger rate than the encoder when training budgets are small.
    """

    method: str = field(
        default="source_only", metadata=help_text("Training objective (see the README's Methods).", METHODS)
    )
    target_batch_size: int | None = field(
        default=None, metadata=help_text("Target sentences per step; unset: per_device_train_batch_size.")
    )
    eval_decoding: str | None = field(
        default=None, metadata=help_text("Overlap resolution in evaluation; unset: the model's.", DECODING_MODES)
    )
    head_learning_rate: float | None = field(
        default=None,
        metadata=help_text(
            "Learning rate of the new layers (span heads, embeddings, MLM head); unset: learning_rate."
        ),
    )

    checks: ClassVar[tuple[SettingCheck, ...]] = (
        SettingCheck("method", lambda value: value in OBJECTIVES, f"must be one of {', '.join(METHODS)}"),
        SettingCheck(
            "eval_decoding", lambda value: value is None or value in DECODING_MODES, "must be greedy, legacy or none"
        ),
        SettingCheck("head_learning_rate", lambda value: value is None or is_positive(value), "must be > 0"),
        SettingCheck("learning_rate", is_positive, "must be a number > 0"),
        SettingCheck("per_device_train_batch_size", lambda value: value >= 1, "must be >= 1"),
        SettingCheck("per_device_eval_batch_size", lambda value: value >= 1, "must be >= 1"),
        SettingCheck("gradient_accumulation_steps", lambda value: value >= 1, "must be >= 1"),
        SettingCheck("target_batch_size", lambda value: value is None or value >= 1, "must be >= 1"),
        SettingCheck(
            "num_train_epochs",
            is_positive,
            "must be > 0 to train (or give --max_steps)",
            applies=lambda settings: settings.do_train and settings.max_steps <= 0,
        ),
        SettingCheck("weight_decay", is_non_negative, "must be a number >= 0"),
        SettingCheck("max_grad_norm", lambda value: value is None or is_non_negative(value), "must be >= 0"),
    )

    def __post_init__(self) -> None:
        validate_settings(self)  # before `TrainingArguments` reads them
        for name, readers in unused_settings(self, self.method):
            message = f"`--{name}` is a setting of {', '.join(readers)}; --method {self.method} does not use it."
            warnings.warn(message, UserWarning, stacklevel=2)
        super().__post_init__()
        if self.student_init is None:
            self.student_init = OBJECTIVES[self.method].default_student_init
        # Span batches carry custom keys: keep every column and name the label key explicitly.
        self.remove_unused_columns = False
        self.label_names = ["labels"]


# -- checkpoints ------------------------------------------------------------------------------------------------

CHECKPOINT_PATTERN = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def checkpoint_step(path: str | Path) -> int | None:
    """The step of a `checkpoint-<step>` folder name, None for another name."""
    match = CHECKPOINT_PATTERN.match(Path(path).name)
    return int(match.group(1)) if match else None


def is_complete_checkpoint(path: str | Path) -> bool:
    """Whether a checkpoint folder is complete: `MaralTrainer` writes the objective's state (`TRAINER_STATE_FILE`)
    last and atomically, after every file of `Trainer`, so a process killed while saving leaves no such file."""
    path = Path(path)
    return (path / TRAINER_STATE_FILE).is_file() and (path / TRAINER_STATE_NAME).is_file()


def checkpoints_in(folder: str | Path) -> list[Path]:
    """The `checkpoint-<step>` folders of `folder` (complete or not), oldest step first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [path for path in folder.iterdir() if path.is_dir() and checkpoint_step(path) is not None]
    return sorted(found, key=checkpoint_step)


def last_complete_checkpoint(folder: str | Path) -> str | None:
    """The complete checkpoint of `folder` with the highest step (incomplete ones are passed over), or None."""
    complete = [path for path in checkpoints_in(folder) if is_complete_checkpoint(path)]
    return str(complete[-1]) if complete else None


def remove_incomplete_checkpoints(folder: str | Path) -> None:
    """Deletes the checkpoints of `folder` that a killed process left incomplete (call on the main process)."""
    for path in checkpoints_in(folder):
        if not is_complete_checkpoint(path):
            logger.warning("Removing the incomplete checkpoint %s (a process was killed while saving it).", path)
            shutil.rmtree(path)


def resume_request(value: str | bool | None) -> str | bool | None:
    """`--resume_from_checkpoint` as a request: None (not given, or `false`), True (`true`: the newest complete
    checkpoint) or the path of one checkpoint."""
    if value is None or value is False or str(value).strip().lower() in ("", "false", "no", "0", "none"):
        return None
    if value is True or str(value).strip().lower() in ("true", "yes", "1"):
        return True
    return str(value)


def check_checkpoint(path: str | Path) -> str:
    """Returns `path` when it is a complete checkpoint folder.

    Raises:
        ValueError: naming `--resume_from_checkpoint` and the reason (missing, not a checkpoint, incomplete).
    """
    path = Path(path)
    flag = f"--resume_from_checkpoint {path}"
    if not path.exists():
        raise ValueError(f"{flag}: no such folder.")
    if not path.is_dir() or checkpoint_step(path) is None:
        raise ValueError(f"{flag}: not a checkpoint folder (one named {PREFIX_CHECKPOINT_DIR}-<step>).")
    if not is_complete_checkpoint(path):
        newest = last_complete_checkpoint(path.parent)
        advice = f"resume from {newest}, the newest complete one" if newest else "there is no complete one"
        raise ValueError(
            f"{flag}: the checkpoint is incomplete (no {TRAINER_STATE_FILE} or {TRAINER_STATE_NAME}; the process was "
            f"killed while saving it): {advice}, or pass --resume_from_checkpoint true."
        )
    return str(path)


def checkpoint_to_resume(request: str | bool | None, folder: str | Path) -> str | None:
    """The checkpoint a run resumes from: the requested one (checked), the newest complete one of `folder` for
    `True` (None when there is none), None for no request."""
    if request is None:
        return None
    if request is True:
        checkpoint = last_complete_checkpoint(folder)
        if checkpoint is None:
            logger.warning("--resume_from_checkpoint: %s has no complete checkpoint; training from the start.", folder)
        return checkpoint
    return check_checkpoint(request)


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


def with_length_column(dataset, column: str):
    """Adds the number of words of each sentence as `column` (for `--train_sampling_strategy group_by_length`)."""
    if column in dataset.column_names:
        return dataset
    return dataset.add_column(column, [len(tokens) for tokens in dataset["tokens"]])


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
            method (`source_only`, `pram`). A teacher -> student method needs `SelfTrainingPipeline`, which
            passes each stage's objective (a `ValueError` says so otherwise).
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
        if objective is None and OBJECTIVES[args.method].self_training:
            raise ValueError(
                f"--method {args.method} trains a teacher and then a student on its pseudo-labels, which takes more "
                "than one MaralTrainer: run it with `self_training_maral.SelfTrainingPipeline` (see the README's "
                "Python example) or `run_xner.py`, or pass this stage's `objective=`."
            )
        self.objective = objective or build_objective(
            args.method,
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

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, **kwargs: Any):
        """`Trainer.train`, resuming only from complete checkpoints: `True` takes the newest complete one of
        `output_dir`, a path must be complete (`check_checkpoint`); incomplete ones of `output_dir` are removed."""
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"No complete checkpoint in {self.args.output_dir} to resume from.")
        if resume_from_checkpoint:
            check_checkpoint(resume_from_checkpoint)
            if self.args.should_save:
                remove_incomplete_checkpoints(self.args.output_dir)
            wait_for_all_processes()
        return super().train(resume_from_checkpoint=resume_from_checkpoint or None, trial=trial, **kwargs)

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
        account_for_every_forward_pass(model, loss)
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
        """Span F1 and seqeval P/R/F1 on one dataset (`<prefix>_...`) or on each dataset of a dict
        (`<prefix>_<name>_...`), logged together in one record."""
        dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        if isinstance(dataset, str):
            dataset = {dataset: self.eval_dataset[dataset]}
        if dataset is None:
            raise ValueError("No evaluation dataset: pass `eval_dataset` to the trainer or to `evaluate`.")
        named = dataset if isinstance(dataset, dict) else {"": dataset}
        metrics = evaluate_datasets(
            self.model,
            named,
            metric_key_prefix,
            self.args.per_device_eval_batch_size,
            self.args.eval_decoding,
            per_label=self.include_per_label_metrics,
            show_progress_bar=not self.args.disable_tqdm,
        )
        if self.state.epoch is not None:
            metrics["epoch"] = self.state.epoch
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    # -- model card -------------------------------------------------------------------------------------------

    def create_model_card(
        self,
        language: str | list[str] | None = None,
        license: str | None = None,
        tags: str | list[str] | None = None,
        model_name: str | None = None,
        finetuned_from: str | None = None,
        tasks: str | list[str] | None = None,
        dataset_tags: str | list[str] | None = None,
        dataset: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
    ) -> None:
        """Writes this package's card (`model_cards.write_model_card`) for the model saved in `output_dir` (call
        `save_model` first; `push_to_hub` does), in place of `Trainer`'s generic one. It reads the run's saved
        `run_info.json` (written by `run_xner.py`) and completes it from the trainer (arguments, datasets).

        Args:
            language: language code(s) of the card; default: the model's source and target languages.
            license: a Hub license id; default: the base model's, when known offline, else none.
            tags: tags added to the card's own.
            model_name: the card's title and model-index name; default: the last part of `hub_model_id`.
            finetuned_from: Hub id of the base model (the encoder).
            tasks: the card's task is token classification; another task is refused.
            dataset_tags: Hub ids of the datasets, listed under `datasets`.
            dataset: the same (ids of the datasets, joined with `dataset_tags`).
            dataset_args: not used: the model-index names each evaluated dataset by its role in the run.

        Raises:
            ValueError: for a `tasks` other than token classification.
        """
        if not self.is_world_process_zero():
            return
        from model_cards import write_model_card
        from model_cards.card import PIPELINE_TAG
        from model_cards.run import trainer_run_info

        if tasks is not None and set([tasks] if isinstance(tasks, str) else tasks) - {PIPELINE_TAG}:
            raise ValueError(f"tasks={tasks!r}: a MARAL model card is for {PIPELINE_TAG!r} only; leave tasks out.")
        info = trainer_run_info(
            self,
            language=language,
            license=license,
            tags=tags,
            model_name=model_name,
            finetuned_from=finetuned_from,
            dataset_tags=dataset_tags,
            dataset=dataset,
        )
        write_model_card(self.args.output_dir, info)

    # -- checkpoints --------------------------------------------------------------------------------------------

    def _save_checkpoint(self, model, trial) -> None:
        """`Trainer`'s checkpoint, then the objective's state, written last and atomically: a checkpoint counts
        only once complete (`is_complete_checkpoint`), and older ones are rotated out only then."""
        run_dir = self._get_output_dir(trial)
        checkpoint_dir = Path(run_dir) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        if self.args.should_save and checkpoint_dir.exists():
            shutil.rmtree(checkpoint_dir)  # left by a run resumed from an earlier checkpoint: never mix the two
        wait_for_all_processes()
        save_total_limit, self.args.save_total_limit = self.args.save_total_limit, None
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = save_total_limit
        wait_for_all_processes()  # every process has written its files (RNG states) into the checkpoint
        if self.args.should_save:
            save_atomically(self.trainer_state_dict(), checkpoint_dir / TRAINER_STATE_FILE)
            rotate_checkpoints(run_dir, save_total_limit, self.state.best_model_checkpoint, use_mtime=True)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        check_checkpoint(resume_from_checkpoint)
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        state_path = Path(resume_from_checkpoint) / TRAINER_STATE_FILE
        self.load_trainer_state_dict(load_saved_state(state_path, "the objective's checkpoint state"))

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


__all__ = [
    "METHODS",
    "check_checkpoint",
    "checkpoint_to_resume",
    "is_complete_checkpoint",
    "last_complete_checkpoint",
    "OBJECTIVES",
    "MaralTrainer",
    "MaralTrainingArguments",
    "ObjectiveCallback",
    "TargetBatchStream",
    "class_weights_from_counts",
]
