"""A student stage killed with SIGKILL resumes to exactly the uninterrupted result: after a complete checkpoint, in
the torn-checkpoint window (the Trainer's files written, the objective's state not yet), and from an explicitly
chosen earlier checkpoint; a rerun skips the stages that finished."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from output_layout import PSEUDO_LABEL_FILE, TRAINER_STATE_FILE
from tests.tiny_models import TINY_LABELS, TINY_SOURCE_RECORDS, TINY_TARGET_RECORDS

REPO_ROOT = Path(__file__).resolve().parents[1]
KILL_AT_STEP = 6  # 4 steps per epoch: the middle of the student's second epoch, right after its checkpoint
# Runs run_xner in a fresh interpreter. With KILL_AT_STEP set, the process SIGKILLs itself (a preempted job: no
# clean-up code runs) when the stage KILL_STAGE saves that step's checkpoint: after the complete checkpoint, or with
# KILL_TORN after the Trainer's files and before the objective's state. RECORD_RESUME names a file that receives the
# `resume_from_checkpoint` of every stage's `train` call.
RUNNER = """
import json, os, signal, sys
sys.path.insert(0, sys.argv[1])
import transformers
import trainer_maral

def maybe_die(trainer, torn):
    kill_at = os.environ.get("KILL_AT_STEP")
    in_stage = os.environ.get("KILL_STAGE", "round_1") in trainer.args.output_dir
    if kill_at and in_stage and trainer.state.global_step == int(kill_at) and torn == ("KILL_TORN" in os.environ):
        os.kill(os.getpid(), signal.SIGKILL)

def wrap(owner, torn):
    original = owner._save_checkpoint
    def save_then_maybe_die(self, model, trial):
        original(self, model, trial)
        maybe_die(self, torn)
    owner._save_checkpoint = save_then_maybe_die

wrap(transformers.Trainer, torn=True)
wrap(trainer_maral.MaralTrainer, torn=False)
train = trainer_maral.MaralTrainer.train

def recording_train(self, resume_from_checkpoint=None, **kwargs):
    if os.environ.get("RECORD_RESUME"):
        with open(os.environ["RECORD_RESUME"], "a") as handle:
            handle.write(json.dumps([self.args.output_dir, resume_from_checkpoint]) + "\\n")
    return train(self, resume_from_checkpoint=resume_from_checkpoint, **kwargs)

