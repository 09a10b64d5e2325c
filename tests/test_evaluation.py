"""Behaviour tests of `evaluation_maral`: span F1 over scorable gold spans vs. seqeval over all gold spans."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data_loading import load_spans
from evaluation_maral import compute_span_metrics, entities_to_iob2, evaluate_model, flatten_metrics
from modeling_maral import MaralForSpanNER, SentencePrediction, featurize_words
from tests.tiny_models import TINY_LABELS

LABELS = list(TINY_LABELS)
LOC, MISC, ORG, PER = (LABELS.index(name) for name in ("LOC", "MISC", "ORG", "PER"))
SENTENCES = [
    ["Peter", "Blackburn", "visited", "the", "European", "Union", "veterinary", "committee", "in", "Brussels"],
    ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
]


def make_predictions(tokenizer, sentences, entities_per_sentence, max_seq_length=128):
    """`SentencePrediction`s holding the given `(start, end, label)` entities (score 1)."""
    features = featurize_words(tokenizer, sentences, 4, max_seq_length)
    predictions = []
    for sentence, entities in zip(features, entities_per_sentence):
        probabilities = np.zeros((len(sentence.span_words), len(LABELS)))
        probabilities[:, 0] = 1.0
        predictions.append(
            SentencePrediction(
                [(s, e, label, 1.0) for s, e, label in entities], sentence.span_words, probabilities, sentence
            )
        )
    return predictions


def test_entities_to_iob2():
    assert entities_to_iob2([(0, 1, PER), (3, 3, LOC)], 5, LABELS) == ["B-PER", "I-PER", "O", "B-LOC", "O"]
    assert entities_to_iob2([], 2, LABELS) == ["O", "O"]


def test_perfect_prediction_scores_one(wordpiece_tokenizer):
    gold = [[(0, 1, PER), (3, 5, ORG), (9, 9, LOC)], [(0, 0, ORG), (2, 2, MISC), (6, 6, MISC)]]
    metrics = compute_span_metrics(make_predictions(wordpiece_tokenizer, SENTENCES, gold), gold, LABELS)
    for key in ("span_precision", "span_recall", "span_f1", "seqeval_precision", "seqeval_recall", "seqeval_f1"):
        assert metrics[key] == pytest.approx(1.0), key
    assert set(metrics["per_label"]) == set(LABELS[1:])
    for label, values in metrics["per_label"].items():
        assert set(values) == {"span_f1", "seqeval_precision", "seqeval_recall", "seqeval_f1", "support"}
        assert values["span_f1"] == pytest.approx(1.0), label
    assert metrics["per_label"]["MISC"]["support"] == 2
    assert metrics["per_label"]["PER"]["support"] == 1


def test_too_wide_gold_lowers_seqeval_recall_but_not_span_recall(wordpiece_tokenizer):
    # (3, 7) has five words: it can never be predicted and is not counted by span F1
    gold = [[(0, 1, PER), (3, 7, ORG), (9, 9, LOC)], [(0, 0, ORG)]]
    predicted = [[(0, 1, PER), (9, 9, LOC)], [(0, 0, ORG)]]
    metrics = compute_span_metrics(make_predictions(wordpiece_tokenizer, SENTENCES, predicted), gold, LABELS)
    assert metrics["span_precision"] == pytest.approx(1.0)
    assert metrics["span_recall"] == pytest.approx(1.0)
    assert metrics["span_f1"] == pytest.approx(1.0)
    assert metrics["seqeval_precision"] == pytest.approx(1.0)
    assert metrics["seqeval_recall"] == pytest.approx(3 / 4)
    assert metrics["seqeval_f1"] == pytest.approx(2 * 0.75 / 1.75)
    assert metrics["per_label"]["ORG"]["span_f1"] == pytest.approx(1.0)
    assert metrics["per_label"]["ORG"]["seqeval_recall"] == pytest.approx(0.5)
    assert metrics["per_label"]["ORG"]["support"] == 2


def test_truncated_gold_is_not_scorable(unigram_tokenizer):
    gold = [[(0, 1, PER), (9, 9, LOC)], [(0, 0, ORG)]]
    predicted = [[(0, 1, PER)], [(0, 0, ORG)]]
    predictions = make_predictions(unigram_tokenizer, SENTENCES, predicted, max_seq_length=12)
    assert predictions[0].features.first_unread_word <= 9
    metrics = compute_span_metrics(predictions, gold, LABELS)
    assert metrics["span_recall"] == pytest.approx(1.0)
    assert metrics["seqeval_recall"] == pytest.approx(2 / 3)


def test_wrong_label_and_boundary_errors(wordpiece_tokenizer):
    gold = [[(0, 1, PER), (9, 9, LOC)], [(0, 0, ORG), (6, 6, MISC)]]
    predicted = [[(0, 1, ORG), (9, 9, LOC)], [(0, 1, ORG), (6, 6, MISC), (2, 2, MISC)]]
    metrics = compute_span_metrics(make_predictions(wordpiece_tokenizer, SENTENCES, predicted), gold, LABELS)
    correct, n_predicted, n_gold = 2, 5, 4
    precision, recall = correct / n_predicted, correct / n_gold
    assert metrics["span_precision"] == pytest.approx(precision)
    assert metrics["span_recall"] == pytest.approx(recall)
    assert metrics["span_f1"] == pytest.approx(2 * precision * recall / (precision + recall))
    assert metrics["seqeval_f1"] == pytest.approx(metrics["span_f1"])  # every gold entity is scorable here
    assert metrics["per_label"]["PER"]["span_f1"] == 0.0
    assert metrics["per_label"]["LOC"]["span_f1"] == pytest.approx(1.0)
    assert metrics["per_label"]["MISC"]["span_f1"] == pytest.approx(2 / 3)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_no_gold_and_no_predictions_gives_zero(wordpiece_tokenizer):
    metrics = compute_span_metrics(make_predictions(wordpiece_tokenizer, SENTENCES, [[], []]), [[], []], LABELS)
    assert metrics["span_f1"] == 0.0 and metrics["seqeval_f1"] == 0.0


def test_flatten_metrics_names():
    metrics = {"span_f1": 0.5, "seqeval_f1": 0.25, "per_label": {"PER": {"span_f1": 1.0, "support": 3}}}
    assert flatten_metrics(metrics, "eval_x") == {
        "eval_x_span_f1": 0.5,
        "eval_x_seqeval_f1": 0.25,
        "eval_x_PER_span_f1": 1.0,
        "eval_x_PER_support": 3,
    }


def test_evaluate_model_uses_gold_spans_of_unlabeled_data(tiny_encoder_dir):
    torch.manual_seed(0)
    model = MaralForSpanNER.from_encoder(str(tiny_encoder_dir), labels=LABELS)
    with torch.no_grad():  # every span is PER with the same score
        model.span_classifier.output.weight.zero_()
        model.span_classifier.output.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 6.0]))
    records = [
        {"context": "Peter Blackburn visited Brussels", "span_posLabel": {"0;3": "PER"}},
        {"context": "EU rejects German call", "span_posLabel": {"0;0": "ORG"}},
    ]
    labelled = load_spans(records, labels=LABELS)
    unlabeled = load_spans(records, labels=LABELS, unlabeled=True)
    metrics, predictions = evaluate_model(model, labelled, batch_size=1)
    assert [p.entities[0][:3] for p in predictions] == [(0, 3, PER), (0, 3, PER)]  # greedy: longest, earliest
    assert metrics["span_precision"] == pytest.approx(0.5)
    assert metrics["span_recall"] == pytest.approx(0.5)
    assert evaluate_model(model, unlabeled)[0] == metrics
    legacy, _ = evaluate_model(model, labelled, decoding="none")
    assert legacy["span_precision"] < metrics["span_precision"]


def test_evaluate_model_progress_bar_is_an_option(tiny_encoder_dir, capsys):
    model = MaralForSpanNER.from_encoder(str(tiny_encoder_dir), labels=LABELS)
    dataset = load_spans([{"context": "Peter visited Brussels", "span_posLabel": {}}] * 3, labels=LABELS)
    quiet, _ = evaluate_model(model, dataset, batch_size=1)
    assert "Predicting" not in capsys.readouterr().err
    shown, _ = evaluate_model(model, dataset, batch_size=1, show_progress_bar=True)
    assert "Predicting" in capsys.readouterr().err and shown == quiet
