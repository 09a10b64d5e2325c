"""A student stage killed with SIGKILL after a checkpoint resumes to exactly the uninterrupted result, and a rerun
skips the stages that finished."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.tiny_models import TINY_LABELS, TINY_SOURCE_RECORDS, TINY_TARGET_RECORDS

REPO_ROOT = Path(__file__).resolve().parents[1]
KILL_AT_STEP = 6  # 4 steps per epoch: the middle of the student's second epoch, right after its checkpoint
# Runs run_xner in a fresh interpreter; with KILL_AT_STEP set, the process SIGKILLs itself right after the student
# stage has written that step's checkpoint (a preempted job: no clean-up code runs).
RUNNER = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
import trainer_maral
save_checkpoint = trainer_maral.MaralTrainer._save_checkpoint

def save_then_maybe_die(self, model, trial):
    save_checkpoint(self, model, trial)
    kill_at = os.environ.get("KILL_AT_STEP")
    if kill_at and "round_1" in self.args.output_dir and self.state.global_step == int(kill_at):
        os.kill(os.getpid(), signal.SIGKILL)

trainer_maral.MaralTrainer._save_checkpoint = save_then_maybe_die
import run_xner
run_xner.main(sys.argv[2:])
"""


def run_subprocess(argv: list[str], kill_at: int | None = None) -> subprocess.CompletedProcess:
    environment = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    environment.pop("KILL_AT_STEP", None)
    if kill_at is not None:
        environment["KILL_AT_STEP"] = str(kill_at)
    command = [sys.executable, "-c", RUNNER, str(REPO_ROOT), *argv]
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_encoder_dir):
    directory = tmp_path_factory.mktemp("resume")
    files = {}
    for name, records in (("source", TINY_SOURCE_RECORDS), ("target", TINY_TARGET_RECORDS)):
        files[name] = directory / f"{name}.json"
        files[name].write_text(json.dumps(records), encoding="utf-8")

    def argv(output_dir: Path) -> list[str]:
        return [
            f"--model_name_or_path={tiny_encoder_dir}",
            f"--source_train_file={files['source']}",
            f"--target_unlabeled_file={files['target']}",
            f"--output_dir={output_dir}",
            f"--labels={','.join(TINY_LABELS)}",
            "--method=maral",
            "--update_soft_start=0",
            "--teacher_epochs=1",
            "--num_train_epochs=3",
            "--per_device_train_batch_size=2",
            "--learning_rate=1e-3",
            "--save_strategy=steps",
            "--save_steps=2",
            "--use_cpu",
            "--report_to=none",
            "--do_train",
        ]

    uninterrupted = run_subprocess(argv(directory / "uninterrupted"))
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    killed = run_subprocess(argv(directory / "killed"), kill_at=KILL_AT_STEP)
    partial = directory / "killed" / "rounds" / "round_1.partial"
    after_kill = {
        "returncode": killed.returncode,
        "checkpoints": sorted(path.name for path in partial.glob("checkpoint-*")),
        "partial_has_marker": (partial / "stage.json").exists(),
        "final_exists": (directory / "killed" / "rounds" / "round_1").exists(),
        "teacher_finished": (directory / "killed" / "teacher" / "stage.json").is_file(),
    }
    resumed = run_subprocess([*argv(directory / "killed"), "--resume_from_checkpoint=True"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return directory, after_kill, resumed


def test_the_kill_left_an_unfinished_student_stage(runs):
    _, after_kill, _ = runs
    assert after_kill["returncode"] == -9
    assert after_kill["checkpoints"] == ["checkpoint-2", "checkpoint-4", f"checkpoint-{KILL_AT_STEP}"]
    assert after_kill["teacher_finished"]
    assert not after_kill["partial_has_marker"] and not after_kill["final_exists"]


def test_the_rerun_skips_the_finished_teacher_and_says_so(runs):
    _, _, resumed = runs
    assert "Stage teacher is finished" in resumed.stdout + resumed.stderr


def test_resumed_student_equals_the_uninterrupted_one(runs):
    directory, _, _ = runs
    expected_dir = directory / "uninterrupted" / "rounds" / "round_1"
    resumed_dir = directory / "killed" / "rounds" / "round_1"
    expected_weights = load_file(expected_dir / "model.safetensors")
    resumed_weights = load_file(resumed_dir / "model.safetensors")
    assert expected_weights.keys() == resumed_weights.keys()
    for name, tensor in expected_weights.items():
        assert torch.equal(tensor, resumed_weights[name]), name
    expected = torch.load(expected_dir / "maral_trainer_state.pt", weights_only=True)["objective_state"]
    resumed = torch.load(resumed_dir / "maral_trainer_state.pt", weights_only=True)["objective_state"]
    for key in ("probabilities", "reliable", "visited", "logit_cache"):
        assert torch.equal(expected["store"][key], resumed["store"][key]), key
    for key in ("target_prior", "proto_margins", "neighbour_margins", "bank", "bank_labels"):
        assert torch.equal(expected[key], resumed[key]), key
    assert not expected["store"]["reliable"].all(), "anchor selection must have run for the test to mean something"
