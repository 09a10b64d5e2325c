# Copyright 2026 The maral-xner authors. Licensed under the Apache License, Version 2.0.
"""`contproto`: ContProto (Zhou et al., ACL 2023) in the span framework, its settings and its pseudo-label update
(§8 of the method notes)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from modeling_maral import span_cross_entropy

from .base import batch_to_device, model_inputs, unwrap_model
from .losses import (
    per_class_counts,
    per_class_sums,
    soft_cross_entropy,
    supervised_contrastive_loss,
    symmetric_kl,
    values_at_labels,
)
from .prototypes import ClassPrototypes, class_means
from .pseudo_labels import STUDENT_CARD_SETTINGS, PseudoLabelObjective, PseudoLabelStore, ema_momentum
from .registry import ObjectiveContext, register_objective
from .settings import SettingCheck, help_text


@dataclass
class ContProtoSettings:
    """Hyper-parameters of ContProto. It also uses `ema_start`/`ema_end` (its pseudo-label EMA β) and the model's
    `contrastive_temperature` (SupCon temperature, 0.07).

    Args:
        contproto_prototype_momentum: EMA momentum α of ContProto's class prototypes.
        contproto_warmup_epochs: epochs before ContProto starts refining pseudo-labels towards prototypes.
        contproto_consistency_weight: weight of the symmetric-KL consistency between the two dropout views (L_reg).
        contproto_class_weighted: class-weighted source CE, as every method here; the paper uses plain CE
            (`false`). The paper's projection size is 128 (`--projection_dim 128`; ours 64, shared with MARAL).
    """

    contproto_prototype_momentum: float = field(
        default=0.99, metadata=help_text("ContProto prototype EMA momentum α.")
    )
    contproto_warmup_epochs: int = field(
        default=1, metadata=help_text("Epochs before ContProto refines pseudo-labels towards the prototypes.")
    )
    contproto_consistency_weight: float = field(
        default=0.0, metadata=help_text("Weight of ContProto's symmetric-KL consistency between the two views.")
    )
    contproto_class_weighted: bool = field(
        default=True, metadata=help_text("ContProto: class-weighted source CE (the paper: plain CE, false).")
    )
    help_group: ClassVar[str] = "ContProto"
    methods: ClassVar[tuple[str, ...]] = ("contproto",)
    checks: ClassVar[tuple[SettingCheck, ...]] = (
        SettingCheck("contproto_prototype_momentum", lambda value: 0 <= value < 1, "must be in [0, 1)"),
        SettingCheck("contproto_warmup_epochs", lambda value: value >= 0, "must be >= 0"),
        SettingCheck("contproto_consistency_weight", lambda value: value >= 0, "must be >= 0"),
    )


CONTPROTO_DESCRIPTION = """\
ContProto (Zhou et al., ACL 2023), teacher → student: a teacher trained on the labelled {source} spans
labels every span of the unlabelled {target} text; the student sees every batch in two dropout views and is
trained on the source gold and the soft pseudo-labels, with a supervised contrastive loss over the span
projections of both languages. EMA class prototypes move each target span's pseudo-label towards its nearest
prototype when that prototype is `O` or passes its class's automatic margin."""


def prototype_refinement(
    soft_labels: torch.Tensor, similarities: torch.Tensor, margins: torch.Tensor, momentum: float
) -> torch.Tensor:
    """ContProto's pseudo-label update: each row moves by EMA (`momentum` β) towards the one-hot of its most similar
    prototype when that prototype is `O` or the similarity exceeds the class margin; other rows stay.

    Example:
        >>> soft = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
        >>> similarity = torch.tensor([[0.1, 0.9], [0.1, 0.3]])
        >>> prototype_refinement(soft, similarity, torch.tensor([0.0, 0.5]), 0.5).tolist()
        [[0.5, 0.5], [1.0, 0.0]]
    """
    nearest = similarities.argmax(1)
    nearest_similarity = values_at_labels(similarities, nearest)
    passes = (nearest == 0) | (nearest_similarity > margins.to(similarities)[nearest])
    target = F.one_hot(nearest, soft_labels.size(1)).to(soft_labels)
    return torch.where(passes.unsqueeze(1), momentum * soft_labels + (1 - momentum) * target, soft_labels)


