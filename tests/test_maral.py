"""Behaviour tests of MARAL's student stage: vMF Bessel functions and head, estimator algebra, anchor selection,
margins and refinement, the pseudo-label store, a tiny student run (logging, history, refinement, priors), exact
resuming, saving and loading, and the teacher -> student pipeline of `run_xner`.

Every expected value is computed independently (SciPy, scikit-learn, hand-made numbers or a re-derivation from
recorded inputs); no test compares against stored model outputs.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import special
from transformers import AutoModel, TrainerCallback

import run_xner
from data_loading import count_span_labels, load_spans
from modeling_maral import (
    MaralConfig,
    MaralForSpanNER,
    SentencePrediction,
    enumerate_spans,
    legacy_log_bessel_iv,
    log_bessel_iv,
    vmf_log_partition,
)
from objectives import MaralObjective, PseudoLabelStore, generate_pseudo_labels
from objectives.losses import target_span_loss
from objectives.maral_adaptation import (
    class_margins,
    fit_two_gaussians,
    knn_label_counts,
    l1_normalize,
    refinement_targets,
    select_reliable_spans,
)
from objectives.pseudo_labels import ema_momentum
from output_layout import PSEUDO_LABEL_FILE, STAGE_MARKER
from self_training_maral import gold_spans_by_sentence
from tests.tiny_models import TINY_LABELS, TINY_SOURCE_RECORDS, TINY_TARGET_RECORDS, tiny_bert_config
from trainer_maral import MaralTrainer, MaralTrainingArguments

LABELS = list(TINY_LABELS)
ORDER = 31  # ν = p/2 - 1 for the projection size p = 64


def scipy_log_iv(order: float, x: np.ndarray) -> np.ndarray:
    """`log I_order(x)` in float64 from SciPy's exponentially scaled Bessel function."""
    return np.log(special.ive(order, x)) + x


def scipy_phi(x: np.ndarray) -> np.ndarray:
    return scipy_log_iv(ORDER, x) - ORDER * np.log(x)


# ---------------------------------------------------------------------------------------------------------------
# Bessel functions
# ---------------------------------------------------------------------------------------------------------------

GRID = np.logspace(-3, 5, 50)


def test_log_partition_matches_scipy():
    got = vmf_log_partition(torch.tensor(GRID), ORDER).numpy()
    want = scipy_phi(GRID)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)


@pytest.mark.parametrize("order", [ORDER, ORDER + 1])
def test_log_bessel_is_accurate_in_absolute_terms(order):
    # the documented accuracy is ~1e-9 nats; dropping a term of the expansion costs ~1e-7 at small x
    got = log_bessel_iv(order, torch.tensor(GRID)).numpy()
    np.testing.assert_allclose(got, scipy_log_iv(order, GRID), rtol=0, atol=1e-8)


def test_log_partition_gradient_is_the_bessel_ratio():
    x = torch.tensor(GRID, requires_grad=True)
    vmf_log_partition(x, ORDER, clip_gradient=False).sum().backward()
    ratio = special.ive(ORDER + 1, GRID) / special.ive(ORDER, GRID)  # dΦ/dx = I_{ν+1}(x) / I_ν(x)
    np.testing.assert_allclose(x.grad.numpy(), ratio, rtol=1e-6)
    step = 1e-4 * np.maximum(GRID, 1.0)
    plus = vmf_log_partition(torch.tensor(GRID + step), ORDER).numpy()
    minus = vmf_log_partition(torch.tensor(GRID - step), ORDER).numpy()
    finite_differences = (plus - minus) / (2 * step)
    np.testing.assert_allclose(x.grad.numpy(), finite_differences, rtol=1e-3, atol=1e-9)


@pytest.mark.parametrize("legacy", [False, True])
def test_clipped_gradient_is_at_most_one(legacy):
    x = torch.tensor(GRID, requires_grad=True)
    vmf_log_partition(x, ORDER, legacy=legacy, clip_gradient=True).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad <= 1.0).all() and (x.grad > 0).all()
    if legacy:
        # the Miller recurrence's ratio exceeds 1 for large x (the reason for the clip)
        unclipped = torch.tensor(GRID, requires_grad=True)
        vmf_log_partition(unclipped, ORDER, legacy=True, clip_gradient=False).sum().backward()
        assert unclipped.grad.max() > 1.5
        assert torch.equal(x.grad, unclipped.grad.clamp(max=1.0))


def test_legacy_recurrence_is_exact_up_to_100():
    x = np.logspace(-3, 2, 30)
    log_iv, log_iv_next = legacy_log_bessel_iv(ORDER, torch.tensor(x))
    np.testing.assert_allclose(log_iv.numpy(), scipy_log_iv(ORDER, x), rtol=0, atol=1e-10)
    np.testing.assert_allclose(log_iv_next.numpy(), scipy_log_iv(ORDER + 1, x), rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    "x, low, high",
    [(303.16, -5e-4, -5e-6), (1e3, -0.5, -0.01), (1e4, -10.0, -0.5), (1e5, -20.0, -1.0)],
)
def test_legacy_recurrence_is_low_for_large_arguments(x, low, high):
    # method notes: about -5e-5 at 303, -0.07 at 1e3, -1.9 at 1e4, -4.2 at 1e5
    log_iv, _ = legacy_log_bessel_iv(ORDER, torch.tensor([x], dtype=torch.float64))
    error = log_iv.item() - scipy_log_iv(ORDER, np.array([x]))[0]
    assert low < error < high


def test_legacy_errors_cancel_in_logit_differences():
    kappa = np.logspace(0, 5, 25)
    worst = 0.0
    for shift in (-14.3, -5.0, 5.0, 14.3):
        shifted = torch.tensor(np.maximum(kappa + shift, 1e-3))
        base = torch.tensor(kappa)
        legacy = vmf_log_partition(shifted, ORDER, legacy=True) - vmf_log_partition(base, ORDER, legacy=True)
        exact = vmf_log_partition(shifted, ORDER) - vmf_log_partition(base, ORDER)
        worst = max(worst, (legacy - exact).abs().max().item())
    assert worst < 1e-2


