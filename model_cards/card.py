# Copyright 2026 The maral-xner authors. Licensed under the Apache License, Version 2.0.
"""Model cards for MARAL span-NER models, built offline from a `run_xner.py` output folder.

    >>> from model_cards import RunInfo, write_model_card
    >>> write_model_card("outputs/en-de", RunInfo(model_id="user/maral-xner-de"))  # doctest: +SKIP

The YAML header (`ModelCardData`) holds the languages, license, tags, base model, datasets, widget examples and a
`model-index` with span F1 and seqeval P/R/F1 per evaluated language and split (and per self-training stage). The
body (`template.md`) describes the model, its labels, results, self-training diagnostics, usage, the command that
produced it, hyper-parameters, per-epoch results, framework versions and limitations.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from data_loading.sources import DATA_FILE_FLAGS
from objectives import OBJECTIVES, ObjectiveSpec
from output_layout import CARD_FILE, RUN_INFO_FILE
from trainer_maral import MaralTrainingArguments

from .collect import (
    OutputFolder,
    encoder_license,
    predicted_examples,
    read_json,
    read_output_folder,
    redact,
    widget_sentences,
)

TEMPLATE_PATH = Path(__file__).with_name("template.md")
CARD_TAGS = ["token-classification", "ner", "named-entity-recognition", "cross-lingual", "span-ner", "maral"]
TASK = {"task_type": "token-classification", "task_name": "Named Entity Recognition"}
PIPELINE_TAG = "token-classification"  # the Hub task of the card, one of the tasks of `custom_pipelines`
# (metric key suffix, model-index metric type, display name)
METRICS = (
    ("span_f1", "f1", "Span F1"),
    ("seqeval_precision", "precision", "seqeval precision"),
    ("seqeval_recall", "recall", "seqeval recall"),
    ("seqeval_f1", "f1", "seqeval F1"),
)
# (result-key prefix, dataset name in the run, language role, split)
EVALUATED = (
    ("eval_source_dev", "source_dev", "source", "validation"),
    ("eval_target_dev", "target_dev", "target", "validation"),
    ("predict_target_test", "target_test", "target", "test"),
)
STAGE_DATASETS = (("source_dev", "source", "validation"), ("target_dev", "target", "validation"),
                  ("target_test", "target", "test"))  # fmt: skip
LANGUAGE_NAMES = {
    "ar": "Arabic", "de": "German", "en": "English", "es": "Spanish", "fr": "French", "hi": "Hindi", "it": "Italian",
    "ja": "Japanese", "ko": "Korean", "nl": "Dutch", "pt": "Portuguese", "ru": "Russian", "tr": "Turkish",
    "zh": "Chinese", "fi": "Finnish", "sv": "Swedish", "pl": "Polish", "vi": "Vietnamese", "id": "Indonesian",
}  # fmt: skip
HYPERPARAMETER_KEYS = (
    "method", "num_train_epochs", "max_steps", "learning_rate", "head_learning_rate", "per_device_train_batch_size",
    "gradient_accumulation_steps", "per_device_eval_batch_size", "weight_decay", "warmup_steps", "lr_scheduler_type",
    "optim", "seed", "bf16", "fp16", "encoder_dropout", "classifier_dropout", "freeze_word_embeddings", "mlm_weight",
    "mlm_mask_rate", "target_batch_size", "max_span_width", "max_seq_length", "decoding", "eval_decoding", "labels",
)  # fmt: skip
FRAMEWORKS = ("transformers", "torch", "datasets", "tokenizers", "huggingface_hub", "accelerate")
CITATION = """@inproceedings{zhu-etal-2025-large,
  title     = {Large Margin Representation Learning for Robust Cross-lingual Named Entity Recognition},
  author    = {Zhu and others},
  booktitle = {Proceedings of the 63rd Annual Meeting of the Association for Computational Linguistics (ACL)},
  year      = {2025},
  pages     = {4270--4291},
  url       = {https://aclanthology.org/2025.acl-long.215/}
}"""


@dataclass
class RunInfo:
    """What the output folder does not record about a run (all optional). `write_model_card` keeps it beside the card
    (`run_info.json`, never pushed), so that the card can be written again, e.g. for another repository.

    Attributes:
        model_id: Hub id of the model (`user/name`); used in the title, the usage snippets and the model-index.
        model_name: the title and model-index name; default: the last part of `model_id`, else the folder's name.
        base_model: Hub id of the encoder the run started from.
        dataset_id: Hub id of the span data (`--push_dataset_to_hub`); listed under `datasets`.
        hub_datasets: `{dataset of the run: [Hub dataset id, configuration, split]}` of the data that came from the
            Hub (`data_loading.sources.hub_split_references`); listed under `datasets` and named in the model-index.
        datasets: more Hub dataset ids to list under `datasets`.
        license: a Hub license id (check those of the encoder and the data); None: the card states no license.
        language: language codes of the card; default: the source and target languages.
        tags: tags added to the card's own.
        command: the exact `run_xner.py` command line.
        config_text: the settings of the `.json`/`.yaml` config file the run was given, if any, as published
            (`collect.config_file_text`: credentials redacted, no absolute local paths).
        run_config: the run's arguments (hyper-parameters, data files); the card redacts credentials and local
            paths (`collect.redact`).
        label_examples: example entity texts per label (from the source training data).
        data_statistics: `{dataset name: statistics}` of `collect.dataset_statistics`.
        target_sentences: target-language sentences (word lists) for the widget when there are no predictions.
    """

    model_id: str | None = None
    model_name: str | None = None
    base_model: str | None = None
    dataset_id: str | None = None
    hub_datasets: dict[str, list[str | None]] | None = None
    datasets: list[str] | None = None
    license: str | None = None
    language: list[str] | None = None
    tags: list[str] | None = None
    command: str | None = None
    config_text: str | None = None
    run_config: dict[str, Any] | None = None
    label_examples: dict[str, list[str]] | None = None
    data_statistics: dict[str, dict[str, float]] | None = None
    target_sentences: list[list[str]] | None = None

    def save(self, output_dir: str | Path) -> Path:
        """Writes `run_info.json` into `output_dir` (the run settings redacted as on the card)."""
        published = dataclasses.replace(self, run_config=redact(self.run_config) if self.run_config else None)
        path = Path(output_dir) / RUN_INFO_FILE
        path.write_text(json.dumps(dataclasses.asdict(published), indent=1, default=str), encoding="utf-8")
        return path

    def filled_from(self, other: RunInfo) -> RunInfo:
        """This info with its unset fields taken from `other`."""
        missing = {field.name: getattr(other, field.name) for field in dataclasses.fields(self)}
        return dataclasses.replace(
            self, **{name: value for name, value in missing.items() if getattr(self, name) is None}
        )

    def with_given(self, given: dict[str, Any]) -> RunInfo:
        """This info with the non-empty values of `given` (flags or arguments) on top, then `with_default_license`."""
        chosen = {name: value for name, value in given.items() if value}
        return dataclasses.replace(self, **chosen).with_default_license()

    def with_default_license(self) -> RunInfo:
        """This info, with the base model's license (`collect.encoder_license`) when it names none."""
        return self if self.license else dataclasses.replace(self, license=encoder_license(self.base_model))

    @classmethod
    def load(cls, output_dir: str | Path) -> RunInfo:
        """The `run_info.json` of `output_dir` (empty when there is none; unknown keys are ignored)."""
        saved = read_json(Path(output_dir) / RUN_INFO_FILE, {}) or {}
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in saved.items() if key in names})


