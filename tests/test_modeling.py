"""Behaviour tests of `modeling_maral`: span enumeration, subword alignment, features, decoding, the model, saving
and loading (in process and with `trust_remote_code` in a fresh process), and `predict`."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModel

import modeling_maral
from modeling_maral import (
    MORPH_DIGIT,
    MORPH_LOWER,
    MORPH_OTHER,
    MORPH_PAD,
    MORPH_TITLE,
    MORPH_UPPER,
    MaralConfig,
    MaralForSpanNER,
    collate_span_features,
    decode_spans,
    enumerate_spans,
    featurize_words,
    lone_piece_id,
    morphology_id,
    span_cross_entropy,
    span_index_offsets,
    split_into_words,
    word_subword_boundaries,
)
from tests.tiny_models import TINY_LABELS, WITHOUT_PROJECT_PREAMBLE, tiny_bert_config

REPO_ROOT = Path(__file__).resolve().parents[1]

# Words chosen so that the tiny Unigram tokenizer splits several of them into pieces and starts some of them with a
# stand-alone "▁" piece (checked in `test_unigram_alignment_skips_lone_metaspace_piece`).
UNIGRAM_WORDS = ["1996-08-22", "BRUSSELS", "Reuters", "U.S.", "co-operation", "don't", "Zwingmann", "said", "."]


def word_pieces(tokenizer, words: list[str]) -> tuple[list[int], list[list[int]]]:
    """Full (untruncated) ids and the subword positions of every word, straight from the tokenizer."""
    encoding = tokenizer([words], is_split_into_words=True, add_special_tokens=True)
    word_ids = encoding.word_ids(0)
    positions = [[p for p, w in enumerate(word_ids) if w == k] for k in range(len(words))]
    return encoding["input_ids"][0], positions


# ---------------------------------------------------------------------------------------------------------------
# Span enumeration
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_words", range(0, 10))
@pytest.mark.parametrize("width", [1, 2, 4, 6])
def test_enumerate_spans_counts_and_order(num_words, width):
    spans = enumerate_spans(num_words, width)
    assert spans.shape == (sum(num_words - w + 1 for w in range(1, min(width, num_words) + 1)), 2)
    if width == 4 and num_words >= 4:
        assert len(spans) == 4 * num_words - 6
    brute_force = [(s, e) for s in range(num_words) for e in range(s, min(s + width, num_words))]
    assert [tuple(row) for row in spans.tolist()] == brute_force  # all spans, ordered by start then end


@pytest.mark.parametrize("num_words", range(1, 10))
@pytest.mark.parametrize("width", [1, 3, 4, 12])
def test_span_index_offsets_match_enumeration(num_words, width):
    spans = enumerate_spans(num_words, width)
    offsets = span_index_offsets(num_words, width)
    assert offsets.shape == (num_words,)
    for row, (start, end) in enumerate(spans.tolist()):
        assert offsets[start] + end - start == row


# ---------------------------------------------------------------------------------------------------------------
# Subword alignment and truncation
# ---------------------------------------------------------------------------------------------------------------


def test_word_subword_boundaries_hand_built():
    # <s> [▁ a] [b ▁? c d] [e] </s>   with 5 = lone piece id
    word_ids = [None, 0, 0, 1, 1, 1, 2, None]
    input_ids = [0, 5, 10, 11, 12, 13, 14, 2]
    first, last = word_subword_boundaries(word_ids, input_ids, 3, skip_id=5)
    assert first.tolist() == [2, 3, 6]
    assert last.tolist() == [2, 5, 6]
    first, last = word_subword_boundaries(word_ids, input_ids, 3, skip_id=None)
    assert first.tolist() == [1, 3, 6]
    # a word made only of the lone piece keeps it; a word without subwords gets -1
    first, last = word_subword_boundaries([None, 0, None], [0, 5, 2], 2, skip_id=5)
    assert first.tolist() == [1, -1]
    assert last.tolist() == [1, -1]


def test_unigram_alignment_skips_lone_metaspace_piece(unigram_tokenizer):
    lone = lone_piece_id(unigram_tokenizer)
    assert lone is not None
    ids, positions = word_pieces(unigram_tokenizer, UNIGRAM_WORDS)
    starts_with_lone = [k for k, pos in enumerate(positions) if ids[pos[0]] == lone and len(pos) > 1]
    assert starts_with_lone, "fixture words no longer produce a lone '▁' piece"
    expected_first = [pos[1] if ids[pos[0]] == lone and len(pos) > 1 else pos[0] for pos in positions]
    expected_last = [pos[-1] for pos in positions]

    (features,) = featurize_words(unigram_tokenizer, [UNIGRAM_WORDS], 4, 128)
    assert features.input_ids == ids
    assert features.num_dropped_spans == 0
    assert features.first_unread_word == len(UNIGRAM_WORDS)
    assert features.span_words.tolist() == enumerate_spans(len(UNIGRAM_WORDS), 4).tolist()
    for (start, end), (token_start, token_end) in zip(features.span_words.tolist(), features.span_tokens.tolist()):
        assert token_start == expected_first[start]
        assert token_end == expected_last[end]
    for k in starts_with_lone:
        assert ids[features.span_tokens[features.span_words.tolist().index([k, k])][0]] != lone


def test_wordpiece_tokenizer_has_no_lone_piece(wordpiece_tokenizer):
    assert lone_piece_id(wordpiece_tokenizer) is None


@pytest.mark.parametrize("tokenizer_name", ["unigram_tokenizer", "wordpiece_tokenizer"])
@pytest.mark.parametrize("extra", [1, 2])
def test_truncation_drops_spans_and_keeps_closing_token(request, tokenizer_name, extra):
    tokenizer = request.getfixturevalue(tokenizer_name)
    words = (UNIGRAM_WORDS + ["Peter", "Blackburn", "visited", "Brussels"]) * 2
    ids, positions = word_pieces(tokenizer, words)
    last = [pos[-1] for pos in positions]
    cut_word = 7
    # extra=1: the cut word's last piece lands on the final slot, which is taken by the closing special token
    max_len = last[cut_word] + extra
    expected_unread = cut_word if extra == 1 else cut_word + 1
    assert len(ids) > max_len

    (features,) = featurize_words(tokenizer, [words], 4, max_len)
    assert len(features.input_ids) == max_len
    assert features.input_ids[:-1] == ids[: max_len - 1]
    assert features.input_ids[-1] == ids[-1]  # closing special token kept
    assert features.input_ids[-1] in tokenizer.all_special_ids
    assert features.first_unread_word == expected_unread
    all_spans = enumerate_spans(len(words), 4)
    expected_kept = [span for span in all_spans.tolist() if span[1] < expected_unread]
    assert features.span_words.tolist() == expected_kept
    assert features.num_dropped_spans == len(all_spans) - len(expected_kept) > 0
    assert (features.span_tokens[:, 1] < max_len - 1).all()
    assert all_spans[features.enumerated_index].tolist() == features.span_words.tolist()


def test_span_whose_start_fits_but_end_does_not_is_dropped(unigram_tokenizer):
    words = ["Zwingmann", "BRUSSELS", "co-operation"]
    _, positions = word_pieces(unigram_tokenizer, words)
    max_len = positions[1][-1] + 1  # word 1 ends on the closing slot; word 1 starts inside the budget
    (features,) = featurize_words(unigram_tokenizer, [words], 4, max_len)
    assert features.span_words.tolist() == [[0, 0]]
    assert features.first_unread_word == 1


# ---------------------------------------------------------------------------------------------------------------
# Morphology
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("PARIS", MORPH_UPPER),
        ("U.S.", MORPH_UPPER),
        ("paris", MORPH_LOWER),
        ("don't", MORPH_LOWER),
        ("Paris", MORPH_TITLE),
        ("1996", MORPH_DIGIT),
        ("1996-08-22", MORPH_OTHER),
        ("McDonald", MORPH_OTHER),
        (",", MORPH_OTHER),
    ],
)
def test_morphology_id(word, expected):
    assert morphology_id(word) == expected


def test_morph_slots_per_span_and_padding(wordpiece_tokenizer):
    words_a = ["EU", "rejects", "German", "1996", "co-operation", "McDonald"]
    words_b = ["Peter", "visited"]
    features = featurize_words(wordpiece_tokenizer, [words_a, words_b], 4, 128)
    for words, sentence in zip([words_a, words_b], features):
        assert sentence.morph_ids.shape == (len(sentence.span_words), 4)
        for (start, end), slots in zip(sentence.span_words.tolist(), sentence.morph_ids.tolist()):
            expected = [morphology_id(word) for word in words[start : end + 1]]
            assert slots == expected + [MORPH_PAD] * (4 - len(expected))
    batch = collate_span_features(features, wordpiece_tokenizer.pad_token_id)
    padding = ~batch["span_mask"][1]
    assert padding.sum() == len(features[0].span_words) - len(features[1].span_words)
    assert (batch["span_morph_ids"][1][padding] == 0).all()
    assert (batch["span_word_lengths"][1][padding] == 0).all()
    assert (batch["span_word_lengths"][0] == batch["span_words"][0, :, 1] - batch["span_words"][0, :, 0] + 1).all()
    assert (batch["input_ids"][1, len(features[1].input_ids) :] == wordpiece_tokenizer.pad_token_id).all()
    assert batch["attention_mask"].sum(1).tolist() == [len(f.input_ids) for f in features]


# ---------------------------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------------------------


def scored_spans(entries: list[tuple[tuple[int, int], int, float]], num_labels: int = 3):
    """`(span_words, probabilities)` where span k has argmax label `entries[k][1]` with probability `entries[k][2]`."""
    span_words = np.array([span for span, _, _ in entries], dtype=np.int64).reshape(-1, 2)
    probabilities = np.zeros((len(entries), num_labels))
    for row, (_, label, score) in enumerate(entries):
        probabilities[row] = (1.0 - score) / (num_labels - 1)
        probabilities[row, label] = score
        assert probabilities[row].argmax() == label
    return span_words, probabilities


def spans_of(entities):
    return [(start, end) for start, end, _, _ in entities]


def test_decode_returns_sorted_tuples_and_skips_outside():
    span_words, probabilities = scored_spans([((0, 0), 0, 0.9), ((1, 2), 2, 0.6), ((1, 1), 1, 0.7)])
    for mode in ("greedy", "legacy", "none"):
        entities = decode_spans(span_words, probabilities, mode)
        assert all(isinstance(value, int) for entity in entities for value in entity[:3])
        assert entities == sorted(entities, key=lambda e: (e[0], e[1]))
        assert (0, 0) not in spans_of(entities)
    assert decode_spans(span_words, probabilities, "none") == [(1, 1, 1, pytest.approx(0.7)), (1, 2, 2, 0.6)]
    with pytest.raises(ValueError, match="decoding"):
        decode_spans(span_words, probabilities, "beam")
    empty = decode_spans(np.zeros((0, 2), dtype=np.int64), np.zeros((0, 3)), "legacy")
    assert empty == []


def test_legacy_drops_candidate_beaten_by_later_overlap_even_if_that_one_is_dropped():
    entries = [((0, 0), 1, 0.7), ((0, 1), 2, 0.8), ((1, 1), 1, 0.9), ((2, 2), 1, 0.6)]
    span_words, probabilities = scored_spans(entries)
    assert spans_of(decode_spans(span_words, probabilities, "legacy")) == [(1, 1), (2, 2)]
    # the intended algorithm keeps (0, 0): its only stronger neighbour (0, 1) lost to (1, 1)
    assert spans_of(decode_spans(span_words, probabilities, "greedy")) == [(0, 0), (1, 1), (2, 2)]
    assert spans_of(decode_spans(span_words, probabilities, "none")) == [(0, 0), (0, 1), (1, 1), (2, 2)]


def test_legacy_always_keeps_the_last_candidate_even_when_overlapping():
    span_words, probabilities = scored_spans([((0, 0), 1, 0.9), ((0, 1), 2, 0.6)])
    assert spans_of(decode_spans(span_words, probabilities, "legacy")) == [(0, 0), (0, 1)]
    assert spans_of(decode_spans(span_words, probabilities, "greedy")) == [(0, 0)]


def test_legacy_tie_keeps_the_earlier_candidate_and_greedy_the_longer():
    entries = [((0, 0), 1, 0.8), ((0, 1), 2, 0.8), ((3, 3), 1, 0.7)]
    span_words, probabilities = scored_spans(entries)
    legacy = decode_spans(span_words, probabilities, "legacy")
    assert [(s, e, label) for s, e, label, _ in legacy] == [(0, 0, 1), (3, 3, 1)]
    greedy = decode_spans(span_words, probabilities, "greedy")
    assert [(s, e, label) for s, e, label, _ in greedy] == [(0, 1, 2), (3, 3, 1)]


def test_greedy_picks_by_descending_score_then_longer_then_earlier():
    span_words, probabilities = scored_spans([((0, 1), 1, 0.6), ((1, 1), 2, 0.9), ((2, 3), 1, 0.7)])
    assert spans_of(decode_spans(span_words, probabilities, "greedy")) == [(1, 1), (2, 3)]
    # equal score: the longer span wins even though it comes later
    span_words, probabilities = scored_spans([((0, 1), 1, 0.7), ((1, 3), 1, 0.7)])
    assert spans_of(decode_spans(span_words, probabilities, "greedy")) == [(1, 3)]
    # equal score and width: the earlier span wins
    span_words, probabilities = scored_spans([((0, 1), 1, 0.7), ((1, 2), 2, 0.7)])
    assert spans_of(decode_spans(span_words, probabilities, "greedy")) == [(0, 1)]


def test_threshold_removes_low_scores_before_overlap_resolution():
    entries = [((0, 0), 1, 0.9), ((0, 1), 2, 0.6), ((2, 2), 1, 0.5)]
    span_words, probabilities = scored_spans(entries)
    assert spans_of(decode_spans(span_words, probabilities, "none", threshold=0.55)) == [(0, 0), (0, 1)]
    # without a threshold (0, 1) clashes with the kept (0, 0) and is dropped; with the threshold, (2, 2) is gone,
    # so (0, 1) becomes the last candidate, which legacy always keeps
    assert spans_of(decode_spans(span_words, probabilities, "legacy")) == [(0, 0), (2, 2)]
    assert spans_of(decode_spans(span_words, probabilities, "legacy", threshold=0.55)) == [(0, 0), (0, 1)]
    assert decode_spans(span_words, probabilities, "greedy", threshold=0.95) == []


# ---------------------------------------------------------------------------------------------------------------
# Loss, forward and backward
# ---------------------------------------------------------------------------------------------------------------


def test_span_cross_entropy_is_weighted_mean_over_real_spans():
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [5.0, -3.0, 1.0]]])
    labels = torch.tensor([[0, 1, 2]])
    mask = torch.tensor([[True, True, False]])
    weights = torch.tensor([0.5, 2.0, 3.0])
    ce0 = -math.log(math.exp(2) / (math.exp(2) + 2))
    ce1 = -math.log(math.e / (math.e + 2))
    # mean of w_y * CE over the real spans: not divided by the sum of the weights
    assert span_cross_entropy(logits, labels, mask, weights).item() == pytest.approx((0.5 * ce0 + 2.0 * ce1) / 2)
    assert span_cross_entropy(logits, labels, mask).item() == pytest.approx((ce0 + ce1) / 2)
    nothing = span_cross_entropy(logits.requires_grad_(), labels, torch.zeros_like(mask))
    assert nothing.item() == 0.0
    nothing.backward()  # still part of the graph


@pytest.fixture()
def tiny_model(tiny_encoder_dir) -> MaralForSpanNER:
    torch.manual_seed(0)
    return MaralForSpanNER.from_encoder(str(tiny_encoder_dir), labels=list(TINY_LABELS))


SENTENCES = [
    ["Peter", "Blackburn", "visited", "Brussels", "on", "Monday", "."],
    ["EU", "rejects", "German", "call"],
    ["Angela", "Merkel", "besuchte", "Paris", "und", "London", "mit", "der", "UNO", "."],
]


def model_batch(model, sentences, seed: int = 0):
    """Collated inputs with random (seeded) labels at real spans and -100 at padding."""
    features = featurize_words(model.tokenizer, sentences, model.config.max_span_width, model.config.max_seq_length)
    batch = collate_span_features(features, model.tokenizer.pad_token_id)
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, model.config.num_labels, batch["span_mask"].shape, generator=generator)
    batch["labels"] = labels.masked_fill(~batch["span_mask"], -100)
    return batch


def forward_inputs(batch):
    return {key: batch[key] for key in modeling_maral.MODEL_INPUT_NAMES}


def test_forward_backward_reaches_encoder_and_heads(tiny_model):
    tiny_model.train()
    batch = model_batch(tiny_model, SENTENCES)
    weights = torch.tensor([0.7, 1.1, 1.0, 1.2, 1.3])
    output = tiny_model(**forward_inputs(batch), labels=batch["labels"], class_weights=weights)
    num_spans = batch["span_mask"].shape[1]
    assert output.logits.shape == (len(SENTENCES), num_spans, len(TINY_LABELS))
    assert output.projections.shape == (len(SENTENCES), num_spans, tiny_model.config.projection_dim)
    norms = output.projections[batch["span_mask"]].norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    assert torch.isfinite(output.loss) and output.loss.item() > 0
    output.loss.backward()
    for name in (
        "encoder.embeddings.word_embeddings.weight",
        "encoder.encoder.layer.0.attention.self.query.weight",
        "span_classifier.dense.weight",
        "span_classifier.output.bias",
        "span_representation.width_embedding.weight",
        "span_representation.length_embedding.weight",
        "span_representation.morphology_embedding.weight",
    ):
        grad = dict(tiny_model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    # padding rows of the embedding tables get no gradient
    assert tiny_model.span_representation.length_embedding.weight.grad[0].abs().sum() == 0
    assert tiny_model.span_representation.morphology_embedding.weight.grad[MORPH_PAD].abs().sum() == 0


def test_mlm_loss_backward_reaches_head_and_encoder(tiny_model):
    batch = model_batch(tiny_model, SENTENCES)
    labels = torch.full_like(batch["input_ids"], -100)
    labels[:, 1] = batch["input_ids"][:, 1]
    masked = batch["input_ids"].clone()
    masked[:, 1] = tiny_model.tokenizer.mask_token_id
    loss = tiny_model.mlm_loss(masked, batch["attention_mask"], labels)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert tiny_model.mlm_head.dense.weight.grad.abs().sum() > 0
    assert tiny_model.encoder.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert tiny_model.mlm_loss(masked, batch["attention_mask"], torch.full_like(labels, -100)).item() == 0.0


def test_padding_spans_and_padded_sentences_do_not_change_the_loss(tiny_model):
    tiny_model.eval()
    short, long = SENTENCES[1], SENTENCES[2]
    with torch.no_grad():
        results = {}
        for name, sentences in {"short": [short], "long": [long], "both": [short, long]}.items():
            batch = model_batch(tiny_model, sentences, seed=1)
            results[name] = (batch, tiny_model(**forward_inputs(batch), labels=batch["labels"]))
    # give the batch of both the labels each sentence had alone
    both_batch, _ = results["both"]
    for row, name in enumerate(["short", "long"]):
        alone_labels = results[name][0]["labels"][0]
        both_batch["labels"][row, : len(alone_labels)] = alone_labels
    counts = {name: int(results[name][0]["span_mask"].sum()) for name in ("short", "long")}
    with torch.no_grad():
        both = tiny_model(**forward_inputs(both_batch), labels=both_batch["labels"])
    expected = (results["short"][1].loss * counts["short"] + results["long"][1].loss * counts["long"]) / (
        counts["short"] + counts["long"]
    )
    assert both.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # the short sentence's logits are the same alone and padded next to a longer one
    assert torch.allclose(both.logits[0, : counts["short"]], results["short"][1].logits[0], atol=1e-5)
    # garbage labels at padding rows are ignored
    padding = ~both_batch["span_mask"]
    assert padding.any()
    garbage = both_batch["labels"].masked_fill(padding, 3)
    with torch.no_grad():
        again = tiny_model(**forward_inputs(both_batch), labels=garbage)
    assert again.loss.item() == both.loss.item()


# ---------------------------------------------------------------------------------------------------------------
# Configuration and security
# ---------------------------------------------------------------------------------------------------------------


def test_config_validates_labels_and_choices():
    encoder_config = tiny_bert_config(50)
    assert MaralConfig(encoder_config=encoder_config, labels=["O", "PER"]).num_labels == 2
    with pytest.raises(ValueError, match="start with"):
        MaralConfig(encoder_config=encoder_config, labels=["PER", "O"])
    with pytest.raises(ValueError, match="duplicates"):
        MaralConfig(encoder_config=encoder_config, labels=["O", "PER", "PER"])
    with pytest.raises(ValueError, match="decoding"):
        MaralConfig(encoder_config=encoder_config, labels=["O"], decoding="beam")


def test_nested_encoder_config_never_forwards_remote_code_keys(tmp_path):
    encoder_config = tiny_bert_config(60).to_dict()
    encoder_config.update(
        trust_remote_code=True,
        auto_map={"AutoModel": "evil/repo--modeling_evil.EvilModel"},
        custom_pipelines={"ner": {"impl": "evil.Pipeline"}},
        _name_or_path="evil/repo",
    )
    config = MaralConfig(encoder_config=tiny_bert_config(60), labels=["O", "PER"]).to_dict()
    config["encoder_config"] = encoder_config
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")

    for loaded in (MaralConfig.from_pretrained(tmp_path), AutoConfig.from_pretrained(tmp_path)):
        built = loaded.encoder_config
        assert built.hidden_size == 32 and built.vocab_size == 60
        assert not getattr(built, "trust_remote_code", False)
        assert getattr(built, "auto_map", None) is None
        assert getattr(built, "custom_pipelines", None) is None
        assert built.name_or_path != "evil/repo"
        dumped = built.to_dict()
        for key in ("trust_remote_code", "auto_map", "custom_pipelines"):
            assert key not in dumped
    # a model can be built from it without loading anything
    model = MaralForSpanNER(MaralConfig.from_pretrained(tmp_path))
    assert model.encoder.config.vocab_size == 60


def test_saved_model_with_tampered_encoder_config_loads_without_remote_code(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["encoder_config"].update(
        trust_remote_code=True, auto_map={"AutoModel": "evil/repo--modeling_evil.EvilModel"}, _name_or_path="evil/repo"
    )
    config_file.write_text(json.dumps(config), encoding="utf-8")
    expected = all_probabilities(tiny_model, SENTENCES)
    for loaded in (MaralForSpanNER.from_pretrained(tmp_path), AutoModel.from_pretrained(tmp_path)):
        assert getattr(loaded.config.encoder_config, "auto_map", None) is None
        assert not getattr(loaded.encoder.config, "trust_remote_code", False)
        for got, want in zip(all_probabilities(loaded, SENTENCES), expected):
            np.testing.assert_array_equal(got, want)


def test_unknown_encoder_model_type_is_rejected():
    with pytest.raises(ValueError, match="model type"):
        MaralConfig(encoder_config={"model_type": "evil-remote-model"}, labels=["O"])


# ---------------------------------------------------------------------------------------------------------------
# Save and load
# ---------------------------------------------------------------------------------------------------------------

PREDICT_TEXTS = ["Angela Merkel visited Paris .", "EU rejects German call to boycott British lamb ."]


def all_probabilities(model, sentences):
    return [prediction.probabilities for prediction in model.predict_words(sentences, decoding="none")]


def test_save_and_load_round_trip(tiny_model, tmp_path):
    with torch.no_grad():
        tiny_model.vmf_kappa.copy_(torch.arange(len(TINY_LABELS), dtype=torch.float64))
    tiny_model.config.decoding = "legacy"
    tiny_model.save_pretrained(tmp_path)

    config = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    assert config["model_type"] == "maral"
    assert config["auto_map"] == {
        "AutoConfig": "modeling_maral.MaralConfig",
        "AutoModel": "modeling_maral.MaralForSpanNER",
    }
    assert (tmp_path / "modeling_maral.py").read_text(encoding="utf-8") == Path(modeling_maral.__file__).read_text(
        encoding="utf-8"
    )
    assert (tmp_path / "tokenizer.json").is_file()
    assert any(tmp_path.glob("*.safetensors"))

    batch = model_batch(tiny_model, SENTENCES)
    tiny_model.eval()
    with torch.no_grad():
        reference = tiny_model(**forward_inputs(batch)).logits
    expected_predictions = tiny_model.predict(PREDICT_TEXTS)
    expected_probabilities = all_probabilities(tiny_model, SENTENCES)
    for loaded in (MaralForSpanNER.from_pretrained(tmp_path), AutoModel.from_pretrained(tmp_path)):
        assert isinstance(loaded, MaralForSpanNER)
        assert loaded.config.labels == list(TINY_LABELS)
        assert loaded.config.decoding == "legacy"
        assert torch.equal(loaded.vmf_kappa, tiny_model.vmf_kappa)
        loaded.eval()
        with torch.no_grad():
            assert torch.equal(loaded(**forward_inputs(batch)).logits, reference)
        assert loaded.predict(PREDICT_TEXTS) == expected_predictions
        for got, expected in zip(all_probabilities(loaded, SENTENCES), expected_probabilities):
            np.testing.assert_array_equal(got, expected)


REMOTE_CODE_SCRIPT = WITHOUT_PROJECT_PREAMBLE + textwrap.dedent(
    """
    try:
        import modeling_maral  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("modeling_maral must not be importable here")
    import torch
    from transformers import AutoModel
    torch.set_num_threads(1)
    try:
        AutoModel.from_pretrained(sys.argv[2], trust_remote_code=False)
    except ValueError:
        pass
    else:
        raise SystemExit("loading without trust_remote_code must fail")
    model = AutoModel.from_pretrained(sys.argv[2], trust_remote_code=True)
    texts = json.loads(sys.argv[3])
    words = json.loads(sys.argv[4])
    print(json.dumps({
        "module": type(model).__module__,
        "predictions": model.predict(texts, decoding="none"),
        "probabilities": [p.probabilities.tolist() for p in model.predict_words(words, decoding="none")],
    }))
    """
)


def test_trust_remote_code_load_in_a_fresh_process(tiny_model, tmp_path):
    model_dir = tmp_path / "model"
    tiny_model.save_pretrained(model_dir)
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "HF_MODULES_CACHE", "HF_HOME", "PYTHONSTARTUP")
    }
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf_home"),
        HF_MODULES_CACHE=str(tmp_path / "hf_modules"),
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
    )
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            REMOTE_CODE_SCRIPT,
            str(REPO_ROOT),
            str(model_dir),
            json.dumps(PREDICT_TEXTS),
            json.dumps(SENTENCES),
        ],
        cwd=run_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["module"] != "modeling_maral"
    assert result["module"].endswith("modeling_maral")
    expected = tiny_model.predict(PREDICT_TEXTS, decoding="none")
    assert len(result["predictions"]) == len(expected)
    for got_sentence, expected_sentence in zip(result["predictions"], expected):
        assert len(got_sentence) == len(expected_sentence)
        for got, want in zip(got_sentence, expected_sentence):
            assert {k: v for k, v in got.items() if k != "score"} == {k: v for k, v in want.items() if k != "score"}
            assert got["score"] == pytest.approx(want["score"], abs=1e-6)
    for got, want in zip(result["probabilities"], all_probabilities(tiny_model, SENTENCES)):
        np.testing.assert_allclose(np.array(got), want, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# predict
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture()
def per_model(tiny_model) -> MaralForSpanNER:
    """A model that labels every span PER with the same score (so every mode has something to decode)."""
    with torch.no_grad():
        tiny_model.span_classifier.output.weight.zero_()
        tiny_model.span_classifier.output.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 6.0]))
    return tiny_model


MESSY_TEXT = "  Angela  Merkel (CDU) visited the U.S. , didn't she?\tYes  "


def test_predict_character_offsets_slice_the_text(per_model):
    entities = per_model.predict(MESSY_TEXT, decoding="none")
    words, offsets = split_into_words(MESSY_TEXT)
    assert len(entities) == len(enumerate_spans(len(words), 4))
    for entity in entities:
        assert entity["label"] == "PER"
        assert entity["text"] == MESSY_TEXT[entity["start"] : entity["end"]]
        assert entity["start"] == offsets[entity["word_start"]][0]
        assert entity["end"] == offsets[entity["word_end"]][1]
        assert entity["text"].startswith(words[entity["word_start"]])
        assert entity["text"].endswith(words[entity["word_end"]])
        assert 0 < entity["score"] <= 1


def test_predict_default_greedy_gives_non_overlapping_entities(per_model):
    entities = per_model.predict(MESSY_TEXT)
    covered = [w for e in entities for w in range(e["word_start"], e["word_end"] + 1)]
    assert len(covered) == len(set(covered)) == len(split_into_words(MESSY_TEXT)[0])
    # all scores tie: longer spans first, then earlier ones
    assert [e["word_end"] - e["word_start"] + 1 for e in entities][:2] == [4, 4]


def test_predict_input_shapes(per_model):
    single = per_model.predict("Angela Merkel visited Paris .")
    batch = per_model.predict(["Angela Merkel visited Paris .", "EU rejects German call"])
    assert isinstance(single, list) and all(isinstance(entity, dict) for entity in single)
    assert len(batch) == 2 and batch[0] == single
    words = ["Angela", "Merkel", "visited", "Paris", "."]
    assert per_model.predict(words, is_split_into_words=True) == single
    # without the flag a flat list of strings is a batch of texts
    as_texts = per_model.predict(words)
    assert len(as_texts) == len(words) and all(isinstance(sentence, list) for sentence in as_texts)
    pretokenized = per_model.predict([words, ["EU", "rejects"]], decoding="none")
    assert len(pretokenized) == 2
    for sentence_words, entities in zip([words, ["EU", "rejects"]], pretokenized):
        text = " ".join(sentence_words)
        for entity in entities:
            assert entity["text"] == text[entity["start"] : entity["end"]]
            assert entity["text"] == " ".join(sentence_words[entity["word_start"] : entity["word_end"] + 1])
    assert per_model.predict([]) == []


def test_predict_threshold(per_model):
    everything = per_model.predict("Angela Merkel visited Paris .", decoding="none")
    score = everything[0]["score"]
    assert per_model.predict("Angela Merkel visited Paris .", decoding="none", threshold=score + 1e-6) == []


def test_predict_gives_empty_texts_no_entities_and_rejects_bad_inputs(per_model):
    assert per_model.predict("") == [] and per_model.predict(["Angela Merkel", "   "])[1] == []
    with pytest.raises(ValueError, match=r"inputs\[0\]"):
        per_model.predict([["Angela", "New York"]])
    with pytest.raises(ValueError, match=r"inputs\[1\]"):
        per_model.predict([["Angela"], ["", "Merkel"]])
    with pytest.raises(TypeError):
        per_model.predict(42)


def test_predict_reads_a_text_longer_than_max_seq_length_in_windows(per_model):
    per_model.config.max_seq_length = 12
    long_text = " ".join(["Peter Blackburn visited Brussels on Monday ."] * 3)
    words, _ = split_into_words(long_text)
    (features,) = featurize_words(per_model.tokenizer, [words], 4, 12)
    assert 0 < features.first_unread_word < len(words)  # one window would not read the whole text
    entities = per_model.predict(["Paris", long_text], decoding="none")[1]
    # every span of the text, once (spans in the overlap of two windows too)
    spans = [(entity["word_start"], entity["word_end"]) for entity in entities]
    assert spans == [tuple(span) for span in enumerate_spans(len(words), 4).tolist()]
    for entity in entities:
        assert entity["text"] == long_text[entity["start"] : entity["end"]]


def test_split_into_words():
    words, offsets = split_into_words("Merkel (CDU) visits U.S.")
    assert words == ["Merkel", "(", "CDU", ")", "visits", "U.S", "."]
    words, offsets = split_into_words(MESSY_TEXT)
    for word, (start, end) in zip(words, offsets):
        assert MESSY_TEXT[start:end] == word
        assert not any(char.isspace() for char in word)
    assert "".join(words) == "".join(MESSY_TEXT.split())  # every non-space character is in exactly one word
    assert "didn't" in words and "Angela" in words
    assert split_into_words("co-operation on 1996-08-22, ok") == (
        ["co-operation", "on", "1996-08-22", ",", "ok"],
        [(0, 12), (13, 15), (16, 26), (26, 27), (28, 30)],
    )
    assert split_into_words("   ") == ([], [])


def test_predict_is_independent_of_batch_size_and_restores_training_mode(tiny_model):
    texts = ["Angela Merkel visited Paris .", "EU", "Peter Blackburn visited Brussels on Monday in the rain ."]
    tiny_model.train()
    batched = tiny_model.predict(texts, batch_size=8, decoding="none")
    assert tiny_model.training  # restored after predicting
    one_by_one = tiny_model.predict(texts, batch_size=1, decoding="none")
    assert len(batched) == len(one_by_one) == 3
    for got_sentence, want_sentence in zip(one_by_one, batched):
        assert [{k: v for k, v in e.items() if k != "score"} for e in got_sentence] == [
            {k: v for k, v in e.items() if k != "score"} for e in want_sentence
        ]
        assert [e["score"] for e in got_sentence] == pytest.approx([e["score"] for e in want_sentence], abs=1e-5)


def test_predict_with_an_xlmr_style_tokenizer(unigram_tokenizer):
    config = MaralConfig(
        encoder_config=tiny_bert_config(len(unigram_tokenizer)),
        labels=list(TINY_LABELS),
        pad_token_id=unigram_tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = MaralForSpanNER(config)
    model.set_tokenizer(unigram_tokenizer)
    with torch.no_grad():  # every span is PER
        model.span_classifier.output.weight.zero_()
        model.span_classifier.output.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 6.0]))
    text = "  " + "  ".join(UNIGRAM_WORDS)
    words = split_into_words(text)[0]
    entities = model.predict(text, decoding="none")
    assert len(entities) == len(enumerate_spans(len(words), 4))
    for entity in entities:
        assert entity["text"] == text[entity["start"] : entity["end"]]
        assert "".join(entity["text"].split()) == "".join(words[entity["word_start"] : entity["word_end"] + 1])
