# Copyright 2026 The maral-xner authors. Licensed under the Apache License, Version 2.0.
"""`source_only`: the teacher stage (§5 of the method notes), class-weighted span CE on source gold + target MLM."""

from __future__ import annotations

import torch

from modeling_maral import span_cross_entropy

from .base import TrainingObjective, model_inputs
from .distributed import global_mean_factor
from .mlm import MlmSettings, TargetMaskedLM
from .registry import ObjectiveContext, register_objective

SOURCE_ONLY_DESCRIPTION = """\
The model was trained on the labelled {source} spans (class-weighted span cross-entropy) with a masked-LM
auxiliary loss on the unlabelled {target} text, and applied to {target} as is (zero-shot transfer).
This is the teacher stage of MARAL (Zhu et al., ACL 2025)."""


@register_objective(
    "source_only",
    display_name="zero-shot transfer (source-only teacher)",
    summary="Teacher alone: source class-weighted CE + target MLM.",
    self_training=False,
    card_description=SOURCE_ONLY_DESCRIPTION,
)
class SourceObjective(TrainingObjective):
    """Teacher stage: class-weighted span CE on source gold spans + `mlm_weight` x target MLM.

    Args (defaults from `MlmSettings`):
        class_weights: `(num_labels,)` span class weights (see `class_weights_from_counts`), or `None`.
        mlm_weight: weight of the masked-LM auxiliary on target text (needs the trainer's target stream).
        mlm_mask_rate: masking probability.
        hide_masked_tokens: hide masked positions from attention.
        seed: seed of the masking generator.
    """

    def __init__(
        self,
        class_weights: torch.Tensor | None = None,
        mlm_weight: float = MlmSettings.mlm_weight,
        mlm_mask_rate: float = MlmSettings.mlm_mask_rate,
        hide_masked_tokens: bool = MlmSettings.mlm_hide_masked_tokens,
        seed: int = 0,
    ) -> None:
        self.class_weights = class_weights
        self.mlm_weight = mlm_weight
        self.masked_lm = TargetMaskedLM(mlm_mask_rate, hide_masked_tokens, seed)

    @classmethod
    def from_context(cls, context: ObjectiveContext) -> SourceObjective:
        args = context.args
        return cls(
            class_weights=context.class_weights,
            mlm_weight=args.mlm_weight if context.has_target_text else 0.0,
            mlm_mask_rate=args.mlm_mask_rate,
            hide_masked_tokens=args.mlm_hide_masked_tokens,
            seed=args.seed,
        )

    def compute_loss(self, trainer, model, inputs):
        output = model(**model_inputs(inputs), return_projections=False)
        source_loss = span_cross_entropy(output.logits, inputs["labels"], inputs["span_mask"], self.class_weights)
        source_loss = source_loss * global_mean_factor(inputs["span_mask"].sum())
        logs = {"source_loss": source_loss.item()}
        loss = source_loss
        if self.mlm_weight > 0 and trainer.target_stream is not None:
            target_batch = trainer.target_stream.next_batch()
            mlm_loss = self.masked_lm.loss(model, target_batch, trainer.processing_class, trainer.args.device)
            logs["mlm_loss"] = mlm_loss.item()
            loss = loss + self.mlm_weight * mlm_loss
        return loss, logs

    def state_dict(self):
        return {"mask_generator": self.masked_lm.generator.get_state()}

    def load_state_dict(self, state):
        self.masked_lm.generator.set_state(state["mask_generator"])