# -- helpers ------------------------------------------------------------------------------------------------------


def percent(value: float | None) -> str:
    """`0.8523` -> `"85.23"`; missing values -> `"–"`."""
    return "–" if value is None else f"{100 * value:.2f}"


def language_name(code: str | None, role: str) -> str:
    """`"de"` -> `"German"`; an unlisted code stays as is; no code -> `"source-language"`/`"target-language"`."""
    return LANGUAGE_NAMES.get(code, code) if code else f"{role}-language"


def model_name(folder: OutputFolder, info: RunInfo) -> str:
    return (info.model_name or info.model_id or folder.path.resolve().name).split("/")[-1]


def languages(folder: OutputFolder, info: RunInfo) -> dict[str, str | None]:
    """`{"source": code, "target": code}` from the model config, else from the run's arguments."""
    config, run_config = folder.config, info.run_config or {}
    return {
        role: config.get(f"{role}_language") or run_config.get(f"{role}_language") for role in ("source", "target")
    }


def training_method(folder: OutputFolder, info: RunInfo) -> ObjectiveSpec | None:
    """The registered method of the run, from its arguments, else from its stage markers, else the default
    method for a folder without stages; `None` when it is not known (or not registered here)."""
    method = (info.run_config or {}).get("method") or folder.method
    if method is None and not folder.stages:
        method = MaralTrainingArguments.method
    return OBJECTIVES.get(str(method)) if method else None


