# Copyright 2026 The maral-xner authors. Licensed under the Apache License, Version 2.0.
"""Losses and per-class statistics shared by the objectives: class weights, soft CE, MARAL's target span loss,
SupCon, InfoNCE, symmetric KL and Jensen-Shannon divergence."""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)


def class_weights_from_counts(counts: np.ndarray) -> torch.Tensor:
    """Span class weights `w_c = C (1/log n_c) / Σ_c' (1/log n_c')` (§2.10 of the method notes).

    Counts below 2 are raised to 2 (a class seen once would get an infinite weight).

    Example:
        >>> class_weights_from_counts(np.array([709351, 6321, 6600, 7140, 3438])).round(decimals=3).tolist()
        [0.69, 1.063, 1.057, 1.048, 1.142]
    """
    counts = np.asarray(counts, dtype=np.float64)
    if (counts < 2).any():
        logger.warning("Classes with fewer than 2 training spans get the weight of a class seen twice: %s", counts)
    inverse_logs = 1.0 / np.log(np.maximum(counts, 2.0))
    return torch.tensor(len(counts) * inverse_logs / inverse_logs.sum(), dtype=torch.float32)


def per_class_sums(labels: torch.Tensor, values: torch.Tensor, num_labels: int) -> torch.Tensor:
    """`(C,)` float64 CPU sums of `values` grouped by `labels` (the per-epoch statistics of margins and priors).

    Example:
        >>> per_class_sums(torch.tensor([0, 2, 2]), torch.tensor([1.0, 2.0, 3.0]), 3).tolist()
        [1.0, 0.0, 5.0]
    """
    sums = torch.zeros(num_labels, dtype=torch.float64)
    return sums.index_add_(0, labels.cpu(), values.detach().double().cpu())


def values_at_labels(values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`values[i, labels[i]]` for every row `i` of a `(M, C)` tensor.

    Example:
        >>> values_at_labels(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([1, 0])).tolist()
        [2.0, 3.0]
    """
    return values.gather(1, labels.unsqueeze(1)).squeeze(1)


def per_class_counts(labels: torch.Tensor, num_labels: int) -> torch.Tensor:
    """`(C,)` CPU counts of each label (`torch.bincount` with every class present)."""
    return torch.bincount(labels.cpu(), minlength=num_labels)


def soft_cross_entropy(logits: torch.Tensor, soft_labels: torch.Tensor) -> torch.Tensor:
    """Mean over rows of `-Σ_c q_c log softmax(logits)_c` (0, not NaN, for no rows).

    Example:
        >>> soft_cross_entropy(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]])).item()  # -log(1/2)
        0.6931471824645996
    """
    if len(logits) == 0:
        return logits.sum() * 0.0
    return -(soft_labels * logits.log_softmax(-1)).sum(-1).mean()


def target_span_loss(
    adjusted_logits: torch.Tensor,
    soft_labels: torch.Tensor,
    kept: torch.Tensor,
    filtered: torch.Tensor,
    loss_input: str = "probs",
) -> torch.Tensor:
    """Target loss of §6.5: soft cross-entropy on the selected spans, towards `O` for the filtered ones.

    Args:
        adjusted_logits: `(M, C)` prior-adjusted vMF logits.
        soft_labels: `(M, C)` pseudo-labels.
        kept: `(M,)` spans trained towards their soft label.
        filtered: `(M,)` entity spans removed by overlap pruning, trained towards `O`.
        loss_input: `"probs"` applies log-softmax to the *probabilities* (the reference code's double softmax, a
            weak, noise-robust signal); `"logits"` is plain soft cross-entropy.
    """
    targets = torch.where(
        filtered.unsqueeze(1),
        F.one_hot(torch.zeros_like(filtered, dtype=torch.long), soft_labels.size(1)).to(soft_labels),
        soft_labels,
    )
    selected = kept | filtered
    scores = adjusted_logits.softmax(-1) if loss_input == "probs" else adjusted_logits
    return soft_cross_entropy(scores[selected], targets[selected])


def supervised_contrastive_loss(features: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """SupCon (Khosla et al., 2020) over unit-norm features: every anchor with a positive (same label, not itself)
    gets `-mean_p log(exp(z·z_p/T) / Σ_{a≠anchor} exp(z·z_a/T))`; the loss is the mean over those anchors
    (0 when there is none).

    Example:
        >>> features = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
        >>> round(supervised_contrastive_loss(features, torch.tensor([0, 0, 1]), 1.0).item(), 4)  # -log(e/(e+1))
        0.3133
    """
    count = len(features)
    self_pairs = torch.eye(count, dtype=torch.bool, device=features.device)
    positives = (labels.unsqueeze(0) == labels.unsqueeze(1)) & ~self_pairs
    anchors = positives.any(1)
    if not anchors.any():
        return features.sum() * 0.0
    similarity = (features.float() @ features.float().T / temperature).masked_fill(self_pairs, -math.inf)
    log_probability = similarity - torch.logsumexp(similarity, dim=1, keepdim=True)
    positive_log_probability = log_probability.masked_fill(~positives, 0.0).sum(1)
    return -(positive_log_probability[anchors] / positives.sum(1)[anchors]).mean()


def info_nce(anchors: torch.Tensor, positives: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between paired unit-norm rows (row i of `anchors` ↔ row i of `positives`, the other rows of
    the batch are the negatives); 0 for no pairs.

    Example:
        >>> pairs = torch.eye(2)
        >>> round(info_nce(pairs, pairs, 1.0).item(), 4)  # -log(e/(e+1))
        0.3133
    """
    if len(anchors) == 0:
        return anchors.sum() * 0.0
    logits = anchors.float() @ positives.float().T / temperature
    targets = torch.arange(len(anchors), device=anchors.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def symmetric_kl(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """`(KL(p_a‖p_b) + KL(p_b‖p_a)) / 2`, averaged over rows (R-Drop style consistency of two dropout views)."""
    if len(logits_a) == 0:
        return logits_a.sum() * 0.0
    log_a, log_b = logits_a.float().log_softmax(-1), logits_b.float().log_softmax(-1)
    kl_ab = (log_a.exp() * (log_a - log_b)).sum(-1)
    kl_ba = (log_b.exp() * (log_b - log_a)).sum(-1)
    return ((kl_ab + kl_ba) / 2).mean()


def jensen_shannon_divergence(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Mean over rows of `JS(p‖q) = (KL(p‖m) + KL(q‖m)) / 2` with `m = (p + q) / 2` (natural log; 0 for no rows).

    Example:
        >>> round(jensen_shannon_divergence(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])).item(), 4)
        0.6931
    """
    if len(p) == 0:
        return p.sum() * 0.0
    middle = (p + q) / 2

    def kl_to_middle(distribution: torch.Tensor) -> torch.Tensor:
        return (distribution * (torch.log(distribution + eps) - torch.log(middle + eps))).sum(-1)

    return ((kl_to_middle(p) + kl_to_middle(q)) / 2).mean()