# ---------------------------------------------------------------------------------------------------------------
# vMF head and its estimators
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture()
def vmf_model() -> MaralForSpanNER:
    torch.manual_seed(0)
    config = MaralConfig(encoder_config=tiny_bert_config(40), labels=LABELS, projection_dim=64, use_mlm_head=False)
    return MaralForSpanNER(config)


def random_directions(count: int, dim: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(count, dim, generator=generator, dtype=torch.float64), dim=-1)


def test_vmf_logits_approach_scaled_cosines_for_large_kappa(vmf_model):
    directions = random_directions(len(LABELS), 64, seed=1)
    with torch.no_grad():
        vmf_model.vmf_means[0] = directions * (1 - 1e-9)  # R -> 1: κ at its clamp
        vmf_model.refresh_vmf_kappa()
    assert torch.all(vmf_model.vmf_kappa == vmf_model.config.vmf_kappa_max)
    z = random_directions(200, 64, seed=2).float()
    temperature = vmf_model.config.contrastive_temperature
    logits = vmf_model.vmf_logits(z)
    assert logits.dtype == torch.float32
    expected = (z.double() @ directions.T / temperature).float()
    # |error| ≈ (1 - Φ'(κ)) |μ·z|/T + (1 - (μ·z)²) / (2κT²) ≲ 5e-3: within 0.1% of the logit range 1/T
    torch.testing.assert_close(logits, expected, atol=1e-3 / temperature, rtol=0)
    assert logits.abs().max() <= 1 / temperature + 0.01


def test_vmf_logits_match_the_closed_form(vmf_model):
    # ℓ_c(z) = Φ(‖κ_c μ_c + z/T‖) - Φ(κ_c), evaluated independently with SciPy for several concentrations
    norms = torch.tensor([0.05, 0.3, 0.6, 0.9, 0.995], dtype=torch.float64).unsqueeze(1)
    with torch.no_grad():
        vmf_model.vmf_means[0] = random_directions(len(LABELS), 64, seed=11) * norms
        vmf_model.refresh_vmf_kappa()
    z = random_directions(40, 64, seed=12)
    logits = vmf_model.vmf_logits(z.float()).double().numpy()
    kappa = (64 * norms / (1 - norms**2)).squeeze(1).numpy()
    means = F.normalize(vmf_model.vmf_means[0], dim=-1).numpy()
    temperature = vmf_model.config.contrastive_temperature
    features = z.float().double().numpy()
    concentrated = np.linalg.norm(kappa[None, :, None] * means[None] + features[:, None] / temperature, axis=-1)
    expected = scipy_phi(concentrated) - scipy_phi(kappa)[None]
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-4)


def test_vmf_logit_sign_follows_the_direction(vmf_model):
    vmf_model.reset_vmf_estimator(0, torch.Generator().manual_seed(0))
    kappa = vmf_model.vmf_kappa
    torch.testing.assert_close(kappa, torch.full_like(kappa, 64 * 0.9 / 0.19))  # 90p/19 ≈ 303.16
    means = F.normalize(vmf_model.vmf_means[0], dim=-1)
    z = random_directions(300, 64, seed=3)
    cosines = z @ means.T
    logits = vmf_model.vmf_logits(z.float())
    clear = cosines.abs() > 0.05  # ℓ_c > 0 iff cos > -1/(2κT) ≈ -0.024
    assert clear.sum() > 1000
    assert torch.equal((logits > 0)[clear], (cosines > 0)[clear])
    towards, away = vmf_model.vmf_logits(means.float()), vmf_model.vmf_logits(-means.float())
    assert (towards.diagonal() > 10).all() and (away.diagonal() < -10).all()


def test_vmf_logits_pass_gradients_to_the_projections_only(vmf_model):
    vmf_model.reset_vmf_estimator(0, torch.Generator().manual_seed(0))
    z = random_directions(8, 64, seed=4).float().requires_grad_()
    logits = vmf_model.vmf_logits(z)
    logits.logsumexp(-1).sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    assert not vmf_model.vmf_means.requires_grad and not vmf_model.vmf_kappa.requires_grad


def test_estimator_means_are_exact_cumulative_means(vmf_model):
    generator = torch.Generator().manual_seed(0)
    vmf_model.reset_vmf_estimator(0, generator)
    vmf_model.reset_vmf_estimator(1, generator)
    initial_means = vmf_model.vmf_means.clone()
    torch.testing.assert_close(initial_means.norm(dim=-1), torch.full((2, len(LABELS)), 0.9, dtype=torch.float64))
    assert torch.all(vmf_model.vmf_counts == 0)

    batches = []
    label_generator = torch.Generator().manual_seed(5)
    for seed, size in ((6, 7), (7, 1), (8, 12)):
        labels = torch.randint(0, 4, (size,), generator=label_generator)  # class 4 never appears
        batches.append((random_directions(size, 64, seed).float(), labels))
    batches[1] = (batches[1][0], torch.tensor([2]))
    for features, labels in batches:
        vmf_model.update_vmf_statistics(features, labels)

    all_features = torch.cat([features for features, _ in batches]).double()
    all_labels = torch.cat([labels for _, labels in batches])
    for estimator in (0, 1):
        for label in range(len(LABELS)):
            members = all_labels == label
            assert vmf_model.vmf_counts[estimator, label] == members.sum()
            if members.any():
                torch.testing.assert_close(vmf_model.vmf_means[estimator, label], all_features[members].mean(0))
            else:
                assert torch.equal(vmf_model.vmf_means[estimator, label], initial_means[estimator, label])
    assert vmf_model.vmf_counts[0].sum() == len(all_labels)

    # κ = p R / (1 - R²) from estimator 0, and the stored log-normaliser Φ(κ)
    norms = vmf_model.vmf_means[0].norm(dim=-1)
    torch.testing.assert_close(vmf_model.vmf_kappa, 64 * norms / (1 - norms**2))
    np.testing.assert_allclose(vmf_model.vmf_log_normalizer.numpy(), scipy_phi(vmf_model.vmf_kappa.numpy()), rtol=1e-6)

    # after a rotation, estimator 0 keeps accumulating since *its* reset, estimator 1 restarts
    vmf_model.rotate_vmf_estimators(torch.Generator().manual_seed(9))
    extra_features, extra_labels = random_directions(5, 64, seed=10).float(), torch.tensor([0, 0, 1, 3, 3])
    vmf_model.update_vmf_statistics(extra_features, extra_labels)
    combined_features = torch.cat([all_features, extra_features.double()])
    combined_labels = torch.cat([all_labels, extra_labels])
    for label in (0, 1, 3):
        torch.testing.assert_close(vmf_model.vmf_means[0, label], combined_features[combined_labels == label].mean(0))
        torch.testing.assert_close(
            vmf_model.vmf_means[1, label], extra_features[extra_labels == label].double().mean(0)
        )
        assert vmf_model.vmf_counts[1, label] == (extra_labels == label).sum()
    assert vmf_model.vmf_counts[1, 2] == 0 and vmf_model.vmf_counts[0, 2] == (all_labels == 2).sum()


