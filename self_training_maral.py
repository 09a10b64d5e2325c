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
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from evaluation_maral import evaluate_datasets
from objectives import (
    ENTITY_SHARE_WARNING_RATIO,
    ObjectiveContext,
    PseudoLabelStore,
    SourceObjective,
    build_objective,
    generate_pseudo_labels,
    pseudo_label_mix,
    require_target_text,
)
from objectives.distributed import wait_for_all_processes
from objectives.entity_floor import source_entities_per_sentence
from output_layout import (
    PARTIAL_SUFFIX,
    PSEUDO_LABEL_FILE,
    ROUNDS_FOLDER,
    SELF_TRAINING_LOG,
    STAGE_FINGERPRINT_FILE,
    STAGE_MARKER,
    TEACHER_STAGE,
    TRAINER_STATE_FILE,
    round_stage,
    save_atomically,
    stage_name,
)
from trainer_maral import (
    MaralTrainer,
    MaralTrainingArguments,
    check_checkpoint,
    last_complete_checkpoint,
    remove_incomplete_checkpoints,
    resume_request,
)

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
        "hub_strategy",
        "hub_private_repo",
        "hub_always_push",
        "report_to",
        "logging_strategy",
        "logging_steps",
        "logging_first_step",
        "disable_tqdm",
        "per_device_eval_batch_size",
        "score_loaded_teacher",
        # The checkpoint cadence: when and how often a stage saves changes nothing it trains.
        "save_strategy",
        "save_steps",
        "save_total_limit",
        "save_only_model",
        "save_on_each_node",
    }
)
LATEST_CHECKPOINT = True
"""A stage's resume plan entry for `--resume_from_checkpoint true`: its newest complete checkpoint."""


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
    fingerprint; otherwise the stage is trained again). With `--resume_from_checkpoint true` an unfinished stage
    resumes from its newest complete checkpoint (one with the objective's state, written last), with a checkpoint
    path from that one (see `_resume_plan`).

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

    @property
    def stages(self) -> list[str]:
        """The stage folders of the run, in training order: `teacher`, `rounds/round_1`, ..."""
        return [TEACHER_STAGE] + [round_stage(r) for r in range(1, self.args.self_training_rounds + 1)]

    def run(self):
        """Trains the teacher (or loads `--teacher_checkpoint`) and every round; returns the last student and the
        per-stage metrics."""
        results: dict[str, float] = {}
        self.fingerprint = self._settings_fingerprint()
        self.resume_plan = self._resume_plan()
        teacher_dir = self._run_stage(TEACHER_STAGE, self._teacher_stage)
        results.update(self._stage_metrics(teacher_dir))
        labels_dir = teacher_dir
        for round_index in range(1, self.args.self_training_rounds + 1):
            round_dir = self._run_stage(
                round_stage(round_index),
                lambda stage_dir, checkpoint, r=round_index, source=labels_dir: self._student_stage(
                    stage_dir, checkpoint, r, teacher_dir, source
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

    def _is_finished(self, relative: str) -> bool:
        """Whether the stage folder is finished with this run's fingerprint (it is then reused)."""
        marker = self.output_dir / relative / STAGE_MARKER
        return marker.is_file() and json.loads(marker.read_text()).get("fingerprint") == self.fingerprint

    def _partial(self, relative: str) -> Path:
        final = self.output_dir / relative
        return final.with_name(final.name + PARTIAL_SUFFIX)

    def _resume_plan(self) -> dict[str, str | bool]:
        """`{stage: checkpoint path, or LATEST_CHECKPOINT}` from `--resume_from_checkpoint`, checked before any
        training.

        `true` resumes every unfinished stage from its newest complete checkpoint. A path names one checkpoint of
        one stage (`<output_dir>/<stage>.partial/checkpoint-<step>`): that stage resumes from it, the stages
        before it must be finished, the ones after it are trained again.

        Raises:
            ValueError: naming `--resume_from_checkpoint` and why the checkpoint cannot be used.
        """
        request = resume_request(self.args.resume_from_checkpoint)
        if request is None:
            return {}
        if request is True:
            for relative in self.stages:
                self._check_partial_fingerprint(relative)
            return {relative: LATEST_CHECKPOINT for relative in self.stages}
        checkpoint = Path(check_checkpoint(request))
        relative = self._stage_of(checkpoint)
        flag = f"--resume_from_checkpoint {request}"
        if relative == TEACHER_STAGE and self.args.teacher_checkpoint:
            raise ValueError(f"{flag}: the teacher is loaded from --teacher_checkpoint, it is not trained.")
        if self._is_finished(relative):
            raise ValueError(
                f"{flag}: stage {relative} is finished with these settings ({self.output_dir / relative}), so its "
                "checkpoint would not be used; remove that folder to train the stage again from the checkpoint."
            )
        for earlier in self.stages[: self.stages.index(relative)]:
            if not self._is_finished(earlier):
                raise ValueError(
                    f"{flag}: it belongs to stage {relative}, but stage {earlier} before it is not finished with "
                    "these settings; resume that stage first (--resume_from_checkpoint true)."
                )
        self._check_partial_fingerprint(relative)
        return {relative: str(checkpoint)}

    def _stage_of(self, checkpoint: Path) -> str:
        """The stage (`teacher`, `rounds/round_<r>`) whose `.partial` folder holds `checkpoint`."""
        parent = checkpoint.resolve().parent
        stages = {self._partial(relative).resolve(): relative for relative in self.stages}
        if parent not in stages:
            folders = ", ".join(str(self._partial(relative)) for relative in self.stages)
            raise ValueError(
                f"--resume_from_checkpoint {checkpoint}: not a checkpoint of a stage of --output_dir "
                f"{self.output_dir} (those are in {folders})."
            )
        return stages[parent]

    def _check_partial_fingerprint(self, relative: str) -> None:
        """Refuses to resume an unfinished stage that was started with other settings, data or teacher."""
        recorded = self._partial(relative) / STAGE_FINGERPRINT_FILE
        if self._is_finished(relative) or not recorded.is_file():
            return
        if json.loads(recorded.read_text()).get("fingerprint") != self.fingerprint:
            raise ValueError(
                f"--resume_from_checkpoint: the unfinished stage {relative} ({self._partial(relative)}) was started "
                "with other settings, data or teacher, so its checkpoints would continue another run. Rerun with "
                "those settings, or without --resume_from_checkpoint (and with --overwrite_output_dir) to train it "
                "again."
            )

    def _checkpoint_to_resume(self, relative: str, partial: Path) -> str | None:
        """The checkpoint the stage resumes from (the plan's), or None to train it from the start."""
        planned = self.resume_plan.get(relative)
        if planned is None or not partial.is_dir():
            return None
        if planned is LATEST_CHECKPOINT:
            planned = last_complete_checkpoint(partial)
            if planned is None:
                logger.info("Stage %s has no complete checkpoint in %s: training from the start.", relative, partial)
        return planned

    def _run_stage(self, relative: str, train) -> Path:
        final = self.output_dir / relative
        if self._is_finished(relative):
            logger.info("Stage %s is finished (%s): skipping it.", relative, final)
            return final
        if (final / STAGE_MARKER).is_file():
            logger.warning(
                "Stage %s in %s was trained with other settings, data or teacher: training it again (the old stage "
                "is replaced once the new one is complete).",
                relative,
                final,
            )
        partial = self._partial(relative)
        checkpoint = self._checkpoint_to_resume(relative, partial)
        wait_for_all_processes()  # every process has decided before the main one changes the folder
        if self.is_main_process:
            if partial.exists() and checkpoint is None:
                shutil.rmtree(partial)
            partial.mkdir(parents=True, exist_ok=True)
            if checkpoint is None:
                (partial / STAGE_FINGERPRINT_FILE).write_text(json.dumps({"fingerprint": self.fingerprint}) + "\n")
            else:
                remove_incomplete_checkpoints(partial)
        wait_for_all_processes()
        if checkpoint is None:
            logger.info("Stage %s: training in %s", relative, partial)
        else:
            logger.info("Stage %s: resuming from %s", relative, checkpoint)
        try:
            metrics = train(partial, checkpoint)
        except BaseException:
            self._discard_if_unresumable(partial)
            raise
        if self.is_main_process:
            for leftover in partial.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
                shutil.rmtree(leftover)
            (partial / STAGE_FINGERPRINT_FILE).unlink(missing_ok=True)
            marker = {"stage": relative, "method": self.args.method, "fingerprint": self.fingerprint}
            marker["metrics"] = metrics
            (partial / STAGE_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
            if final.exists():
                shutil.rmtree(final)  # an unfinished leftover of an earlier run (no stage marker)
            os.replace(partial, final)
        wait_for_all_processes()
        return final

    def _discard_if_unresumable(self, partial: Path) -> None:
        """After a failed stage, removes its `.partial` folder when it holds no complete checkpoint to resume, so
        that the output folder is as before and a corrected rerun is not refused."""
        if self.is_main_process and partial.is_dir() and last_complete_checkpoint(partial) is None:
            shutil.rmtree(partial, ignore_errors=True)
            for folder in (partial.parent, self.output_dir):
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()

    @property
    def is_main_process(self) -> bool:
        """Only the main process writes stage folders (all processes train and label)."""
        return self.args.should_save

    def _teacher_stage(self, stage_dir: Path, checkpoint: str | None) -> dict[str, float]:
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
                # Selection saves every epoch (the best one is reloaded); otherwise the user's cadence.
                save_strategy="epoch" if select else args.save_strategy,
                load_best_model_at_end=select,
                metric_for_best_model="eval_source_dev_span_f1" if select else None,
                greater_is_better=True if select else None,
                save_total_limit=1 if select else args.save_total_limit,
            )
            teacher = self.build_model(None)
            eval_dataset = {"source_dev": self.eval_datasets["source_dev"]} if select else None
            context = ObjectiveContext(stage_args, teacher.config.num_labels, self.class_weights, has_target_text=True)
            trainer = self._trainer(teacher, stage_args, eval_dataset, SourceObjective.from_context(context))
            trainer.train(resume_from_checkpoint=checkpoint)
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
        metrics["teacher_pseudo_label_o_offset"] = store.o_offset
        return metrics

    def _student_stage(
        self, stage_dir: Path, checkpoint: str | None, round_index: int, teacher_dir: Path, labels_dir: Path
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
        trainer.train(resume_from_checkpoint=checkpoint)
        student = trainer.model
        if self.is_main_process:
            student.save_pretrained(stage_dir)
            # The objective's final state (refined pseudo-labels, reliable mask, priors, margins, bank).
            save_atomically(trainer.trainer_state_dict(), stage_dir / TRAINER_STATE_FILE)
        own_labels = self._label_target(student, stage_dir)
        if own_labels.o_offset > 0:  # the entity floor: the student's own decisions on the target text
            student.config.o_logit_offset += own_labels.o_offset
            if self.is_main_process:
                student.config.save_pretrained(stage_dir)
        stage = stage_name(round_stage(round_index))
        self._append_log(stage_dir, [{"stage": stage, **record} for record in objective.history])
        metrics = self._report(student, stage)
        metrics[f"{stage}_o_logit_offset"] = student.config.o_logit_offset
        return metrics

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
        source_rate = source_entities_per_sentence(self.source_class_counts, len(self.source_train))
        floor = self.args.target_entity_floor * source_rate
        store = generate_pseudo_labels(
            model,
            self.target_dataset,
            self.args.per_device_eval_batch_size,
            self.args.pseudo_label_pruning,
            show_progress_bar=not self.args.disable_tqdm,
            min_entities_per_sentence=floor,
        )
        if self.is_main_process:
            store.save(stage_dir / PSEUDO_LABEL_FILE)
        logger.info("Pseudo-labelled %d target spans (%.1f MB).", len(store), store.nbytes() / 2**20)
        if store.o_offset > 0:
            logger.info(
                "Entity floor: the model found fewer than %.2f entities per sentence (%.2f x the source's %.2f) in "
                "the target text; its O scores were lowered by %.3f nats for the pseudo-labels.",
                floor,
                self.args.target_entity_floor,
                source_rate,
                store.o_offset,
            )
        report, too_few = pseudo_label_mix(
            store.class_mass(),
            len(store.sentence_ids),
            self.source_class_counts,
            len(self.source_train),
            model.config.labels,
        )
        logger.info("Pseudo-label class mix: %s.", report)
        if too_few and not self.args.target_entity_floor:
            logger.warning(
                "The pseudo-labels hold less than %d %% of the source data's entities per sentence: the model finds "
                "few entities in the target text and a student trained on them may miss many (low recall). The entity "
                "floor (--target_entity_floor %.1f, the default) corrects for it without target labels.",
                100 * ENTITY_SHARE_WARNING_RATIO,
                ENTITY_SHARE_WARNING_RATIO,
            )
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
