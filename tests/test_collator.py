"""Behaviour tests of `data_loading.collator`: span labels, batch bookkeeping, entity coverage and MLM masking."""

from __future__ import annotations

import logging

import pytest
import torch

from data_loading import load_spans
from data_loading.collator import (
    MaralDataCollator,
    entity_coverage,
    mask_tokens_for_mlm,
    span_label_ids,
    warn_about_unreachable_entities,
)
from modeling_maral import enumerate_spans, featurize_words, lone_piece_id
from tests.tiny_models import TINY_LABELS

LOC, MISC, ORG, PER = (TINY_LABELS.index(name) for name in ("LOC", "MISC", "ORG", "PER"))

ROWS = [
    {
        "sentence_id": 7,
        "tokens": ["Peter", "Blackburn", "visited", "the", "European", "Union", "in", "Brussels", "."],
        "spans": [
            {"start": 0, "end": 1, "label": PER},
            {"start": 3, "end": 5, "label": ORG},
            {"start": 7, "end": 7, "label": LOC},
            {"start": 2, "end": 6, "label": MISC},  # five words: wider than max_span_width=4
        ],
    },
    {
        "sentence_id": 3,
        "tokens": ["EU", "rejects", "German", "call"],
        "spans": [{"start": 2, "end": 2, "label": MISC}],
    },
]


def gold_map(row, max_span_width=4):
    return {
        (span["start"], span["end"]): span["label"]
        for span in row["spans"]
        if span["end"] - span["start"] < max_span_width
    }


@pytest.mark.parametrize("tokenizer_name", ["wordpiece_tokenizer", "unigram_tokenizer"])
def test_labels_sit_at_the_gold_span_rows(request, tokenizer_name):
    tokenizer = request.getfixturevalue(tokenizer_name)
    batch = MaralDataCollator(tokenizer, max_span_width=4, max_seq_length=128)(ROWS)
    assert batch["sentence_ids"].tolist() == [7, 3]
    assert batch["labels"].shape == batch["span_mask"].shape
    for index, row in enumerate(ROWS):
        mask = batch["span_mask"][index]
        spans = [tuple(span) for span in batch["span_words"][index][mask].tolist()]
        labels = batch["labels"][index][mask].tolist()
        assert spans == [tuple(span) for span in enumerate_spans(len(row["tokens"]), 4).tolist()]
        gold = gold_map(row)
        assert dict(zip(spans, labels)) == {span: gold.get(span, 0) for span in spans}
        assert sum(label != 0 for label in labels) == len(gold)
        assert (batch["labels"][index][~mask] == -100).all()
    assert (~batch["span_mask"][1]).sum() > 0  # the second sentence is padded


def test_narrower_width_skips_wider_gold_spans(wordpiece_tokenizer):
    batch = MaralDataCollator(wordpiece_tokenizer, max_span_width=2, max_seq_length=128)(ROWS[:1])
    mask = batch["span_mask"][0]
    labelled = {
        tuple(span): label
        for span, label in zip(batch["span_words"][0][mask].tolist(), batch["labels"][0][mask].tolist())
        if label
    }
    assert labelled == {(0, 1): PER, (7, 7): LOC}


def test_truncated_gold_spans_are_not_labelled(unigram_tokenizer):
    (features,) = featurize_words(unigram_tokenizer, [ROWS[0]["tokens"]], 4, 12)
    assert 0 < features.first_unread_word <= 7  # Brussels (word 7) does not fit
    labels = span_label_ids(features, ROWS[0]["spans"], 4)
    assert len(labels) == len(features.span_words)
    labelled = {tuple(span) for span, label in zip(features.span_words.tolist(), labels.tolist()) if label}
    assert labelled == {span for span in gold_map(ROWS[0]) if span[1] < features.first_unread_word}
    batch = MaralDataCollator(unigram_tokenizer, max_span_width=4, max_seq_length=12)(ROWS)
    assert batch["input_ids"].shape[1] == 12
    assert (batch["labels"][0][~batch["span_mask"][0]] == -100).all()


