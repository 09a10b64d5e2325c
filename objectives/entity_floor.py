# Copyright 2026 The maral-xner authors. Licensed under the Apache License, Version 2.0.
"""The entity floor of the pseudo-labels: a label-free correction of a teacher that finds too few entities in the
target text.

A teacher trained on the source language is less sure of itself on the target text: its entity scores drop, more
spans fall to `O`, and its pseudo-labels hold far fewer entities per sentence than the source data (on WikiANN
Hindi 0.46 against 1.40, with precision 71.5 and recall 26.9 against the target gold). A student trained on them
learns to miss the same entities. The floor lowers the `O` score of every target span by one offset, the smallest
that brings the decoded pseudo-labels to `ratio` times the source data's entities per sentence. It needs no target
labels; one offset for all spans keeps the teacher's ranking of spans and its mix of classes. A teacher already
above the floor is left as it is (offset 0), so the floor only acts where the teacher is far off: languages differ
in how many entities a sentence holds (CoNLL German test 1.16 per sentence, English train 1.57), which is why the
floor is a fraction of the source's rate rather than the rate itself.
"""

from __future__ import annotations

import numpy as np

from modeling_maral import SentencePrediction, decode_span_indices

DEFAULT_ENTITY_FLOOR = 0.5
"""The floor `--target_entity_floor` defaults to: half the source data's entities per sentence. Fixed a priori (the
level below which the pseudo-label class mix was already reported as suspicious), never tuned on target labels; a
teacher of CoNLL German (about 0.98 pseudo-entities per sentence against the English 1.57) stays above it."""

MAX_O_OFFSET = 30.0
"""Largest `O` offset (nats) the search tries; a floor that this cannot reach gives this offset."""

SEARCH_STEPS = 30
"""Bisection steps of `entity_floor_offset` (30 steps: about 3e-8 nats)."""


def source_entities_per_sentence(class_counts, num_sentences: int) -> float:
    """Gold entities per sentence of the source data, from its span counts per class (`O` first): the rate the
    floor is a fraction of."""
    return float(np.asarray(class_counts)[1:].sum()) / max(num_sentences, 1)


def lower_o_scores(probabilities: np.ndarray, offset: float) -> np.ndarray:
    """Class probabilities with the `O` log-probability lowered by `offset` nats, renormalised.

    Args:
        probabilities: `(K, C)` class probabilities, class 0 = `O`.
        offset: nats subtracted from `log p(O)`; 0 returns the probabilities unchanged.

    Example:
        >>> lower_o_scores(np.array([[0.8, 0.2]]), np.log(4.0)).round(3)
        array([[0.5, 0.5]])
    """
    if offset == 0:
        return probabilities
    adjusted = probabilities.astype(np.float64, copy=True)
    adjusted[:, 0] *= np.exp(-offset)
    return (adjusted / adjusted.sum(axis=1, keepdims=True)).astype(probabilities.dtype)


def entities_per_sentence(predictions: list[SentencePrediction], pruning: str, offset: float = 0.0) -> float:
    """Entities per sentence that decoding (overlap resolution `pruning`) keeps after lowering `O` by `offset`."""
    kept = sum(
        len(decode_span_indices(p.span_words, lower_o_scores(p.probabilities, offset), pruning)) for p in predictions
    )
    return kept / max(len(predictions), 1)


def entity_floor_offset(
    predictions: list[SentencePrediction], pruning: str, min_entities_per_sentence: float
) -> float:
    """The smallest `O` offset at which the decoded predictions hold `min_entities_per_sentence` entities.

    Args:
        predictions: a model's predictions on the target text (one per sentence, with all span probabilities).
        pruning: the overlap resolution of the pseudo-labels.
        min_entities_per_sentence: the floor; 0 or below turns the correction off.

    Returns:
        0 when the predictions already reach the floor, else the offset found by bisection (at most
        `MAX_O_OFFSET`).
    """
    if min_entities_per_sentence <= 0 or entities_per_sentence(predictions, pruning) >= min_entities_per_sentence:
        return 0.0
    low, high = 0.0, MAX_O_OFFSET
    if entities_per_sentence(predictions, pruning, high) < min_entities_per_sentence:
        return high
    for _ in range(SEARCH_STEPS):
        middle = (low + high) / 2
        if entities_per_sentence(predictions, pruning, middle) >= min_entities_per_sentence:
            high = middle
        else:
            low = middle
    return high
