# Copyright 2026 The maral-xner authors. Licensed under the Apache License, Version 2.0.
"""Prediction files of `run_xner.py`: `--predict_file` in, `predictions.jsonl` out.

`--predict_file` holds raw text, one text per line (`.txt`) or JSON lines with a `text` field (`.jsonl`, other
fields but `id` are ignored), or labelled data that `data_loading.load_spans` reads (span JSON, CoNLL/BIO):

    python run_xner.py --model_name_or_path outputs/en-de --output_dir outputs/news --do_predict \
        --predict_file news.txt

Raw texts are predicted by `predict` (split into words, and scripts without spaces into characters; long texts in
windows), labelled sentences as in evaluation (`evaluation_maral.evaluate_model`, with metrics). Each line of
`predictions.jsonl` is one text:

    {"sentence_id": 0, "text": "Angela Merkel besuchte Paris .", "tokens": ["Angela", ...],
     "entities": [{"text": "Angela Merkel", "label": "PER", "score": 0.98, "start": 0, "end": 13,
                   "word_start": 0, "word_end": 1}, ...],
     "gold": [...]}  # labelled files only: the gold entities, same keys without "score"

`start`/`end` are character offsets into `text` (end exclusive; pre-split words are joined by single spaces),
`word_start`/`word_end` indices into `tokens` (inclusive), as in `predict`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from data_loading import SpanDataError, load_spans
from data_loading.tag_schemes import TagError, parse_tag
from evaluation_maral import evaluate_model, flatten_metrics, gold_entities
from modeling_maral import SentencePrediction, format_entities, join_words, split_into_words
from output_layout import PREDICTIONS_FILE

METRIC_PREFIX = "predict_file"
TEXT_FORMATS = ("text", "jsonl")


def predict_file_format(text: str) -> str:
    """The format of a `--predict_file`'s content: `"span_json"` (starts with `[`), `"jsonl"` (starts with `{`),
    `"conll"` (every non-blank line ends with a tag column: `O`, `B-PER`, ...) or `"text"`."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        return "span_json"
    if stripped.startswith("{"):
        return "jsonl"
    lines = [line.split() for line in text.split("\n") if line.strip()]
    return "conll" if lines and all(len(columns) >= 2 and _is_tag(columns[-1]) for columns in lines) else "text"


def _is_tag(column: str) -> bool:
    try:
        parse_tag(column)
    except TagError:
        return False
    return True


def read_texts(path: str | Path, text: str, file_format: str) -> list[dict[str, Any]]:
    """Raw-text records `{"sentence_id", "text"[, "id"]}` of a text or JSON-lines file (blank text lines are kept
    as empty texts, blank JSON lines skipped)."""
    if file_format == "text":
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()
        return [{"sentence_id": index, "text": line.removesuffix("\r")} for index, line in enumerate(lines)]
    records = []
    for line_number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise SpanDataError(f"{path} (line {line_number}): not valid JSON ({error.msg}).") from None
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise SpanDataError(f"{path} (line {line_number}): expected a JSON object with a string field 'text'.")
        record = {"sentence_id": len(records), "text": item["text"]}
        if "id" in item:
            record["id"] = item["id"]
        records.append(record)
    return records


def text_records(records: list[dict[str, Any]], entities: list[list[dict[str, Any]]]) -> Iterator[dict[str, Any]]:
    """`predictions.jsonl` records of raw texts and their `predict` entities."""
    for record, found in zip(records, entities):
        yield {**record, "tokens": split_into_words(record["text"])[0], "entities": found}


def labelled_records(
    dataset, predictions: list[SentencePrediction], labels: list[str], gold_column: str = "spans"
) -> Iterator[dict[str, Any]]:
    """`predictions.jsonl` records of pre-split sentences: predicted entities, and the gold ones beside them."""
    id2label = dict(enumerate(labels))
    for row, prediction in zip(dataset, predictions):
        text, offsets = join_words(row["tokens"])
        gold = [(*entity, None) for entity in gold_entities(row, gold_column)]
        yield {
            "sentence_id": row["sentence_id"],
            "text": text,
            "tokens": row["tokens"],
            "entities": format_entities(prediction.entities, offsets, text, id2label),
            "gold": format_entities(gold, offsets, text, id2label),
        }


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """One JSON object per line (UTF-8, non-ASCII kept); the folder is created if needed."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with Path(path).open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def write_predictions(path: str | Path, dataset, predictions: list[SentencePrediction], labels: list[str]) -> None:
    """`predictions.jsonl` of a labelled dataset (e.g. the target test set of `--do_predict`)."""
    column = "gold_spans" if "gold_spans" in dataset.column_names else "spans"
    write_jsonl(path, labelled_records(dataset, predictions, labels, column))


def check_predict_file(predict_file: str | None, do_predict: bool) -> None:
    """Refuses a `--predict_file` that would not be predicted (before any training)."""
    if predict_file and not do_predict:
        raise ValueError("--predict_file is predicted under --do_predict: pass --do_predict too.")


def predict_file(
    model, path: str | Path, output_path: str | Path | None, batch_size: int, decoding: str | None, progress: bool
) -> dict[str, float]:
    """Predicts a `--predict_file` and writes its `predictions.jsonl` (unless `output_path` is None).

    Args:
        model: a `MaralForSpanNER` with its tokenizer.
        path: raw text (one text per line, or JSON lines with `text`) or labelled span JSON / CoNLL data.
        output_path: where to write the predictions; None on processes that do not write.
        batch_size: texts (windows) per forward pass.
        decoding: overlap resolution (defaults to the model's).
        progress: show progress bars.

    Returns:
        For labelled data, span F1 and seqeval metrics prefixed `predict_file_`; for raw text, `{}`.
    """
    if not Path(path).is_file():
        raise SpanDataError(f"{path}: file not found. Check the --predict_file path.")
    text = Path(path).read_text(encoding="utf-8-sig")
    file_format = predict_file_format(text)
    if file_format in TEXT_FORMATS:
        records = read_texts(path, text, file_format)
        entities = model.predict(
            [record["text"] for record in records], batch_size, decoding=decoding, show_progress_bar=progress
        )
        if output_path is not None:
            write_jsonl(output_path, text_records(records, entities))
        return {}
    dataset = load_spans(str(path), labels=model.config.labels)
    scores, predictions = evaluate_model(model, dataset, batch_size, decoding, show_progress_bar=progress)
    if output_path is not None:
        write_predictions(output_path, dataset, predictions, model.config.labels)
    return flatten_metrics(scores, METRIC_PREFIX)


__all__ = [
    "PREDICTIONS_FILE",
    "check_predict_file",
    "labelled_records",
    "predict_file",
    "predict_file_format",
    "read_texts",
    "text_records",
    "write_jsonl",
    "write_predictions",
]