def method_description(spec: ObjectiveSpec | None, folder: OutputFolder, info: RunInfo) -> str:
    """The method's own "How it was trained" text, with the run's language names."""
    if spec is None:
        return "The training method of this model was not recorded."
    codes = languages(folder, info)
    source, target = language_name(codes["source"], "source"), language_name(codes["target"], "target")
    return spec.card_description.format(source=source, target=target)


def dataset_reference(name: str, role: str, split: str, folder: OutputFolder, info: RunInfo) -> dict[str, str]:
    """The model-index `dataset` fields of one evaluated dataset of the run."""
    code = languages(folder, info)[role]
    data_file = (info.run_config or {}).get(DATA_FILE_FLAGS[name])
    hub_dataset, hub_config, hub_split = (info.hub_datasets or {}).get(name) or (None, None, None)
    if hub_dataset:
        dataset_type, dataset_split = hub_dataset, hub_split
    elif info.dataset_id:
        dataset_type, dataset_split = info.dataset_id, name
    else:
        dataset_type = Path(data_file).stem if data_file else f"{code or role}-{name.replace('_', '-')}"
        dataset_split = split
    reference = {
        "dataset_type": dataset_type,
        "dataset_name": f"{language_name(code, role)} {name.split('_')[1]} ({role} language)",
        "dataset_split": dataset_split,
    }
    config = hub_config if hub_dataset else code  # a Hub dataset's own configuration, else the language
    if config:
        reference["dataset_config"] = config
    return reference


def dataset_ids(info: RunInfo) -> list[str]:
    """The Hub datasets of the card's `datasets`: those the run's data came from, its published span data, and
    `info.datasets`, each once."""
    found = [reference[0] for reference in (info.hub_datasets or {}).values()]
    return list(dict.fromkeys([*found, *([info.dataset_id] if info.dataset_id else []), *(info.datasets or [])]))


# -- YAML header --------------------------------------------------------------------------------------------------


def eval_results(folder: OutputFolder, info: RunInfo) -> list[EvalResult]:
    """Span F1 and seqeval P/R/F1 of the final model per evaluated dataset, then span and seqeval F1 of every
    self-training stage (metric names say which stage)."""
    results, found = [], folder.results
    for prefix, name, role, split in EVALUATED:
        reference = dataset_reference(name, role, split, folder, info)
        for suffix, metric_type, metric_name in METRICS:
            value = found.get(f"{prefix}_{suffix}")
            if value is not None:
                results.append(
                    EvalResult(**TASK, **reference, metric_type=metric_type, metric_name=metric_name,
                               metric_value=round(float(value), 4))
                )  # fmt: skip
    for stage, metrics in folder.stages:
        stage_name = "teacher" if stage == "teacher" else f"{stage.replace('_', ' ')} student"
        for name, role, split in STAGE_DATASETS:
            reference = dataset_reference(name, role, split, folder, info)
            for suffix, metric_type, metric_name in (METRICS[0], METRICS[3]):
                value = metrics.get(f"{stage}_{name}_{suffix}")
                if value is not None:
                    results.append(
                        EvalResult(**TASK, **reference, metric_type=metric_type,
                                   metric_name=f"{metric_name} ({stage_name})", metric_value=round(float(value), 4))
                    )  # fmt: skip
    return results


