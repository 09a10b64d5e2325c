# Copyright 2026 The maral-xner authors. Licensed under the Apache License, Version 2.0.
"""MARAL's progressive adaptation (§6.6-6.8 of the method notes): reliable anchors from a per-class 2-component
GMM, class-wise prototype and neighbour margins, the EMA schedule, kNN label counts and the refinement targets."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .losses import per_class_counts, per_class_sums

if TYPE_CHECKING:
    from .pseudo_labels import PseudoLabelStore


def fit_two_gaussians(
    values: torch.Tensor, max_iter: int = 10, reg_covar: float = 5e-4, tol: float = 1e-2
) -> torch.Tensor:
    """Posterior of the higher-mean component of a 1-D, 2-component Gaussian mixture (EM, k-means start).

    Mirrors scikit-learn's `GaussianMixture(2, max_iter, reg_covar, tol)` on one feature, but deterministic:
    k-means starts from the minimum and maximum.

    Args:
        values: `(M,)` scores, M ≥ 2 and not all equal.

    Returns:
        `(M,)` posterior probability of belonging to the component with the larger mean.
    """
    x = values.to(torch.float64)
    centers = torch.stack([x.min(), x.max()])
    for _ in range(10):
        assignment = (x.unsqueeze(1) - centers).abs().argmin(1)
        centers = torch.stack([x[assignment == k].mean() if (assignment == k).any() else centers[k] for k in (0, 1)])
    responsibilities = F.one_hot(assignment, 2).to(torch.float64)
    previous_bound = -math.inf
    for _ in range(max_iter):
        weights = responsibilities.sum(0) + 10 * torch.finfo(torch.float64).eps
        means = (responsibilities * x.unsqueeze(1)).sum(0) / weights
        variances = (responsibilities * (x.unsqueeze(1) - means) ** 2).sum(0) / weights + reg_covar
        log_joint = (
            torch.log(weights / len(x))
            - 0.5 * torch.log(2 * math.pi * variances)
            - 0.5 * (x.unsqueeze(1) - means) ** 2 / variances
        )
        log_norm = torch.logsumexp(log_joint, dim=1, keepdim=True)
        responsibilities = torch.exp(log_joint - log_norm)
        bound = log_norm.mean().item()
        if abs(bound - previous_bound) < tol:
            break
        previous_bound = bound
    return responsibilities[:, int(torch.argmax(means))]


def select_reliable_spans(
    store: PseudoLabelStore, max_iter: int = 10, reg_covar: float = 5e-4, tol: float = 1e-2
) -> torch.Tensor:
    """Reliable anchors (§6.6): per pseudo-class, a 2-component GMM on min-max-normalised cached logits of that
    class; a span is reliable when the higher-mean component's posterior exceeds 0.5.

    Classes with one span or constant scores keep all their spans. Spans the student has not scored yet (more
    target text than one epoch draws) keep their teacher label as trusted: they stay reliable until first scored.
    """
    hard_labels = store.probabilities.argmax(1)
    scores = store.logit_cache.double()
    reliable = ~store.visited
    for label in range(store.num_labels):
        members = torch.nonzero(store.visited & (hard_labels == label)).squeeze(1)
        if len(members) == 0:
            continue
        class_scores = scores[members]
        low, high = class_scores.min(), class_scores.max()
        if len(members) < 2 or high - low <= 0:
            reliable[members] = True
            continue
        posterior = fit_two_gaussians((class_scores - low) / (high - low), max_iter, reg_covar, tol)
        reliable[members] = posterior > 0.5
    return reliable


def class_margins(sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Class-wise margins `Σ value / (count + 1)` (one extra zero per class, §6.8)."""
    return sums / (counts + 1)


def l1_normalize(values: torch.Tensor) -> torch.Tensor:
    """Rows divided by their sum (all-zero rows stay zero)."""
    return values / values.sum(-1, keepdim=True).clamp(min=1e-12)


def refinement_targets(
    logits: torch.Tensor, neighbour_counts: torch.Tensor, proto_margins: torch.Tensor, neighbour_margins: torch.Tensor
) -> torch.Tensor:
    """Update direction `u` of §6.7: average of the global (logit > prototype margin, `O` forced when it is the
    argmax) and local (neighbour count > neighbour margin) class masks, L1-normalised."""
    global_view = (logits > proto_margins).to(logits.dtype)
    global_view[:, 0] = torch.where(logits.argmax(1) == 0, 1.0, global_view[:, 0])
    local_view = (neighbour_counts > neighbour_margins).to(logits.dtype)
    return l1_normalize((l1_normalize(global_view) + l1_normalize(local_view)) / 2)


def bank_neighbour_margins(
    bank: torch.Tensor, bank_labels: torch.Tensor, k: int, num_labels: int, chunk_size: int = 4096
) -> torch.Tensor:
    """Neighbour margins estimated from a projection bank alone: per class, the mean over its bank entries of the
    number of same-class entries among their `k` nearest other entries, as `class_margins` (one extra zero).

    Used when no epoch could count neighbours against an earlier bank (refinement from epoch 1 with
    `update_soft_start 0`); the bank holds every entity span and a sample of `O` spans, as the queries do.
    """
    sums = torch.zeros(num_labels, dtype=torch.float64)
    counts = torch.zeros(num_labels, dtype=torch.float64)
    k = min(k, len(bank) - 1)
    if k < 1:
        return class_margins(sums, counts).float()
    for start in range(0, len(bank), chunk_size):
        queries = bank[start : start + chunk_size]
        rows = torch.arange(len(queries))
        similarity = queries @ bank.T
        similarity[rows, start + rows] = -math.inf  # not its own neighbour
        neighbours = similarity.topk(k, dim=1).indices
        labels = bank_labels[start : start + chunk_size]
        same_class = (bank_labels[neighbours] == labels.unsqueeze(1)).sum(1)
        sums += per_class_sums(labels, same_class, num_labels)
        counts += per_class_counts(labels, num_labels)
    return class_margins(sums, counts).float()


def knn_label_counts(queries: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, k: int, num_labels: int):
    """Label counts among the `k` most similar bank entries (inner product = cosine for unit vectors)."""
    k = min(k, len(bank))
    neighbours = (queries @ bank.T).topk(k, dim=1).indices
    return F.one_hot(bank_labels[neighbours], num_labels).sum(1).to(queries.dtype)
