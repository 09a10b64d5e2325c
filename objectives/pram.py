# Copyright 2026 The maral-xner authors. Licensed under the Apache License, Version 2.0.
"""`pram`: PRAM (Huang et al., Findings ACL 2023) in the span framework, end-to-end, and its settings (§8 of the
method notes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from modeling_maral import span_cross_entropy

from .base import TrainingObjective, batch_to_device, model_inputs
from .losses import jensen_shannon_divergence
from .prototypes import ClassPrototypes
from .registry import ObjectiveContext, register_objective
from .settings import SettingCheck, help_text


@dataclass
class PramSettings:
    """Hyper-parameters of PRAM.

    Args:
        pram_prototype_momentum: EMA momentum λ of PRAM's class prototypes (per-batch class means of source spans).
        pram_temperature: temperature τ of PRAM's prototype-similarity distribution.
        pram_source_weight, pram_target_weight: weights α and β of the source and target consistency (JS) terms.
        pram_non_entity_rate: γ; at most γ x (number of entity spans) `O` spans enter a consistency term.
        pram_target_stop_gradient: the target term trains the features only, not the classifier: `JS(q‖sg(p))`.
            On unlabelled target spans the consistency is the only force on the classifier, and `JS(q‖p)` is lower
            when a span is declared an entity (`q` cannot be sharp for the diffuse `O` cluster, while the entity
            clusters are tight): with the gradient into `p`, the classifier drifts to predicting entities
            everywhere (on German, ORG for every capitalised noun). The paper lets both paths learn (`false`).
        pram_target_ramp_epochs: β rises linearly from 0 over this many epochs (0: β from the start, as the paper).
        pram_target_confidence: only target spans whose classifier confidence (max probability) reaches this value
            enter the target term (0: all, as the paper).
    """

    pram_prototype_momentum: float = field(default=0.9, metadata=help_text("PRAM prototype EMA momentum λ."))
    pram_temperature: float = field(default=0.2, metadata=help_text("PRAM similarity temperature τ."))
    pram_source_weight: float = field(default=1.0, metadata=help_text("PRAM source consistency weight α."))
    pram_target_weight: float = field(default=1.0, metadata=help_text("PRAM target consistency weight β."))
    pram_non_entity_rate: float = field(
        default=1.5, metadata=help_text("PRAM non-entity down-sampling γ (O spans per entity span).")
    )

    pram_target_stop_gradient: bool = field(
        default=True,
        metadata=help_text("PRAM: the target consistency does not train the classifier (JS(q‖sg(p))); paper: false."),
    )
    pram_target_ramp_epochs: float = field(
        default=0.0, metadata=help_text("PRAM: epochs over which β rises linearly from 0 (0: no ramp).")
    )
    pram_target_confidence: float = field(
        default=0.0, metadata=help_text("PRAM: smallest classifier confidence of a target span in the target term.")
    )

    help_group: ClassVar[str] = "PRAM"
    methods: ClassVar[tuple[str, ...]] = ("pram",)
    checks: ClassVar[tuple[SettingCheck, ...]] = (
        SettingCheck("pram_target_ramp_epochs", lambda value: value >= 0, "must be >= 0"),
        SettingCheck("pram_target_confidence", lambda value: 0 <= value <= 1, "must be in [0, 1]"),
        SettingCheck("pram_prototype_momentum", lambda value: 0 <= value < 1, "must be in [0, 1)"),
        SettingCheck("pram_temperature", lambda value: value > 0, "must be > 0"),
        SettingCheck("pram_source_weight", lambda value: value >= 0, "must be >= 0"),
        SettingCheck("pram_target_weight", lambda value: value >= 0, "must be >= 0"),
        SettingCheck("pram_non_entity_rate", lambda value: value >= 0, "must be >= 0"),
    )


PRAM_DESCRIPTION = """\
PRAM (Huang et al., Findings ACL 2023), trained end to end without a teacher: class-weighted span
cross-entropy on the labelled {source} spans plus a Jensen–Shannon consistency between the classifier's
distribution and the distribution of a span's similarities to EMA class prototypes (built from the {source}
gold), on {source} spans and on spans of the unlabelled {target} text."""


def downsample_non_entities(labels: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    """Keeps every entity span (label ≠ 0) and at most `rate x #entities` random `O` spans; returns the keep mask.

    Example:
        >>> keep = downsample_non_entities(torch.tensor([0, 0, 0, 0, 2]), 2.0, torch.Generator().manual_seed(0))
        >>> int(keep.sum()), bool(keep[4])
        (3, True)
    """
    is_entity = labels != 0
    budget = int(rate * int(is_entity.sum()))
    non_entities = torch.nonzero(~is_entity).squeeze(1)
    chosen = non_entities[torch.randperm(len(non_entities), generator=generator)[:budget].to(labels.device)]
    keep = is_entity.clone()
    keep[chosen] = True
    return keep


def attribution_consistency(
    logits: torch.Tensor,
    features: torch.Tensor,
    prototypes: ClassPrototypes,
    temperature: float,
    train_classifier: bool = True,
) -> torch.Tensor:
    """PRAM's attribution-prediction consistency: `JS(softmax(cos(h, C)/τ) ‖ softmax(logits))`, with gradients
    through the features and, with `train_classifier`, through the classifier's logits."""
    similarity_distribution = (prototypes.similarities(features.float()) / temperature).softmax(-1)
    predictions = logits.float() if train_classifier else logits.float().detach()
    return jensen_shannon_divergence(similarity_distribution, predictions.softmax(-1))