def card_data(folder: OutputFolder, info: RunInfo, widget: list[str]) -> ModelCardData:
    """The YAML header of the card."""
    codes = [code for code in languages(folder, info).values() if code]
    results = eval_results(folder, info)
    return ModelCardData(
        language=info.language or list(dict.fromkeys(codes)) or None,
        license=info.license,
        library_name="transformers",
        tags=list(dict.fromkeys([*CARD_TAGS, *(info.tags or [])])),
        datasets=dataset_ids(info) or None,
        base_model=info.base_model,
        # Only where `pipeline("token-classification", model=..., trust_remote_code=True)` loads: config.json
        # declares the uploaded pipeline file for that task.
        pipeline_tag=PIPELINE_TAG if PIPELINE_TAG in folder.config.get("custom_pipelines", {}) else None,
        metrics=["f1", "precision", "recall"] if results else None,
        model_name=model_name(folder, info),
        eval_results=results or None,
        widget=[{"text": text} for text in widget] or None,
    )


# -- body ---------------------------------------------------------------------------------------------------------


def overall_rows(folder: OutputFolder, info: RunInfo) -> list[dict[str, str]]:
    """One row per evaluated dataset: span P/R/F1 and seqeval P/R/F1 (in %)."""
    rows = []
    for prefix, name, role, _ in EVALUATED:
        if f"{prefix}_span_f1" not in folder.results:
            continue
        code = languages(folder, info)[role]
        row = {"dataset": f"{name.split('_')[1]} ({role})", "language": code or "–"}
        for key in ("span_precision", "span_recall", "span_f1", "seqeval_precision", "seqeval_recall", "seqeval_f1"):
            row[key] = percent(folder.results.get(f"{prefix}_{key}"))
        rows.append(row)
    return rows


def per_label_tables(folder: OutputFolder, info: RunInfo) -> list[dict[str, Any]]:
    """Per evaluated dataset, one row per label: span F1, seqeval P/R/F1 (in %) and gold support."""
    tables = []
    for prefix, name, role, _ in EVALUATED:
        rows = []
        for label in folder.labels[1:]:
            key = f"{prefix}_{label}_"
            if f"{key}seqeval_f1" not in folder.results:
                continue
            rows.append(
                {
                    "label": label,
                    "span_f1": percent(folder.results.get(f"{key}span_f1")),
                    "precision": percent(folder.results.get(f"{key}seqeval_precision")),
                    "recall": percent(folder.results.get(f"{key}seqeval_recall")),
                    "f1": percent(folder.results.get(f"{key}seqeval_f1")),
                    "support": int(folder.results.get(f"{key}support", 0)),
                }
            )
        if rows:
            code = languages(folder, info)[role]
            tables.append({"dataset": f"{language_name(code, role)} {name.split('_')[1]} ({role})", "rows": rows})
    return tables


def label_rows(folder: OutputFolder, info: RunInfo) -> tuple[list[dict[str, str]], str]:
    """The label table (label, examples, source training count) and where the examples come from."""
    examples, origin = info.label_examples, "source training data"
    if not examples:
        examples, origin = predicted_examples(folder.predictions, folder.labels), "predictions on the target test set"
    train = (info.data_statistics or {}).get("source_train", {})
    counts = train.get("per_label", {})
    rows = [
        {
            "label": label,
            "examples": ", ".join(f'"{text}"' for text in (examples or {}).get(label, [])) or "–",
            "count": str(counts.get(label, "–")),
        }
        for label in folder.labels[1:]
    ]
    return rows, origin


def stage_rows(folder: OutputFolder) -> list[dict[str, str]]:
    """One row per self-training stage: source-dev and target span F1, seqeval F1, pseudo-label oracle F1."""
    oracle = {record["stage"]: record["pseudo_label_oracle"] for record in folder.self_training_log
              if record.get("stage") == "teacher" and "pseudo_label_oracle" in record}  # fmt: skip
    for record in folder.self_training_log:
        if record.get("stage", "").startswith("round_") and "pseudo_label_oracle" in record:
            oracle[record["stage"]] = record["pseudo_label_oracle"]  # the last epoch of each round wins
    rows = []
    for stage, metrics in folder.stages:
        rows.append(
            {
                "stage": stage.replace("_", " "),
                "source_dev": percent(metrics.get(f"{stage}_source_dev_span_f1")),
                "target_dev": percent(metrics.get(f"{stage}_target_dev_span_f1")),
                "target_test": percent(metrics.get(f"{stage}_target_test_span_f1")),
                "target_test_seqeval": percent(metrics.get(f"{stage}_target_test_seqeval_f1")),
                "oracle": percent((oracle.get(stage) or {}).get("f1")),
            }
        )
    return rows


