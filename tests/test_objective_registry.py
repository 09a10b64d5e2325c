"""The extension API of `objectives/`: the README's worked example registers, trains and is described by the card;
the training settings compose from each method's settings dataclass."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch

from data_loading import load_spans
from model_cards import RunInfo, build_model_card
from modeling_maral import MaralForSpanNER
from objectives import (
    OBJECTIVES,
    ContProtoSettings,
    MaralSettings,
    MclSettings,
    MlmSettings,
    PramSettings,
    PseudoLabelSettings,
    methods,
)
from tests.tiny_models import TINY_LABELS, TINY_SOURCE_RECORDS
from trainer_maral import METHODS, MaralTrainer, MaralTrainingArguments

README = Path(__file__).resolve().parents[1] / "README.md"
SETTINGS_CLASSES = (MlmSettings, PseudoLabelSettings, MaralSettings, ContProtoSettings, PramSettings, MclSettings)


def readme_block(heading: str) -> str:
    """The first Python code block after `heading` in the README."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index(heading) :]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


@pytest.fixture()
def registered_example():
    """Runs the README's "Adding an objective" block; unregisters the method afterwards."""
    namespace: dict = {}
    exec(compile(readme_block("### Adding an objective"), "README.md", "exec"), namespace)
    yield namespace["SourceCrossEntropyObjective"]
    OBJECTIVES.pop("source_ce", None)


def test_readme_objective_registers_and_trains(registered_example, tiny_encoder_dir, tmp_path):
    assert "source_ce" in methods() and "source_ce" not in METHODS  # the built-in list stays the docs' list
    torch.manual_seed(0)
    model = MaralForSpanNER.from_encoder(str(tiny_encoder_dir), labels=list(TINY_LABELS))
    args = MaralTrainingArguments(
        str(tmp_path / "run"), method="source_ce", max_steps=2, use_cpu=True, report_to="none", logging_steps=1
    )
    source = load_spans(list(TINY_SOURCE_RECORDS), labels=model.config.labels)
    trainer = MaralTrainer(model=model, args=args, train_dataset=source)
    assert isinstance(trainer.objective, registered_example)
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logged and all(entry["source_loss"] == pytest.approx(entry["loss"], rel=1e-4) for entry in logged)


def test_the_card_describes_a_method_from_its_spec(registered_example, tiny_encoder_dir, tmp_path):
    model = MaralForSpanNER.from_encoder(
        str(tiny_encoder_dir), labels=list(TINY_LABELS), source_language="en", target_language="de"
    )
    model.save_pretrained(tmp_path / "model")
    card = str(build_model_card(tmp_path / "model", RunInfo(run_config={"method": "source_ce"})))
    assert "The model was trained on the labelled English spans only." in card
    assert "source cross-entropy only" in card
    maral_card = str(build_model_card(tmp_path / "model", RunInfo(run_config={"method": "maral", "knn_k": 7})))
    assert "von Mises–Fisher" in maral_card and "- `knn_k`: 7" in maral_card
    pram_card = str(build_model_card(tmp_path / "model", RunInfo(run_config={"method": "pram", "knn_k": 7})))
    assert "PRAM" in pram_card and "knn_k" not in pram_card  # only the method's own settings are listed


def test_training_arguments_compose_every_method_settings_and_take_the_output_dir_first(tmp_path):
    fields = {field.name for field in dataclasses.fields(MaralTrainingArguments)}
    for settings in SETTINGS_CLASSES:
        assert {field.name for field in dataclasses.fields(settings)} <= fields, settings.__name__
    args = MaralTrainingArguments(str(tmp_path / "positional"), use_cpu=True)
    assert args.output_dir == str(tmp_path / "positional")


@pytest.mark.parametrize("flag", ["mlm_weight", "tau", "pram_target_weight", "mcl_distill_weight", "ema_start"])
def test_every_settings_class_checks_its_flags(flag, tmp_path):
    with pytest.raises(ValueError, match=f"`--{flag}`"):
        MaralTrainingArguments(str(tmp_path), use_cpu=True, **{flag: float("nan")})


def test_trainer_refuses_a_teacher_student_method_without_its_stage_objective(tiny_encoder_dir, tmp_path):
    model = MaralForSpanNER.from_encoder(str(tiny_encoder_dir), labels=list(TINY_LABELS))
    args = MaralTrainingArguments(str(tmp_path), method="maral", use_cpu=True, report_to="none")
    with pytest.raises(ValueError, match="SelfTrainingPipeline"):
        MaralTrainer(
            model=model, args=args, train_dataset=load_spans(list(TINY_SOURCE_RECORDS), labels=list(TINY_LABELS))
        )
