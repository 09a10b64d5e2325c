# Copyright 2026 The maral-xner authors. Licensed under the Apache License, Version 2.0.
"""`mcl`: MCL-NER's student stage (Mo et al., AAAI 2024) in the span framework, and its settings (§8 of the method
notes)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from modeling_maral import span_cross_entropy

from .base import batch_to_device, model_inputs
from .losses import info_nce
from .pseudo_labels import STUDENT_CARD_SETTINGS, PseudoLabelObjective, PseudoLabelStore
from .registry import ObjectiveContext, register_objective
from .settings import SettingCheck, help_text

logger = logging.getLogger(__name__)


@dataclass
class MclSettings:
    """Hyper-parameters of MCL-NER. It uses the model's `contrastive_temperature` for its InfoNCE terms.

    Args:
        mcl_confidence_threshold: MCL-NER trains on target spans whose teacher confidence reaches this value.
        mcl_contrast_weight: weight w₁ of the relation and sentence contrast terms (need code-switched data).
        mcl_distill_weight: weight w₂ of the squared error to the teacher's span distributions.
    """

    mcl_confidence_threshold: float = field(
        default=0.9, metadata=help_text("MCL-NER: smallest teacher confidence of a target span used for training.")
    )
    mcl_contrast_weight: float = field(
        default=0.1, metadata=help_text("MCL-NER contrast weight w₁ (relation + sentence; needs code-switched data).")
    )
    mcl_distill_weight: float = field(default=1.0, metadata=help_text("MCL-NER distillation (MSE) weight w₂."))

    help_group: ClassVar[str] = "MCL-NER"
    methods: ClassVar[tuple[str, ...]] = ("mcl",)
    checks: ClassVar[tuple[SettingCheck, ...]] = (
        SettingCheck("mcl_confidence_threshold", lambda value: 0 <= value <= 1, "must be in [0, 1]"),
        SettingCheck("mcl_contrast_weight", lambda value: value >= 0, "must be >= 0"),
        SettingCheck("mcl_distill_weight", lambda value: value >= 0, "must be >= 0"),
    )


MCL_DESCRIPTION = """\
MCL-NER (Mo et al., AAAI 2024), teacher → student: a teacher trained on the labelled {source} spans
labels every span of the unlabelled {target} text; the student is trained on the source gold, on the target spans
the teacher labels confidently, and to match the teacher's span distributions (squared error); with code-switched
{source} sentences, relation and sentence contrast terms align each sentence with its code-switched counterpart."""


def entity_positions(span_labels: torch.Tensor) -> list[torch.Tensor]:
    """Per sentence, the span positions of gold entities (label > 0), in span order."""
    return [torch.nonzero(row > 0).squeeze(1) for row in span_labels]


@register_objective(
    "mcl",
    display_name="MCL-NER teacher → student self-training",
    summary="MCL-NER, span form: confident-label CE + distillation + contrast.",
    self_training=True,
    card_description=MCL_DESCRIPTION,
    card_settings=STUDENT_CARD_SETTINGS
    + ("contrastive_temperature", "mcl_confidence_threshold", "mcl_contrast_weight", "mcl_distill_weight"),
)
class MclObjective(PseudoLabelObjective):
    """MCL-NER's student stage (Mo et al., AAAI 2024) in the span framework (a span = a start-end relation):
    source class-weighted CE + CE on the target spans whose teacher confidence reaches `mcl_confidence_threshold`
    (hard pseudo-labels) + w₂ x squared error between the student's and the teacher's span distributions; with
    code-switched counterparts of the source sentences, + w₁ x (relation contrast between each source entity span
    and its counterpart + sentence-level InfoNCE between a source sentence and its counterpart).

    Args:
        store: the teacher's pseudo-labels (kept fixed).
        class_weights: source span class weights.
        settings: the training arguments.
        temperature: InfoNCE temperature.
        code_switched: `{source sentence_id: {"tokens", "spans"}}` (see `data_loading.code_switch`), or `None`.
        gold_by_sentence: optional target gold spans, for the oracle diagnostics only.
    """

    def __init__(
        self,
        store: PseudoLabelStore,
        class_weights: torch.Tensor | None,
        settings: Any,
        temperature: float,
        code_switched: dict[int, dict[str, Any]] | None = None,
        gold_by_sentence: dict[int, list[tuple[int, int, int]]] | None = None,
    ) -> None:
        super().__init__(store, class_weights, settings.pseudo_label_pruning, gold_by_sentence)
        self.settings = settings
        self.temperature = temperature
        self.code_switched = code_switched
        if not code_switched:
            logger.info(
                "MCL-NER: no code-switched data (--code_switched_file or --bilingual_dictionary): the relation and "
                "sentence contrast terms are off."
            )

    @classmethod
    def from_context(cls, context: ObjectiveContext) -> MclObjective:
        return cls(
            context.store,
            context.class_weights,
            context.args,
            context.temperature,
            context.code_switched,
            context.gold_by_sentence,
        )

    def compute_loss(self, trainer, model, inputs):
        settings, device = self.settings, trainer.args.device
        use_contrast = bool(self.code_switched) and settings.mcl_contrast_weight > 0
        output = model(
            **model_inputs(inputs), return_projections=use_contrast, return_sentence_embeddings=use_contrast
        )
        source_loss = span_cross_entropy(output.logits, inputs["labels"], inputs["span_mask"], self.class_weights)
        target_output, mask, rows = self.target_forward(
            model, trainer.target_stream.next_batch(), device, return_projections=False
        )
        teacher = self.store.probabilities[rows].to(device)
        logits = target_output.logits[mask].float()
        confidence, pseudo_labels = teacher.max(1)
        confident = confidence >= settings.mcl_confidence_threshold
        target_loss = (
            F.cross_entropy(logits[confident], pseudo_labels[confident]) if confident.any() else logits.sum() * 0.0
        )
        distillation = F.mse_loss(logits.softmax(-1), teacher) if len(logits) else logits.sum() * 0.0
        loss = source_loss + target_loss + settings.mcl_distill_weight * distillation
        logs = {
            "source_loss": source_loss.item(),
            "target_loss": target_loss.item(),
            "distillation_loss": distillation.item(),
            "confident_fraction": float(confident.float().mean()) if len(confident) else 0.0,
        }
        if use_contrast:
            relation, sentence = self._contrast(trainer, model, inputs, output, device)
            loss = loss + settings.mcl_contrast_weight * (relation + sentence)
            logs.update(relation_contrast=relation.item(), sentence_contrast=sentence.item())
        return loss, logs

    def _contrast(self, trainer, model, inputs, output, device):
        """Relation (entity span ↔ counterpart span) and sentence (sentence ↔ counterpart) InfoNCE terms."""
        sentence_ids = inputs["sentence_ids"].tolist()
        paired = [index for index, sentence_id in enumerate(sentence_ids) if sentence_id in self.code_switched]
        if not paired:
            zero = output.logits.sum() * 0.0
            return zero, zero
        rows = [self.code_switched[sentence_ids[index]] for index in paired]
        switched_batch = batch_to_device(trainer.data_collator(rows), device)
        switched = model(**model_inputs(switched_batch), return_sentence_embeddings=True)
        source_entities = entity_positions(inputs["labels"][paired])
        switched_entities = entity_positions(switched_batch["labels"])
        anchors, positives = [], []
        for row, (source_positions, switched_positions) in enumerate(zip(source_entities, switched_entities)):
            if len(source_positions) == len(switched_positions):  # else truncation dropped one side's entity
                anchors.append(output.projections[paired[row], source_positions])
                positives.append(switched.projections[row, switched_positions])
        if anchors:
            relation = info_nce(torch.cat(anchors), torch.cat(positives), self.temperature)
        else:
            relation = output.logits.sum() * 0.0
        sentence = info_nce(output.sentence_embeddings[paired], switched.sentence_embeddings, self.temperature)
        return relation, sentence