def pseudo_label_rows(folder: OutputFolder) -> list[dict[str, str]]:
    """One row per stage's pseudo-labels (those it handed to the next round): spans, entities per label."""
    rows = []
    for stage, statistics in folder.pseudo_labels:
        per_label = ", ".join(f"{label} {count}" for label, count in statistics["per_label"].items())
        confidence = statistics["mean_confidence"]
        rows.append(
            {
                "stage": stage.replace("_", " "),
                "spans": str(statistics["spans"]),
                "entities": str(statistics["entities"]),
                "per_label": per_label or "–",
                "confidence": "–" if confidence is None else f"{confidence:.3f}",
            }
        )
    return rows


def epoch_diagnostic_rows(folder: OutputFolder) -> list[dict[str, str]]:
    """One row per student epoch: reliable fraction and target prior per label, visited spans, oracle F1."""
    rows = []
    for record in folder.self_training_log:
        if "epoch" not in record:
            continue
        reliable = record.get("reliable_fraction") or {}
        prior = record.get("target_prior") or {}
        rows.append(
            {
                "stage": str(record.get("stage", "")).replace("_", " "),
                "epoch": str(record["epoch"]),
                "reliable": ", ".join(f"{k} {percent(v)}" for k, v in reliable.items() if k != "O") or "–",
                "prior": ", ".join(f"{k} {percent(v)}" for k, v in prior.items()) or "–",
                "visited": percent(record.get("visited_fraction")),
                "oracle": percent((record.get("pseudo_label_oracle") or {}).get("f1")),
            }
        )
    return rows


