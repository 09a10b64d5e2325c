"""Two CPU processes (torchrun, gloo) x batch b train the same teacher, student and self-training state as one
process x batch 2b, with the default settings of the target MLM (teacher and student) and sentences of different
lengths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.tiny_models import TINY_LABELS
from trainer_maral import MaralTrainingArguments

REPO_ROOT = Path(__file__).resolve().parents[1]
# Measured (tiny BERT, gloo, default MLM weights): weights and self-training state agree to at most 5e-6 in three
# sessions (the float reduction order of the all-reduces differs), and once to 3.7e-5 (a fresh-clone CI run on a
# loaded CPU; the same code passed at 2e-5 before and after). A wrong loss or gradient normalisation across processes
# (a factor on one term) should move them far more than 1e-4 (an expectation, not measured). The vMF concentrations
# κ = pR / (1 - R²) and their log-normalisers amplify the rounding of the class-mean norms R by up to 1 / (1 - R²):
# relative <= 4e-5.
TOLERANCE = 1e-4
DERIVED_BUFFERS = {"vmf_kappa", "vmf_log_normalizer"}
DERIVED_RELATIVE_TOLERANCE = 1e-3
# Sentences of different lengths: the processes' batches hold different numbers of spans and MLM tokens, so the
# losses must be means over every process's items (`objectives.distributed.global_mean_factor`).
SOURCE = [
    {"context": "Peter Blackburn visited Brussels on Monday ok", "span_posLabel": {"0;1": "PER", "3;3": "LOC"}},
    {"context": "EU rejects German call", "span_posLabel": {"0;0": "ORG", "2;2": "MISC"}},
    {"context": "Angela Merkel visited Paris", "span_posLabel": {"0;1": "PER", "3;3": "LOC"}},
    {"context": "The European Union said on Monday that it rejects the call", "span_posLabel": {"1;2": "ORG"}},
    {"context": "Werner Zwingmann said British lamb .", "span_posLabel": {"0;1": "PER", "3;3": "MISC"}},
    {"context": "Reuters visited London", "span_posLabel": {"0;0": "ORG", "2;2": "LOC"}},
    {"context": "Germany 's representative visited Madrid and London on Monday .", "span_posLabel": {"0;0": "LOC"}},
    {"context": "Peter said the UNO rejects it", "span_posLabel": {"0;0": "PER", "3;3": "ORG"}},
]
TARGET = [
    {"context": "Die Europäische Kommission sagte am Donnerstag in Berlin", "span_posLabel": {"1;2": "ORG"}},
    {"context": "Angela Merkel besuchte Paris", "span_posLabel": {"0;1": "PER"}},
    {"context": "El presidente de España viajó ayer a Madrid con Naciones Unidas", "span_posLabel": {"3;3": "LOC"}},
    {"context": "Naciones Unidas en Madrid", "span_posLabel": {"0;1": "ORG"}},
    {"context": "Merkel sagte", "span_posLabel": {"0;0": "PER"}},
    {"context": "Paris und Berlin sagten am Montag , dass sie", "span_posLabel": {"0;0": "LOC", "2;2": "LOC"}},
    {"context": "Die UNO tagte in Berlin heute", "span_posLabel": {"1;1": "ORG", "4;4": "LOC"}},
    {"context": "Peter flog nach London", "span_posLabel": {"0;0": "PER", "3;3": "LOC"}},
]


def flags(directory: Path, encoder_dir: Path, output_dir: Path, batch_size: int) -> list[str]:
    files = {}
    for name, records in (("source", SOURCE), ("target", TARGET)):
        files[name] = directory / f"{name}.json"
        files[name].write_text(json.dumps(records), encoding="utf-8")
    return [
        f"--model_name_or_path={encoder_dir}",
        f"--source_train_file={files['source']}",
        f"--target_unlabeled_file={files['target']}",
        f"--target_test_file={files['target']}",
        f"--output_dir={output_dir}",
        f"--labels={','.join(TINY_LABELS)}",
        "--method=maral",
        f"--per_device_train_batch_size={batch_size}",
        "--teacher_epochs=2",
        "--num_train_epochs=2",
        "--update_soft_start=1",  # kNN counts and margins in epoch 1 (selection would make span counts differ)
        "--knn_k=5",
        "--knn_o_keep_rate=1.0",  # the bank's O sample is drawn per process: keep every span
        "--classifier_dropout=0",
        "--encoder_dropout=0",
        "--train_sampling_strategy=sequential",
        "--learning_rate=1e-3",
        "--ddp_find_unused_parameters=true",
        "--use_cpu",
        "--report_to=none",
        "--save_strategy=no",
        "--do_train",
        "--do_predict",
    ]


def run(command: list[str]) -> None:
    environment = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=REPO_ROOT, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, tiny_encoder_dir):
    directory = tmp_path_factory.mktemp("distributed")
    single, double = directory / "one_process", directory / "two_processes"
    run([sys.executable, "run_xner.py", *flags(directory, tiny_encoder_dir, single, batch_size=4)])
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    run([*launcher, "run_xner.py", *flags(directory, tiny_encoder_dir, double, batch_size=2)])
    return single, double


def assert_close(expected: torch.Tensor, actual: torch.Tensor, name: str) -> None:
    assert expected.shape == actual.shape, name
    if expected.dtype == torch.bool or not expected.is_floating_point():
        assert torch.equal(expected, actual), name
        return
    expected, actual = expected.double(), actual.double()
    relative = DERIVED_RELATIVE_TOLERANCE if name in DERIVED_BUFFERS else 0.0
    difference = (expected - actual).abs().max().item()
    assert torch.allclose(expected, actual, atol=TOLERANCE, rtol=relative), (name, difference)


@pytest.mark.parametrize("stage", ["teacher", "rounds/round_1"])
def test_two_processes_train_the_same_weights(outputs, stage):
    single, double = outputs
    expected = load_file(single / stage / "model.safetensors")
    actual = load_file(double / stage / "model.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:
        assert_close(expected[name], actual[name], name)


def test_two_processes_keep_the_same_self_training_state(outputs):
    single, double = outputs
    load = lambda folder: torch.load(folder / "rounds/round_1/maral_trainer_state.pt", weights_only=True)  # noqa: E731
    expected, actual = load(single)["objective_state"], load(double)["objective_state"]
    for key in ("probabilities", "logit_cache", "visited", "reliable"):
        assert_close(expected["store"][key], actual["store"][key], f"store.{key}")
    for key in ("target_prior", "proto_margins", "neighbour_margins", "bank", "bank_labels", "prior_sum"):
        assert_close(expected[key], actual[key], key)
    assert expected["bank"].numel() > 0 and expected["neighbour_margins"].abs().sum() > 0


def test_both_stages_trained_the_target_masked_lm(outputs, tmp_path, tiny_encoder_dir):
    given = flags(tmp_path, tiny_encoder_dir, tmp_path / "out", batch_size=2)
    assert not [flag for flag in given if "mlm" in flag]  # the defaults: teacher and student MLM weights > 0
    assert MaralTrainingArguments("out").mlm_weight > 0 and MaralTrainingArguments("out").student_mlm_weight > 0
    for folder in outputs:
        records = [json.loads(line) for line in (folder / "self_training_log.jsonl").read_text().splitlines()]
        student_epochs = [record for record in records if record["stage"] == "round_1"]
        assert student_epochs and all(record["loss_terms"]["mlm_loss"] > 0 for record in student_epochs)


def test_two_processes_report_the_same_metrics(outputs):
    single, double = outputs
    expected = json.loads((single / "all_results.json").read_text())
    actual = json.loads((double / "all_results.json").read_text())
    for key in ("round_1_target_test_span_f1", "predict_target_test_span_f1", "teacher_pseudo_label_oracle_f1"):
        assert abs(expected[key] - actual[key]) <= TOLERANCE, key


def test_the_masked_lm_pass_is_a_forward_mode(tiny_encoder_dir):
    from modeling_maral import MaralForSpanNER

    model = MaralForSpanNER.from_encoder(str(tiny_encoder_dir), labels=list(TINY_LABELS)).eval()
    input_ids = torch.tensor([[2, 7, 4, 9, 3], [2, 8, 4, 3, 0]])
    attention = (input_ids != 0).long()
    labels = torch.full_like(input_ids, -100)
    labels[0, 2], labels[1, 2] = 11, 12
    output = model(input_ids=input_ids, attention_mask=attention, mlm_labels=labels)
    assert output.logits is None and torch.equal(output.loss, model.mlm_loss(input_ids, attention, labels))