def test_rotation_moves_the_collecting_estimator_into_the_scoring_one(vmf_model):
    generator = torch.Generator().manual_seed(0)
    vmf_model.reset_vmf_estimator(0, generator)
    vmf_model.reset_vmf_estimator(1, generator)
    vmf_model.update_vmf_statistics(random_directions(10, 64, 1).float(), torch.arange(10) % len(LABELS))
    collected_means, collected_counts = vmf_model.vmf_means[1].clone(), vmf_model.vmf_counts[1].clone()
    vmf_model.rotate_vmf_estimators(torch.Generator().manual_seed(1))
    assert torch.equal(vmf_model.vmf_means[0], collected_means)
    assert torch.equal(vmf_model.vmf_counts[0], collected_counts)
    assert torch.all(vmf_model.vmf_counts[1] == 0)
    torch.testing.assert_close(
        vmf_model.vmf_means[1].norm(dim=-1), torch.full((len(LABELS),), 0.9, dtype=torch.float64)
    )
    assert not torch.allclose(vmf_model.vmf_means[1], collected_means)
    norms = collected_means.norm(dim=-1)
    torch.testing.assert_close(vmf_model.vmf_kappa, 64 * norms / (1 - norms**2))


def test_kappa_clamps(vmf_model):
    with torch.no_grad():
        vmf_model.vmf_means.zero_()
        vmf_model.vmf_means[0, 1, 0] = 1.0  # R = 1: division by zero upstream
        vmf_model.vmf_means[0, 2, 0] = 1.0 + 1e-9  # R > 1 from rounding: negative κ upstream
        vmf_model.vmf_means[0, 3, 0] = 0.999999  # finite but above the clamp
        vmf_model.vmf_means[0, 4, 0] = 1e-12  # R ≈ 0
    vmf_model.refresh_vmf_kappa()
    kappa_max = vmf_model.config.vmf_kappa_max
    assert vmf_model.vmf_kappa[1:4].tolist() == [kappa_max] * 3
    for label in (0, 4):  # R = 0 and R ≈ 0
        assert 0 < vmf_model.vmf_kappa[label] < 1e-3
    assert torch.isfinite(vmf_model.vmf_log_normalizer).all()
    logits = vmf_model.vmf_logits(random_directions(6, 64, 2).float())
    assert torch.isfinite(logits).all()


# ---------------------------------------------------------------------------------------------------------------
# Reliable-anchor selection
# ---------------------------------------------------------------------------------------------------------------


