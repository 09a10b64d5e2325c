"""The entity floor of the pseudo-labels (objectives/entity_floor.py): a label-free lowering of `O` scores."""

import numpy as np
import pytest
import torch

from modeling_maral import SentencePrediction, enumerate_spans
from objectives import PseudoLabelStore
from objectives.entity_floor import MAX_O_OFFSET, entities_per_sentence, entity_floor_offset, lower_o_scores


def unsure_predictions(num_sentences: int = 20, seed: int = 0) -> list[SentencePrediction]:
    """Sentences of 5 words whose single-word spans lean to `O` with a random margin (2 entity classes)."""
    generator = np.random.default_rng(seed)
    predictions = []
    for _ in range(num_sentences):
        span_words = enumerate_spans(5, 1)
        entity = generator.uniform(0.05, 0.6, size=len(span_words))
        kind = generator.uniform(0.0, 1.0, size=len(span_words))
        probabilities = np.stack([1 - entity, entity * kind, entity * (1 - kind)], axis=1).astype(np.float32)
        predictions.append(SentencePrediction([], span_words, probabilities, None))
    return predictions


def test_lower_o_scores_keeps_the_ranking_and_the_class_mix():
    probabilities = np.array([[0.9, 0.06, 0.04], [0.5, 0.1, 0.4]], dtype=np.float32)
    lowered = lower_o_scores(probabilities, 2.0)
    np.testing.assert_allclose(lowered.sum(1), 1.0, rtol=1e-6)
    assert (lowered[:, 0] < probabilities[:, 0]).all()
    np.testing.assert_allclose(lowered[:, 1] / lowered[:, 2], probabilities[:, 1] / probabilities[:, 2], rtol=1e-5)
    assert lower_o_scores(probabilities, 0.0) is probabilities


@pytest.mark.parametrize("pruning", ["legacy", "greedy", "none"])
def test_offset_is_the_smallest_that_reaches_the_floor(pruning):
    predictions = unsure_predictions()
    before = entities_per_sentence(predictions, pruning)
    floor = before + 1.5
    offset = entity_floor_offset(predictions, pruning, floor)
    assert 0 < offset < MAX_O_OFFSET
    assert entities_per_sentence(predictions, pruning, offset) >= floor
    assert entities_per_sentence(predictions, pruning, offset - 1e-3) < floor


def test_no_offset_when_the_model_reaches_the_floor_or_the_floor_is_off():
    predictions = unsure_predictions()
    reached = entities_per_sentence(predictions, "legacy")
    assert entity_floor_offset(predictions, "legacy", reached) == 0.0
    assert entity_floor_offset(predictions, "legacy", 0.0) == 0.0


def test_an_unreachable_floor_stops_at_the_largest_offset():
    predictions = unsure_predictions(num_sentences=3)
    assert entity_floor_offset(predictions, "greedy", 100.0) == MAX_O_OFFSET


def test_store_labels_more_entities_with_the_offset_and_keeps_it_through_save(tmp_path):
    predictions = unsure_predictions()
    sentence_ids = list(range(len(predictions)))
    plain = PseudoLabelStore.from_predictions(sentence_ids, predictions, "legacy")
    offset = entity_floor_offset(predictions, "legacy", entities_per_sentence(predictions, "legacy") + 1.0)
    lifted = PseudoLabelStore.from_predictions(sentence_ids, predictions, "legacy", offset)
    entity_spans = (lifted.probabilities.argmax(1) != 0).sum()
    assert entity_spans > (plain.probabilities.argmax(1) != 0).sum()
    assert entity_spans / len(predictions) >= entities_per_sentence(predictions, "legacy") + 1.0
    lifted.save(tmp_path / "labels.pt")
    assert PseudoLabelStore.load(tmp_path / "labels.pt").o_offset == pytest.approx(offset)
    assert plain.o_offset == 0.0
    torch.testing.assert_close(lifted.probabilities.sum(1), torch.ones(len(lifted)))
