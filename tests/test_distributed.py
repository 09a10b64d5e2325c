"""Two CPU processes (torchrun, gloo) x batch b train the same teacher, student and self-training state as one
process x batch 2b."""

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

REPO_ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4
# Large values (vMF concentrations κ ~ 100) differ by float summation order between 1 and 2 processes.
RELATIVE_TOLERANCE = 1e-5
# Every sentence has six words, so every process scores as many spans as any other and per-process loss means
# average to the global mean.
SOURCE = [
    {"context": "Peter Blackburn visited Brussels on Monday", "span_posLabel": {"0;1": "PER", "3;3": "LOC"}},
    {"context": "EU rejects German call to boycott", "span_posLabel": {"0;0": "ORG", "2;2": "MISC"}},
    {"context": "Angela Merkel visited Paris and London", "span_posLabel": {"0;1": "PER", "3;3": "LOC"}},
    {"context": "The European Union said on Monday", "span_posLabel": {"1;2": "ORG"}},
    {"context": "Werner Zwingmann said British lamb .", "span_posLabel": {"0;1": "PER", "3;3": "MISC"}},
    {"context": "Reuters visited London and Berlin .", "span_posLabel": {"0;0": "ORG", "2;2": "LOC", "4;4": "LOC"}},
    {"context": "Germany 's representative visited Madrid .", "span_posLabel": {"0;0": "LOC", "4;4": "LOC"}},
    {"context": "Peter said the UNO rejects it", "span_posLabel": {"0;0": "PER", "3;3": "ORG"}},
]
TARGET = [
    {"context": "Die Europäische Kommission sagte am Donnerstag", "span_posLabel": {"1;2": "ORG"}},
    {"context": "Angela Merkel besuchte Paris und London", "span_posLabel": {"0;1": "PER"}},
    {"context": "El presidente de España viajó ayer", "span_posLabel": {"3;3": "LOC"}},
    {"context": "Naciones Unidas en Madrid con Merkel", "span_posLabel": {"0;1": "ORG"}},
    {"context": "Merkel sagte am Donnerstag in Berlin", "span_posLabel": {"0;0": "PER"}},
    {"context": "Paris und Berlin sagten am Montag", "span_posLabel": {"0;0": "LOC", "2;2": "LOC"}},
    {"context": "Die UNO tagte in Berlin heute", "span_posLabel": {"1;1": "ORG", "4;4": "LOC"}},
    {"context": "Peter flog nach London am Montag", "span_posLabel": {"0;0": "PER", "3;3": "LOC"}},
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
        "--mlm_weight=0",  # MLM masks are drawn per process
        "--student_mlm_weight=0",
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
    else:
        assert torch.allclose(expected.double(), actual.double(), atol=TOLERANCE, rtol=RELATIVE_TOLERANCE), name


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


def test_two_processes_report_the_same_metrics(outputs):
    single, double = outputs
    expected = json.loads((single / "all_results.json").read_text())
    actual = json.loads((double / "all_results.json").read_text())
    for key in ("round_1_target_test_span_f1", "predict_target_test_span_f1", "teacher_pseudo_label_oracle_f1"):
        assert abs(expected[key] - actual[key]) <= TOLERANCE, key
