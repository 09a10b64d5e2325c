"""Behaviour tests of `trainer_maral`: class weights, a tiny training run, evaluation, checkpoints and resuming."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

from data_loading import load_spans
from data_loading.collator import MaralDataCollator
from modeling_maral import MODEL_INPUT_NAMES, MaralForSpanNER, span_cross_entropy
from objectives import SourceObjective, class_weights_from_counts
from output_layout import TRAINER_STATE_FILE
from tests.tiny_models import TINY_LABELS, TINY_SOURCE_RECORDS, TINY_TARGET_RECORDS
from trainer_maral import MaralTrainer, MaralTrainingArguments, TargetBatchStream

LABELS = list(TINY_LABELS)

SOURCE_RECORDS = list(TINY_SOURCE_RECORDS)
SOURCE_RECORDS = SOURCE_RECORDS + [
    {"context": record["context"].replace(" .", " !"), "span_posLabel": record["span_posLabel"]}
    for record in SOURCE_RECORDS
]
TARGET_RECORDS = TINY_TARGET_RECORDS[:5]


def test_class_weights_on_english_conll_counts():
    weights = class_weights_from_counts(np.array([709351, 6321, 6600, 7140, 3438]))
    assert weights.dtype == torch.float32
    assert weights.tolist() == pytest.approx([0.690, 1.063, 1.057, 1.048, 1.142], abs=1e-3)
    assert weights.sum().item() == pytest.approx(5.0)


def test_class_weights_survive_rare_classes():
    weights = class_weights_from_counts(np.array([100, 1, 0, 2]))
    assert torch.isfinite(weights).all()
    assert weights[1] == weights[2] == weights[3]  # raised to the weight of a class seen twice
    assert weights[0] < weights[1]


@pytest.fixture(scope="module")
def datasets():
    return {
        "source": load_spans(SOURCE_RECORDS, labels=LABELS),
        "target": load_spans(TARGET_RECORDS, labels=LABELS, unlabeled=True),
    }


def make_model(encoder_dir) -> MaralForSpanNER:
    torch.manual_seed(0)
    return MaralForSpanNER.from_encoder(str(encoder_dir), labels=LABELS, classifier_dropout=0.0)


def make_args(output_dir, **overrides) -> MaralTrainingArguments:
    settings = dict(
        output_dir=str(output_dir),
        use_cpu=True,
        report_to="none",
        max_steps=6,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        learning_rate=1e-3,
        warmup_steps=0,
        logging_steps=2,
        save_strategy="steps",
        save_steps=3,
        seed=0,
        mlm_weight=0.1,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    settings.update(overrides)
    return MaralTrainingArguments(**settings)


def full_batch_source_loss(model, dataset, weights) -> float:
    batch = MaralDataCollator(model.tokenizer)([dataset[index] for index in range(len(dataset))])
    model.eval()
    with torch.no_grad():
        output = model(**{key: batch[key] for key in MODEL_INPUT_NAMES}, return_projections=False)
    return span_cross_entropy(output.logits, batch["labels"], batch["span_mask"], weights).item()


WEIGHTS = torch.tensor([0.7, 1.1, 1.2, 1.1, 1.0])


@pytest.fixture(scope="module")
def trained(tiny_encoder_dir, datasets, tmp_path_factory):
    """One short training run shared by the tests below."""
    output_dir = tmp_path_factory.mktemp("trainer_run")
    model = make_model(tiny_encoder_dir)
    initial = {name: value.detach().clone() for name, value in model.named_parameters()}
    loss_before = full_batch_source_loss(model, datasets["source"], WEIGHTS)
    trainer = MaralTrainer(
        model=model,
        args=make_args(output_dir),
        train_dataset=datasets["source"],
        target_dataset=datasets["target"],
        class_weights=WEIGHTS,
        processing_class=model.tokenizer,
    )
    trainer.train()
    loss_after = full_batch_source_loss(model, datasets["source"], WEIGHTS)
    return {
        "trainer": trainer,
        "output_dir": Path(output_dir),
        "initial": initial,
        "loss_before": loss_before,
        "loss_after": loss_after,
    }


def test_training_lowers_the_source_loss_and_changes_weights(trained):
    assert trained["trainer"].state.global_step == 6
    assert trained["loss_after"] < trained["loss_before"]
    parameters = dict(trained["trainer"].model.named_parameters())
    for name in (
        "encoder.embeddings.word_embeddings.weight",
        "span_classifier.output.weight",
        "mlm_head.dense.weight",
    ):
        assert not torch.equal(parameters[name].detach(), trained["initial"][name]), name


def test_training_logs_the_loss_terms(trained):
    train_logs = [entry for entry in trained["trainer"].state.log_history if "loss" in entry]
    assert len(train_logs) == 3  # logging_steps=2, max_steps=6
    for entry in train_logs:
        assert np.isfinite(entry["source_loss"]) and entry["source_loss"] > 0
        assert np.isfinite(entry["mlm_loss"]) and entry["mlm_loss"] > 0
        # the optimised loss is source + mlm_weight * mlm
        assert entry["loss"] == pytest.approx(entry["source_loss"] + 0.1 * entry["mlm_loss"], rel=1e-4)


def test_evaluate_named_datasets(trained, datasets):
    trainer = trained["trainer"]
    metrics = trainer.evaluate({"source_dev": datasets["source"], "target": datasets["target"]})
    for name in ("source_dev", "target"):
        for key in ("span_f1", "span_precision", "span_recall", "seqeval_f1", "seqeval_recall"):
            value = metrics[f"eval_{name}_{key}"]
            assert 0.0 <= value <= 1.0
    assert not any("_PER_" in key for key in metrics)
    trainer.include_per_label_metrics = True
    try:
        single = trainer.evaluate(datasets["source"], metric_key_prefix="test")
    finally:
        trainer.include_per_label_metrics = False
    assert single["test_span_f1"] == metrics["eval_source_dev_span_f1"]
    assert "test_PER_seqeval_f1" in single


def test_checkpoints_hold_the_objective_state(trained):
    for step in (3, 6):
        checkpoint = trained["output_dir"] / f"checkpoint-{step}"
        state = torch.load(checkpoint / TRAINER_STATE_FILE, weights_only=True)
        assert state["objective"] == "source_only"
        assert "mask_generator" in state["objective_state"]
        assert state["target_stream"]["position"] > 0
    early = torch.load(trained["output_dir"] / "checkpoint-3" / TRAINER_STATE_FILE, weights_only=True)
    late = torch.load(trained["output_dir"] / "checkpoint-6" / TRAINER_STATE_FILE, weights_only=True)
    assert not torch.equal(early["objective_state"]["mask_generator"], late["objective_state"]["mask_generator"])


def test_resume_reproduces_the_uninterrupted_run(trained, tiny_encoder_dir, datasets, tmp_path):
    checkpoint = trained["output_dir"] / "checkpoint-3"
    model = make_model(tiny_encoder_dir)
    trainer = MaralTrainer(
        model=model,
        args=make_args(tmp_path),
        train_dataset=datasets["source"],
        target_dataset=datasets["target"],
        class_weights=WEIGHTS,
        processing_class=model.tokenizer,
    )
    trainer.train(resume_from_checkpoint=str(checkpoint))
    assert trainer.state.global_step == 6
    reference = dict(trained["trainer"].model.named_parameters())
    for name, value in model.named_parameters():
        torch.testing.assert_close(value, reference[name], msg=name)
    assert trainer.target_stream.position == trained["trainer"].target_stream.position
    assert torch.equal(trainer.target_stream.order, trained["trainer"].target_stream.order)


def test_evaluation_during_training_selects_a_checkpoint(tiny_encoder_dir, datasets, tmp_path):
    model = make_model(tiny_encoder_dir)
    args = make_args(
        tmp_path,
        max_steps=4,
        eval_strategy="steps",
        eval_steps=2,
        save_steps=2,
        load_best_model_at_end=True,
        metric_for_best_model="source_dev_span_f1",
    )
    trainer = MaralTrainer(
        model=model,
        args=args,
        train_dataset=datasets["source"],
        eval_dataset={"source_dev": datasets["source"], "target_dev": datasets["target"]},
        class_weights=WEIGHTS,
        processing_class=model.tokenizer,
    )
    trainer.train()
    evaluations = [entry for entry in trainer.state.log_history if "eval_source_dev_span_f1" in entry]
    assert [entry["step"] for entry in evaluations] == [2, 4]
    assert any("eval_target_dev_seqeval_f1" in entry for entry in trainer.state.log_history)
    assert trainer.state.best_model_checkpoint is not None
    assert trainer.state.best_metric == max(entry["eval_source_dev_span_f1"] for entry in evaluations)


def test_gradient_accumulation_averages_the_micro_batch_losses(tiny_encoder_dir, datasets, tmp_path):
    model = make_model(tiny_encoder_dir)
    args = make_args(
        tmp_path, max_steps=2, per_device_train_batch_size=2, gradient_accumulation_steps=2, save_strategy="no"
    )
    trainer = MaralTrainer(
        model=model,
        args=args,
        train_dataset=datasets["source"],
        class_weights=WEIGHTS,
        processing_class=model.tokenizer,
    )
    trainer.train()
    train_logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(train_logs) == 1
    # the logged (and optimised) loss is the mean of the micro-batch losses, not their sum
    assert train_logs[0]["loss"] == pytest.approx(train_logs[0]["source_loss"], rel=1e-4)


class OtherObjective(SourceObjective):
    name = "other_method"


def test_resuming_with_another_method_fails(trained, tiny_encoder_dir, datasets, tmp_path):
    model = make_model(tiny_encoder_dir)
    trainer = MaralTrainer(
        model=model,
        args=make_args(tmp_path),
        train_dataset=datasets["source"],
        objective=OtherObjective(),
        processing_class=model.tokenizer,
    )
    with pytest.raises(ValueError, match="source_only"):
        trainer.train(resume_from_checkpoint=str(trained["output_dir"] / "checkpoint-3"))


def test_unknown_method_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="method"):
        make_args(tmp_path, method="no_such_method")


def test_without_target_data_there_is_no_mlm_term(tiny_encoder_dir, datasets, tmp_path):
    model = make_model(tiny_encoder_dir)
    trainer = MaralTrainer(
        model=model, args=make_args(tmp_path), train_dataset=datasets["source"], processing_class=model.tokenizer
    )
    assert trainer.target_stream is None
    batch = trainer.data_collator([datasets["source"][index] for index in range(4)])
    loss, logs = trainer.objective.compute_loss(trainer, model, batch)
    assert set(logs) == {"source_loss"}
    assert loss.item() == pytest.approx(logs["source_loss"])


def test_target_batch_stream_state_round_trip(wordpiece_tokenizer, datasets):
    collator = MaralDataCollator(wordpiece_tokenizer, label_column=None)
    stream = TargetBatchStream(datasets["target"], collator, batch_size=2, seed=3)
    for _ in range(2):
        stream.next_batch()
    buffer = io.BytesIO()
    torch.save(stream.state_dict(), buffer)  # as in a checkpoint
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    expected = [stream.next_batch() for _ in range(5)]  # crosses a reshuffle (5 sentences, 2 per batch)

    restored = TargetBatchStream(datasets["target"], collator, batch_size=2, seed=99)
    restored.load_state_dict(state)
    for want in expected:
        got = restored.next_batch()
        assert got["sentence_ids"].tolist() == want["sentence_ids"].tolist()
        assert torch.equal(got["input_ids"], want["input_ids"])
    assert "labels" not in expected[0]
    with pytest.raises(ValueError, match="empty"):
        TargetBatchStream(datasets["target"].select([]), collator, batch_size=2, seed=0)


def test_target_batch_stream_covers_every_sentence_per_pass(wordpiece_tokenizer, datasets):
    stream = TargetBatchStream(
        datasets["target"], MaralDataCollator(wordpiece_tokenizer, label_column=None), batch_size=2, seed=0
    )
    ids = [i for _ in range(3) for i in stream.next_batch()["sentence_ids"].tolist()]
    assert sorted(ids) == list(range(5))  # batches of 2, 2, 1 make one full pass


def test_head_learning_rate_applies_to_every_parameter_outside_the_encoder(tiny_encoder_dir, datasets, tmp_path):
    model = make_model(tiny_encoder_dir)
    args = make_args(tmp_path / "out", learning_rate=1e-5, head_learning_rate=1e-3)
    trainer = MaralTrainer(model=model, args=args, train_dataset=datasets["source"])
    optimizer = trainer.create_optimizer()
    rate_of = {id(parameter): group["lr"] for group in optimizer.param_groups for parameter in group["params"]}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert rate_of[id(parameter)] == (1e-5 if name.startswith("encoder.") else 1e-3), name
    assert len(rate_of) == sum(1 for parameter in model.parameters() if parameter.requires_grad)


def test_without_head_learning_rate_every_parameter_uses_learning_rate(tiny_encoder_dir, datasets, tmp_path):
    model = make_model(tiny_encoder_dir)
    trainer = MaralTrainer(
        model=model, args=make_args(tmp_path / "out", learning_rate=1e-5), train_dataset=datasets["source"]
    )
    assert {group["lr"] for group in trainer.create_optimizer().param_groups} == {1e-5}