trainer_maral.MaralTrainer.train = recording_train
import run_xner
run_xner.main(sys.argv[2:])
"""


def run_subprocess(argv: list[str], **environment_updates: str) -> subprocess.CompletedProcess:
    environment = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    for name in ("KILL_AT_STEP", "KILL_STAGE", "KILL_TORN", "RECORD_RESUME"):
        environment.pop(name, None)
    environment.update(environment_updates)
    command = [sys.executable, "-c", RUNNER, str(REPO_ROOT), *argv]
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600)


def checkpoints_of(folder: Path) -> dict[str, bool]:
    """`{checkpoint name: complete}` of a stage folder."""
    return {path.name: (path / TRAINER_STATE_FILE).is_file() for path in sorted(folder.glob("checkpoint-*"))}


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

    def succeed(completed: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
        assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-3000:]
        return completed

    result = {"directory": directory, "argv": argv}
    succeed(run_subprocess(argv(directory / "uninterrupted")))

    killed = run_subprocess(argv(directory / "killed"), KILL_AT_STEP=str(KILL_AT_STEP))
    partial = directory / "killed" / "rounds" / "round_1.partial"
    result["after_kill"] = {
        "returncode": killed.returncode,
        "checkpoints": checkpoints_of(partial),
        "partial_has_marker": (partial / "stage.json").exists(),
        "final_exists": (directory / "killed" / "rounds" / "round_1").exists(),
        "teacher_finished": (directory / "killed" / "teacher" / "stage.json").is_file(),
    }
    shutil.copytree(directory / "killed", directory / "explicit")
    result["resumed"] = succeed(run_subprocess([*argv(directory / "killed"), "--resume_from_checkpoint=True"]))

    explicit = directory / "explicit" / "rounds" / "round_1.partial" / "checkpoint-2"
    record = directory / "explicit_resume.jsonl"
    succeed(run_subprocess([*argv(directory / "explicit"), f"--resume_from_checkpoint={explicit}"],
                           RECORD_RESUME=str(record)))  # fmt: skip
    result["explicit"] = (explicit, [json.loads(line) for line in record.read_text().splitlines()])

    torn = run_subprocess(argv(directory / "torn"), KILL_AT_STEP=str(KILL_AT_STEP), KILL_TORN="1")
    result["after_torn_kill"] = (torn.returncode, checkpoints_of(directory / "torn" / "rounds" / "round_1.partial"))
    record = directory / "torn_resume.jsonl"
    succeed(run_subprocess([*argv(directory / "torn"), "--resume_from_checkpoint=true"], RECORD_RESUME=str(record)))
    result["torn_resume"] = [json.loads(line) for line in record.read_text().splitlines()]
    return result


def assert_same_stage(expected_dir: Path, actual_dir: Path) -> None:
    """Bit-identical weights, pseudo-label store and objective state."""
    expected_weights = load_file(expected_dir / "model.safetensors")
    actual_weights = load_file(actual_dir / "model.safetensors")
    assert expected_weights.keys() == actual_weights.keys()
    for name, tensor in expected_weights.items():
        assert torch.equal(tensor, actual_weights[name]), name
    for file_name in (PSEUDO_LABEL_FILE, TRAINER_STATE_FILE):
        assert_same_state(
            torch.load(expected_dir / file_name, weights_only=True),
            torch.load(actual_dir / file_name, weights_only=True),
            file_name,
        )


def assert_same_state(expected, actual, name: str) -> None:
    if isinstance(expected, dict):
        assert expected.keys() == actual.keys(), name
        for key in expected:
            assert_same_state(expected[key], actual[key], f"{name}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(expected) == len(actual), name
        for index, (left, right) in enumerate(zip(expected, actual)):
            assert_same_state(left, right, f"{name}[{index}]")
    elif isinstance(expected, torch.Tensor):
        assert torch.equal(expected, actual), name
    else:
        assert expected == actual, name


def test_the_kill_left_an_unfinished_student_stage(runs):
    after_kill = runs["after_kill"]
    assert after_kill["returncode"] == -9
    complete = {"checkpoint-2": True, "checkpoint-4": True, f"checkpoint-{KILL_AT_STEP}": True}
    assert after_kill["checkpoints"] == complete
    assert after_kill["teacher_finished"]
    assert not after_kill["partial_has_marker"] and not after_kill["final_exists"]


def test_the_rerun_skips_the_finished_teacher_and_says_so(runs):
    resumed = runs["resumed"]
    assert "Stage teacher is finished" in resumed.stdout + resumed.stderr


def test_resumed_student_equals_the_uninterrupted_one(runs):
    directory = runs["directory"]
    assert_same_stage(directory / "uninterrupted" / "rounds" / "round_1", directory / "killed" / "rounds" / "round_1")
    state = torch.load(directory / "uninterrupted" / "rounds" / "round_1" / TRAINER_STATE_FILE, weights_only=True)
    reliable = state["objective_state"]["store"]["reliable"]
    assert not reliable.all(), "anchor selection must have run for the test to mean something"


def test_a_kill_in_the_torn_checkpoint_window_leaves_an_incomplete_checkpoint(runs):
    returncode, checkpoints = runs["after_torn_kill"]
    assert returncode == -9
    assert checkpoints == {"checkpoint-2": True, "checkpoint-4": True, f"checkpoint-{KILL_AT_STEP}": False}


def test_resume_after_a_torn_checkpoint_takes_the_newest_complete_one(runs):
    directory = runs["directory"]
    student_calls = [checkpoint for output_dir, checkpoint in runs["torn_resume"] if "round_1" in output_dir]
    assert student_calls == [str(directory / "torn" / "rounds" / "round_1.partial" / "checkpoint-4")]
    assert_same_stage(directory / "uninterrupted" / "rounds" / "round_1", directory / "torn" / "rounds" / "round_1")


def test_an_explicit_earlier_checkpoint_is_used(runs):
    directory = runs["directory"]
    explicit, calls = runs["explicit"]
    assert calls == [[str(explicit.parent), str(explicit)]]  # the teacher is finished: only the student trains
    expected = directory / "uninterrupted" / "rounds" / "round_1"
    assert_same_stage(expected, directory / "explicit" / "rounds" / "round_1")


def test_a_teacher_without_source_dev_checkpoints_at_the_save_strategy(runs):
    output_dir = runs["directory"] / "teacher_cadence"
    killed = run_subprocess(runs["argv"](output_dir), KILL_AT_STEP="2", KILL_STAGE="teacher")
    assert killed.returncode == -9
    assert checkpoints_of(output_dir / "teacher.partial") == {"checkpoint-2": True}


def test_changing_only_the_checkpoint_cadence_reuses_the_finished_stages(runs):
    argv = runs["argv"](runs["directory"] / "uninterrupted")
    rerun = run_subprocess([*argv, "--save_steps=3", "--save_total_limit=1", "--resume_from_checkpoint=true"])
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    output = rerun.stdout + rerun.stderr
    assert "Stage teacher is finished" in output and "Stage rounds/round_1 is finished" in output
