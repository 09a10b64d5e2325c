#!/usr/bin/env python
# Copyright 2026 The maral-xner authors. Licensed under the Apache License, Version 2.0.
"""Zero-resource cross-lingual span NER from the command line, in the style of transformers' `run_ner.py`.

Train on labelled source-language data, use raw target-language text, evaluate on target-language data:

    python run_xner.py \
        --model_name_or_path .cache/encoders/multilingual-e5-small \
        --source_train_file examples/data/en_train.json --source_validation_file examples/data/en_dev.json \
        --target_unlabeled_file examples/data/de_unlabeled.json --target_test_file examples/data/de_test.json \
        --output_dir outputs/demo --do_train --do_eval --do_predict

or from datasets, by split (`data_loading.sources`): `--dataset_name wikiann --dataset_config_name en
--target_dataset_config_name de`; or with every argument in one JSON/YAML file: `python run_xner.py
examples/demo_en_de.json`.

Outputs in `--output_dir`: the model (safetensors, `config.json` with `auto_map`, `modeling_maral.py`, tokenizer),
its model card `README.md`, `train_results.json`, `eval_results.json`, `predict_results.json`, `all_results.json` and
`predictions.jsonl`. `--push_to_hub --hub_model_id user/name` then uploads the model with its card in one commit at
the end of the run, and `--push_dataset_to_hub user/data` the run's span data as a `DatasetDict`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import transformers
from safetensors import safe_open
from transformers import HfArgumentParser, set_seed
from transformers.trainer import TRAINING_ARGS_NAME

from data_loading import (
    code_switch_dataset,
    count_span_labels,
    load_code_switched_file,
    read_bilingual_dictionary,
)
from data_loading.collator import entity_coverage, warn_about_unreachable_entities
from data_loading.sources import (
    UNLABELED_DATASETS,
    data_sources,
    datasets_named,
    file_flags,
    load_source,
    source_labels,
)
from evaluation_maral import evaluate_datasets, evaluate_model, flatten_metrics
from model_cards.publish import weight_files
from model_cards.run import publish_run, write_run_card
from modeling_maral import (
    DECODING_MODES,
    DEFAULT_MAX_SEQ_LENGTH,
    DEFAULT_MAX_SPAN_WIDTH,
    MaralConfig,
    MaralForSpanNER,
    __version__,
    check_span_limits,
)
from objectives import OBJECTIVES, class_weights_from_counts
from objectives.settings import SettingCheck, is_positive, is_probability_below_one, validate_settings
from output_layout import (
    ALL_RESULTS_FILE,
    PARTIAL_SUFFIX,
    PREDICTIONS_FILE,
    RESULT_FILES,
    ROUNDS_FOLDER,
    STAGE_FOLDERS,
)
from prediction_io import check_predict_file, predict_file, write_predictions
from run_config import read_config_file, typed_config
from self_training_maral import SelfTrainingPipeline
from trainer_maral import (
    MaralTrainer,
    MaralTrainingArguments,
    check_checkpoint,
    checkpoint_to_resume,
    checkpoints_in,
    last_complete_checkpoint,
    resume_request,
)

logger = logging.getLogger("run_xner")


@dataclass
class ModelArguments:
    """Which encoder or trained model to start from."""

    model_name_or_path: str = field(
        metadata={"help": "Pretrained encoder (local dir or Hub id) or a trained MARAL model directory."}
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "Tokenizer to use if not the one of model_name_or_path."}
    )
    encoder_dropout: float | None = field(
        default=None, metadata={"help": "Override the encoder's hidden/attention dropout (the paper uses 0.2)."}
    )
    classifier_dropout: float = field(default=0.2, metadata={"help": "Dropout of the span representation and heads."})
    freeze_word_embeddings: bool = field(
        default=False,
        metadata={"help": "Freeze the encoder's word-embedding matrix (much faster on CPU for 250k vocabularies)."},
    )
    decoding: str | None = field(
        default=None,
        metadata={
            "help": "Overlap resolution of predictions; unset: greedy, or the trained model's.",
            "choices": list(DECODING_MODES),
        },
    )
    projection_dim: int = field(default=64, metadata={"help": "Size of the contrastive projection (MARAL)."})
    contrastive_temperature: float = field(
        default=0.07, metadata={"help": "Temperature T of the vMF contrastive head (MARAL)."}
    )
    vmf_legacy_bessel: bool = field(
        default=False, metadata={"help": "Use the reference code's inexact Miller recurrence for log I_nu."}
    )
    vmf_clip_gradient: bool = field(
        default=True, metadata={"help": "Clip the Bessel ratio of the vMF gradient at 1, as the reference code."}
    )

    checks: ClassVar[tuple[SettingCheck, ...]] = (
        SettingCheck(
            "encoder_dropout", lambda value: value is None or is_probability_below_one(value), "must be in [0, 1)"
        ),
        SettingCheck("classifier_dropout", is_probability_below_one, "must be in [0, 1)"),
        SettingCheck(
            "decoding", lambda value: value is None or value in DECODING_MODES, "must be greedy, legacy or none"
        ),
        SettingCheck("projection_dim", lambda value: value >= 1, "must be >= 1"),
        SettingCheck("contrastive_temperature", is_positive, "must be a number > 0"),
    )

    def __post_init__(self) -> None:
        validate_settings(self)


@dataclass
class DataArguments:
    """Data files or datasets, and span limits. Files are span JSON or CoNLL/BIO (detected from their content); a
    dataset (Hub id or local folder) feeds the run by split (`data_loading.sources`)."""

    source_train_file: str | None = field(default=None, metadata={"help": "Labelled source-language training file."})
    source_validation_file: str | None = field(
        default=None, metadata={"help": "Labelled source-language dev file (used for model selection)."}
    )
    target_unlabeled_file: str | None = field(
        default=None,
        metadata={"help": "Target-language text; gold spans in it are only used for diagnostics."},
    )
    target_validation_file: str | None = field(default=None, metadata={"help": "Labelled target-language dev file."})
    target_test_file: str | None = field(default=None, metadata={"help": "Labelled target-language test file."})
    train_file: str | None = field(default=None, metadata={"help": "Stands for --source_train_file (run_ner.py)."})
    validation_file: str | None = field(
        default=None, metadata={"help": "Stands for --source_validation_file (run_ner.py)."}
    )
    test_file: str | None = field(default=None, metadata={"help": "Stands for --target_test_file (run_ner.py)."})
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Source-language dataset (Hub id or local folder): train -> source training data, validation -> "
            "source dev; a file flag replaces its split."
        },
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of --dataset_name."})
    target_dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Target-language dataset: train -> target text (its tags dropped), validation -> target dev, test "
            "-> target test; unset with --target_dataset_config_name: --dataset_name."
        },
    )
    target_dataset_config_name: str | None = field(
        default=None, metadata={"help": "Configuration of --target_dataset_name (e.g. de)."}
    )
    text_column_name: str | None = field(
        default=None, metadata={"help": "Column of the words in the datasets; unset: tokens or words."}
    )
    label_column_name: str | None = field(
        default=None,
        metadata={"help": "Column of the tags (or spans) in the datasets; unset: ner_tags, tags or spans."},
    )
    predict_file: str | None = field(
        default=None,
        metadata={
            "help": "File to predict under --do_predict instead of --target_test_file: raw text (one text per line, "
            "or JSON lines with a `text` field) or labelled span JSON/CoNLL (then also scored)."
        },
    )
    labels: str | None = field(
        default=None,
        metadata={"help": "Comma-separated labels, O first; unset: O then the source training types, sorted."},
    )
    max_span_width: int | None = field(
        default=None,
        metadata={"help": f"Longest span in words; unset: {DEFAULT_MAX_SPAN_WIDTH}, or fixed by a trained model."},
    )
    max_seq_length: int | None = field(
        default=None,
        metadata={
            "help": f"Subword budget per sentence, specials included; unset: {DEFAULT_MAX_SEQ_LENGTH}, or the trained "
            "model's."
        },
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training sentences."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N dev sentences."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Use only the first N test sentences."})
    max_unlabeled_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N target-language sentences."}
    )
    code_switched_file: str | None = field(
        default=None,
        metadata={"help": "MCL-NER: span JSON of code-switched source sentences, each with a `source_id`."},
    )
    bilingual_dictionary: str | None = field(
        default=None,
        metadata={"help": "MCL-NER: word list (source<TAB>translation per line) to code-switch the source data."},
    )
    code_switch_rate: float = field(
        default=0.5, metadata={"help": "MCL-NER: probability that a word found in the dictionary is replaced."}
    )
    source_language: str | None = field(default=None, metadata={"help": "Source language code (e.g. en)."})
    target_language: str | None = field(default=None, metadata={"help": "Target language code (e.g. de)."})

    checks: ClassVar[tuple[SettingCheck, ...]] = tuple(
        SettingCheck(name, lambda value: value is None or value >= 1, "must be a positive number of sentences")
        for name in ("max_train_samples", "max_eval_samples", "max_predict_samples", "max_unlabeled_samples")
    ) + (SettingCheck("code_switch_rate", lambda value: 0 <= value <= 1, "must be in [0, 1]"),)

    def __post_init__(self) -> None:
        check_span_limits(self.max_span_width, self.max_seq_length, flag_prefix="--")
        validate_settings(self)
        for flag, path in file_flags(dataclasses.asdict(self)).items():  # --train_file etc. stand for their flags
            setattr(self, flag, path)
        datasets_named(dataclasses.asdict(self))  # a configuration needs its dataset

    def label_list(self) -> list[str] | None:
        """`--labels` as a list with `O` first (it may be left out); None when not given.

        Raises:
            ValueError: naming `--labels` when `O` is not first, a label repeats, or no entity type is named.
        """
        if self.labels is None:
            return None
        given = [label.strip() for label in self.labels.split(",") if label.strip()]
        if "O" in given[1:]:
            raise ValueError(f"`--labels {self.labels}`: O (no entity) must come first, or be left out.")
        repeated = sorted({label for label in given if given.count(label) > 1})
        if repeated:
            raise ValueError(f"`--labels {self.labels}`: {', '.join(repeated)} given more than once.")
        labels = given if given[:1] == ["O"] else ["O", *given]
        if len(labels) == 1:
            raise ValueError(f"`--labels {self.labels}` names no entity type: give at least one (e.g. O,PER,LOC).")
        return labels


@dataclass
class RunArguments:
    """Output-folder safety and publishing of the data."""

    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow training into an output_dir that already has results."}
    )
    push_dataset_to_hub: str | None = field(
        default=None, metadata={"help": "Hub dataset id (user/name) to push the run's span data to, as a DatasetDict."}
    )
    license: str | None = field(
        default=None,
        metadata={
            "help": "License of the model on its card (a Hub license id: mit, apache-2.0, ...); unset: the encoder's "
            "when its card or conversion record names one, else none."
        },
    )


# `--help` groups, in this order; the `TrainingArguments` flags follow under "Trainer".
HELP_GROUPS = (
    ("Method", ("help", "version", "method")),
    ("Data", DataArguments),
    ("Model", ModelArguments),
    # every method's settings, as `MaralTrainingArguments` composes them (each names its own `help_group`)
    *((cls.help_group, cls) for cls in MaralTrainingArguments.__mro__ if "help_group" in vars(cls)),
    ("Output and publishing", RunArguments),
    ("Cross-lingual training", ("target_batch_size", "eval_decoding", "head_learning_rate")),
)


def group_help(parser: argparse.ArgumentParser) -> None:
    """Moves the flags into the `HELP_GROUPS` (the method first); the rest stay under "Trainer" at the end."""
    options = parser._optionals  # HfArgumentParser puts every flag there
    options.title = "Trainer (transformers.TrainingArguments)"
    for title, fields in HELP_GROUPS:
        names = set(fields) if isinstance(fields, tuple) else {field.name for field in dataclasses.fields(fields)}
        group = parser.add_argument_group(title)
        moved = [action for action in options._group_actions if action.dest in names]
        group._group_actions.extend(moved)
        options._group_actions[:] = [action for action in options._group_actions if action not in moved]
    parser._action_groups.remove(options)
    parser._action_groups.append(options)


ARGUMENT_CLASSES = (ModelArguments, DataArguments, MaralTrainingArguments, RunArguments)


def build_parser() -> HfArgumentParser:
    """The command line of `run_xner.py`: the four argument dataclasses, grouped help, `--version`."""
    parser = HfArgumentParser(ARGUMENT_CLASSES, exit_on_error=False)
    parser.add_argument("--version", action="version", version=f"maral-xner {__version__}")
    group_help(parser)
    return parser


def parse_arguments(argv: list[str] | None = None):
    """Parses CLI flags, or a single `.json`/`.yaml` file holding all arguments (typed against the fields, see
    `run_config.typed_config`).

    Raises:
        ValueError: for a flag argparse refuses (a value outside its choices, a malformed number), naming the flag.
    """
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith((".json", ".yaml", ".yml")):
        settings = typed_config(read_config_file(argv[0]), ARGUMENT_CLASSES, argv[0])
        return parser.parse_dict(settings)
    try:
        return parser.parse_args_into_dataclasses(args=argv)
    except argparse.ArgumentError as error:
        raise ValueError(f"{error}. See `python run_xner.py --help`.") from None


def check_output_dir(training_args: MaralTrainingArguments, run_args: RunArguments) -> None:
    """Refuses to train into a folder that already holds results, unless told to: `--overwrite_output_dir`, or
    `--resume_from_checkpoint` when the folder holds what it resumes (a checkpoint of a single-stage run, the stages
    of a self-training run); an explicit checkpoint of a single-stage run is checked here, before training."""
    output_dir = Path(training_args.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--output_dir {output_dir} is a file, not a folder: choose another --output_dir.")
    request = resume_request(training_args.resume_from_checkpoint)
    if isinstance(request, str) and training_args.do_train and not OBJECTIVES[training_args.method].self_training:
        check_checkpoint(request)
    if not training_args.do_train or run_args.overwrite_output_dir:
        return
    if not (output_dir.is_dir() and any(output_dir.iterdir())):
        return
    if request is not None and resumes_in(output_dir, request, OBJECTIVES[training_args.method].self_training):
        return
    reason = (
        " and holds nothing that --resume_from_checkpoint can resume (a complete checkpoint or a self-training stage)"
        if request is not None
        else ""
    )
    raise ValueError(
        f"Output directory {output_dir} already exists and is not empty{reason}. Pass --overwrite_output_dir to train "
        "into it anyway, --resume_from_checkpoint to continue a run, or choose another --output_dir."
    )


def resumes_in(output_dir: Path, request: str | bool, self_training: bool) -> bool:
    """Whether a `--resume_from_checkpoint` request continues the run of `output_dir` (only that lets a rerun
    write into the non-empty folder)."""
    if isinstance(request, str):
        return output_dir.resolve() in Path(request).resolve().parents
    if self_training:
        return any((output_dir / name).is_dir() for name in STAGE_FOLDERS)
    return last_complete_checkpoint(output_dir) is not None


def prepare_output_dir(output_dir: Path) -> None:
    """Creates `--output_dir` and checks that files can be written into it, before any training.

    Raises:
        ValueError: naming `--output_dir` when it cannot be created or written to.
    """
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as error:
        raise ValueError(
            f"--output_dir {output_dir} is not writable ({error.strerror or error}): choose another --output_dir or "
            "fix its permissions."
        ) from None


def remove_previous_outputs(output_dir: Path, training_args: MaralTrainingArguments) -> None:
    """`--overwrite_output_dir`: removes what an earlier run reported (results, predictions, the card, logs), its
    checkpoints unless this run resumes one, and the stage folders this run does not reuse (all of them for a
    single-stage method, rounds past `--self_training_rounds` for a self-training one)."""
    if not output_dir.is_dir():
        return
    stale = [output_dir / name for name in RESULT_FILES]
    if resume_request(training_args.resume_from_checkpoint) is None:
        stale += checkpoints_in(output_dir)
    if not OBJECTIVES[training_args.method].self_training:
        stale += [output_dir / name for name in STAGE_FOLDERS]
    else:
        last = training_args.self_training_rounds
        stale += [
            path
            for path in (output_dir / ROUNDS_FOLDER).glob("round_*")
            if (step := path.name.removeprefix("round_").removesuffix(PARTIAL_SUFFIX)).isdigit() and int(step) > last
        ]
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        logger.info("--overwrite_output_dir: removed %s of an earlier run.", path)


def find_data_sources(data_args: DataArguments, training_args: MaralTrainingArguments) -> dict[str, Any]:
    """Where each dataset of the run comes from (`data_loading.sources.data_sources`): files and dataset splits,
    checked before any work, with the splits this run needs (source training data for `--do_train`, target text for
    a method that reads it, target test data for `--do_predict` without `--predict_file`)."""
    required = {}
    if training_args.do_train:
        required["source_train"] = "--do_train"
        if OBJECTIVES[training_args.method].needs_target_text:
            required["target_unlabeled"] = f"--method {training_args.method}"
    if training_args.do_predict and not data_args.predict_file:
        required["target_test"] = "--do_predict"
    return data_sources(dataclasses.asdict(data_args), labels=data_args.label_list(), required=required)


def load_datasets(data_args: DataArguments, labels: list[str], sources: dict[str, Any]) -> dict[str, Any]:
    """Loads every dataset of the run from its file or dataset split; the target text is loaded as unlabeled (the
    gold spans of a file kept apart in `gold_spans`)."""
    max_samples = {
        "source_train": data_args.max_train_samples,
        "source_dev": data_args.max_eval_samples,
        "target_unlabeled": data_args.max_unlabeled_samples,
        "target_dev": data_args.max_eval_samples,
        "target_test": data_args.max_predict_samples,
    }
    datasets = {}
    for name, source in sources.items():
        unlabeled = name in UNLABELED_DATASETS
        datasets[name] = load_source(source, labels, unlabeled=unlabeled, max_samples=max_samples[name])
        logger.info("Loaded %s: %d sentences from %s", name, len(datasets[name]), getattr(source, "where", source))
    return datasets


def load_code_switched(
    data_args: DataArguments, training_args: MaralTrainingArguments, labels: list[str], datasets: dict[str, Any]
) -> dict[int, dict[str, Any]] | None:
    """Code-switched counterparts of the source sentences for `--method mcl` (from a file or a word list)."""
    if data_args.code_switched_file and data_args.bilingual_dictionary:
        raise ValueError("Pass either --code_switched_file or --bilingual_dictionary, not both.")
    if not (data_args.code_switched_file or data_args.bilingual_dictionary):
        return None
    if training_args.method != "mcl":
        logger.warning("Code-switched data is only used by --method mcl; ignoring it for %s.", training_args.method)
        return None
    if data_args.code_switched_file:
        return load_code_switched_file(data_args.code_switched_file, labels, datasets["source_train"])
    dictionary = read_bilingual_dictionary(data_args.bilingual_dictionary)
    return code_switch_dataset(
        datasets["source_train"], dictionary, data_args.code_switch_rate, seed=training_args.seed
    )


def resolve_labels(data_args: DataArguments, model_args: ModelArguments, sources: dict[str, Any]) -> list[str]:
    """Labels from `--labels`, else from a trained model's config, else inferred from the source training data."""
    given = data_args.label_list()
    trained = trained_model_labels(model_args.model_name_or_path)
    if given is not None and trained is not None and given != trained:
        raise ValueError(
            f"--labels {given} differ from the labels {trained} of the trained model {model_args.model_name_or_path}."
        )
    if given is not None:
        return given
    if trained is not None:
        return trained
    if "source_train" not in sources:
        raise ValueError("Pass --labels, --source_train_file or --dataset_name so that the label set is known.")
    source = sources["source_train"]
    labels = source_labels(source)
    if len(labels) == 1:
        where = getattr(source, "where", f"--source_train_file {source}")
        raise ValueError(
            f"{where} has no entity spans: the label set would be only O, and nothing could be learned. Pass data "
            "with entities (and --labels to fix the label set)."
        )
    return labels