def test_unlabeled_collator_has_no_labels(wordpiece_tokenizer):
    rows = [{key: value for key, value in row.items() if key != "spans"} for row in ROWS]
    batch = MaralDataCollator(wordpiece_tokenizer, label_column=None)(rows)
    assert "labels" not in batch
    assert batch["sentence_ids"].tolist() == [7, 3]
    batch = MaralDataCollator(wordpiece_tokenizer)([{"tokens": row["tokens"], "spans": row["spans"]} for row in ROWS])
    assert "sentence_ids" not in batch


def test_collator_works_on_load_spans_rows(wordpiece_tokenizer):
    records = [
        {"context": "Peter Blackburn visited Brussels .", "span_posLabel": {"0;1": "PER", "3;3": "LOC"}},
        {"context": "EU rejects German call", "span_posLabel": {"0;0": "ORG"}},
    ]
    dataset = load_spans(records, labels=list(TINY_LABELS))
    batch = MaralDataCollator(wordpiece_tokenizer)([dataset[0], dataset[1]])
    assert batch["sentence_ids"].tolist() == dataset["sentence_id"]
    for index, row in enumerate(dataset):
        mask = batch["span_mask"][index]
        labelled = {
            tuple(span): label
            for span, label in zip(batch["span_words"][index][mask].tolist(), batch["labels"][index][mask].tolist())
            if label
        }
        assert labelled == gold_map(row)


def test_entity_coverage_counts_too_wide_and_truncated(unigram_tokenizer, caplog):
    long_words = ["Peter", "Blackburn", "visited", "the", "European", "Union", "in", "Brussels", "on", "Monday"]
    records = [
        {
            "context": " ".join(long_words),
            "span_posLabel": {"0;1": "PER", "2;6": "MISC", "7;7": "LOC", "9;9": "MISC"},
        },
        {"context": "EU rejects German call", "span_posLabel": {"0;0": "ORG", "2;2": "MISC"}},
    ]
    dataset = load_spans(records, labels=list(TINY_LABELS))
    max_seq_length = 12
    (features,) = featurize_words(unigram_tokenizer, [long_words], 4, max_seq_length)
    assert 1 < features.first_unread_word <= 7
    counts = entity_coverage(dataset, unigram_tokenizer, 4, max_seq_length, batch_size=1)
    assert counts == {"total": 6, "too_wide": 1, "truncated": 2, "no_subwords": 0}
    expected = {"total": 6, "too_wide": 0, "truncated": 0, "no_subwords": 0}
    assert entity_coverage(dataset, unigram_tokenizer, 5, 128) == expected
    unlabeled = load_spans(records, labels=list(TINY_LABELS), unlabeled=True)
    assert entity_coverage(unlabeled, unigram_tokenizer, 4, max_seq_length, column="gold_spans") == counts
    with caplog.at_level(logging.WARNING, logger="data_loading.collator"):
        warn_about_unreachable_entities(counts, "target_test", 4, max_seq_length)
    assert "3 of 6" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="data_loading.collator"):
        warn_about_unreachable_entities({"total": 6, "too_wide": 0, "truncated": 0}, "x", 4, 128)
    assert caplog.text == ""


def test_entities_on_words_without_subwords_are_reported_with_that_reason(wordpiece_tokenizer, caplog):
    records = [{"context": "Peter \x07 visited Paris", "span_posLabel": {"1;1": "MISC", "3;3": "LOC"}}]
    dataset = load_spans(records, labels=list(TINY_LABELS))
    counts = entity_coverage(dataset, wordpiece_tokenizer, 4, 128)
    assert counts == {"total": 2, "too_wide": 0, "truncated": 0, "no_subwords": 1}
    with caplog.at_level(logging.WARNING, logger="data_loading.collator"):
        warn_about_unreachable_entities(counts, "target_test", 4, 128)
    assert "1 with a first or last word the tokenizer gives no subword" in caplog.text
    assert "past max_seq_length" not in caplog.text


# ---------------------------------------------------------------------------------------------------------------
# MLM masking
# ---------------------------------------------------------------------------------------------------------------