@register_objective(
    "contproto",
    display_name="ContProto teacher → student self-training",
    summary="ContProto: two-view SupCon + prototype pseudo-label refinement.",
    self_training=True,
    card_description=CONTPROTO_DESCRIPTION,
    card_settings=STUDENT_CARD_SETTINGS
    + (
        "projection_dim",
        "contrastive_temperature",
        "ema_start",
        "ema_end",
        "contproto_prototype_momentum",
        "contproto_warmup_epochs",
        "contproto_consistency_weight",
        "contproto_class_weighted",
    ),  # fmt: skip
)
class ContProtoObjective(PseudoLabelObjective):
    """ContProto (Zhou et al., ACL 2023) in the span framework: every source and target batch passes twice (two
    dropout views); class-weighted CE on source gold + soft CE on the target pseudo-labels (logits), SupCon over the
    projections of both views (source labels = gold, target labels = the current prediction), EMA prototypes, and
    from epoch `contproto_warmup_epochs` on, pseudo-labels moved towards the nearest prototype when it is `O` or
    passes its class's automatic margin (mean similarity of last epoch's spans of that pseudo-class).

    The upstream target-gold span weights are not ported (§8): every target span has weight 1.
    """

    def __init__(
        self,
        store: PseudoLabelStore,
        class_weights: torch.Tensor | None,
        settings: Any,
        num_epochs: int,
        temperature: float,
        gold_by_sentence: dict[int, list[tuple[int, int, int]]] | None = None,
    ) -> None:
        super().__init__(store, class_weights, settings.pseudo_label_pruning, gold_by_sentence)
        self.settings = settings
        self.num_epochs = num_epochs
        self.temperature = temperature
        self.prototypes = ClassPrototypes(store.num_labels, settings.contproto_prototype_momentum, per_span=True)
        self.margins = torch.full((store.num_labels,), math.inf)
        self._reset_similarity_sums()

    @classmethod
    def from_context(cls, context: ObjectiveContext) -> ContProtoObjective:
        return cls(
            context.store,
            context.class_weights,
            context.args,
            context.num_epochs,
            context.temperature,
            context.gold_by_sentence,
        )

    def start_epoch(self, trainer, epoch):
        self._reset_similarity_sums()

    def end_epoch(self, trainer, epoch):
        self.margins = class_means(self.similarity_sums, self.similarity_counts).float()

    def diagnostics(self, trainer) -> dict[str, Any]:
        labels = unwrap_model(trainer.model).config.labels
        return {"prototype_margins": dict(zip(labels, [None if math.isinf(m) else m for m in self.margins.tolist()]))}

    def compute_loss(self, trainer, model, inputs):
        device = trainer.args.device
        mask, gold = inputs["span_mask"], inputs["labels"].clamp(min=0)
        source_views = [model(**model_inputs(inputs)) for _ in range(2)]
        weights = self.class_weights if self.settings.contproto_class_weighted else None
        source_loss = sum(span_cross_entropy(view.logits, gold, mask, weights) for view in source_views) / 2
        target_batch = trainer.target_stream.next_batch()
        target_batch = batch_to_device(target_batch, device)  # moved once for both views
        first_view, target_mask, rows = self.target_forward(model, target_batch, device)
        second_view = model(**model_inputs(target_batch))
        target_views = [first_view, second_view]
        soft = self.store.probabilities[rows].to(device)
        target_loss = sum(soft_cross_entropy(view.logits[target_mask].float(), soft) for view in target_views) / 2
        predicted = first_view.logits[target_mask].detach().argmax(1)
        features = torch.cat(
            [view.projections[mask] for view in source_views]
            + [view.projections[target_mask] for view in target_views]
        )
        contrast_labels = torch.cat([gold[mask], gold[mask], predicted, predicted])
        contrastive_loss = supervised_contrastive_loss(features, contrast_labels, self.temperature)
        loss = source_loss + target_loss + contrastive_loss
        logs = {
            "source_loss": source_loss.item(),
            "target_loss": target_loss.item(),
            "contrastive_loss": contrastive_loss.item(),
        }
        if self.settings.contproto_consistency_weight > 0:
            consistency = symmetric_kl(
                torch.cat([source_views[0].logits[mask], first_view.logits[target_mask]]),
                torch.cat([source_views[1].logits[mask], second_view.logits[target_mask]]),
            )
            loss = loss + self.settings.contproto_consistency_weight * consistency
            logs["consistency_loss"] = consistency.item()
        target_features = first_view.projections[target_mask].detach()
        self.prototypes.update(
            torch.cat([source_views[0].projections[mask].detach(), target_features]),
            torch.cat([gold[mask], predicted]),
        )
        self._update_pseudo_labels(rows, soft, target_features)
        return loss, logs

    def _update_pseudo_labels(self, rows: torch.Tensor, soft: torch.Tensor, features: torch.Tensor) -> None:
        """Accumulates this epoch's margin statistics and, after the warm-up, refines the batch's pseudo-labels."""
        similarities = self.prototypes.similarities(features).cpu()
        hard = soft.argmax(1).cpu()
        num_labels = self.store.num_labels
        self.add_to_sum("similarity_sums", per_class_sums(hard, values_at_labels(similarities, hard), num_labels))
        self.add_to_sum("similarity_counts", per_class_counts(hard, num_labels))
        warmup = self.settings.contproto_warmup_epochs
        if self.epoch >= warmup:
            momentum = ema_momentum(
                self.epoch, self.num_epochs, self.settings.ema_start, self.settings.ema_end, warmup
            )
            self.store.probabilities[rows] = prototype_refinement(soft.cpu(), similarities, self.margins, momentum)

    def _reset_similarity_sums(self) -> None:
        self.similarity_sums = torch.zeros(self.store.num_labels, dtype=torch.float64)
        self.similarity_counts = torch.zeros(self.store.num_labels, dtype=torch.float64)

    def state_dict(self):
        return {
            **super().state_dict(),
            "prototypes": self.prototypes.state_dict(),
            "margins": self.margins,
            "similarity_sums": self.similarity_sums,
            "similarity_counts": self.similarity_counts,
        }

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.prototypes.load_state_dict(state["prototypes"])
        self.margins = state["margins"]
        self.similarity_sums, self.similarity_counts = state["similarity_sums"], state["similarity_counts"]
