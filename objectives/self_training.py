# Copyright 2026 The maral-xner authors. Licensed under the Apache License, Version 2.0.
"""`self_training`: the plain teacher -> student baseline on the teacher's fixed soft pseudo-labels."""

from __future__ import annotations

from modeling_maral import span_cross_entropy

from .base import model_inputs
from .losses import soft_cross_entropy
from .pseudo_labels import STUDENT_CARD_SETTINGS, PseudoLabelObjective
from .registry import ObjectiveContext, register_objective

SELF_TRAINING_DESCRIPTION = """\
Teacher → student self-training, the plain baseline of MARAL (Zhu et al., ACL 2025): a teacher trained on the
labelled {source} spans (with a masked-LM auxiliary on {target} text) labels every span of the
unlabelled {target} text with a soft pseudo-label; the student is trained on the source gold plus a soft
cross-entropy on all pseudo-labelled target spans. Each round's student relabels the target text for the next round."""


@register_objective(
    "self_training",
    display_name="teacher → student self-training (plain baseline)",
    summary="Student on the teacher's fixed soft pseudo-labels.",
    self_training=True,
    card_description=SELF_TRAINING_DESCRIPTION,
    card_settings=STUDENT_CARD_SETTINGS,
)
class SelfTrainingObjective(PseudoLabelObjective):
    """Plain self-training baseline (ContProto's "w/o proto & cl"): the teacher's soft pseudo-labels stay fixed;
    the student's MLP classifier is trained on source class-weighted CE + soft CE on every target span.
    No contrastive head, no anchor selection, no refinement.
    """

    @classmethod
    def from_context(cls, context: ObjectiveContext) -> SelfTrainingObjective:
        return cls(context.store, context.class_weights, context.args.pseudo_label_pruning, context.gold_by_sentence)

    def compute_loss(self, trainer, model, inputs):
        output = model(**model_inputs(inputs), return_projections=False)
        source_loss = span_cross_entropy(output.logits, inputs["labels"], inputs["span_mask"], self.class_weights)
        device = trainer.args.device
        target_batch = trainer.target_stream.next_batch()
        target_output, mask, rows = self.target_forward(model, target_batch, device, return_projections=False)
        soft_labels = self.store.probabilities[rows].to(device)
        target_loss = soft_cross_entropy(target_output.logits[mask].float(), soft_labels)
        loss = source_loss + target_loss
        return loss, {"source_loss": source_loss.item(), "target_loss": target_loss.item()}
