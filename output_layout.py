# Copyright 2026 The maral-xner authors. Licensed under the Apache License, Version 2.0.
"""The file and folder names of a run's output folder, in one place (the trainer, the self-training pipeline,
`run_xner.py` and the model cards read them from here).

    <output_dir>/                  the final model (safetensors, config.json, modeling_maral.py, tokenizer),
                                   all_results.json and the other *_results.json, predictions.jsonl,
                                   self_training_log.jsonl (per-epoch diagnostics of all stages)
        teacher/                   a finished stage: its model, stage.json, pseudo_labels.pt
        rounds/round_<r>/          the student of round r: the same, plus maral_trainer_state.pt
        <stage>.partial/           a stage being trained: stage_fingerprint.json, its checkpoint-<step>/ folders
        checkpoint-<step>/         the Trainer's checkpoints of a single-stage run (+ maral_trainer_state.pt, written
                                   last: a checkpoint without it is incomplete and never resumed)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

STAGE_MARKER = "stage.json"
"""Written last into a stage folder: its metrics and the fingerprint of its settings, data and teacher."""
PSEUDO_LABEL_FILE = "pseudo_labels.pt"
"""The `PseudoLabelStore` a stage's model gives the target text."""
TRAINER_STATE_FILE = "maral_trainer_state.pt"
"""The objective's state and the target stream's position, beside every checkpoint and in a finished student."""
STAGE_FINGERPRINT_FILE = "stage_fingerprint.json"
"""Written first into a `<stage>.partial` folder: the fingerprint its checkpoints are trained with."""
SELF_TRAINING_LOG = "self_training_log.jsonl"
"""Per-epoch diagnostics of the self-training stages."""
PREDICTIONS_FILE = "predictions.jsonl"
"""The entities of every target test sentence."""
ALL_RESULTS_FILE = "all_results.json"
CARD_FILE = "README.md"
RUN_INFO_FILE = "run_info.json"
"""What the card knows about the run beyond the folder's files (`model_cards.RunInfo`), to write the card again."""
RESULT_FILES = (
    ALL_RESULTS_FILE,
    "train_results.json",
    "eval_results.json",
    "predict_results.json",
    PREDICTIONS_FILE,
    CARD_FILE,
    RUN_INFO_FILE,
    SELF_TRAINING_LOG,
    "trainer_state.json",
)
"""What a run reports (and its card reads): removed by `--overwrite_output_dir` before a new run writes its own."""
TEACHER_STAGE = "teacher"
ROUNDS_FOLDER = "rounds"
PARTIAL_SUFFIX = ".partial"
STAGE_FOLDERS = (TEACHER_STAGE, TEACHER_STAGE + PARTIAL_SUFFIX, ROUNDS_FOLDER)
"""The top-level folders of the self-training stages (finished or not) in an output folder."""


class UnreadableFileError(ValueError):
    """A saved state file that cannot be read (truncated, overwritten, not written by maral-xner)."""


def load_saved_state(path: str | os.PathLike, what: str) -> Any:
    """`torch.load(path, weights_only=True)` (never runs pickled code).

    Raises:
        UnreadableFileError: naming the file and what it should hold, for a damaged file or one with pickled code.
    """
    import torch

    try:
        return torch.load(path, weights_only=True)
    except FileNotFoundError:
        raise UnreadableFileError(f"{path}: missing; it should hold {what}.") from None
    except Exception as error:  # noqa: BLE001 - torch raises many types for a damaged file
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UnreadableFileError(
            f"{path}: cannot be read as {what} ({type(error).__name__}: {reason}); the file is damaged or was not "
            "written by maral-xner. Remove the folder that holds it so that it is produced again."
        ) from None


def save_atomically(state: Any, path: str | os.PathLike) -> None:
    """`torch.save(state, path)` through a temporary file and a rename: `path` is either complete or absent."""
    import torch

    temporary = f"{path}.tmp"
    torch.save(state, temporary)
    os.replace(temporary, path)


def round_stage(round_index: int) -> str:
    """The stage folder of round `round_index`, relative to the output folder: `rounds/round_<r>`."""
    return f"{ROUNDS_FOLDER}/round_{round_index}"


def stage_name(stage: str) -> str:
    """`teacher` -> `teacher`, `rounds/round_2` -> `round_2` (the prefix of the stage's metrics)."""
    return Path(stage).name


def finished_stages(output_dir: str | Path) -> list[tuple[str, Path]]:
    """Finished self-training stages (`teacher`, `round_1`, ...) of an output folder, in training order."""
    output_dir = Path(output_dir)
    teacher = output_dir / TEACHER_STAGE
    stages = [(TEACHER_STAGE, teacher)] if (teacher / STAGE_MARKER).is_file() else []
    rounds = [path for path in (output_dir / ROUNDS_FOLDER).glob("round_*") if (path / STAGE_MARKER).is_file()]
    rounds.sort(key=lambda path: int(path.name.split("_")[1]) if path.name.split("_")[1].isdigit() else 0)
    return stages + [(path.name, path) for path in rounds]
