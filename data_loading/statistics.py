"""Span statistics: enumerated-span counts (method spec §2.8) and class counts (§2.10)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from modeling_maral import DEFAULT_MAX_SPAN_WIDTH

from .errors import SpanDataError

__all__ = ["count_span_labels", "num_enumerated_spans"]


def _check_count(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise SpanDataError(f"parameter {name}: got {value!r}; use an integer >= {minimum}.")


def num_enumerated_spans(n_words: int, max_span_width: int) -> int:
    """Number of candidate spans of a sentence: all word spans of width 1..``max_span_width``.

    ``sum(n_words - w + 1 for w in 1..min(max_span_width, n_words))``, which is ``4 n - 6`` for ``n >= 4`` and
    width 4.

    Args:
        n_words: Number of words of the sentence (>= 0).
        max_span_width: Largest span width in words (>= 1).

    Returns:
        The number of enumerated spans.

    Raises:
        SpanDataError: For negative ``n_words`` or ``max_span_width < 1``.
    """
    _check_count("n_words", n_words, 0)
    _check_count("max_span_width", max_span_width, 1)
    widths = min(int(max_span_width), int(n_words))
    return widths * int(n_words) - widths * (widths - 1) // 2


def _enumerated_per_sentence(lengths: np.ndarray, max_span_width: int) -> np.ndarray:
    widths = np.minimum(lengths, max_span_width)
    return widths * lengths - widths * (widths - 1) // 2


def count_span_labels(dataset: Any, max_span_width: int = DEFAULT_MAX_SPAN_WIDTH, column: str = "spans") -> np.ndarray:
    """Class counts of a span dataset as used for the class weights and the source prior (method spec §2.10).

    Entity counts per type come from ``column`` and include entities wider than ``max_span_width`` (which are
    never enumerated); the ``O`` count is ``sum over sentences of (num_enumerated_spans(n) - #entities)``, i.e.
    wide entities are subtracted too, as in the reference code.

    Args:
        dataset: A ``Dataset`` from :func:`~data_loading.load_spans` (``tokens`` and a span column whose ``label``
            is a ``ClassLabel``).
        max_span_width: Largest enumerated span width.
        column: Span column, ``"spans"`` or ``"gold_spans"``.

    Returns:
        ``int64`` array with one count per label id (index 0 is ``O``).

    Raises:
        SpanDataError: If the column is missing or its labels are not a ``ClassLabel``.
    """
    _check_count("max_span_width", max_span_width, 1)
    if column not in dataset.column_names or "tokens" not in dataset.column_names:
        raise SpanDataError(
            f"parameter column: the dataset needs 'tokens' and {column!r}; it has {dataset.column_names}."
        )
    label_feature = getattr(dataset.features[column], "feature", {})
    num_labels = getattr(label_feature.get("label") if isinstance(label_feature, dict) else None, "num_classes", None)
    if num_labels is None:
        raise SpanDataError(f"parameter column: {column!r} is not a list of spans with a ClassLabel 'label'.")
    counts = np.zeros(num_labels, dtype=np.int64)
    enumerated = 0
    for batch in dataset.select_columns(["tokens", column]).with_format("arrow").iter(batch_size=10_000):
        lengths = pc.list_value_length(batch["tokens"]).to_numpy(zero_copy_only=False).astype(np.int64)
        enumerated += int(_enumerated_per_sentence(lengths, int(max_span_width)).sum())
        spans = pc.list_flatten(batch[column])
        if isinstance(spans, pa.ChunkedArray):
            spans = spans.combine_chunks()
        labels = pc.struct_field(spans, "label").to_numpy(zero_copy_only=False).astype(np.int64)
        counts += np.bincount(labels, minlength=num_labels)[:num_labels]
    counts[0] = enumerated - counts[1:].sum() - counts[0]
    return counts