@register_objective(
    "pram",
    display_name="PRAM (prototype attribution-prediction consistency, end to end)",
    summary="PRAM: prototype attribution-prediction consistency, end-to-end.",
    self_training=False,
    needs_target_text=True,
    card_description=PRAM_DESCRIPTION,
    card_settings=(
        "projection_dim",
        "pram_prototype_momentum",
        "pram_temperature",
        "pram_source_weight",
        "pram_target_weight",
        "pram_non_entity_rate",
        "pram_target_stop_gradient",
        "pram_target_ramp_epochs",
        "pram_target_confidence",
    ),  # fmt: skip
)
class PramObjective(TrainingObjective):
    """PRAM (Huang et al., Findings ACL 2023) in the span framework, end-to-end without a teacher: class-weighted CE
    on source gold spans + α JS(q‖p) on source spans + β JS(q‖p) on target spans, where `q` is the softmax of the
    cosine similarities of a span's projection to EMA prototypes of the source classes and `p` the classifier's
    distribution; `O` spans are down-sampled to at most γ per entity span (target labels = the prediction).
    """

    def __init__(self, class_weights: torch.Tensor | None, num_labels: int, settings: Any, seed: int = 0) -> None:
        self.class_weights = class_weights
        self.settings = settings
        self.prototypes = ClassPrototypes(num_labels, settings.pram_prototype_momentum, per_span=False)
        self.sampling_generator = torch.Generator().manual_seed(seed)

    @classmethod
    def from_context(cls, context: ObjectiveContext) -> PramObjective:
        return cls(context.class_weights, context.num_labels, context.args, seed=context.seed)

    def compute_loss(self, trainer, model, inputs):
        settings = self.settings
        output = model(**model_inputs(inputs))
        mask, gold = inputs["span_mask"], inputs["labels"].clamp(min=0)
        source_loss = span_cross_entropy(output.logits, gold, mask, self.class_weights)
        features, logits, labels = output.projections[mask], output.logits[mask], gold[mask]
        self.prototypes.update(features, labels)
        keep = downsample_non_entities(labels, settings.pram_non_entity_rate, self.sampling_generator)
        source_consistency = attribution_consistency(
            logits[keep], features[keep], self.prototypes, settings.pram_temperature
        )
        target_batch = batch_to_device(trainer.target_stream.next_batch(), trainer.args.device)
        target_output = model(**model_inputs(target_batch))
        target_mask = target_batch["span_mask"]
        target_logits, target_features = target_output.logits[target_mask], target_output.projections[target_mask]
        confidence, predicted = target_logits.detach().float().softmax(-1).max(1)
        keep = downsample_non_entities(predicted, settings.pram_non_entity_rate, self.sampling_generator)
        keep &= confidence >= settings.pram_target_confidence
        target_consistency = attribution_consistency(
            target_logits[keep],
            target_features[keep],
            self.prototypes,
            settings.pram_temperature,
            train_classifier=not settings.pram_target_stop_gradient,
        )
        loss = (
            source_loss
            + settings.pram_source_weight * source_consistency
            + self.target_weight(trainer.state.epoch or 0.0) * target_consistency
        )
        return loss, {
            "source_loss": source_loss.item(),
            "source_consistency": source_consistency.item(),
            "target_consistency": target_consistency.item(),
        }

    def target_weight(self, epoch: float) -> float:
        """β at (fractional) `epoch`: `pram_target_weight`, ramped linearly from 0 over `pram_target_ramp_epochs`."""
        ramp = self.settings.pram_target_ramp_epochs
        return self.settings.pram_target_weight * (min(1.0, epoch / ramp) if ramp > 0 else 1.0)

    def state_dict(self):
        return {"prototypes": self.prototypes.state_dict(), "generator": self.sampling_generator.get_state()}

    def load_state_dict(self, state):
        self.prototypes.load_state_dict(state["prototypes"])
        self.sampling_generator.set_state(state["generator"])
