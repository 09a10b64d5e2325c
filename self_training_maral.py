# Copyright 2026 The maral-xner authors. Licensed under the Apache License, Version 2.0.
"""The teacher -> student self-training pipeline (§1, §5, §6 of the method notes): one folder per stage, each built
atomically and reused when its settings, data and teacher are unchanged (fingerprints).

    >>> pipeline = SelfTrainingPipeline(args, build_model, source_train, target_text, source_class_counts,
    ...                                 class_weights, eval_datasets={"source_dev": dev})
    >>> student, metrics = pipeline.run()  # teacher/, rounds/round_1/, ... in args.output_dir
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from evaluation_maral import evaluate_datasets
from objectives import (
    ObjectiveContext,
    PseudoLabelStore,
    SourceObjective,
    build_objective,
    generate_pseudo_labels,
    require_target_text,
)
from objectives.distributed import wait_for_all_processes
from output_layout import (
    PARTIAL_SUFFIX,
    PSEUDO_LABEL_FILE,
    ROUNDS_FOLDER,
    SELF_TRAINING_LOG,
    STAGE_MARKER,
    TEACHER_STAGE,
    TRAINER_STATE_FILE,
    round_stage,
    stage_name,
)
from trainer_maral import MaralTrainer, MaralTrainingArguments

logger = logging.getLogger(__name__)

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
        "score_loaded_teacher",
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


def gold_spans_by_sentence(dataset) -> dict[int, list[tuple[int, int, int]]] | None:
    """`{sentence_id: [(start, end, label)]}` from a target dataset's `gold_spans` column (diagnostics only)."""
    if "gold_spans" not in dataset.column_names:
        return None
    return {
        row["sentence_id"]: [(span["start"], span["end"], span["label"]) for span in row["gold_spans"]]
        for row in dataset.select_columns(["sentence_id", "gold_spans"])
    }


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
        require_target_text(args.method, target_dataset is not None)
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
        teacher_dir = self._run_stage(TEACHER_STAGE, self._teacher_stage)
        results.update(self._stage_metrics(teacher_dir))
        labels_dir = teacher_dir
        for round_index in range(1, self.args.self_training_rounds + 1):
            round_dir = self._run_stage(
                round_stage(round_index),
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
        partial = final.with_name(final.name + PARTIAL_SUFFIX)
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
            marker = {"stage": relative, "method": self.args.method, "fingerprint": self.fingerprint}
            marker["metrics"] = metrics
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
            eval_dataset = {"source_dev": self.eval_datasets["source_dev"]} if select else None
            context = ObjectiveContext(
                stage_args, teacher.config.num_labels, self.class_weights, has_target_text=True
            )
            trainer = self._trainer(teacher, stage_args, eval_dataset, SourceObjective.from_context(context))
            trainer.train(resume_from_checkpoint=self._last_checkpoint(stage_dir, resume))
            teacher = trainer.model
        if self.is_main_process:
            teacher.save_pretrained(stage_dir)
        store = self._label_target(teacher, stage_dir)
        scored = not args.teacher_checkpoint or args.score_loaded_teacher
        metrics = self._report(teacher, TEACHER_STAGE) if scored else {}
        if self.gold is not None:
            oracle = store.oracle_metrics(self.gold, args.pseudo_label_pruning)
            metrics["teacher_pseudo_label_oracle_f1"] = oracle["f1"]
            self._append_log(stage_dir, [{"stage": TEACHER_STAGE, "pseudo_label_oracle": oracle}])
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
        stage_args = replace(args, output_dir=str(stage_dir))
        trainer = self._trainer(student, stage_args, self.eval_datasets or None, objective)
        trainer.train(resume_from_checkpoint=self._last_checkpoint(stage_dir, resume))
        student = trainer.model
        if self.is_main_process:
            student.save_pretrained(stage_dir)
            # The objective's final state (refined pseudo-labels, reliable mask, priors, margins, bank).
            torch.save(trainer.trainer_state_dict(), stage_dir / TRAINER_STATE_FILE)
        self._label_target(student, stage_dir)
        stage = stage_name(round_stage(round_index))
        self._append_log(stage_dir, [{"stage": stage, **record} for record in objective.history])
        return self._report(student, stage)

    # -- helpers -------------------------------------------------------------------------------------------------

    def _trainer(self, model, stage_args: MaralTrainingArguments, eval_dataset, objective) -> MaralTrainer:
        """A stage's trainer on the source data and the target text."""
        return MaralTrainer(
            model=model,
            args=stage_args,
            train_dataset=self.source_train,
            eval_dataset=eval_dataset,
            target_dataset=self.target_dataset,
            objective=objective,
            class_weights=self.class_weights,
            processing_class=model.tokenizer,
        )

    def _label_target(self, model, stage_dir: Path) -> PseudoLabelStore:
        store = generate_pseudo_labels(
            model,
            self.target_dataset,
            self.args.per_device_eval_batch_size,
            self.args.pseudo_label_pruning,
            show_progress_bar=not self.args.disable_tqdm,
        )
        if self.is_main_process:
            store.save(stage_dir / PSEUDO_LABEL_FILE)
        logger.info("Pseudo-labelled %d target spans (%.1f MB).", len(store), store.nbytes() / 2**20)
        return store

    def _report(self, model, prefix: str) -> dict[str, float]:
        return evaluate_datasets(
            model,
            self.report_datasets,
            prefix,
            self.args.per_device_eval_batch_size,
            self.args.eval_decoding,
            show_progress_bar=not self.args.disable_tqdm,
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
        stage_logs = [self.output_dir / TEACHER_STAGE / SELF_TRAINING_LOG]
        stage_logs += sorted(
            (self.output_dir / ROUNDS_FOLDER).glob(f"round_*/{SELF_TRAINING_LOG}"),
            key=lambda path: int(path.parent.name.split("_")[1]),
        )
        lines = [line for path in stage_logs if path.is_file() for line in path.read_text().splitlines()]
        if self.is_main_process:
            (self.output_dir / SELF_TRAINING_LOG).write_text("".join(line + "\n" for line in lines))
        wait_for_all_processes()
