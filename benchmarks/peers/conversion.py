"""The peers' predictions in this project's span format, and their metrics by this project's evaluation.

A peer writes its own entity dicts, unchanged (`raw_<role>.jsonl`, see `common.py`); this module turns them into
`(start_word, end_word, label_id, score)` entities over the benchmark's words (end inclusive, label ids into the
dataset's labels) and scores them with `evaluation_maral.score_entities`, the function that scores our models:

* SpanMarker on pre-split words: `word_start_index` / `word_end_index` (end exclusive);
* SpanMarker on text: `char_start_index` / `char_end_index`; GLiNER: `start` / `end` (character offsets into the
  words joined by single spaces, end exclusive), aligned to the words they overlap;
* labels: the peer's names (`person`, ...) mapped back through the same label -> name mapping the peer was given.

Span F1 counts the gold entities a peer could label, as ours does for our models: spans of at most
`max_span_width` words within the words it read (`words_read`: a peer truncates long inputs like our
`max_seq_length`); seqeval counts every gold entity.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from evaluation_maral import gold_entities, score_entities
from modeling_maral import SentencePrediction, join_words

ScoredEntity = tuple[int, int, int, float]
"""`(start_word, end_word, label_id, score)`, end inclusive."""
CHARACTER_OFFSET_KEYS = (("char_start_index", "char_end_index"), ("start", "end"))
"""Character-offset keys of SpanMarker (on text) and GLiNER, end exclusive."""


class PeerOutputError(ValueError):
    """A peer's entity that cannot be mapped onto the sentence's words or labels."""


def peer_label_ids(labels: Sequence[str], names: Mapping[str, str]) -> dict[str, int]:
    """Peer label name -> label id, for the dataset's `labels` (`O` first) and the label -> peer name mapping.

    Raises:
        PeerOutputError: When a label other than `O` has no peer name.
    """
    missing = [label for label in labels[1:] if label not in names]
    if missing:
        raise PeerOutputError(f"no peer name for the label(s) {', '.join(missing)}.")
    return {names[label]: labels.index(label) for label in labels[1:]}


def char_span_to_words(start: int, end: int, offsets: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The first and the last word that overlap the characters `[start, end)`.

    Args:
        start, end: Character offsets (end exclusive).
        offsets: Each word's `(start, end)` character offsets in the text.

    Raises:
        PeerOutputError: When no word overlaps them.
    """
    words = [index for index, (word_start, word_end) in enumerate(offsets) if word_start < end and start < word_end]
    if not words:
        raise PeerOutputError(f"characters [{start}, {end}) overlap no word.")
    return words[0], words[-1]


def entity_words(entity: Mapping[str, Any], offsets: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The inclusive word span of one peer entity dict (word indices first, else character offsets).

    Raises:
        PeerOutputError: For a dict without offsets, or a span outside the sentence.
    """
    if "word_start_index" in entity:
        start, end = int(entity["word_start_index"]), int(entity["word_end_index"]) - 1
    else:
        keys = next((keys for keys in CHARACTER_OFFSET_KEYS if keys[0] in entity), None)
        if keys is None:
            raise PeerOutputError(f"an entity without word indices or character offsets: {dict(entity)}.")
        start, end = char_span_to_words(int(entity[keys[0]]), int(entity[keys[1]]), offsets)
    if not 0 <= start <= end < len(offsets):
        raise PeerOutputError(f"words {start}..{end} lie outside a sentence of {len(offsets)} words: {dict(entity)}.")
    return start, end


def peer_entities(
    entities: Sequence[Mapping[str, Any]], tokens: Sequence[str], label_ids: Mapping[str, int]
) -> list[ScoredEntity]:
    """A sentence's peer entity dicts as `(start_word, end_word, label_id, score)`, sorted by position.

    Args:
        entities: The peer's dicts for the sentence.
        tokens: The sentence's words (a peer reading text read them joined by single spaces).
        label_ids: Peer label name -> label id (`peer_label_ids`).

    Raises:
        PeerOutputError: For an unknown label or offsets that do not map onto the words.
    """
    _, offsets = join_words(list(tokens))
    converted = []
    for entity in entities:
        if entity.get("label") not in label_ids:
            raise PeerOutputError(f"unknown label {entity.get('label')!r}; expected one of {', '.join(label_ids)}.")
        start, end = entity_words(entity, offsets)
        converted.append((start, end, label_ids[entity["label"]], float(entity.get("score", 1.0))))
    return sorted(converted)


@dataclass(frozen=True)
class ReachableSpans:
    """The spans a peer could label: at most `max_span_width` words, within the first `words_read` words."""

    max_span_width: int
    words_read: int

    def __contains__(self, span: object) -> bool:
        start, end = span  # type: ignore[misc]
        return 0 <= start <= end < self.words_read and end - start < self.max_span_width


def sentence_predictions(entities: list[ScoredEntity], num_labels: int) -> SentencePrediction:
    """A `SentencePrediction` holding decoded entities only (no span probabilities), for `prediction_io`."""
    return SentencePrediction(entities, np.zeros((0, 2), dtype=np.int64), np.zeros((0, num_labels)), None)


def align_records(rows: Sequence[Mapping[str, Any]], records: Sequence[Mapping[str, Any]], source: str) -> list:
    """The peer's records in the order of the dataset's rows, matched by `sentence_id`.

    Raises:
        PeerOutputError: When the sentence ids differ (naming `source`, the raw predictions file).
    """
    by_id = {record["sentence_id"]: record for record in records}
    missing = [row["sentence_id"] for row in rows if row["sentence_id"] not in by_id]
    if missing or len(by_id) != len(rows):
        raise PeerOutputError(
            f"{source}: {len(records)} predictions for {len(rows)} sentences (missing ids {missing[:5]}...)."
        )
    return [by_id[row["sentence_id"]] for row in rows]


def score_peer(
    rows: Sequence[Mapping[str, Any]],
    records: Sequence[Mapping[str, Any]],
    labels: Sequence[str],
    names: Mapping[str, str],
    max_span_width: int,
    source: str = "raw predictions",
) -> tuple[dict[str, Any], list[list[ScoredEntity]]]:
    """Span F1 and seqeval metrics of a peer's raw predictions of a dataset's rows.

    Args:
        rows: The rows of `data_loading.load_spans` (`sentence_id`, `tokens`, `spans` with label ids).
        records: The lines of the peer's `raw_<role>.jsonl` (`sentence_id`, `words_read`, `entities`).
        labels: The dataset's labels, `O` first.
        names: Label -> peer name, as given to the peer.
        max_span_width: The longest span (words) the peer was set to label.
        source: The records' file, for error messages.

    Returns:
        The metrics of `evaluation_maral.score_entities` and each sentence's converted entities.
    """
    label_ids = peer_label_ids(labels, names)
    aligned = align_records(rows, records, source)
    predicted = [peer_entities(record["entities"], row["tokens"], label_ids) for row, record in zip(rows, aligned)]
    metrics = score_entities(
        [[(start, end, label) for start, end, label, _ in entities] for entities in predicted],
        [gold_entities(row, "spans") for row in rows],
        [ReachableSpans(max_span_width, int(record["words_read"])) for record in aligned],
        [len(row["tokens"]) for row in rows],
        list(labels),
    )
    return metrics, predicted
