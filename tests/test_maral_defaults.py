"""MARAL's defaults at a small budget: the fresh student's warm-up, margins read only once estimated, every target
span taking part whatever the target/source ratio, and PRAM's target stop-gradient."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest
import torch

from data_loading import count_span_labels, load_spans
from data_loading.collator import MaralDataCollator
from modeling_maral import MaralForSpanNER, span_cross_entropy
from objectives import MaralObjective, class_weights_from_counts, generate_pseudo_labels, model_inputs
from objectives.pram import attribution_consistency
from objectives.prototypes import ClassPrototypes
from tests.tiny_models import TINY_LABELS, TINY_SOURCE_RECORDS, TINY_TARGET_RECORDS
from trainer_maral import MaralTrainer, MaralTrainingArguments

LABELS = list(TINY_LABELS)


def joined_records(records: list[dict], count: int) -> list[dict]:
    """`count` sentences of three consecutive records each, keeping the first record's first entity: long
    sentences where ~98 % of the spans are `O`, as in real text."""
    joined = []
    for index in range(count):
        parts = [records[(index + offset) % len(records)] for offset in range(3)]
        key, label = next(iter(parts[0]["span_posLabel"].items()))
        joined.append({"context": " ".join(part["context"] for part in parts), "span_posLabel": {key: label}})
    return joined


def student_args(**overrides) -> MaralTrainingArguments:
    settings = dict(
        method="maral",
        num_train_epochs=1,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        warmup_steps=0,
        logging_steps=1,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        knn_k=5,
        knn_o_keep_rate=0.3,
    )
    settings.update(overrides)
    return MaralTrainingArguments(tempfile.mkdtemp(), **settings)


def train_student(encoder_dir, source, target, args, all_outside: bool = False):
    """A fresh student trained on `source` and the (random) teacher's pseudo-labels of `target`."""
    torch.manual_seed(0)
    teacher = MaralForSpanNER.from_encoder(str(encoder_dir), labels=LABELS)
    store = generate_pseudo_labels(teacher, target, batch_size=8)
    if all_outside:  # ~all-`O` pseudo-labels, as a real teacher gives on real text
        store.probabilities.zero_()
        store.probabilities[:, 0] = 1.0
    counts = count_span_labels(source)
    weights = class_weights_from_counts(counts)
    torch.manual_seed(1)
    model = MaralForSpanNER.from_encoder(str(encoder_dir), labels=LABELS, classifier_dropout=0.0)
    objective = MaralObjective(store, counts, weights, settings=args, num_epochs=int(args.num_train_epochs))
    trainer = MaralTrainer(
        model=model, args=args, train_dataset=source, target_dataset=target, objective=objective, class_weights=weights
    )
    return trainer, objective, counts, weights


def source_logits(model, source) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The student's vMF logits of every span of the source set, and the collated batch."""
    batch = MaralDataCollator(model.tokenizer)([source[index] for index in range(len(source))])
    model.eval()
    with torch.no_grad():
        output = model(**model_inputs(batch))
        return model.vmf_logits(output.projections), batch


@pytest.fixture(scope="module")
def long_data():
    return {
        "source": load_spans(joined_records(list(TINY_SOURCE_RECORDS), 48), labels=LABELS),
        "target": load_spans(joined_records(list(TINY_TARGET_RECORDS), 24), labels=LABELS, unlabeled=True),
    }


def prior_only_loss(counts: np.ndarray, weights: torch.Tensor) -> float:
    """The class-weighted source loss of predicting the source class prior for every span."""
    present = counts > 0
    prior = counts / counts.sum()
    return float((counts[present] * weights.numpy()[present] * -np.log(prior[present])).sum() / counts.sum())


