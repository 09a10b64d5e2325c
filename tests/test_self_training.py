"""The plain self-training baseline (`--method self_training`): soft cross-entropy and fixed pseudo-labels."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import run_xner
from objectives import pseudo_label_mix
from objectives.losses import soft_cross_entropy

SOURCE = [
    {"context": "Peter Blackburn visited Brussels .", "span_posLabel": {"0;1": "PER", "3;3": "LOC"}},
    {"context": "EU rejects German call .", "span_posLabel": {"0;0": "ORG", "2;2": "MISC"}},
    {"context": "Angela Merkel met Reuters in Berlin .", "span_posLabel": {"0;1": "PER", "3;3": "ORG", "5;5": "LOC"}},
    {"context": "The United Nations met in London .", "span_posLabel": {"1;2": "ORG", "5;5": "LOC"}},
]
TARGET = [
    {"context": "Angela Merkel besuchte Paris .", "span_posLabel": {"0;1": "PER", "3;3": "LOC"}},
    {"context": "Die UNO tagte in Berlin .", "span_posLabel": {"1;1": "ORG", "4;4": "LOC"}},
    {"context": "Peter flog nach London .", "span_posLabel": {"0;0": "PER", "3;3": "LOC"}},
]


def test_soft_cross_entropy_matches_hand_computed_values():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])  # softmax rows: [1/2, 1/2] and [3/4, 1/4]
    soft_labels = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    expected = (math.log(2.0) + 0.5 * (-math.log(0.75)) + 0.5 * (-math.log(0.25))) / 2
    assert soft_cross_entropy(logits, soft_labels).item() == pytest.approx(expected, rel=1e-6)


def test_soft_cross_entropy_of_one_hot_labels_is_cross_entropy():
    logits = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 4, 2, 2, 1, 3])
    one_hot = torch.nn.functional.one_hot(labels, 5).float()
    assert soft_cross_entropy(logits, one_hot).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-6
    )


def test_soft_cross_entropy_of_no_rows_is_zero_with_a_gradient():
    logits = torch.zeros(0, 3, requires_grad=True)
    loss = soft_cross_entropy(logits, torch.zeros(0, 3))
    loss.backward()
    assert loss.item() == 0.0 and not torch.isnan(loss)


def write_records(path, records) -> str:
    path.write_text(json.dumps(records), encoding="utf-8")
    return str(path)


def self_training_argv(directory, encoder_dir, output_dir) -> list[str]:
    return [
        f"--model_name_or_path={encoder_dir}",
        f"--source_train_file={write_records(directory / 'source.json', SOURCE)}",
        f"--source_validation_file={write_records(directory / 'dev.json', SOURCE[:2])}",
        f"--target_unlabeled_file={write_records(directory / 'target.json', TARGET)}",
        f"--target_test_file={write_records(directory / 'test.json', TARGET)}",
        f"--output_dir={output_dir}",
        "--method=self_training",
        "--labels=O,LOC,MISC,ORG,PER",
        "--teacher_epochs=1",
        "--num_train_epochs=2",
        "--per_device_train_batch_size=2",
        "--learning_rate=1e-3",
        "--use_cpu",
        "--report_to=none",
        "--do_train",
        "--do_predict",
    ]


@pytest.fixture(scope="module")
def self_training_run(tmp_path_factory, tiny_encoder_dir):
    directory = tmp_path_factory.mktemp("self_training")
    output_dir = directory / "out"
    return output_dir, run_xner.main(self_training_argv(directory, tiny_encoder_dir, output_dir))


def test_self_training_keeps_the_teacher_pseudo_labels_fixed(self_training_run):
    output_dir, _ = self_training_run
    teacher_labels = torch.load(output_dir / "teacher" / "pseudo_labels.pt", weights_only=True)
    records = [json.loads(line) for line in (output_dir / "self_training_log.jsonl").read_text().splitlines()]
    student_records = [record for record in records if record["stage"] == "round_1"]
    assert [record["epoch"] for record in student_records] == [0, 1]
    oracle = [record["pseudo_label_oracle"]["f1"] for record in records if "pseudo_label_oracle" in record]
    assert len(set(oracle)) == 1, "fixed pseudo-labels must give the same oracle F1 every epoch"
    assert teacher_labels["probabilities"].sum(1).allclose(torch.ones(len(teacher_labels["probabilities"])))


def test_self_training_student_keeps_the_mlp_head_and_reports_rounds(self_training_run):
    output_dir, results = self_training_run
    config = json.loads((output_dir / "config.json").read_text())
    assert config["prediction_head"] == "mlp"
    assert "round_1_target_test_span_f1" in results and "teacher_target_test_span_f1" in results
    assert (output_dir / "rounds" / "round_1" / "stage.json").is_file()


def test_pseudo_label_mix_compares_entities_per_sentence_without_target_labels():
    labels = ["O", "PER", "ORG"]
    report, too_few = pseudo_label_mix(torch.tensor([970.0, 20.0, 10.0]), 100, np.array([900, 60, 40]), 50, labels)
    assert report == "entities per sentence: pseudo-labels 0.30, source 2.00 (PER 0.20/1.20, ORG 0.10/0.80)"
    assert too_few  # 0.3 < half of 2.0
    # Many more spans per sentence (text split into characters) with the source's entities per sentence: no warning.
    _, too_few = pseudo_label_mix(torch.tensor([9800.0, 120.0, 80.0]), 100, np.array([900, 60, 40]), 100, labels)
    assert not too_few


def test_entity_floor_lifts_the_pseudo_labels_and_the_students_decisions(
    self_training_run, tmp_path, tiny_encoder_dir
):
    """`--target_entity_floor`: a tiny teacher finds almost no entities in the target text; the floor (here the
    source's own rate) lowers its `O` scores for the pseudo-labels, and the student's for its saved decisions."""
    plain_dir, _ = self_training_run
    output_dir = tmp_path / "floor"
    argv = self_training_argv(tmp_path, tiny_encoder_dir, output_dir)
    results = run_xner.main([*argv, "--target_entity_floor=1.0"])
    source_rate = sum(len(record["span_posLabel"]) for record in SOURCE) / len(SOURCE)

    teacher_labels = torch.load(output_dir / "teacher" / "pseudo_labels.pt", weights_only=True)
    assert float(teacher_labels["o_offset"]) > 0 and results["teacher_pseudo_label_o_offset"] > 0
    assert (teacher_labels["probabilities"].argmax(1) != 0).sum() / len(TARGET) >= source_rate
    plain_labels = torch.load(plain_dir / "teacher" / "pseudo_labels.pt", weights_only=True)
    entity_spans = [(labels["probabilities"].argmax(1) != 0).sum() for labels in (plain_labels, teacher_labels)]
    assert entity_spans[0] < entity_spans[1]

    config = json.loads((output_dir / "config.json").read_text())
    assert config["o_logit_offset"] == pytest.approx(results["round_1_o_logit_offset"])
    assert config["o_logit_offset"] > 0