def trained_model_labels(model_name_or_path: str) -> list[str] | None:
    """The labels of a trained MARAL model (checked with `check_trained_model`), or None when the path is not a
    local folder holding one (a plain encoder, a Hub id)."""
    config_file = Path(model_name_or_path) / "config.json"
    if not config_file.is_file():
        return None
    if read_config_file(config_file).get("model_type") != MaralConfig.model_type:
        return None
    return check_trained_model(model_name_or_path, "--model_name_or_path")["labels"]


def check_trained_model(path: str, flag: str) -> dict[str, Any]:
    """Checks that `path` holds a loadable MARAL span model and returns its config.

    Raises:
        ValueError: naming `flag` (and the file) when the folder is missing or empty, holds another kind of model,
            or has a config.json with a value of the wrong type or damaged (e.g. truncated) weights.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"{flag} {path}: {'not a folder' if folder.exists() else 'no such folder'}.")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ValueError(
            f"{flag} {path} holds no saved model (no config.json): pass a folder written by run_xner.py, e.g. "
            "<output_dir>/teacher."
        )
    config = read_config_file(config_file)
    if config.get("model_type") != MaralConfig.model_type:
        raise ValueError(
            f"{flag} {path} is not a MARAL span model ({config_file} has model_type {config.get('model_type')!r}): "
            "pass a folder written by run_xner.py; a plain encoder goes to --model_name_or_path."
        )
    typed_config(
        {key: value for key, value in config.items() if key in MARAL_CONFIG_FIELDS}, [MaralConfigFields], config_file
    )
    check_weights(folder, flag)
    return config


@dataclass
class MaralConfigFields:
    """The typed keys of a MARAL config.json (`MaralConfig`'s arguments), for `typed_config`."""

    labels: list[str] | None = None
    max_span_width: int = 4
    max_seq_length: int = 128
    num_width_buckets: int = 4
    width_embedding_dim: int = 50
    length_embedding_dim: int = 100
    morphology_embedding_dim: int = 100
    classifier_dropout: float = 0.2
    projection_dim: int = 64
    contrastive_temperature: float = 0.07
    prediction_head: str = "mlp"
    decoding: str = "greedy"
    vmf_kappa_max: float = 1e5
    vmf_legacy_bessel: bool = False
    vmf_clip_gradient: bool = True
    use_mlm_head: bool = True
    encoder_config: dict | None = None


MARAL_CONFIG_FIELDS = frozenset(field.name for field in dataclasses.fields(MaralConfigFields))


def check_weights(folder: Path, flag: str) -> None:
    """Opens the header of every weights file of a saved model (cheap), so that a truncated file is refused by name
    before any training."""
    names = weight_files(folder)
    if not names:
        raise ValueError(f"{flag} {folder}: no model.safetensors (or shards of its index) in the folder.")
    for name in names:
        if not name.endswith(".safetensors"):
            continue
        try:
            with safe_open(str(folder / name), framework="pt"):
                pass
        except Exception as error:  # noqa: BLE001 - safetensors raises its own error types
            raise ValueError(
                f"{flag}: {folder / name} is damaged ({error}): the file is truncated or not safetensors. Save or "
                "train that model again."
            ) from None


def build_model(
    model_args: ModelArguments, data_args: DataArguments, labels: list[str], init_path: str | None = None
) -> MaralForSpanNER:
    """Loads a trained MARAL model (`init_path`, or `--model_name_or_path` if it is one) or puts a new span model on
    top of the pretrained encoder."""
    init_path = init_path or (
        model_args.model_name_or_path if trained_model_labels(model_args.model_name_or_path) is not None else None
    )
    if init_path is not None:
        check_trained_model(init_path, "the trained model")
        model = MaralForSpanNER.from_pretrained(init_path)
        check_labels_match(model.config.labels, labels, init_path)
        apply_inference_settings(model, model_args, data_args, init_path)
    else:
        span_limits = {"max_span_width": data_args.max_span_width, "max_seq_length": data_args.max_seq_length}
        model = MaralForSpanNER.from_encoder(
            model_args.model_name_or_path,
            labels=labels,
            encoder_dropout=model_args.encoder_dropout,
            **{name: value for name, value in span_limits.items() if value is not None},  # else MaralConfig's
            classifier_dropout=model_args.classifier_dropout,
            decoding=model_args.decoding or "greedy",
            projection_dim=model_args.projection_dim,
            contrastive_temperature=model_args.contrastive_temperature,
            vmf_legacy_bessel=model_args.vmf_legacy_bessel,
            vmf_clip_gradient=model_args.vmf_clip_gradient,
            source_language=data_args.source_language,
            target_language=data_args.target_language,
        )
    if model_args.tokenizer_name:
        model.set_tokenizer(transformers.AutoTokenizer.from_pretrained(model_args.tokenizer_name))
    if model_args.freeze_word_embeddings:
        model.encoder.get_input_embeddings().weight.requires_grad_(False)
        logger.info("Word embeddings are frozen.")
    return model


def apply_inference_settings(
    model: MaralForSpanNER, model_args: ModelArguments, data_args: DataArguments, path: str
) -> None:
    """Applies `--decoding` and `--max_seq_length` to a trained model; its `max_span_width` is part of its weights."""
    width = model.config.max_span_width
    if data_args.max_span_width is not None and data_args.max_span_width != width:
        raise ValueError(
            f"--max_span_width {data_args.max_span_width} differs from the trained model at {path}, whose span-width "
            f"embeddings cover {width} words; leave --max_span_width out (or pass {width})."
        )
    if data_args.max_seq_length is not None:
        model.config.max_seq_length = data_args.max_seq_length
    if model_args.decoding is not None:
        model.config.decoding = model_args.decoding


def check_labels_match(model_labels: list[str], labels: list[str], path: str) -> None:
    """A trained model (teacher, student or `--model_name_or_path`) must use the run's label set."""
    if list(model_labels) != list(labels):
        raise ValueError(
            f"The model at {path} was trained with labels {list(model_labels)}, but this run uses {list(labels)}. "
            "Pass the same --labels (in the same order) for every stage."
        )


def report_coverage(datasets: dict[str, Any], model: MaralForSpanNER) -> None:
    """One warning per dataset about gold entities the model can never score."""
    config = model.config
    for name, dataset in datasets.items():
        column = "gold_spans" if "gold_spans" in dataset.column_names else "spans"
        counts = entity_coverage(dataset, model.tokenizer, config.max_span_width, config.max_seq_length, column)
        warn_about_unreachable_entities(counts, name, config.max_span_width, config.max_seq_length)


# Datasets scored during training and by --do_eval (model selection uses source_dev only, never target data).
EVALUATED_DATASETS = ("source_dev", "target_dev")
# Datasets scored after every self-training stage (per-round metrics; never used for selection).
REPORTED_DATASETS = ("source_dev", "target_dev", "target_test")


def result_prefixes(results: dict[str, float]) -> list[str]:
    """Metric prefixes with span F1 and seqeval scores, in the order they were added (stages first)."""
    suffix = "_span_f1"
    prefixes = [key[: -len(suffix)] for key in results if key.endswith(suffix)]
    return [prefix for prefix in prefixes if f"{prefix}_seqeval_f1" in results]


def results_table(results: dict[str, float]) -> str:
    """A plain-text table of span F1 and seqeval P/R/F1 (in %) per evaluated dataset and stage."""
    lines = [f"{'dataset':<24}{'span F1':>9}{'seqeval P':>11}{'seqeval R':>11}{'seqeval F1':>12}"]
    for prefix in result_prefixes(results):
        name = prefix.removeprefix("eval_").removeprefix("predict_").replace("_", " ")
        values = [results[f"{prefix}_{key}"] for key in ("span_f1", "seqeval_precision", "seqeval_recall")]
        values.append(results[f"{prefix}_seqeval_f1"])
        lines.append(
            f"{name:<24}" + "".join(f"{100 * value:>{width}.2f}" for value, width in zip(values, (9, 11, 11, 12)))
        )
    return "\n".join(lines)


def take_over_push(training_args: MaralTrainingArguments) -> tuple[bool, str | None]:
    """`--push_to_hub` is done once at the end of the run (card, then one commit), never by `Trainer`, which would
    push at every save with a generic card. Returns the flag and `--hub_token`, and clears both in `training_args`,
    so that the token never reaches a file the run writes (`training_args.bin`, checkpoints, the card)."""
    push, training_args.push_to_hub = training_args.push_to_hub, False
    token, training_args.hub_token = training_args.hub_token, None
    return push, token


def write_results(output_dir: Path, split: str, metrics: dict[str, float]) -> None:
    """`<split>_results.json` and the merged `all_results.json`, as `Trainer.save_metrics` writes them."""
    (output_dir / f"{split}_results.json").write_text(json.dumps(metrics, indent=4, sort_keys=True))
    all_results_file = output_dir / ALL_RESULTS_FILE
    merged = json.loads(all_results_file.read_text()) if all_results_file.is_file() else {}
    all_results_file.write_text(json.dumps({**merged, **metrics}, indent=4, sort_keys=True))


def save_final_model(model: MaralForSpanNER, training_args: MaralTrainingArguments) -> None:
    """The run's model (with its tokenizer) and its training arguments in `--output_dir`, as `Trainer` saves them."""
    output_dir = Path(training_args.output_dir)
    model.save_pretrained(output_dir)
    torch.save(training_args, output_dir / TRAINING_ARGS_NAME)


def named_datasets(datasets: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """The loaded datasets among `names`, in that order."""
    return {name: datasets[name] for name in names if name in datasets}


def train(
    model: MaralForSpanNER,
    training_args: MaralTrainingArguments,
    datasets: dict[str, Any],
    eval_datasets: dict[str, Any],
    source_class_counts,
    build_stage_model,
    code_switched,
) -> tuple[MaralForSpanNER, dict[str, float]]:
    """Trains with `--method`: one `MaralTrainer` run, or the teacher -> student pipeline of a self-training method.

    Returns:
        The trained model and the training metrics (per-stage metrics of a self-training run).
    """
    class_weights = class_weights_from_counts(source_class_counts)
    if OBJECTIVES[training_args.method].self_training:
        pipeline = SelfTrainingPipeline(
            training_args,
            build_stage_model,
            datasets["source_train"],
            datasets.get("target_unlabeled"),
            source_class_counts,
            class_weights,
            eval_datasets=eval_datasets,
            report_datasets=named_datasets(datasets, REPORTED_DATASETS),
            code_switched=code_switched,
        )
        model, metrics = pipeline.run()
    else:
        trainer = MaralTrainer(
            model=model,
            args=training_args,
            train_dataset=datasets["source_train"],
            eval_dataset=eval_datasets or None,
            target_dataset=datasets.get("target_unlabeled"),
            class_weights=class_weights,
            processing_class=model.tokenizer,
        )
        request = resume_request(training_args.resume_from_checkpoint)
        checkpoint = checkpoint_to_resume(request, training_args.output_dir)
        metrics = trainer.train(resume_from_checkpoint=checkpoint).metrics
        model = trainer.model
        if training_args.should_save:
            trainer.save_state()
    return model, dict(metrics, train_samples=len(datasets["source_train"]))


def evaluate_and_predict(
    model: MaralForSpanNER,
    training_args: MaralTrainingArguments,
    datasets: dict[str, Any],
    labels: list[str],
    predict_path: str | None = None,
) -> dict[str, dict[str, float]]:
    """`--do_eval` on the dev sets and `--do_predict` on the target test set, or on `--predict_file` when given
    (`predictions.jsonl`; metrics only for labelled data).

    Returns:
        `{split: metrics}` for `eval` and `predict`, whichever ran.
    """
    results: dict[str, dict[str, float]] = {}
    batch_size, decoding = training_args.per_device_eval_batch_size, training_args.eval_decoding
    progress = not training_args.disable_tqdm
    output = Path(training_args.output_dir) / PREDICTIONS_FILE if training_args.should_save else None
    eval_datasets = named_datasets(datasets, EVALUATED_DATASETS)
    if training_args.do_eval and eval_datasets:
        results["eval"] = evaluate_datasets(
            model, eval_datasets, "eval", batch_size, decoding, show_progress_bar=progress
        )
    if training_args.do_predict and predict_path:
        metrics = predict_file(model, predict_path, output, batch_size, decoding, progress=progress)
        if metrics:  # labelled data
            results["predict"] = metrics
    elif training_args.do_predict and "target_test" in datasets:
        scores, predictions = evaluate_model(
            model, datasets["target_test"], batch_size, decoding=decoding, show_progress_bar=progress
        )
        results["predict"] = flatten_metrics(scores, "predict_target_test")
        if output is not None:
            write_predictions(output, datasets["target_test"], predictions, labels)
    return results


def main(argv: list[str] | None = None) -> dict[str, float]:
    argv = sys.argv[1:] if argv is None else list(argv)
    model_args, data_args, training_args, run_args = parse_arguments(argv)
    push_model, hub_token = take_over_push(training_args)
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO, stream=sys.stdout
    )
    transformers.utils.logging.set_verbosity_warning()
    check_output_dir(training_args, run_args)
    check_predict_file(data_args.predict_file, training_args.do_predict)
    if training_args.do_train and training_args.teacher_checkpoint and OBJECTIVES[training_args.method].self_training:
        check_trained_model(training_args.teacher_checkpoint, "--teacher_checkpoint")
    set_seed(training_args.seed)

    sources = find_data_sources(data_args, training_args)
    if training_args.do_train and "source_train" not in sources:
        raise ValueError("--do_train needs source training data: --source_train_file, or --dataset_name.")
    labels = resolve_labels(data_args, model_args, sources)
    datasets = load_datasets(data_args, labels, sources)
    model = build_model(model_args, data_args, labels)
    report_coverage(datasets, model)

    if training_args.should_save:
        if run_args.overwrite_output_dir:
            remove_previous_outputs(Path(training_args.output_dir), training_args)
        prepare_output_dir(Path(training_args.output_dir))
    results: dict[str, dict[str, float]] = {}
    if training_args.do_train:
        model, results["train"] = train(
            model,
            training_args,
            datasets,
            named_datasets(datasets, EVALUATED_DATASETS),
            count_span_labels(datasets["source_train"], model.config.max_span_width),
            lambda path: build_model(model_args, data_args, labels, path),
            load_code_switched(data_args, training_args, labels, datasets),
        )
    results.update(evaluate_and_predict(model, training_args, datasets, labels, data_args.predict_file))
    output_dir = Path(training_args.output_dir)
    if training_args.should_save:
        if training_args.do_train or push_model:  # an evaluation-only run publishes the model it evaluated
            save_final_model(model, training_args)
        for split, metrics in results.items():
            write_results(output_dir, split, metrics)
    all_results = {key: value for metrics in results.values() for key, value in metrics.items()}
    if training_args.should_save and all_results:
        print("\n" + results_table(all_results) + "\n")
    if training_args.should_save:
        arguments = (model_args, data_args, training_args, run_args)
        write_run_card(output_dir, argv, arguments, datasets, labels)
        publish_run(output_dir, arguments, datasets, labels, push_model, token=hub_token)
    return all_results


if __name__ == "__main__":
    main()