def bimodal_scores(
    seed: int, low: float = 0.2, high: float = 0.8, size: int = 40
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    values = torch.cat(
        [low + 0.04 * torch.randn(size, generator=generator), high + 0.04 * torch.randn(size, generator=generator)]
    )
    is_high = torch.arange(2 * size) >= size
    order = torch.randperm(2 * size, generator=generator)
    return values[order].double(), is_high[order]


def test_two_gaussians_separate_a_bimodal_sample():
    from sklearn.mixture import GaussianMixture

    values, is_high = bimodal_scores(0)
    posterior = fit_two_gaussians(values)
    assert torch.isfinite(posterior).all() and ((posterior >= 0) & (posterior <= 1)).all()
    assert torch.equal(posterior > 0.5, is_high)
    mixture = GaussianMixture(2, max_iter=10, reg_covar=5e-4, tol=1e-2, random_state=0).fit(values.numpy()[:, None])
    high_component = int(np.argmax(mixture.means_[:, 0]))
    sklearn_high = mixture.predict(values.numpy()[:, None]) == high_component
    assert np.array_equal(sklearn_high, (posterior > 0.5).numpy())
    np.testing.assert_allclose(
        posterior.numpy(), mixture.predict_proba(values.numpy()[:, None])[:, high_component], atol=1e-3
    )


def test_two_gaussians_on_two_distinct_values_are_finite():
    posterior = fit_two_gaussians(torch.tensor([0.0, 0.0, 0.0, 1.0]))
    assert torch.isfinite(posterior).all()
    assert posterior.tolist()[:3] == pytest.approx([0.0, 0.0, 0.0], abs=1e-6) and posterior[3] > 0.5


def make_store(sentence_ids, span_counts, num_labels: int = len(LABELS)) -> PseudoLabelStore:
    total = int(sum(span_counts))
    probabilities = torch.zeros(total, num_labels)
    probabilities[:, 0] = 1.0
    return PseudoLabelStore(
        torch.tensor(sentence_ids),
        torch.tensor(span_counts),
        torch.zeros(total, 2, dtype=torch.long),
        probabilities,
    )


def test_select_reliable_spans_per_class():
    # class 0 (O): bimodal; class 1: one span; class 2: constant scores; class 3: never labelled;
    # class 4: only unvisited spans
    values, is_high = bimodal_scores(1, low=-3.0, high=5.0)
    layout = [("O", len(values)), ("single", 1), ("constant", 4), ("unvisited", 3), ("unvisited_O", 2)]
    store = make_store(list(range(len(layout))), [count for _, count in layout])
    labels = torch.cat(
        [torch.zeros(len(values)), torch.ones(1), torch.full((4,), 2), torch.full((3,), 4), torch.zeros(2)]
    ).long()
    store.probabilities = F.one_hot(labels, len(LABELS)).float() * 0.7 + 0.06
    store.logit_cache = torch.randn(len(store), generator=torch.Generator().manual_seed(2))
    store.logit_cache[: len(values)] = values.float()
    store.logit_cache[len(values) + 1 : len(values) + 5] = 1.5
    store.visited[:] = True
    store.visited[-5:] = False
    reliable = select_reliable_spans(store)
    assert reliable.dtype == torch.bool and len(reliable) == len(store)
    assert torch.equal(reliable[: len(values)], is_high)
    assert reliable[len(values)]  # a class with one span keeps it
    assert reliable[len(values) + 1 : len(values) + 5].all()  # constant scores: keep all
    assert reliable[-5:].all()  # never scored yet: trusted with the teacher's label until first scored
    # the selection is invariant to an affine rescaling of a class's scores (min-max normalisation)
    store.logit_cache[: len(values)] = values.float() * 3 + 7
    assert torch.equal(select_reliable_spans(store), reliable)


def test_select_reliable_spans_on_an_empty_visit():
    store = make_store([0, 1], [2, 3])
    assert select_reliable_spans(store).all()  # nothing scored yet: every teacher label is trusted


# ---------------------------------------------------------------------------------------------------------------
# Margins, refinement targets, neighbours, target loss, EMA schedule
# ---------------------------------------------------------------------------------------------------------------


def test_class_margins_shrink_towards_zero():
    margins = class_margins(torch.tensor([3.0, 0.0, 5.0, -2.0]), torch.tensor([2.0, 0.0, 4.0, 1.0]))
    assert margins.tolist() == [1.0, 0.0, 1.0, -1.0]


def test_l1_normalize_keeps_zero_rows():
    rows = l1_normalize(torch.tensor([[1.0, 3.0, 0.0], [0.0, 0.0, 0.0]]))
    assert rows.tolist() == [[0.25, 0.75, 0.0], [0.0, 0.0, 0.0]]


def test_refinement_targets_on_hand_made_rows():
    logits = torch.tensor(
        [
            [2.0, 1.0, -1.0],  # argmax O: O forced into the global view although 2 < its margin 5
            [-1.0, 0.2, 3.0],  # global view {2}; no neighbour class passes its margin
            [-3.0, -1.0, -2.0],  # nothing passes, argmax is not O: all-zero
            [0.0, 6.0, 0.8],  # global {1, 2}, local {0, 1}
        ]
    )
    counts = torch.tensor([[1.0, 3.0, 1.0], [2.0, 2.0, 2.0], [0.0, 0.0, 0.0], [4.0, 3.0, 0.0]])
    proto_margins = torch.tensor([5.0, 0.5, 0.5])
    neighbour_margins = torch.tensor([2.0, 2.0, 2.0])
    targets = refinement_targets(logits, counts, proto_margins, neighbour_margins)
    expected = torch.tensor(
        [
            [0.25, 0.75, 0.0],  # ((1/2, 1/2, 0) + (0, 1, 0)) / 2
            [0.0, 0.0, 1.0],  # ((0, 0, 1) + 0) / 2, renormalised
            [0.0, 0.0, 0.0],
            [0.25, 0.5, 0.25],  # ((0, 1/2, 1/2) + (1/2, 1/2, 0)) / 2
        ]
    )
    torch.testing.assert_close(targets, expected)


def test_knn_label_counts_on_a_tiny_bank():
    bank = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [-1.0, 0.0, 0.0]])
    bank_labels = torch.tensor([1, 2, 2, 0])
    queries = F.normalize(torch.tensor([[1.0, 0.5, 0.1], [-1.0, 0.0, 0.2]]), dim=-1)
    counts = knn_label_counts(queries, bank, bank_labels, k=3, num_labels=3)
    # query 0: similarities .89 (label 1), .45 (2), .09 (2), -.89 (0); query 1: -.98, 0, .2, .98
    assert counts.tolist() == [[0.0, 1.0, 2.0], [1.0, 0.0, 2.0]]
    everything = knn_label_counts(queries, bank, bank_labels, k=200, num_labels=3)  # k capped at the bank size
    assert everything.tolist() == [[1.0, 1.0, 2.0]] * 2


TARGET_LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0], [1.0, 1.0, 1.0], [-2.0, 4.0, 0.0]])
SOFT_LABELS = torch.tensor([[0.7, 0.2, 0.1], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.1, 0.8, 0.1]])
KEPT = torch.tensor([True, True, False, False])
FILTERED = torch.tensor([False, False, False, True])


def hand_target_loss(scores: np.ndarray) -> float:
    def log_softmax(row):
        return row - np.log(np.exp(row).sum())

    soft = SOFT_LABELS.numpy().astype(np.float64)
    total = -(soft[0] * log_softmax(scores[0])).sum() - (soft[1] * log_softmax(scores[1])).sum()
    total -= log_softmax(scores[3])[0]  # filtered: trained towards O
    return total / 3  # |K| + |F|


def test_target_span_loss_on_logits():
    loss = target_span_loss(TARGET_LOGITS, SOFT_LABELS, KEPT, FILTERED, "logits")
    assert loss.item() == pytest.approx(hand_target_loss(TARGET_LOGITS.double().numpy()), rel=1e-6)


def test_target_span_loss_on_probabilities_is_a_double_softmax():
    loss = target_span_loss(TARGET_LOGITS, SOFT_LABELS, KEPT, FILTERED, "probs")
    probabilities = TARGET_LOGITS.double().softmax(-1).numpy()
    assert loss.item() == pytest.approx(hand_target_loss(probabilities), rel=1e-6)
    # log-softmax over a probability vector: per span between log C + 1/C - 1 and log(C - 1 + e)
    assert math.log(3) + 1 / 3 - 1 <= loss.item() <= math.log(2 + math.e)


@pytest.mark.parametrize("mode", ["probs", "logits"])
def test_target_span_loss_without_selected_spans_is_zero(mode):
    logits = TARGET_LOGITS.clone().requires_grad_()
    nothing = torch.zeros(4, dtype=torch.bool)
    loss = target_span_loss(logits, SOFT_LABELS, nothing, nothing, mode)
    assert loss.item() == 0.0 and not torch.isnan(loss)
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_ema_schedule():
    assert ema_momentum(2, 20, 0.95, 0.80, 1) == pytest.approx(0.942, abs=5e-4)
    assert ema_momentum(19, 20, 0.95, 0.80, 1) == pytest.approx(0.808, abs=5e-4)
    assert ema_momentum(1, 20, 0.95, 0.80, 1) == pytest.approx(0.95)
    assert ema_momentum(20, 20, 0.95, 0.80, 1) == pytest.approx(0.80)


