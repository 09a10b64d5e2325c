"""Batches of span-NER examples for `MaralForSpanNER`, target-text MLM masking and entity-coverage reports.

The span features themselves (subword alignment, span enumeration, morphology ids) are computed by
`modeling_maral.featurize_words`, the same code `predict` uses; this module adds gold labels and bookkeeping.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from modeling_maral import (
    DEFAULT_MAX_SEQ_LENGTH,
    DEFAULT_MAX_SPAN_WIDTH,
    SentenceFeatures,
    collate_span_features,
    enumerate_spans,
    featurize_words,
    lone_piece_id,
    span_index_offsets,
)

logger = logging.getLogger(__name__)


def span_label_ids(features: SentenceFeatures, spans: list[dict[str, int]], max_span_width: int) -> np.ndarray:
    """Gold class id of every kept span of a sentence (0 = `O`); entities wider than the limit are skipped."""
    enumerated = np.zeros(len(enumerate_spans(features.num_words, max_span_width)), dtype=np.int64)
    if spans:
        starts, ends, labels = np.array([(span["start"], span["end"], span["label"]) for span in spans]).T
        scorable = ends - starts < max_span_width
        offsets = span_index_offsets(features.num_words, max_span_width)
        enumerated[offsets[starts[scorable]] + (ends - starts)[scorable]] = labels[scorable]
    return enumerated[features.enumerated_index]


@dataclass
class MaralDataCollator:
    """Turns dataset rows (`tokens`, `spans`, `sentence_id`) into padded model inputs.

    Args:
        tokenizer: a fast tokenizer.
        max_span_width: longest span in words.
        max_seq_length: subword budget per sentence.
        label_column: column holding gold spans used as `labels` (`None` for unlabeled text).

    Example:
        >>> collator = MaralDataCollator(tokenizer, max_span_width=4, max_seq_length=128)
        >>> batch = collator([dataset[0], dataset[1]])
        >>> sorted(batch)[:3]
        ['attention_mask', 'input_ids', 'labels']
    """

    tokenizer: Any
    max_span_width: int = DEFAULT_MAX_SPAN_WIDTH
    max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH
    label_column: str | None = "spans"

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        features = featurize_words(
            self.tokenizer, [row["tokens"] for row in rows], self.max_span_width, self.max_seq_length
        )
        batch = collate_span_features(features, self.tokenizer.pad_token_id)
        if "sentence_id" in rows[0]:
            batch["sentence_ids"] = torch.tensor([row["sentence_id"] for row in rows], dtype=torch.long)
        if self.label_column is not None:
            labels = torch.full(batch["span_mask"].shape, -100, dtype=torch.long)
            for index, (row, sentence) in enumerate(zip(rows, features)):
                sentence_labels = span_label_ids(sentence, row[self.label_column], self.max_span_width)
                labels[index, : len(sentence_labels)] = torch.from_numpy(sentence_labels)
            batch["labels"] = labels
        return batch


def mask_tokens_for_mlm(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    tokenizer: Any,
    mask_rate: float = 0.25,
    generator: torch.Generator | None = None,
    hide_masked_tokens: bool = True,
    draws: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Masks target-text subwords for the MLM auxiliary (§2.11 of the method notes).

    Every real position except special tokens and the lone `▁` piece is selected with probability `mask_rate`
    and always replaced by the mask token (no 80/10/10). With `hide_masked_tokens` (the upstream behaviour) the
    attention mask is also 0 at masked positions. `draws`, uniform numbers of the shape of `input_ids`, decide the
    selection; they are drawn from `generator` when not given.

    Returns:
        `(masked_input_ids, attention_mask, mlm_labels)` with -100 at unselected positions.
    """
    if tokenizer.mask_token_id is None:
        raise ValueError("The tokenizer has no mask token; the MLM auxiliary needs one (set `mlm_weight=0`).")
    protected = torch.tensor(sorted(set(tokenizer.all_special_ids) | {lone_piece_id(tokenizer) or -1}))
    candidates = attention_mask.bool() & ~torch.isin(input_ids, protected)
    draws = torch.rand(input_ids.shape, generator=generator) if draws is None else draws
    selected = candidates & (draws < mask_rate)
    masked_ids = input_ids.masked_fill(selected, tokenizer.mask_token_id)
    labels = input_ids.masked_fill(~selected, -100)
    attention = attention_mask.masked_fill(selected, 0) if hide_masked_tokens else attention_mask.clone()
    return masked_ids, attention, labels


def entity_coverage(
    dataset, tokenizer: Any, max_span_width: int, max_seq_length: int, column: str = "spans", batch_size: int = 256
) -> dict[str, int]:
    """Counts gold entities the model can never score: wider than `max_span_width`, past `max_seq_length`, or with a
    first or last word that the tokenizer turns into no subword at all (a control character, say).

    Returns:
        `{"total": ..., "too_wide": ..., "truncated": ..., "no_subwords": ...}`.
    """
    counts = {"total": 0, "too_wide": 0, "truncated": 0, "no_subwords": 0}
    for begin in range(0, len(dataset), batch_size):
        rows = dataset[begin : begin + batch_size]
        features = featurize_words(tokenizer, rows["tokens"], max_span_width, max_seq_length)
        for sentence, spans in zip(features, rows[column]):
            scorable = {(int(start), int(end)) for start, end in sentence.span_words}
            for span in spans:
                counts["total"] += 1
                if span["end"] - span["start"] >= max_span_width:
                    counts["too_wide"] += 1
                elif (span["start"], span["end"]) not in scorable:
                    counts["truncated" if span["end"] >= sentence.first_unread_word else "no_subwords"] += 1
    return counts


def warn_about_unreachable_entities(
    counts: dict[str, int], dataset_name: str, max_span_width: int, max_seq_length: int
):
    """Logs one summary warning when some gold entities can never be predicted, with the reason of each."""
    reasons = {
        "too_wide": f"wider than max_span_width={max_span_width} words",
        "truncated": f"past max_seq_length={max_seq_length} subwords",
        "no_subwords": "with a first or last word the tokenizer gives no subword (e.g. a control character)",
    }
    lost = sum(counts.get(reason, 0) for reason in reasons)
    if lost:
        details = ", ".join(f"{counts[reason]} {text}" for reason, text in reasons.items() if counts.get(reason))
        advice = "Raise those limits to cover them." if counts["too_wide"] + counts["truncated"] else "Clean the text."
        logger.warning(
            "%s: %d of %d gold entities can never be predicted (%s). %s",
            dataset_name,
            lost,
            counts["total"],
            details,
            advice,
        )
