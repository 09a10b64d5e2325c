"""Loading span-NER data into ``datasets.Dataset`` objects, and writing span JSON."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from datasets import ClassLabel, Dataset, Features, List, Value

from .errors import SpanDataError, SpanDataWarning
from .readers import SpanRecord, iter_records, read_dataset, read_memory, source_name

__all__ = ["encode_record", "infer_labels", "load_spans", "normalize_labels", "span_features", "write_span_json"]


def span_features(labels: Sequence[str], *, with_gold_spans: bool = False) -> Features:
    """Feature schema of a span-NER dataset.

    Args:
        labels: Label names, ``"O"`` first (see :func:`normalize_labels`).
        with_gold_spans: Add the ``gold_spans`` column of unlabeled target data.

    Returns:
        ``Features`` with ``sentence_id`` (int64), ``tokens`` (list of strings) and ``spans`` (list of
        ``{"start": int32, "end": int32, "label": ClassLabel(names=labels)}``, end inclusive), plus ``gold_spans``
        of the same type if requested.
    """
    span_list = List({"start": Value("int32"), "end": Value("int32"), "label": ClassLabel(names=list(labels))})
    features = {"sentence_id": Value("int64"), "tokens": List(Value("string")), "spans": span_list}
    if with_gold_spans:
        features["gold_spans"] = span_list
    return Features(features)


def normalize_labels(labels: Iterable[str]) -> list[str]:
    """Validate a label list and put ``"O"`` first.

    Args:
        labels: Label names; ``"O"`` is prepended when missing.

    Returns:
        The label list with ``"O"`` at index 0.

    Raises:
        SpanDataError: If ``labels`` is a single string, holds non-strings, empty strings or duplicates, or has
            ``"O"`` at a position other than 0.
    """
    if isinstance(labels, str):
        raise SpanDataError(f"parameter labels: got the string {labels!r}; pass a list of label names.")
    names = list(labels)
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise SpanDataError(f"parameter labels: {name!r} is not a non-empty string; pass label names.")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise SpanDataError(f"parameter labels: duplicate name(s) {duplicates}; list each label once.")
    if "O" not in names:
        return ["O", *names]
    if names[0] != "O":
        raise SpanDataError(
            f"parameter labels: 'O' must come first (got {names}); label id 0 is the non-entity class."
        )
    return names


def _labels_from_records(records: Iterable[SpanRecord]) -> list[str]:
    found = {label for record in records for _, _, label in record.spans}
    return ["O", *sorted(found)]


def infer_labels(source: Any, data_format: str | None = None, name: str | None = None) -> list[str]:
    """Infer the label list of a source: ``["O"]`` followed by the entity types found, in alphabetical order.

    The order is stable (it depends only on the set of types), but it is not the reference order of CoNLL
    (``O, ORG, PER, LOC, MISC``): pass ``labels`` explicitly where label ids must match another setup.

    Args:
        source: Anything :func:`load_spans` accepts.
        data_format: As in :func:`load_spans`.
        name: As in :func:`load_spans`.

    Returns:
        The label names, ``"O"`` first.

    Raises:
        SpanDataError: For invalid input.
    """
    return _labels_from_records(iter_records(source, data_format, name))


def encode_record(record: SpanRecord, label_to_id: Mapping[str, int], *, unlabeled: bool = False) -> dict[str, Any]:
    """Turn a record into a feature dict of :func:`span_features` (label names become ids).

    Args:
        record: A validated record.
        label_to_id: Map from label name to id.
        unlabeled: Put the annotations into ``gold_spans`` and leave ``spans`` empty.

    Returns:
        ``{"sentence_id", "tokens", "spans"}`` plus ``"gold_spans"`` when ``unlabeled``.

    Raises:
        SpanDataError: If a span label is not in ``label_to_id`` (unless ``unlabeled``: the gold spans of target text
            are diagnostics only, so a span with an unknown label is left out; ``load_spans`` warns about them).
    """
    spans = []
    for start, end, label in record.spans:
        label_id = label_to_id.get(label)
        if (label_id is None or label_id == 0) and unlabeled:
            continue
        if label_id is None or label_id == 0:
            known = ", ".join(name for name in label_to_id if name != "O")
            raise SpanDataError(
                f"{record.location}: span '{start};{end}' has unknown label {label!r}; known labels: {known}. Pass "
                "labels=[...] including it (or labels=None to infer the labels from the data)."
            )
        spans.append({"start": start, "end": end, "label": label_id})
    if unlabeled:
        return {"sentence_id": record.sentence_id, "tokens": record.tokens, "spans": [], "gold_spans": spans}
    return {"sentence_id": record.sentence_id, "tokens": record.tokens, "spans": spans}


def load_spans(
    source: Any,
    *,
    labels: Sequence[str] | None = None,
    data_format: str | None = None,
    unlabeled: bool = False,
    max_samples: int | None = None,
    drop_docstart: bool = True,
    name: str | None = None,
) -> Dataset:
    """Load span-NER data from a file, in-memory records or a ``datasets.Dataset``.

    Args:
        source: A path to a span JSON file (a list of ``{"context": str, "span_posLabel": {"start;end": label}}``)
            or a CoNLL/BIO column file (IOB1, IOB2, BIOES or BILOU tags); a list of in-memory records
            (``{"context", "span_posLabel"}`` or ``{"tokens": [...], "spans": [{"start", "end", "label"}]}``, end
            inclusive); or a ``datasets.Dataset`` with ``tokens`` and ``ner_tags`` (``ClassLabel`` ids or tag
            strings), or with ``tokens`` and ``spans`` in this package's layout.
        labels: Label names with ``"O"`` first (prepended if missing). ``None`` infers ``["O"]`` + the entity types
            found in the whole source, in alphabetical order.
        data_format: ``None`` (auto), ``"span_json"``, ``"conll"``, ``"memory"`` or ``"dataset"``. Files are
            auto-detected by their first non-whitespace character: ``[`` is span JSON, anything else CoNLL.
        unlabeled: Target text that may carry gold spans: ``spans`` is empty for every record and the annotations go
            to a ``gold_spans`` column (for diagnostics only).
        max_samples: Keep only the first ``max_samples`` records (counted after dropping ``-DOCSTART-``).
        drop_docstart: Drop the one-word ``-DOCSTART-`` document separators (in every format).
        name: Name of the source in messages; default: the path, ``"in-memory data"`` or ``"dataset"``.

    Returns:
        A ``Dataset`` with the features of :func:`span_features`: ``sentence_id`` (the 0-based index of the record
        in the source, counted before any dropping, so it stays traceable), ``tokens``, ``spans`` sorted by
        ``(start, end)``, and ``gold_spans`` when ``unlabeled``.

    Raises:
        SpanDataError: For invalid input; the message names the source, the record and the line where known.
    """
    if max_samples is not None and (
        isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1
    ):
        raise SpanDataError(f"parameter max_samples: got {max_samples!r}; use a positive integer or None.")
    name = name or source_name(source)
    records = list(iter_records(source, data_format, name))
    if not records:
        raise SpanDataError(f"{name}: contains no records; give at least one sentence.")
    label_names = normalize_labels(labels) if labels is not None else _labels_from_records(records)
    label_to_id = {label: index for index, label in enumerate(label_names)}
    encoded = [encode_record(record, label_to_id, unlabeled=unlabeled) for record in records]
    if unlabeled:
        warn_about_unknown_gold_labels(records, label_to_id, name)
    if drop_docstart:
        encoded = [example for example, record in zip(encoded, records) if not record.is_docstart]
        if not encoded:
            raise SpanDataError(f"{name}: contains only -DOCSTART- records; nothing is left to load.")
    if max_samples is not None:
        encoded = encoded[:max_samples]
    features = span_features(label_names, with_gold_spans=unlabeled)
    columns = {column: [example[column] for example in encoded] for column in features}
    return Dataset.from_dict(columns, features=features)


def warn_about_unknown_gold_labels(records: Sequence[SpanRecord], label_to_id: Mapping[str, int], name: str) -> None:
    """One warning for the gold spans of unlabelled target text whose label is not in the label set: they are left
    out of the diagnostics (the text itself is used as usual)."""
    unknown = [(record, label) for record in records for _, _, label in record.spans if not label_to_id.get(label)]
    if unknown:
        labels = sorted({label for _, label in unknown})
        warnings.warn(
            f"{name}: {len(unknown)} gold span(s) have label(s) {', '.join(map(repr, labels))} outside the label set "
            f"(first in {unknown[0][0].location}); the gold spans of target text are only diagnostics, so these are "
            "left out of them.",
            SpanDataWarning,
            stacklevel=3,
        )


def _records_to_write(dataset_or_records: Any, labels: Sequence[str] | None, column: str) -> Iterable[SpanRecord]:
    if isinstance(dataset_or_records, (list, tuple)):
        return read_memory(dataset_or_records)
    if hasattr(dataset_or_records, "column_names") and hasattr(dataset_or_records, "iter"):
        names = normalize_labels(labels) if labels is not None else None
        return read_dataset(dataset_or_records, spans_column=column, label_names=names)
    raise SpanDataError(
        f"parameter dataset_or_records: got {type(dataset_or_records).__name__}; pass a datasets.Dataset or a list "
        "of records."
    )


def _to_span_json(record: SpanRecord, known: set[str] | None) -> dict[str, Any]:
    span_map = {}
    for start, end, label in record.spans:
        if known is not None and label not in known:
            raise SpanDataError(
                f"{record.location}: span '{start};{end}' has label {label!r}, which is not in labels "
                f"{sorted(known)}; add it to labels or fix the record."
            )
        span_map[f"{start};{end}"] = label
    return {"context": " ".join(record.tokens), "span_posLabel": span_map}


def write_span_json(
    dataset_or_records: Any,
    path: str | Path,
    labels: Sequence[str] | None = None,
    *,
    overwrite: bool = False,
    column: str = "spans",
) -> Path:
    """Write records as a span JSON file (the format :func:`load_spans` reads).

    The file is a JSON list with one ``{"context", "span_posLabel"}`` object per record; keys are ``"start;end"``
    (inclusive word indices) in ``(start, end)`` order; non-ASCII text is written as is (UTF-8). The file is
    written to a temporary file in the same folder and renamed, so it is never left half-written.

    Args:
        dataset_or_records: A ``Dataset`` with ``tokens`` and a span column (as returned by :func:`load_spans`), or
            a list of in-memory records (either shape :func:`load_spans` accepts). ``-DOCSTART-`` records are
            written like any other.
        path: Output file; missing parent folders are created.
        labels: Label names (``"O"`` first). Every written label must be in this list; for a dataset whose span
            column has integer labels without ``ClassLabel`` names, they also name the ids.
        overwrite: Replace an existing file. Without it an existing file raises ``FileExistsError``.
        column: Span column of a dataset to write, e.g. ``"gold_spans"`` for data loaded with ``unlabeled=True``.

    Returns:
        The path written.

    Raises:
        FileExistsError: If ``path`` exists and ``overwrite`` is false.
        SpanDataError: For invalid records or labels.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: the file exists; pass overwrite=True to replace it.")
    known = set(normalize_labels(labels)) if labels is not None else None
    records = [_to_span_json(record, known) for record in _records_to_write(dataset_or_records, labels, column)]
    text = json.dumps(records, ensure_ascii=False, indent=2) + "\n"
    _write_atomically(path, text, overwrite=overwrite)
    return path


def _write_atomically(path: Path, text: str, *, overwrite: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)
        if overwrite:
            os.replace(temporary, path)
            return
        try:
            os.link(temporary, path)  # fails atomically if the file appeared meanwhile
        except FileExistsError:
            raise FileExistsError(f"{path}: the file exists; pass overwrite=True to replace it.") from None
        except OSError:  # file systems without hard links
            if path.exists():
                raise FileExistsError(f"{path}: the file exists; pass overwrite=True to replace it.") from None
            os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