# ---------------------------------------------------------------------------------------------------------------
# Pseudo-label store
# ---------------------------------------------------------------------------------------------------------------


def hand_predictions() -> tuple[list[int], list[SentencePrediction]]:
    words = enumerate_spans(3, 2)  # (0,0) (0,1) (1,1) (1,2) (2,2)
    probabilities = np.array(
        [
            [0.2, 0.7, 0.1],  # entity, overlaps the better span (0,1): pruned -> O
            [0.1, 0.1, 0.8],  # entity, kept
            [0.9, 0.05, 0.05],  # O
            [0.6, 0.2, 0.2],  # O
            [0.1, 0.85, 0.05],  # entity, kept
        ],
        dtype=np.float32,
    )
    single = np.array([[0.4, 0.6, 0.0]], dtype=np.float32)
    return [10, 3], [
        SentencePrediction([], words, probabilities, None),
        SentencePrediction([], enumerate_spans(1, 2), single, None),
    ]


@pytest.mark.parametrize("pruning", ["legacy", "greedy"])
def test_store_from_predictions(pruning):
    sentence_ids, predictions = hand_predictions()
    store = PseudoLabelStore.from_predictions(sentence_ids, predictions, pruning)
    one_hot_o = [1.0, 0.0, 0.0]
    expected = [one_hot_o, predictions[0].probabilities[1].tolist(), one_hot_o, one_hot_o]
    expected += [predictions[0].probabilities[4].tolist(), predictions[1].probabilities[0].tolist()]
    torch.testing.assert_close(store.probabilities, torch.tensor(expected))
    assert len(store) == 6 and store.num_labels == 3
    assert store.offsets.tolist() == [0, 5, 6]
    assert store.span_words.tolist() == enumerate_spans(3, 2).tolist() + [[0, 0]]
    assert store.reliable.all() and not store.visited.any()
    assert torch.equal(store.logit_cache, torch.ones(6))
    torch.testing.assert_close(store.probabilities.sum(1), torch.ones(6))


def test_store_batch_rows_and_errors():
    sentence_ids, predictions = hand_predictions()
    store = PseudoLabelStore.from_predictions(sentence_ids, predictions)
    span_mask = torch.tensor([[True, False, False, False, False], [True, True, True, True, True]])
    rows = store.batch_rows(torch.tensor([3, 10]), span_mask)
    assert rows.tolist() == [[5, -1, -1, -1, -1], [0, 1, 2, 3, 4]]
    with pytest.raises(ValueError, match="differ"):
        store.batch_rows(torch.tensor([10, 3]), span_mask)  # 1 and 5 spans swapped
    for unknown in (7, 99, 0):
        with pytest.raises(ValueError, match="without pseudo-labels"):
            store.batch_rows(torch.tensor([unknown, 10]), span_mask)
    with pytest.raises(ValueError, match="unique"):
        PseudoLabelStore(torch.tensor([1, 1]), torch.tensor([1, 1]), torch.zeros(2, 2), torch.ones(2, 3))


