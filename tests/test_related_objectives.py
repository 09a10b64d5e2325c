"""ContProto, PRAM and MCL-NER objectives: their losses on hand-computed tensors, the shared prototype and
refinement pieces, the code-switch generator, the registry and tiny end-to-end runs."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import run_xner
from data_loading import (
    SpanDataError,
    code_switch_dataset,
    code_switch_sentence,
    load_code_switched_file,
    load_spans,
    read_bilingual_dictionary,
)
from objectives import OBJECTIVES, ObjectiveContext, build_objective
from objectives.contproto import prototype_refinement
from objectives.losses import info_nce, jensen_shannon_divergence, supervised_contrastive_loss, symmetric_kl
from objectives.pram import attribution_consistency, downsample_non_entities
from objectives.prototypes import ClassPrototypes, class_means
from tests.tiny_models import TINY_LABELS, TINY_SOURCE_RECORDS, TINY_TARGET_RECORDS
from trainer_maral import METHODS, MaralTrainingArguments

LABELS = list(TINY_LABELS)

# -- prototypes ---------------------------------------------------------------------------------------------------


def test_per_span_prototypes_equal_the_sequential_ema():
    generator = torch.Generator().manual_seed(0)
    features = F.normalize(torch.randn(7, 3, generator=generator), dim=-1)
    labels = torch.tensor([1, 2, 1, 1, 0, 2, 1])
    prototypes = ClassPrototypes(num_labels=4, momentum=0.9, per_span=True)
    prototypes.update(features[:2], labels[:2])
    start = prototypes.vectors.clone()
    prototypes.update(features[2:], labels[2:])
    # Reference: span by span, normalising once at the end of the batch.
    expected = start.clone()
    for feature, label in zip(features[2:], labels[2:]):
        expected[label] = 0.9 * expected[label] + 0.1 * feature
    expected = F.normalize(expected, dim=-1)
    assert torch.allclose(prototypes.vectors, expected, atol=1e-6)
    assert prototypes.vectors[3].abs().sum() == 0, "a class never seen keeps its zero prototype"


def test_batch_mean_prototypes_move_towards_the_class_mean():
    prototypes = ClassPrototypes(num_labels=3, momentum=0.5, per_span=False)
    prototypes.update(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([1, 1]))
    assert torch.allclose(prototypes.vectors[1], torch.tensor([1.0, 1.0]) / math.sqrt(2))
    prototypes.update(torch.tensor([[0.0, 1.0]]), torch.tensor([2]))
    assert torch.allclose(prototypes.vectors[1], torch.tensor([1.0, 1.0]) / math.sqrt(2)), "absent class moved"
    prototypes.update(torch.tensor([[1.0, 0.0]]), torch.tensor([1]))
    moved = 0.5 * torch.tensor([1.0, 1.0]) / math.sqrt(2) + 0.5 * torch.tensor([1.0, 0.0])
    assert torch.allclose(prototypes.vectors[1], F.normalize(moved, dim=0))


def test_prototype_state_round_trip():
    prototypes = ClassPrototypes(num_labels=2, momentum=0.5)
    prototypes.update(torch.tensor([[0.6, 0.8]]), torch.tensor([1]))
    restored = ClassPrototypes(num_labels=2, momentum=0.5)
    restored.load_state_dict(prototypes.state_dict())
    assert torch.equal(restored.vectors, prototypes.vectors)


# -- losses ---------------------------------------------------------------------------------------------------------


def test_supervised_contrastive_loss_on_hand_computed_values():
    features = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1, 2])
    # Anchors 0 and 1: one positive (similarity 1) and two others (similarity 0) -> -log(e / (e + 2)) each;
    # anchors 2 and 3 have no positive and are left out.
    expected = -math.log(math.e / (math.e + 2))
    assert supervised_contrastive_loss(features, labels, 1.0).item() == pytest.approx(expected, rel=1e-6)


def test_supervised_contrastive_loss_averages_over_positives_and_uses_the_temperature():
    features = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 0])
    temperature = 0.5
    # Anchor 0: positives 1 (sim 2) and 2 (sim 0); denominator e^2 + 1. Anchor 2: positives 0 and 1, both sim 0.
    anchor_0 = -(math.log(math.e**2 / (math.e**2 + 1)) + math.log(1 / (math.e**2 + 1))) / 2
    anchor_2 = -math.log(1 / 2)
    expected = (2 * anchor_0 + anchor_2) / 3
    assert supervised_contrastive_loss(features, labels, temperature).item() == pytest.approx(expected, rel=1e-6)


def test_supervised_contrastive_loss_without_positives_is_zero_with_a_gradient():
    features = torch.eye(3, requires_grad=True)
    loss = supervised_contrastive_loss(features, torch.tensor([0, 1, 2]), 0.1)
    loss.backward()
    assert loss.item() == 0.0 and features.grad is not None


def test_info_nce_on_hand_computed_values():
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    positives = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    logits = anchors @ positives.T / 0.5  # [[2, 1.2], [0, 1.6]]
    forward = -math.log(math.exp(2) / (math.exp(2) + math.exp(1.2))) - math.log(math.exp(1.6) / (1 + math.exp(1.6)))
    backward = -math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(math.exp(1.6) / (math.exp(1.2) + math.exp(1.6)))
    expected = (forward / 2 + backward / 2) / 2
    assert logits.shape == (2, 2)
    assert info_nce(anchors, positives, 0.5).item() == pytest.approx(expected, rel=1e-6)


def test_symmetric_kl_on_hand_computed_values():
    a = torch.log(torch.tensor([[0.5, 0.5]]))
    b = torch.log(torch.tensor([[0.75, 0.25]]))
    kl_ab = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    kl_ba = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert symmetric_kl(a, b).item() == pytest.approx((kl_ab + kl_ba) / 2, rel=1e-5)
    assert symmetric_kl(a, a).item() == pytest.approx(0.0, abs=1e-7)


def test_jensen_shannon_divergence_on_hand_computed_values():
    p = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    q = torch.tensor([[0.0, 1.0], [0.75, 0.25]])
    middle = [0.625, 0.375]
    second = (
        0.5 * math.log(0.5 / middle[0])
        + 0.5 * math.log(0.5 / middle[1])
        + 0.75 * math.log(0.75 / middle[0])
        + 0.25 * math.log(0.25 / middle[1])
    ) / 2
    expected = (math.log(2) + second) / 2
    assert jensen_shannon_divergence(p, q).item() == pytest.approx(expected, rel=1e-5)
    assert jensen_shannon_divergence(q, p).item() == pytest.approx(expected, rel=1e-5)


def test_attribution_consistency_trains_both_the_classifier_and_the_features():
    prototypes = ClassPrototypes(num_labels=3, momentum=0.0, per_span=False)
    prototypes.update(torch.eye(3), torch.tensor([0, 1, 2]))
    logits = torch.tensor([[2.0, 0.0, 0.0]], requires_grad=True)
    features = F.normalize(torch.tensor([[0.2, 1.0, 0.1]]), dim=-1).requires_grad_(True)
    loss = attribution_consistency(logits, features, prototypes, temperature=0.2)
    q = (features.detach() @ torch.eye(3) / 0.2).softmax(-1)
    assert loss.item() == pytest.approx(jensen_shannon_divergence(q, logits.detach().softmax(-1)).item(), rel=1e-6)
    loss.backward()
    assert logits.grad.abs().sum() > 0 and features.grad.abs().sum() > 0


def test_downsample_non_entities_keeps_entities_and_at_most_rate_times_o():
    labels = torch.tensor([0] * 20 + [1, 3, 2])
    keep = downsample_non_entities(labels, 1.5, torch.Generator().manual_seed(3))
    assert keep[20:].all() and int(keep[:20].sum()) == 4  # int(1.5 * 3)
    only_entities = downsample_non_entities(labels, 0.0, torch.Generator().manual_seed(3))
    assert only_entities.tolist() == (labels != 0).tolist()
    few_o = downsample_non_entities(torch.tensor([0, 2, 2, 2]), 2.0, torch.Generator())
    assert few_o.all(), "fewer O spans than the budget: all are kept"


def test_prototype_refinement_moves_only_rows_passing_the_margin_or_nearest_to_o():
    soft = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.2, 0.0, 0.8]])
    similarity = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.4, 0.7], [0.0, 0.65, 0.1]])
    margins = torch.tensor([math.inf, 0.5, 0.6])
    refined = prototype_refinement(soft, similarity, margins, momentum=0.8)
    assert torch.allclose(refined[0], torch.tensor([0.2, 0.8, 0.0]))  # nearest is O: always moves
    assert torch.allclose(refined[1], torch.tensor([0.8, 0.0, 0.2]))  # 0.7 > margin 0.6
    assert torch.allclose(refined[2], torch.tensor([0.16, 0.2, 0.64]))  # 0.65 > margin 0.5
    assert torch.equal(prototype_refinement(soft, similarity, torch.tensor([0.0, 1.0, 1.0]), 0.8)[1], soft[1])


def test_class_means_are_infinite_for_empty_classes():
    means = class_means(torch.tensor([1.0, 0.0, 3.0]), torch.tensor([2.0, 0.0, 4.0]))
    assert means[0] == 0.5 and math.isinf(means[1]) and means[2] == 0.75


# -- code switching -------------------------------------------------------------------------------------------------


def test_bilingual_dictionary_format_and_errors(tmp_path):
    path = tmp_path / "en-de.txt"
    path.write_text("# English -> German\nvisited\tbesuchte\nvisited besuchten\n\nlamb Lamm\ncall Aufruf\n")
    assert read_bilingual_dictionary(path) == {
        "visited": ["besuchte", "besuchten"],
        "lamb": ["Lamm"],
        "call": ["Aufruf"],
    }
    path.write_text("lamb Lamm\nboycott\n")
    with pytest.raises(SpanDataError, match=r"en-de.txt \(line 2\).*no translation"):
        read_bilingual_dictionary(path)
    path.write_text("# nothing\n")
    with pytest.raises(SpanDataError, match="no entries"):
        read_bilingual_dictionary(path)


def test_code_switch_sentence_moves_spans_onto_multi_word_translations():
    tokens = ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."]
    spans = [
        {"start": 0, "end": 0, "label": 3},
        {"start": 2, "end": 2, "label": 2},
        {"start": 6, "end": 7, "label": 2},
    ]
    dictionary = {
        "rejects": ["lehnt ab"],
        "eu": ["Europäische Union"],
        "lamb": ["Lammfleisch"],
        "British": ["britisches"],
    }
    switched_tokens, switched_spans = code_switch_sentence(tokens, spans, dictionary, 1.0, random.Random(0))
    assert switched_tokens == ["Europäische", "Union", "lehnt", "ab", "German", "call", "to", "boycott"] + [
        "britisches",
        "Lammfleisch",
        ".",
    ]
    assert switched_spans == [
        {"start": 0, "end": 1, "label": 3},
        {"start": 4, "end": 4, "label": 2},
        {"start": 8, "end": 9, "label": 2},
    ]
    unchanged = code_switch_sentence(tokens, spans, dictionary, 1e-9, random.Random(0))
    assert unchanged == (tokens, spans)


def test_code_switch_dataset_is_seeded_and_keyed_by_sentence_id():
    source = load_spans(TINY_SOURCE_RECORDS, labels=LABELS)
    dictionary = {"visited": ["besuchte"], "said": ["sagte"], "Monday": ["Montag"], "and": ["und"]}
    first = code_switch_dataset(source, dictionary, rate=0.5, seed=1)
    assert first == code_switch_dataset(source, dictionary, rate=0.5, seed=1)
    assert sorted(first) == list(range(len(TINY_SOURCE_RECORDS)))
    every = code_switch_dataset(source, dictionary, rate=1.0, seed=1)
    assert every[0]["tokens"] == ["Peter", "Blackburn", "besuchte", "Brussels", "on", "Montag", "."]
    with pytest.raises(SpanDataError, match="code_switch_rate"):
        code_switch_dataset(source, dictionary, rate=0.0)


def test_code_switched_file_is_checked_against_the_source(tmp_path):
    source = load_spans(TINY_SOURCE_RECORDS, labels=LABELS)
    path = tmp_path / "switched.json"

    def write(records):
        path.write_text(json.dumps(records), encoding="utf-8")
        return path

    good = [
        {"source_id": 2, "context": "Angela Merkel besuchte Paris .", "span_posLabel": {"0;1": "PER", "3;3": "LOC"}}
    ]
    counterparts = load_code_switched_file(write(good), LABELS, source)
    assert counterparts[2]["tokens"][2] == "besuchte" and len(counterparts[2]["spans"]) == 2
    missing = [{"context": "Paris .", "span_posLabel": {"0;0": "LOC"}}]
    with pytest.raises(SpanDataError, match=r"switched.json, record 0: 'source_id' is None"):
        load_code_switched_file(write(missing), LABELS, source)
    wrong_spans = [{"source_id": 2, "context": "Angela Merkel besuchte Paris .", "span_posLabel": {"0;1": "PER"}}]
    with pytest.raises(SpanDataError, match="record 0: its spans .* do not match"):
        load_code_switched_file(write(wrong_spans), LABELS, source)
    twice = good + good
    with pytest.raises(SpanDataError, match="record 1: source_id 2 appears twice"):
        load_code_switched_file(write(twice), LABELS, source)
    elsewhere = [dict(good[0], source_id=500)]
    with pytest.raises(SpanDataError, match="no record's source_id"):
        load_code_switched_file(write(elsewhere), LABELS, source)


# -- registry -------------------------------------------------------------------------------------------------------


def test_registry_holds_every_documented_method(capsys):
    assert {name for name, spec in OBJECTIVES.items() if not spec.self_training} == {"source_only", "pram"}
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert all(f"| `{method}` |" in readme for method in METHODS)  # each method has a row in the Methods table
    with pytest.raises(SystemExit):
        run_xner.parse_arguments(["--help"])
    assert "--method {" + ",".join(METHODS) + "}" in capsys.readouterr().out


def test_build_objective_errors_name_the_flag(tmp_path):
    args = MaralTrainingArguments(output_dir=str(tmp_path), method="pram", use_cpu=True, report_to="none")
    with pytest.raises(ValueError, match="--method pram needs --target_unlabeled_file"):
        build_objective("pram", ObjectiveContext(args, num_labels=5))
    with pytest.raises(ValueError, match="--method contproto trains a student on pseudo-labels"):
        build_objective("contproto", ObjectiveContext(args, num_labels=5))
    with pytest.raises(ValueError, match="must be one of"):
        build_objective("unknown", ObjectiveContext(args, num_labels=5))
    with pytest.raises(ValueError, match="--pram_temperature"):
        MaralTrainingArguments(output_dir=str(tmp_path), pram_temperature=0.0)


# -- tiny end-to-end runs -------------------------------------------------------------------------------------------


def write_records(path, records) -> str:
    path.write_text(json.dumps(records), encoding="utf-8")
    return str(path)


def run_method(directory, encoder_dir, method: str, *extra: str):
    output_dir = directory / f"out_{method}_{len(list(directory.glob('out_*')))}"
    argv = [
        f"--model_name_or_path={encoder_dir}",
        f"--source_train_file={write_records(directory / 'source.json', TINY_SOURCE_RECORDS)}",
        f"--source_validation_file={write_records(directory / 'dev.json', TINY_SOURCE_RECORDS[:2])}",
        f"--target_unlabeled_file={write_records(directory / 'target.json', TINY_TARGET_RECORDS)}",
        f"--target_test_file={write_records(directory / 'test.json', TINY_TARGET_RECORDS)}",
        f"--output_dir={output_dir}",
        f"--method={method}",
        f"--labels={','.join(LABELS)}",
        "--teacher_epochs=1",
        "--num_train_epochs=2",
        "--per_device_train_batch_size=4",
        "--learning_rate=1e-3",
        "--logging_steps=1",
        "--use_cpu",
        "--report_to=none",
        "--do_train",
        "--do_predict",
        *extra,
    ]
    return output_dir, run_xner.main(argv)


def student_log(output_dir) -> list[dict]:
    records = [json.loads(line) for line in (output_dir / "self_training_log.jsonl").read_text().splitlines()]
    return [record for record in records if record["stage"] == "round_1"]


@pytest.fixture(scope="module")
def run_directory(tmp_path_factory):
    return tmp_path_factory.mktemp("related")


def test_contproto_run_refines_pseudo_labels_after_the_warmup(run_directory, tiny_encoder_dir):
    output_dir, results = run_method(
        run_directory, tiny_encoder_dir, "contproto", "--contproto_consistency_weight=0.5"
    )
    records = student_log(output_dir)
    assert [record["epoch"] for record in records] == [0, 1]
    assert set(records[0]["prototype_margins"]) == set(LABELS)
    terms = records[1]["loss_terms"]
    assert {"source_loss", "target_loss", "contrastive_loss", "consistency_loss"} <= set(terms)
    assert all(math.isfinite(value) for value in terms.values())
    oracle = [record["pseudo_label_oracle"]["f1"] for record in records]
    teacher_oracle = results["teacher_pseudo_label_oracle_f1"]
    assert records[0]["visited_fraction"] > 0 and math.isfinite(teacher_oracle) and len(oracle) == 2
    assert math.isfinite(results["round_1_target_test_span_f1"])


def test_pram_trains_end_to_end_without_a_teacher(run_directory, tiny_encoder_dir):
    output_dir, results = run_method(run_directory, tiny_encoder_dir, "pram")
    assert not (output_dir / "teacher").exists()
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    terms = [entry for entry in history if "source_consistency" in entry]
    assert terms and all(math.isfinite(entry["target_consistency"]) for entry in terms)
    assert "predict_target_test_span_f1" in results


def test_mcl_without_code_switched_data_says_so_and_trains(run_directory, tiny_encoder_dir, caplog):
    caplog.set_level("INFO", logger="objectives.mcl")
    output_dir, _ = run_method(run_directory, tiny_encoder_dir, "mcl", "--mcl_confidence_threshold=0.0")
    assert sum("contrast terms are off" in message for message in caplog.messages) == 1
    terms = [record["loss_terms"] for record in student_log(output_dir)]
    assert all(entry["confident_fraction"] == 1.0 and "distillation_loss" in entry for entry in terms)
    assert not any("relation_contrast" in entry for entry in terms)


def test_mcl_with_a_bilingual_dictionary_adds_the_contrast_terms(run_directory, tiny_encoder_dir):
    dictionary = run_directory / "en-de.txt"
    dictionary.write_text("visited\tbesuchte\nsaid\tsagte\nMonday\tMontag\nand\tund\nLondon\tLondres\n")
    output_dir, _ = run_method(
        run_directory, tiny_encoder_dir, "mcl", f"--bilingual_dictionary={dictionary}", "--code_switch_rate=1.0"
    )
    terms = [record["loss_terms"] for record in student_log(output_dir)]
    assert all(entry["relation_contrast"] > 0 and entry["sentence_contrast"] > 0 for entry in terms)