def epoch_result_table(folder: OutputFolder) -> dict[str, Any] | None:
    """Per-evaluation results of the logged training (`trainer_state.json`), or per-step losses without evaluation.

    Returns:
        `{"columns": [...], "rows": [[...], ...]}` or None when nothing was logged.
    """
    history = folder.log_history
    evaluations = [entry for entry in history if any(key.endswith("_span_f1") for key in entry)]
    if evaluations:
        names = sorted({key[: -len("_span_f1")] for entry in evaluations for key in entry if key.endswith("_span_f1")
                        and not any(f"_{label}_" in key for label in folder.labels[1:])})  # fmt: skip
        titles = [name.removeprefix("eval_").replace("_", " ") for name in names]
        columns = ["Epoch", "Step", "Training loss"] + [f"{title} span F1" for title in titles]
        rows = []
        for entry in evaluations:
            losses = [
                item["loss"] for item in history if "loss" in item and item.get("step", 0) <= entry.get("step", 0)
            ]
            row = [f"{entry.get('epoch', 0):.2f}", str(entry.get("step", "")), f"{losses[-1]:.4f}" if losses else "–"]
            rows.append(row + [percent(entry.get(f"{name}_span_f1")) for name in names])
        return {"columns": columns, "rows": rows}
    losses = [entry for entry in history if "loss" in entry]
    if not losses:
        return None
    stride = max(1, len(losses) // 15)
    chosen = losses[::stride] + ([losses[-1]] if (len(losses) - 1) % stride else [])
    rows = [[f"{entry.get('epoch', 0):.2f}", str(entry.get("step", "")), f"{entry['loss']:.4f}"] for entry in chosen]
    return {"columns": ["Epoch", "Step", "Training loss"], "rows": rows}


def hyperparameters(info: RunInfo, spec: ObjectiveSpec | None) -> list[tuple[str, str]]:
    """The run's main settings, in a fixed order: the common ones, then those the method's spec lists."""
    run_config = info.run_config or {}
    keys = HYPERPARAMETER_KEYS + (spec.card_settings if spec is not None else ())
    rows = []
    for key in keys:
        value = run_config.get(key)
        if value is None or (key == "max_steps" and value in (-1, 0)) or (key in ("bf16", "fp16") and not value):
            continue
        rows.append((key, str(getattr(value, "value", value))))
    return rows


def framework_versions() -> list[tuple[str, str]]:
    """Versions of Python, maral-xner and the Hugging Face stack where the card was written."""
    from modeling_maral import __version__

    versions = [("Python", platform.python_version()), ("maral-xner", __version__)]
    for name in FRAMEWORKS:
        try:
            versions.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            continue
    return versions


def usage_example(widget: list[str]) -> str:
    """The shortest widget sentence, or a neutral example."""
    return min(widget, key=len) if widget else "Angela Merkel besuchte Paris ."


def template_context(folder: OutputFolder, info: RunInfo, widget: list[str]) -> dict[str, Any]:
    """Everything the body of `template.md` shows."""
    codes = languages(folder, info)
    spec = training_method(folder, info)
    label_table, examples_origin = label_rows(folder, info)
    encoder = folder.config.get("encoder_config") or {}
    return {
        "title": model_name(folder, info),
        "article": "An" if language_name(codes["source"], "source")[:1] in "AEIOU" else "A",
        "model_id": info.model_id or "path/to/this/model",
        "repo_url": f"https://huggingface.co/{info.model_id}" if info.model_id else None,
        "base_model": info.base_model,
        "encoder_description": (
            f"{encoder.get('model_type', 'transformer')} encoder, {encoder.get('num_hidden_layers', '?')} layers, "
            f"hidden size {encoder.get('hidden_size', '?')}, vocabulary {encoder.get('vocab_size', '?')}"
        ),
        "source_code": codes["source"],
        "target_code": codes["target"],
        "source_name": language_name(codes["source"], "source"),
        "target_name": language_name(codes["target"], "target"),
        "method_name": spec.display_name if spec is not None else "method not recorded",
        "method_description": method_description(spec, folder, info),
        "rounds": len([stage for stage, _ in folder.stages if stage != "teacher"]),
        "labels": folder.labels[1:],
        "label_rows": label_table,
        "examples_origin": examples_origin,
        "max_span_width": folder.config.get("max_span_width"),
        "max_seq_length": folder.config.get("max_seq_length"),
        "prediction_head": folder.config.get("prediction_head", "mlp"),
        "decoding": folder.config.get("decoding", "greedy"),
        "overall_rows": overall_rows(folder, info),
        "per_label_tables": per_label_tables(folder, info),
        "stage_rows": stage_rows(folder),
        "pseudo_label_rows": pseudo_label_rows(folder),
        "epoch_diagnostic_rows": epoch_diagnostic_rows(folder),
        "epoch_results": epoch_result_table(folder),
        "example_text": usage_example(widget),
        "command": info.command,
        "config_text": info.config_text,
        "data_statistics": info.data_statistics or {},
        "wide_test_entities": (info.data_statistics or {})
        .get("target_test", {})
        .get("entities_wider_than_max_span_width"),
        "hyperparameters": hyperparameters(info, spec),
        "framework_versions": framework_versions(),
        "dataset_ids": dataset_ids(info),
        "license_name": info.license,
        "citation": CITATION,
    }


def build_model_card(output_dir: str | Path, info: RunInfo | None = None) -> ModelCard:
    """The card of the model saved in `output_dir`, from its files and `info` (default: the folder's saved
    `run_info.json`, see `RunInfo.load`); no network access.

    Raises:
        FileNotFoundError: when `output_dir` holds no saved model.
    """
    info = info or RunInfo.load(output_dir)
    info = dataclasses.replace(info, run_config=redact(info.run_config) if info.run_config else info.run_config)
    folder = read_output_folder(output_dir)
    widget = widget_sentences(folder.predictions, info.target_sentences)
    data = card_data(folder, info, widget)
    card = ModelCard.from_template(data, template_path=str(TEMPLATE_PATH), **template_context(folder, info, widget))
    return ModelCard(re.sub(r"\n{3,}", "\n\n", card.content))  # optional sections leave runs of blank lines


def write_model_card(output_dir: str | Path, info: RunInfo | None = None) -> Path:
    """Writes the card to `<output_dir>/README.md` (replacing any earlier one) and `info` to `run_info.json` beside
    it, and returns the card's path. Without `info`, the card is written again from the saved `run_info.json`.

    Raises:
        FileNotFoundError: when `output_dir` holds no saved model.
    """
    info = info or RunInfo.load(output_dir)
    card = build_model_card(output_dir, info)
    path = Path(output_dir) / CARD_FILE
    temporary = path.with_suffix(".md.tmp")
    temporary.write_text(str(card), encoding="utf-8")
    temporary.replace(path)
    info.save(output_dir)
    return path