def test_store_save_and_load_round_trip(tmp_path):
    sentence_ids, predictions = hand_predictions()
    store = PseudoLabelStore.from_predictions(sentence_ids, predictions)
    store.reliable[[1, 4]] = False
    store.visited[:3] = True
    store.logit_cache = torch.randn(6, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "labels.pt"
    store.save(path)
    assert not Path(f"{path}.tmp").exists()
    loaded = PseudoLabelStore.load(path)
    for name, tensor in store.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    span_mask = torch.tensor([[True, False, False, False, False]])
    assert loaded.batch_rows(torch.tensor([3]), span_mask).tolist() == [[5, -1, -1, -1, -1]]


def test_store_state_with_a_full_logit_cache_keeps_what_selection_reads():
    sentence_ids, predictions = hand_predictions()
    store = PseudoLabelStore.from_predictions(sentence_ids, predictions)
    state = store.state_dict()
    state["logit_cache"] = torch.randn(len(store), store.num_labels, generator=torch.Generator().manual_seed(1))
    loaded = PseudoLabelStore.from_state_dict(state)
    pseudo_classes = store.probabilities.argmax(1)
    assert torch.equal(loaded.logit_cache, state["logit_cache"][torch.arange(len(store)), pseudo_classes])


def test_store_memory_grows_with_real_spans_not_padding():
    num_sentences, num_words, num_labels = 50, 14, 5  # about the German average sentence length
    spans_per_sentence = len(enumerate_spans(num_words, 4))  # 4n - 6 = 50
    store = make_store(list(range(num_sentences)), [spans_per_sentence] * num_sentences, num_labels)
    total = num_sentences * spans_per_sentence
    # probabilities (float32 x C), pseudo-class logit (float32), span words (int16 x 2), reliable + visited (bool),
    # ids and offsets
    expected = total * (num_labels * 4 + 4 + 2 * 2 + 2) + num_sentences * 8 + (num_sentences + 1) * 8
    assert store.nbytes() == expected
    padded = num_sentences * 512 * num_labels * 4  # one N x 512 x C float32 tensor of the reference code
    assert store.nbytes() < 0.3 * padded


# ---------------------------------------------------------------------------------------------------------------
# A tiny student run
# ---------------------------------------------------------------------------------------------------------------

SOURCE_RECORDS = list(TINY_SOURCE_RECORDS)
TARGET_RECORDS = list(TINY_TARGET_RECORDS)
EPOCHS = 4
STEPS_PER_EPOCH = 4  # 8 source sentences, 2 per step
RESUME_STEP = 10  # inside epoch 2: after the first anchor selection, while refinement runs
EPOCH_END_STEP = 8  # the last step of epoch 1: saved before the end-of-epoch hooks run
SAVE_STEPS = 2


@pytest.fixture(scope="module")
def student_data(tiny_encoder_dir, tmp_path_factory):
    source = load_spans(SOURCE_RECORDS, labels=LABELS)
    target = load_spans(TARGET_RECORDS, labels=LABELS, unlabeled=True)
    torch.manual_seed(0)
    teacher = MaralForSpanNER.from_encoder(str(tiny_encoder_dir), labels=LABELS)
    store = generate_pseudo_labels(teacher, target, batch_size=8, pruning="legacy")
    path = tmp_path_factory.mktemp("pseudo_labels") / PSEUDO_LABEL_FILE
    store.save(path)
    return {"source": source, "target": target, "labels_path": path, "teacher": teacher}


def student_args(output_dir) -> MaralTrainingArguments:
    return MaralTrainingArguments(
        output_dir=str(output_dir),
        use_cpu=True,
        report_to="none",
        method="maral",
        num_train_epochs=EPOCHS,
        per_device_train_batch_size=2,
        per_device_eval_batch_size=8,
        learning_rate=1e-3,
        warmup_steps=0,
        logging_steps=1,
        save_strategy="steps",
        save_steps=SAVE_STEPS,
        seed=0,
        knn_k=5,
        knn_o_keep_rate=0.3,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def build_student(encoder_dir, data, output_dir):
    """Model, objective and trainer of a student run, built identically for a fresh and a resumed run."""
    torch.manual_seed(1)
    model = MaralForSpanNER.from_encoder(str(encoder_dir), labels=LABELS, classifier_dropout=0.0)
    args = student_args(output_dir)
    objective = MaralObjective(
        PseudoLabelStore.load(data["labels_path"]),
        count_span_labels(data["source"]),
        class_weights=None,
        settings=args,
        num_epochs=EPOCHS,
        seed=0,
        gold_by_sentence=gold_spans_by_sentence(data["target"]),
    )
    trainer = MaralTrainer(
        model=model,
        args=args,
        train_dataset=data["source"],
        target_dataset=data["target"],
        objective=objective,
        processing_class=model.tokenizer,
    )
    return model, objective, trainer


class StoreSnapshots(TrainerCallback):
    """Copies the pseudo-labels and anchors after the objective's start- and end-of-epoch work."""

    def __init__(self, objective: MaralObjective) -> None:
        self.objective = objective
        self.begin: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.end: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def _snapshot(self):
        return self.objective.store.probabilities.clone(), self.objective.store.reliable.clone()

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.begin[int(math.floor(state.epoch or 0))] = self._snapshot()

    def on_epoch_end(self, args, state, control, **kwargs):
        self.end[int(round(state.epoch)) - 1] = self._snapshot()


def record_target_steps(trainer: MaralTrainer, objective: MaralObjective) -> dict[int, dict[str, torch.Tensor]]:
    """Re-derives, from each step's target batch, the per-epoch sums behind the target prior and the prototype
    margins: soft labels of the visited spans after the step, and the target logit of each span's hard label read
    before the step. Also checks that the store caches each span's logit for its pseudo-class after the step."""
    stream = trainer.target_stream
    draw, step, compute_logits = stream.next_batch, objective.compute_loss, trainer.model.vmf_logits
    drawn: dict[str, dict[str, torch.Tensor]] = {}
    sums: dict[int, dict[str, torch.Tensor]] = defaultdict(
        lambda: {name: torch.zeros(len(LABELS), dtype=torch.float64) for name in ("prior", "proto", "count")}
    )

    def next_batch():
        drawn["batch"] = draw()
        return drawn["batch"]

    def vmf_logits(projections):  # the last call of a step scores its target batch
        drawn["logits"] = compute_logits(projections)
        return drawn["logits"]

    def compute_loss(trainer_, model, inputs):
        hard_before = objective.store.probabilities.argmax(1)
        result = step(trainer_, model, inputs)
        batch, logits = drawn.pop("batch"), drawn.pop("logits").detach().cpu()
        rows = objective.store.batch_rows(batch["sentence_ids"], batch["span_mask"])[batch["span_mask"]]
        hard = hard_before[rows]
        record = sums[objective.epoch]
        record["prior"] += objective.store.probabilities[rows].double().sum(0)
        record["proto"].index_add_(0, hard, logits.gather(1, hard.unsqueeze(1)).squeeze(1).double())
        hard_after = objective.store.probabilities[rows].argmax(1, keepdim=True)
        assert torch.equal(objective.store.logit_cache[rows], logits.gather(1, hard_after).squeeze(1).float())
        record["count"] += torch.bincount(hard, minlength=len(LABELS)).double()
        return result

    stream.next_batch = next_batch
    objective.compute_loss = compute_loss
    trainer.model.vmf_logits = vmf_logits
    return sums


@pytest.fixture(scope="module")
def student_run(tiny_encoder_dir, student_data, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("student_run")
    model, objective, trainer = build_student(tiny_encoder_dir, student_data, output_dir)
    snapshots = StoreSnapshots(objective)
    trainer.add_callback(snapshots)
    sums = record_target_steps(trainer, objective)
    initial_store = PseudoLabelStore.load(student_data["labels_path"])
    trainer.train()
    return {
        "model": model,
        "objective": objective,
        "trainer": trainer,
        "snapshots": snapshots,
        "sums": sums,
        "initial_store": initial_store,
        "output_dir": output_dir,
    }


def test_student_run_logs_finite_loss_terms(student_run):
    trainer = student_run["trainer"]
    assert trainer.state.global_step == EPOCHS * STEPS_PER_EPOCH
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == EPOCHS * STEPS_PER_EPOCH
    for entry in logs:
        for name in ("source_loss", "target_loss", "mlm_loss"):
            assert np.isfinite(entry[name]), (name, entry)
        assert entry["source_loss"] > 0 and entry["target_loss"] > 0 and entry["mlm_loss"] >= 0
        expected = entry["source_loss"] + entry["target_loss"] + 1e-2 * entry["mlm_loss"]
        assert entry["loss"] == pytest.approx(expected, rel=1e-3, abs=1e-4)
    assert sum(entry["mlm_loss"] > 0 for entry in logs) > len(logs) // 2  # 0 only when nothing was masked
    assert student_run["model"].config.prediction_head == "vmf"


def test_student_history_has_one_record_per_epoch(student_run):
    history = student_run["objective"].history
    assert [record["epoch"] for record in history] == list(range(EPOCHS))
    keys = {"epoch", "target_prior", "proto_margins", "neighbour_margins", "reliable_fraction", "visited_fraction"}
    for record in history:
        assert keys | {"bank_size", "pseudo_label_oracle"} <= set(record)
        assert list(record["target_prior"]) == LABELS
        assert sum(record["target_prior"].values()) == pytest.approx(1.0, abs=1e-5)
        assert record["visited_fraction"] == 1.0  # 6 target sentences, at least 4 x 2 drawn per epoch
        assert record["bank_size"] > 0
        assert 0.0 <= record["pseudo_label_oracle"]["f1"] <= 1.0
        assert json.loads(json.dumps(record)) == record
    # before the first anchor selection (epochs 0-1) every span is reliable; afterwards not
    for record in history[:2]:
        assert all(value in (None, 1.0) for value in record["reliable_fraction"].values())
    assert any(value is not None and value < 1.0 for value in history[2]["reliable_fraction"].values())


def test_target_prior_is_the_sum_of_the_visited_soft_labels(student_run):
    objective, sums = student_run["objective"], student_run["sums"]
    assert sorted(sums) == list(range(EPOCHS))
    for record in objective.history:
        prior = sums[record["epoch"]]["prior"]
        expected = (prior / prior.sum()).clamp(min=objective.settings.prior_floor).float()
        assert list(record["target_prior"].values()) == pytest.approx(expected.tolist(), rel=1e-6, abs=1e-9)
    last = sums[EPOCHS - 1]["prior"]
    torch.testing.assert_close(objective.target_prior, (last / last.sum()).float())


def test_margins_are_class_means_of_the_epoch(student_run):
    objective, sums = student_run["objective"], student_run["sums"]
    for record in objective.history:
        margins = list(record["proto_margins"].values())
        neighbour = np.array(list(record["neighbour_margins"].values()))
        if record["epoch"] < objective.settings.update_soft_start:
            assert margins == [0.0] * len(LABELS) and not neighbour.any()
            continue
        epoch_sums = sums[record["epoch"]]
        expected = (epoch_sums["proto"] / (epoch_sums["count"] + 1)).float()
        assert margins == pytest.approx(expected.tolist(), rel=1e-5, abs=1e-6)
        assert np.all((neighbour >= 0) & (neighbour <= objective.settings.knn_k))
        assert neighbour.any()


def test_refinement_moves_only_unreliable_labels(student_run):
    snapshots = student_run["snapshots"]
    initial = student_run["initial_store"].probabilities
    # epochs 0 and 1 do not refine
    for epoch in (0, 1):
        assert torch.equal(snapshots.end[epoch][0], initial)
    for epoch in (2, 3):
        before, reliable = snapshots.begin[epoch]
        after, reliable_after = snapshots.end[epoch]
        assert torch.equal(reliable, reliable_after)  # anchors are chosen at the epoch start only
        assert 0 < reliable.sum() < len(reliable)
        assert torch.equal(after[reliable], before[reliable])
        changed = (after != before).any(1)
        assert changed.any() and not (changed & reliable).any()
        assert torch.isfinite(after).all() and (after >= 0).all()
        torch.testing.assert_close(after.sum(1), torch.ones(len(after)))
    # the selection of epoch 3 is made on the labels refined during epoch 2
    assert torch.equal(snapshots.begin[3][0], snapshots.end[2][0])


def test_student_state_is_saved_in_checkpoints(student_run):
    state = torch.load(
        student_run["output_dir"] / f"checkpoint-{RESUME_STEP}" / "maral_trainer_state.pt", weights_only=True
    )
    assert state["objective"] == "maral"
    assert int(state["objective_state"]["epoch"]) == RESUME_STEP // STEPS_PER_EPOCH
    assert not state["objective_state"]["store"]["reliable"].all()


@pytest.mark.parametrize("resume_step", [RESUME_STEP, EPOCH_END_STEP])
def test_resumed_student_run_matches_the_uninterrupted_one(
    student_run, tiny_encoder_dir, student_data, tmp_path, resume_step
):
    model, objective, trainer = build_student(tiny_encoder_dir, student_data, tmp_path)
    trainer.train(resume_from_checkpoint=str(student_run["output_dir"] / f"checkpoint-{resume_step}"))
    assert trainer.state.global_step == EPOCHS * STEPS_PER_EPOCH
    reference_model, reference = student_run["model"], student_run["objective"]
    expected_state = reference_model.state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, expected_state[name]), name
    for name in ("vmf_means", "vmf_counts", "vmf_kappa", "vmf_log_normalizer"):
        assert torch.equal(getattr(model, name), getattr(reference_model, name)), name
    for name, tensor in objective.store.state_dict().items():
        assert torch.equal(tensor, reference.store.state_dict()[name]), name
    for name in ("target_prior", "proto_margins", "neighbour_margins", "bank", "bank_labels"):
        assert torch.equal(getattr(objective, name), getattr(reference, name)), name
    assert objective.history == reference.history
    assert model.config.prediction_head == "vmf"


def test_saved_student_predicts_identically(student_run, tmp_path):
    model = student_run["model"]
    model.save_pretrained(tmp_path)
    texts = [record["context"] for record in TARGET_RECORDS]
    words = [text.split() for text in texts]
    expected = model.predict(texts)
    expected_probabilities = [prediction.probabilities for prediction in model.predict_words(words)]
    for loaded in (
        MaralForSpanNER.from_pretrained(tmp_path),
        AutoModel.from_pretrained(tmp_path, trust_remote_code=True),
    ):
        assert loaded.config.prediction_head == "vmf"
        for name in ("vmf_means", "vmf_counts", "vmf_kappa", "vmf_log_normalizer"):
            assert torch.equal(getattr(loaded, name), getattr(model, name)), name
        assert loaded.predict(texts) == expected
        for got, want in zip(loaded.predict_words(words), expected_probabilities):
            np.testing.assert_array_equal(got.probabilities, want)
    # the vMF head, not the MLP classifier, produced these probabilities
    mlp_model = MaralForSpanNER.from_pretrained(tmp_path, prediction_head="mlp")
    assert not np.allclose(mlp_model.predict_words(words[:1])[0].probabilities, expected_probabilities[0])


# ---------------------------------------------------------------------------------------------------------------
# Teacher -> student pipeline through `run_xner`
# ---------------------------------------------------------------------------------------------------------------

PIPELINE_TARGET_TEST = [
    {"context": "Angela Merkel besuchte Paris .", "span_posLabel": {"0;1": "PER", "3;3": "LOC"}},
    {"context": "El presidente de España viajó a Madrid .", "span_posLabel": {"3;3": "LOC", "6;6": "LOC"}},
]


@pytest.fixture(scope="module")
def pipeline_files(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("pipeline_data")
    files = {
        "source_train_file": SOURCE_RECORDS[:6],
        "source_validation_file": SOURCE_RECORDS[6:],
        "target_unlabeled_file": TARGET_RECORDS[:4],
        "target_test_file": PIPELINE_TARGET_TEST,
    }
    paths = {}
    for name, records in files.items():
        path = folder / f"{name}.json"
        path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
        paths[name] = str(path)
    return paths


def pipeline_argv(encoder_dir, files, output_dir, *extra) -> list[str]:
    argv = ["--model_name_or_path", str(encoder_dir), "--output_dir", str(output_dir)]
    for name, path in files.items():
        argv += [f"--{name}", path]
    argv += [
        "--do_train",
        "--method",
        "maral",
        "--teacher_epochs",
        "2",
        "--num_train_epochs",
        "3",
        "--per_device_train_batch_size",
        "4",
        "--per_device_eval_batch_size",
        "8",
        "--knn_k",
        "5",
        "--learning_rate",
        "1e-3",
        "--use_cpu",
        "--report_to",
        "none",
        "--save_strategy",
        "no",
        "--disable_tqdm",
        "true",
        "--seed",
        "0",
    ]
    return argv + list(extra)


def stage_mtimes(output_dir: Path) -> dict[str, int]:
    return {stage: (output_dir / stage / STAGE_MARKER).stat().st_mtime_ns for stage in ("teacher", "rounds/round_1")}


@pytest.fixture(scope="module")
def pipeline_run(tiny_encoder_dir, pipeline_files, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("pipeline") / "out"
    results = run_xner.main(pipeline_argv(tiny_encoder_dir, pipeline_files, output_dir))
    return output_dir, results


def test_pipeline_writes_stages_and_results(pipeline_run):
    output_dir, results = pipeline_run
    for stage in ("teacher", "rounds/round_1"):
        marker = json.loads((output_dir / stage / STAGE_MARKER).read_text(encoding="utf-8"))
        assert marker["stage"] == stage
        assert (output_dir / stage / PSEUDO_LABEL_FILE).is_file()
        assert not (output_dir / f"{stage}.partial").exists()
        assert not list((output_dir / stage).glob("checkpoint-*"))
    all_results = json.loads((output_dir / "all_results.json").read_text(encoding="utf-8"))
    for key in ("round_1_target_test_span_f1", "teacher_target_test_span_f1", "teacher_pseudo_label_oracle_f1"):
        assert key in all_results and key in results, key
        assert 0.0 <= all_results[key] <= 1.0
    log = [json.loads(line) for line in (output_dir / "self_training_log.jsonl").read_text().splitlines()]
    assert log[0]["stage"] == "teacher" and "pseudo_label_oracle" in log[0]
    assert [record["epoch"] for record in log[1:]] == [0, 1, 2]
    assert {record["stage"] for record in log[1:]} == {"round_1"}
    teacher = json.loads((output_dir / "teacher" / "config.json").read_text(encoding="utf-8"))
    student = json.loads((output_dir / "config.json").read_text(encoding="utf-8"))
    assert teacher["prediction_head"] == "mlp" and student["prediction_head"] == "vmf"


def test_pipeline_rerun_skips_finished_stages(pipeline_run, tiny_encoder_dir, pipeline_files, caplog):
    output_dir, results = pipeline_run
    before = stage_mtimes(output_dir)
    caplog.set_level(logging.INFO, logger="self_training_maral")
    again = run_xner.main(pipeline_argv(tiny_encoder_dir, pipeline_files, output_dir, "--overwrite_output_dir"))
    assert stage_mtimes(output_dir) == before
    skipped = [record.getMessage() for record in caplog.records if "skipping" in record.getMessage()]
    assert len(skipped) == 2 and "teacher" in skipped[0] and "rounds/round_1" in skipped[1]
    assert again["round_1_target_test_span_f1"] == results["round_1_target_test_span_f1"]


def test_pipeline_replaces_a_leftover_partial_stage(pipeline_run, tiny_encoder_dir, pipeline_files, caplog):
    output_dir, _ = pipeline_run
    teacher_before = stage_mtimes(output_dir)["teacher"]
    round_dir = output_dir / "rounds" / "round_1"
    partial = output_dir / "rounds" / "round_1.partial"
    os.rename(round_dir, partial)  # as if the stage had been interrupted before its rename ...
    (partial / "junk.bin").write_bytes(b"\x00junk")  # ... with junk and a stale marker in it
    (partial / STAGE_MARKER).write_text('{"stage": "junk", "metrics": {"round_1_target_test_span_f1": -1}}')
    caplog.set_level(logging.INFO, logger="self_training_maral")
    results = run_xner.main(pipeline_argv(tiny_encoder_dir, pipeline_files, output_dir, "--overwrite_output_dir"))
    assert not partial.exists()
    assert not (round_dir / "junk.bin").exists()
    assert json.loads((round_dir / STAGE_MARKER).read_text())["stage"] == "rounds/round_1"
    assert 0.0 <= results["round_1_target_test_span_f1"] <= 1.0
    assert stage_mtimes(output_dir)["teacher"] == teacher_before
    assert any("round_1" in record.getMessage() and "training in" in record.getMessage() for record in caplog.records)


def test_pipeline_retrains_finished_stages_when_a_setting_changes(
    pipeline_run, tiny_encoder_dir, pipeline_files, caplog
):
    output_dir, _ = pipeline_run
    before = stage_mtimes(output_dir)
    caplog.set_level(logging.INFO, logger="self_training_maral")
    changed = pipeline_argv(tiny_encoder_dir, pipeline_files, output_dir, "--overwrite_output_dir", "--ul_tau", "0.5")
    run_xner.main(changed)
    after = stage_mtimes(output_dir)
    assert all(after[stage] != before[stage] for stage in before), "both stages must be trained again"
    assert sum("trained with other settings" in message for message in caplog.messages) == 2
    assert not any("skipping" in message for message in caplog.messages)