def test_a_fresh_student_learns_the_source_task_in_its_first_epoch(tiny_encoder_dir, long_data):
    args = student_args(student_init="base")  # the default warm-up: one epoch on the source alone
    trainer, objective, counts, weights = train_student(
        tiny_encoder_dir, long_data["source"], long_data["target"], args, all_outside=True
    )
    assert objective.target_warmup_epochs == 1
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "source_loss" in entry]
    assert logs and not any("target_loss" in entry for entry in logs)  # no target loss while warming up
    assert not objective.store.visited.any()  # ... and no target span scored (no target-side vMF statistics)
    model = trainer.model
    seen_source_spans = int(model.vmf_counts[1].sum())
    assert seen_source_spans == int(counts.sum())  # the collecting estimator holds the source spans only
    logits, batch = source_logits(model, long_data["source"])
    adjusted = logits + objective.source_tau * objective.source_log_prior.to(logits)
    loss = span_cross_entropy(adjusted, batch["labels"].clamp(min=0), batch["span_mask"], weights).item()
    assert loss < 0.8 * prior_only_loss(counts, weights)


def test_warm_up_defaults_follow_the_student_start():
    assert MaralObjective._warmup_epochs(student_args(student_init="base")) == 1
    assert MaralObjective._warmup_epochs(student_args(student_init="teacher")) == 0
    assert MaralObjective._warmup_epochs(student_args(student_init="base", target_warmup_epochs=0)) == 0
    assert student_args().student_init == "teacher"  # MARAL's default start
    assert student_args(method="contproto").student_init == "base"


def test_margins_are_never_read_before_they_are_estimated(tiny_encoder_dir, long_data):
    args = student_args(num_train_epochs=3, update_soft_start=0)
    trainer, objective, _, _ = train_student(tiny_encoder_dir, long_data["source"], long_data["target"], args)
    refine, reads = objective._refine, []

    def recording_refine(rows, soft, logits, neighbour_counts):
        reads.append((objective.epoch, objective.margins_estimated.clone(), objective.neighbour_margins.clone()))
        return refine(rows, soft, logits, neighbour_counts)

    objective._refine = recording_refine
    trainer.train()
    assert reads and {epoch for epoch, _, _ in reads} == {1, 2}  # epoch 0 has no margins to read
    assert all(estimated.all() for _, estimated, _ in reads)
    assert any(margins.any() for epoch, _, margins in reads if epoch == 1)  # estimated from epoch 0's bank
    assert [record["refined"] for record in objective.history] == [False, True, True]


def test_every_target_span_takes_part_with_twice_the_target_text(tiny_encoder_dir, long_data):
    source = long_data["source"].select(range(12))  # 6 steps per epoch draw 12 of the 24 target sentences
    args = student_args(num_train_epochs=3, update_soft_start=0)
    trainer, objective, _, _ = train_student(tiny_encoder_dir, source, long_data["target"], args)
    trainer.train()
    target_losses = [record["loss_terms"]["target_loss"] for record in objective.history]
    assert len(target_losses) == 3 and all(loss > 0 for loss in target_losses)
    assert objective.history[0]["visited_fraction"] < 1.0  # epoch 1 meets spans epoch 0 never scored


def test_pram_target_stop_gradient_leaves_the_classifier_alone():
    generator = torch.Generator().manual_seed(0)
    prototypes = ClassPrototypes(num_labels=3, momentum=0.5, per_span=False)
    features = torch.nn.functional.normalize(torch.randn(6, 4, generator=generator), dim=-1)
    prototypes.update(features, torch.arange(6) % 3)
    for train_classifier in (False, True):
        logits = torch.randn(5, 3, generator=generator, requires_grad=True)
        features = torch.nn.functional.normalize(torch.randn(5, 4, generator=generator), dim=-1).requires_grad_()
        attribution_consistency(logits, features, prototypes, 0.2, train_classifier=train_classifier).backward()
        assert features.grad.abs().sum() > 0
        classifier_gradient = 0.0 if logits.grad is None else logits.grad.abs().sum().item()
        assert (classifier_gradient > 0) == train_classifier
