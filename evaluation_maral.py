"""Span-NER evaluation: the paper's span F1 (§4.2 of the method notes) and seqeval strict IOB2 P/R/F1.

Both are computed from the same decoded entities:

- **span F1** counts exact `(start, end, label)` matches against the gold entities that the model could score
  (enumerated spans of at most `max_span_width` words that fit `max_seq_length`), as in the MARAL code;
- **seqeval** rebuilds IOB2 tag sequences from *all* gold entities (wider or truncated ones included) and from the
  predicted entities, and runs seqeval in strict mode.

Example:
    >>> metrics, predictions = evaluate_model(model, dataset, batch_size=32)
    >>> metrics["span_f1"], metrics["seqeval_f1"]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Container, Iterable, Sequence
from typing import Any

from seqeval.metrics import classification_report
from seqeval.scheme import IOB2

from modeling_maral import OUTSIDE_LABEL, SentencePrediction

Entity = tuple[int, int, int]


def gold_entities(row: dict[str, Any], column: str) -> list[Entity]:
    """`(start, end, label_id)` gold entities of a dataset row (`spans` or `gold_spans` column)."""
    return [(span["start"], span["end"], span["label"]) for span in row[column]]


def predicted_entities(prediction: SentencePrediction) -> list[Entity]:
    return [(start, end, label) for start, end, label, _ in prediction.entities]


def entities_to_iob2(entities: list[Entity], num_words: int, labels: list[str]) -> list[str]:
    """IOB2 tags of `num_words` words; for overlapping entities the later one in the list wins."""
    tags = [OUTSIDE_LABEL] * num_words
    for start, end, label_id in entities:
        name = labels[label_id]
        tags[start] = f"B-{name}"
        for position in range(start + 1, end + 1):
            tags[position] = f"I-{name}"
    return tags


def precision_recall_f1(correct: int, predicted: int, gold: int) -> tuple[float, float, float]:
    """Micro P/R/F1 (0 where undefined)."""
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def scorable_spans(prediction: SentencePrediction) -> set[tuple[int, int]]:
    """The `(start, end)` word spans a prediction could label (enumerated and within `max_seq_length`)."""
    return {(int(start), int(end)) for start, end in prediction.span_words}


def entity_f1_counts(
    predicted: Sequence[Iterable[Entity]], golds: Sequence[Iterable[Entity]], scorable: Sequence[Container]
) -> tuple[Counter, Counter, Counter]:
    """Per-label counts of correct, predicted and reachable gold entities (label id -> count).

    Args:
        predicted: The predicted `(start, end, label_id)` entities of each sentence.
        golds: The gold entities of each sentence.
        scorable: The `(start, end)` spans of each sentence that the model could label; gold entities outside
            them are not counted (they count in seqeval).
    """
    correct, predicted_count, gold = Counter(), Counter(), Counter()
    for sentence_predicted, sentence_gold, sentence_scorable in zip(predicted, golds, scorable):
        reachable = {entity for entity in sentence_gold if entity[:2] in sentence_scorable}
        entities = set(sentence_predicted)
        predicted_count.update(label for _, _, label in entities)
        gold.update(label for _, _, label in reachable)
        correct.update(label for _, _, label in entities & reachable)
    return correct, predicted_count, gold


def span_f1_counts(
    predictions: list[SentencePrediction], golds: list[list[Entity]]
) -> tuple[Counter, Counter, Counter]:
    """`entity_f1_counts` of model predictions (their scorable spans: `scorable_spans`)."""
    return entity_f1_counts(
        [predicted_entities(prediction) for prediction in predictions],
        golds,
        [scorable_spans(prediction) for prediction in predictions],
    )


def compute_span_metrics(
    predictions: list[SentencePrediction], golds: list[list[Entity]], labels: list[str]
) -> dict[str, Any]:
    """Span F1 and seqeval metrics of model predictions, overall and per label (see `score_entities`)."""
    return score_entities(
        [predicted_entities(prediction) for prediction in predictions],
        golds,
        [scorable_spans(prediction) for prediction in predictions],
        [prediction.features.num_words for prediction in predictions],
        labels,
    )


def score_entities(
    predicted: Sequence[list[Entity]],
    golds: Sequence[list[Entity]],
    scorable: Sequence[Container],
    num_words: Sequence[int],
    labels: list[str],
) -> dict[str, Any]:
    """Span F1 and seqeval metrics of decoded entities, overall and per label, from any model's predictions.

    Args:
        predicted: The predicted `(start, end, label_id)` entities of each sentence (end inclusive).
        golds: The gold entities of each sentence.
        scorable: The `(start, end)` spans of each sentence that the model could label (span F1's reachable gold).
        num_words: The number of words of each sentence.
        labels: Label names, `O` first (label ids index them).

    Returns:
        `span_precision`, `span_recall`, `span_f1`, `seqeval_precision`, `seqeval_recall`, `seqeval_f1` and
        `per_label` (`{label: {span_f1, seqeval_precision, seqeval_recall, seqeval_f1, support}}`).
    """
    correct, predicted_count, gold = entity_f1_counts(predicted, golds, scorable)
    totals = (sum(correct.values()), sum(predicted_count.values()), sum(gold.values()))
    span_p, span_r, span_f = precision_recall_f1(*totals)
    true_tags = [entities_to_iob2(sentence_gold, words, labels) for sentence_gold, words in zip(golds, num_words)]
    predicted_tags = [entities_to_iob2(list(entities), words, labels) for entities, words in zip(predicted, num_words)]
    report = classification_report(
        true_tags, predicted_tags, mode="strict", scheme=IOB2, output_dict=True, zero_division=0
    )
    micro = report.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
    per_label = {}
    for label_id, name in enumerate(labels[1:], start=1):
        label_report = report.get(name, {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 0})
        per_label[name] = {
            "span_f1": precision_recall_f1(correct[label_id], predicted_count[label_id], gold[label_id])[2],
            "seqeval_precision": float(label_report["precision"]),
            "seqeval_recall": float(label_report["recall"]),
            "seqeval_f1": float(label_report["f1-score"]),
            "support": int(label_report["support"]),
        }
    return {
        "span_precision": span_p,
        "span_recall": span_r,
        "span_f1": span_f,
        "seqeval_precision": float(micro["precision"]),
        "seqeval_recall": float(micro["recall"]),
        "seqeval_f1": float(micro["f1-score"]),
        "per_label": per_label,
    }


def evaluate_model(
    model,
    dataset,
    batch_size: int = 32,
    decoding: str | None = None,
    gold_column: str | None = None,
    show_progress_bar: bool = False,
) -> tuple[dict[str, Any], list[SentencePrediction]]:
    """Predicts every sentence of `dataset` and scores the result.

    Args:
        model: a `MaralForSpanNER` with a tokenizer attached.
        dataset: a `datasets.Dataset` from `data_loading.load_spans`.
        batch_size: sentences per forward pass.
        decoding: overlap resolution (defaults to the model's).
        gold_column: `spans` or `gold_spans`; by default `gold_spans` when present (unlabeled target text).
        show_progress_bar: show a progress bar when there is more than one batch (pass
            `not training_args.disable_tqdm` where a `Trainer` is involved).

    Returns:
        The metrics of `compute_span_metrics` and the per-sentence predictions.
    """
    if gold_column is None:
        gold_column = "gold_spans" if "gold_spans" in dataset.column_names else "spans"
    rows = dataset.select_columns(["tokens", gold_column]).to_list()
    predictions = model.predict_words(
        [row["tokens"] for row in rows], batch_size, decoding, show_progress_bar=show_progress_bar
    )
    golds = [gold_entities(row, gold_column) for row in rows]
    return compute_span_metrics(predictions, golds, model.config.labels), predictions


def flatten_metrics(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    """`{prefix_span_f1: ..., prefix_PER_seqeval_f1: ...}` for logging and result files."""
    flat = {f"{prefix}_{key}": value for key, value in metrics.items() if key != "per_label"}
    for label, values in metrics.get("per_label", {}).items():
        flat.update({f"{prefix}_{label}_{key}": value for key, value in values.items()})
    return flat


def evaluate_datasets(
    model,
    datasets: dict[str, Any],
    prefix: str,
    batch_size: int = 32,
    decoding: str | None = None,
    per_label: bool = True,
    show_progress_bar: bool = False,
) -> dict[str, float]:
    """Flat span-F1/seqeval metrics of `model` on named datasets, keys `<prefix>_<name>_...` (`<prefix>_...` for
    the name `""`); `per_label=False` leaves out the per-label entries."""
    metrics: dict[str, float] = {}
    for name, dataset in datasets.items():
        scores, _ = evaluate_model(model, dataset, batch_size, decoding=decoding, show_progress_bar=show_progress_bar)
        if not per_label:
            scores.pop("per_label")
        metrics.update(flatten_metrics(scores, f"{prefix}_{name}" if name else prefix))
    return metrics