def random_batch(tokenizer, rows=200, columns=100, seed=0, pad=True):
    """Random ids (special and lone-piece ids included) with a right-padded attention mask.

    With `pad=False` the positions outside the mask keep ordinary ids, so only the mask tells them apart.
    """
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, len(tokenizer), (rows, columns), generator=generator)
    lengths = torch.randint(columns // 2, columns + 1, (rows,), generator=generator)
    attention_mask = (torch.arange(columns)[None, :] < lengths[:, None]).long()
    if pad:
        input_ids = input_ids.masked_fill(attention_mask == 0, tokenizer.pad_token_id)
    return input_ids, attention_mask


@pytest.mark.parametrize("pad", [True, False])
@pytest.mark.parametrize("rate", [0.25, 0.6])
def test_mask_tokens_for_mlm_properties(unigram_tokenizer, rate, pad):
    input_ids, attention_mask = random_batch(unigram_tokenizer, pad=pad)
    original_ids, original_attention = input_ids.clone(), attention_mask.clone()
    masked, attention, labels = mask_tokens_for_mlm(
        input_ids, attention_mask, unigram_tokenizer, rate, torch.Generator().manual_seed(1)
    )
    assert torch.equal(input_ids, original_ids) and torch.equal(attention_mask, original_attention)
    selected = labels != -100
    protected = torch.isin(
        input_ids, torch.tensor(unigram_tokenizer.all_special_ids + [lone_piece_id(unigram_tokenizer)])
    )
    assert protected.any() and selected.any()
    assert not (selected & protected).any()
    assert not (selected & (attention_mask == 0)).any()
    assert (masked[selected] == unigram_tokenizer.mask_token_id).all()
    assert torch.equal(masked[~selected], input_ids[~selected])
    assert torch.equal(labels[selected], input_ids[selected])
    assert (attention[selected] == 0).all()
    assert torch.equal(attention[~selected], attention_mask[~selected])
    candidates = (attention_mask == 1) & ~protected
    observed = selected.sum().item() / candidates.sum().item()
    assert abs(observed - rate) < 0.02


def test_mask_tokens_for_mlm_can_keep_masked_tokens_visible(unigram_tokenizer):
    input_ids, attention_mask = random_batch(unigram_tokenizer, rows=20, columns=30)
    masked, attention, labels = mask_tokens_for_mlm(
        input_ids, attention_mask, unigram_tokenizer, 0.5, torch.Generator().manual_seed(0), hide_masked_tokens=False
    )
    assert (labels != -100).any()
    assert torch.equal(attention, attention_mask)
    assert (masked[labels != -100] == unigram_tokenizer.mask_token_id).all()


def test_mask_tokens_for_mlm_is_reproducible_with_a_seeded_generator(unigram_tokenizer):
    input_ids, attention_mask = random_batch(unigram_tokenizer, rows=20, columns=30)
    first = mask_tokens_for_mlm(input_ids, attention_mask, unigram_tokenizer, 0.3, torch.Generator().manual_seed(5))
    second = mask_tokens_for_mlm(input_ids, attention_mask, unigram_tokenizer, 0.3, torch.Generator().manual_seed(5))
    third = mask_tokens_for_mlm(input_ids, attention_mask, unigram_tokenizer, 0.3, torch.Generator().manual_seed(6))
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not torch.equal(first[2], third[2])


def test_full_rate_masks_every_word_piece_but_the_lone_metaspace_and_specials(unigram_tokenizer):
    words = [["1996-08-22", "BRUSSELS", "Reuters", "don't"], ["Zwingmann", "said"]]
    batch = MaralDataCollator(unigram_tokenizer, label_column=None)([{"tokens": sentence} for sentence in words])
    lone = lone_piece_id(unigram_tokenizer)
    assert (batch["input_ids"] == lone).any()
    masked, attention, labels = mask_tokens_for_mlm(
        batch["input_ids"], batch["attention_mask"], unigram_tokenizer, 1.0, torch.Generator().manual_seed(0)
    )
    for row in range(len(words)):
        for position, token in enumerate(batch["input_ids"][row].tolist()):
            real = batch["attention_mask"][row, position] == 1
            expected = bool(real) and token != lone and token not in unigram_tokenizer.all_special_ids
            assert (labels[row, position] != -100).item() == expected
            assert (masked[row, position] == unigram_tokenizer.mask_token_id).item() == expected
            assert attention[row, position].item() == (int(real) if not expected else 0)
