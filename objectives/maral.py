# Copyright 2026 The maral-xner authors. Licensed under the Apache License, Version 2.0.
"""`maral`: MARAL's student stage (§6 of the method notes), its settings and its model-card description.

The vMF head of `MaralForSpanNER` scores span projections with prior-adjusted closed-form contrastive logits; this
objective trains it on source gold and on the reliable target pseudo-labels, and runs the progressive adaptation of
`maral_adaptation` (GMM anchors, prototype and neighbour margins, EMA refinement) plus the target MLM.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from modeling_maral import decode_span_indices, span_cross_entropy

from .base import batch_to_device, model_inputs, unwrap_model
from .distributed import all_gather_rows, all_reduce_sum, global_mean_factor
from .losses import per_class_counts, per_class_sums, target_span_loss, values_at_labels
from .maral_adaptation import (
    bank_neighbour_margins,
    class_margins,
    knn_label_counts,
    l1_normalize,
    refinement_targets,
    select_reliable_spans,
)
from .mlm import TargetMaskedLM
from .pseudo_labels import STUDENT_CARD_SETTINGS, PseudoLabelObjective, PseudoLabelStore, ema_momentum
from .registry import ObjectiveContext, register_objective
from .settings import SettingCheck, help_text

TARGET_LOSS_INPUTS = ("probs", "logits")


@dataclass
class MaralSettings:
    """Hyper-parameters of MARAL's student stage (defaults of the reference scripts, §6.12 of the method notes).

    The refinement EMA (`ema_start`, `ema_end`) and the pseudo-label pruning are `PseudoLabelSettings`; the masking
    of the target MLM is `MlmSettings`.

    Args:
        tau: strength `τ` of the source prior adjustment (`τ log π_src`; the code uses `max(τ, τ_u)`).
        ul_tau: strength `τ_u` of the target prior adjustment, with priors re-estimated from pseudo-labels.
        target_loss_input: `probs` (the reference's log-softmax over probabilities) or `logits` (soft CE).
        update_soft_start: first epoch (from 0) with kNN counts and margins; refinement and anchor selection start
            one epoch later.
        knn_k: neighbours counted in last epoch's projection bank.
        knn_o_keep_rate: fraction of `O` spans kept in the bank.
        gmm_max_iter, gmm_reg_covar, gmm_tol: settings of the per-class 2-component GMM.
        student_mlm_weight: weight of the target MLM auxiliary in the student stage.
        target_warmup_epochs: first epochs of the student stage trained on the source alone (no target loss, no
            target-side vMF statistics). Unset: 1 for a fresh student (`--student_init base`), 0 for one started
            from the teacher. A fresh encoder's class means start nearly collinear, and the target loss over
            ~99 %-`O` pseudo-labels, from step 0, pulls every projection and mean towards `O` until the logits
            are equal (the cold start); the warm-up lets the source task separate the classes first. The
            reference code has no warm-up (`--target_warmup_epochs 0`).
        prior_floor: smallest class prior before the logarithm (avoids `log 0`).
    """

    tau: float = field(default=1.0, metadata=help_text("Source prior-adjustment strength τ (MARAL)."))
    ul_tau: float = field(default=0.1, metadata=help_text("Target prior-adjustment strength τ_u (MARAL)."))
    target_loss_input: str = field(
        default="probs",
        metadata=help_text("Target loss on probs (the reference's double softmax) or logits.", TARGET_LOSS_INPUTS),
    )
    update_soft_start: int = field(default=1, metadata=help_text("First epoch with margins; refinement starts after."))
    knn_k: int = field(default=200, metadata=help_text("Neighbours counted in the projection bank."))
    knn_o_keep_rate: float = field(
        default=0.03, metadata=help_text("Fraction of O spans kept in the projection bank.")
    )
    gmm_max_iter: int = field(default=10, metadata=help_text("EM iterations of the anchor-selection GMM."))
    gmm_reg_covar: float = field(default=5e-4, metadata=help_text("Variance regularisation of the anchor GMM."))
    gmm_tol: float = field(default=1e-2, metadata=help_text("Convergence tolerance of the anchor GMM."))
    student_mlm_weight: float = field(default=1e-2, metadata=help_text("Target MLM weight in the student stage."))
    target_warmup_epochs: int | None = field(
        default=None,
        metadata=help_text(
            "Student epochs on the source alone before the target loss starts; unset: 1 for --student_init base, "
            "0 for teacher (the reference: 0)."
        ),
    )
    prior_floor: float = field(default=1e-12, metadata=help_text("Smallest class prior before the logarithm."))

    help_group: ClassVar[str] = "MARAL"
    methods: ClassVar[tuple[str, ...]] = ("maral",)
    checks: ClassVar[tuple[SettingCheck, ...]] = (
        SettingCheck("tau", lambda value: value >= 0, "must be >= 0"),
        SettingCheck("ul_tau", lambda value: value >= 0, "must be >= 0"),
        SettingCheck("target_loss_input", lambda value: value in TARGET_LOSS_INPUTS, "must be probs or logits"),
        SettingCheck("update_soft_start", lambda value: value >= 0, "must be >= 0"),
        SettingCheck("knn_k", lambda value: value >= 1, "must be >= 1"),
        SettingCheck("knn_o_keep_rate", lambda value: 0 <= value <= 1, "must be in [0, 1]"),
        SettingCheck("gmm_max_iter", lambda value: value >= 1, "must be >= 1"),
        SettingCheck("gmm_reg_covar", lambda value: value > 0, "must be > 0"),
        SettingCheck("student_mlm_weight", lambda value: value >= 0, "must be >= 0"),
        SettingCheck("target_warmup_epochs", lambda value: value is None or value >= 0, "must be >= 0"),
        SettingCheck("prior_floor", lambda value: 0 < value < 1, "must be in (0, 1)"),
    )


MARAL_DESCRIPTION = """\
MARAL (*Large Margin Representation Learning for Robust Cross-lingual Named Entity Recognition*, Zhu et al.,
ACL 2025), teacher → student:

1. **Teacher:** trained on the labelled {source} spans with a masked-LM auxiliary on the unlabelled
   {target} text; it labels every target span with a soft pseudo-label.
2. **Student:** learns L2-normalised span projections with a closed-form von Mises–Fisher contrastive objective
   whose logits are adjusted by source and (re-estimated) target class priors, so that frequent classes do not
   swamp rare ones (large margins).
3. **Reliable pseudo-labels:** at every epoch start, per class, a two-component Gaussian mixture over the student's
   vMF logits of the spans pseudo-labelled with that class keeps the confident ones (anchors); only anchors enter
   the target loss.
4. **Progressive refinement:** the soft labels of the other spans move (EMA) towards the classes that pass
   class-wise margins of the vMF logits (prototype view) and of nearest-neighbour label counts (local view)."""

MARAL_CARD_SETTINGS = STUDENT_CARD_SETTINGS + (
    "student_mlm_weight", "tau", "ul_tau", "projection_dim", "contrastive_temperature", "target_loss_input",
    "update_soft_start", "ema_start", "ema_end", "knn_k", "knn_o_keep_rate", "gmm_max_iter", "gmm_reg_covar",
    "gmm_tol", "target_warmup_epochs",
)  # fmt: skip


@register_objective(
    "maral",
    display_name="MARAL teacher → student self-training",
    summary="MARAL: vMF head, adaptive reweighting, progressive adaptation.",
    self_training=True,
    card_description=MARAL_DESCRIPTION,
    card_settings=MARAL_CARD_SETTINGS,
    default_student_init="teacher",
)
class MaralObjective(PseudoLabelObjective):
    """MARAL's student stage (§6): vMF head with prior-adjusted logits on source gold and target pseudo-labels,
    progressive adaptation (GMM anchors, prototype and neighbour margins, EMA refinement) and target MLM.

    Args:
        store: the target pseudo-labels (refined in place during training).
        source_class_counts: `(C,)` span counts per class of the source training set (source priors).
        class_weights: `(C,)` source span class weights.
        settings: the run's settings (`MaralSettings`, `PseudoLabelSettings` and `MlmSettings` fields).
        num_epochs: epochs of the stage (for the EMA schedule).
        seed: seed of the estimator initialisation, the bank sampling and the MLM masking.
        gold_by_sentence: optional gold spans of the target text, for the oracle diagnostics only.
    """

    def __init__(
        self,
        store: PseudoLabelStore,
        source_class_counts: np.ndarray,
        class_weights: torch.Tensor | None,
        settings: Any,
        num_epochs: int,
        seed: int = 0,
        gold_by_sentence: dict[int, list[tuple[int, int, int]]] | None = None,
    ) -> None:
        super().__init__(store, class_weights, settings.pseudo_label_pruning, gold_by_sentence)
        self.settings = settings
        self.num_epochs = num_epochs
        self.source_tau = max(settings.tau, settings.ul_tau)
        num_labels = store.num_labels
        self.source_log_prior = torch.log(
            self._normalize_prior(torch.as_tensor(source_class_counts, dtype=torch.float64))
        )
        self.target_prior = self._normalize_prior(store.class_mass().double())
        self.proto_margins = torch.zeros(num_labels)
        self.neighbour_margins = torch.zeros(num_labels)
        # Whether (prototype, neighbour) margins have been estimated: refinement never reads unestimated ones.
        self.margins_estimated = torch.zeros(2, dtype=torch.bool)
        self.target_warmup_epochs = self._warmup_epochs(settings)
        self.bank = torch.zeros(0, 0)
        self.bank_labels = torch.zeros(0, dtype=torch.long)
        self.estimator_generator = torch.Generator().manual_seed(seed)
        self.sampling_generator = torch.Generator().manual_seed(seed + 1)
        self.masked_lm = TargetMaskedLM(settings.mlm_mask_rate, settings.mlm_hide_masked_tokens, seed + 2)
        self._reset_epoch_accumulators()

    @classmethod
    def from_context(cls, context: ObjectiveContext) -> MaralObjective:
        return cls(
            context.store,
            context.source_class_counts,
            context.class_weights,
            settings=context.args,
            num_epochs=context.num_epochs,
            seed=context.seed,
            gold_by_sentence=context.gold_by_sentence,
        )

    # -- epoch hooks ---------------------------------------------------------------------------------------------

    def on_train_begin(self, trainer):
        model = unwrap_model(trainer.model)
        model.config.prediction_head = "vmf"
        if self.epoch < 0:
            model.reset_vmf_estimator(0, self.estimator_generator)
            model.reset_vmf_estimator(1, self.estimator_generator)

    @staticmethod
    def _warmup_epochs(settings) -> int:
        """`target_warmup_epochs`, or its default: one epoch for a fresh student, none for one from the teacher."""
        if settings.target_warmup_epochs is not None:
            return settings.target_warmup_epochs
        return 1 if settings.student_init == "base" else 0

    def start_epoch(self, trainer, epoch):
        unwrap_model(trainer.model).rotate_vmf_estimators(self.estimator_generator)
        if epoch > self.settings.update_soft_start:
            self.store.reliable = select_reliable_spans(
                self.store, self.settings.gmm_max_iter, self.settings.gmm_reg_covar, self.settings.gmm_tol
            )
            if not self.margins_estimated[1] and len(self.bank):
                # No epoch had a bank to count neighbours in (`update_soft_start 0`): estimate the neighbour
                # margins from last epoch's bank itself, so that refinement can start now.
                self.neighbour_margins = bank_neighbour_margins(
                    self.bank, self.bank_labels, self.settings.knn_k, self.store.num_labels
                )
                self.margins_estimated[1] = True
        self._reset_epoch_accumulators()

    def end_epoch(self, trainer, epoch):
        if self.prior_sum.sum() > 0:
            self.target_prior = self._normalize_prior(self.prior_sum)
        if epoch >= self.settings.update_soft_start and self.proto_counts.sum() > 0:
            self.proto_margins = class_margins(self.proto_sums, self.proto_counts).float()
            self.margins_estimated[0] = True
        self.bank = torch.cat(self.bank_features) if self.bank_features else self.bank
        self.bank_labels = torch.cat(self.bank_label_list) if self.bank_label_list else self.bank_labels
        if epoch >= self.settings.update_soft_start and self.neighbour_counts.sum() > 0:
            self.neighbour_margins = class_margins(self.neighbour_sums, self.neighbour_counts).float()
            self.margins_estimated[1] = True

    def refines(self) -> bool:
        """Whether this epoch refines pseudo-labels: after `update_soft_start`, once both margins are estimated."""
        return self.epoch > self.settings.update_soft_start and bool(self.margins_estimated.all())

    def warming_up(self) -> bool:
        """Whether this epoch trains on the source alone (`target_warmup_epochs`)."""
        return self.epoch < self.target_warmup_epochs

    def diagnostics(self, trainer) -> dict[str, Any]:
        labels = unwrap_model(trainer.model).config.labels
        hard = self.store.probabilities.argmax(1)
        return {
            "target_prior": dict(zip(labels, self.target_prior.tolist())),
            "proto_margins": dict(zip(labels, self.proto_margins.tolist())),
            "neighbour_margins": dict(zip(labels, self.neighbour_margins.tolist())),
            "reliable_fraction": {
                label: float(self.store.reliable[hard == index].float().mean()) if (hard == index).any() else None
                for index, label in enumerate(labels)
            },
            "bank_size": len(self.bank),
            "margins_estimated": dict(zip(("prototype", "neighbour"), self.margins_estimated.tolist())),
            "refined": self.refines(),
            "target_warmup": self.warming_up(),
        }

    # -- the step ------------------------------------------------------------------------------------------------

    def compute_loss(self, trainer, model, inputs):
        core = unwrap_model(model)
        device = trainer.args.device
        source_loss, source_bank = self._source_step(core, model, inputs)
        target_batch = trainer.target_stream.next_batch()
        self._add_to_bank(*source_bank)
        loss, logs = source_loss, {"source_loss": source_loss.item()}
        if not self.warming_up():
            target_loss, target_bank = self._target_step(core, model, target_batch, device)
            self._add_to_bank(*target_bank)
            loss = loss + target_loss
            logs["target_loss"] = target_loss.item()
        if self.settings.student_mlm_weight > 0:
            mlm_loss = self.masked_lm.loss(model, target_batch, trainer.processing_class, device)
            loss = loss + self.settings.student_mlm_weight * mlm_loss
            logs["mlm_loss"] = mlm_loss.item()
        return loss, logs

    def _source_step(self, core, model, inputs):
        output = model(**model_inputs(inputs))
        mask = inputs["span_mask"]
        labels = inputs["labels"].clamp(min=0)
        self._update_vmf_statistics(core, output.projections[mask], labels[mask])
        logits = core.vmf_logits(output.projections)
        adjusted = logits + self.source_tau * self.source_log_prior.to(logits)
        loss = span_cross_entropy(adjusted, labels, mask, self.class_weights) * global_mean_factor(mask.sum())
        keep = mask & ((labels != 0) | self._bernoulli(mask.shape, mask.device))
        return loss, (output.projections[keep].detach(), labels[keep])

    def _target_step(self, core, model, batch, device):
        batch = batch_to_device(batch, device)  # moved once; target_forward reuses these tensors
        output, mask, real_rows = self.target_forward(model, batch, device)
        soft = self.store.probabilities[real_rows].to(device)
        hard = soft.argmax(1)
        projections = output.projections[mask]
        self._update_vmf_statistics(core, projections, hard)
        logits = core.vmf_logits(projections)
        detached = logits.detach()
        num_labels = self.store.num_labels
        self.add_to_sum("proto_sums", per_class_sums(hard, values_at_labels(detached, hard), num_labels))
        self.add_to_sum("proto_counts", per_class_counts(hard, num_labels))
        if self.epoch >= self.settings.update_soft_start and len(self.bank):
            counts = knn_label_counts(
                projections.detach(),
                self.bank.to(device),
                self.bank_labels.to(device),
                self.settings.knn_k,
                self.store.num_labels,
            )
            self.add_to_sum("neighbour_sums", per_class_sums(hard, values_at_labels(counts, hard), num_labels))
            self.add_to_sum("neighbour_counts", per_class_counts(hard, num_labels))
            if self.refines():
                soft = self._refine(real_rows, soft, detached, counts)
        self._cache_pseudo_class_logits(real_rows, detached, soft)
        self.add_to_sum("prior_sum", soft.sum(0))
        loss = self._target_loss(batch, mask, real_rows, soft, logits)
        keep = (hard != 0) | self._bernoulli(hard.shape, hard.device)
        return loss, (projections[keep].detach(), hard[keep])

    def _cache_pseudo_class_logits(self, real_rows, logits, soft):
        """Caches each span's logit for its pseudo-class after this step's refinement (`soft` holds the store's rows
        as they now are), the score anchor selection reads at the next epoch start (the pseudo-labels only change
        while their span is in a batch)."""
        pseudo_class_logits = values_at_labels(logits, soft.argmax(1))
        self.store.logit_cache[real_rows] = pseudo_class_logits.float().cpu()

    def _refine(self, real_rows, soft, logits, neighbour_counts):
        """EMA-moves the soft labels of unreliable spans towards the classes that pass the margins (§6.7)."""
        device = soft.device
        directions = refinement_targets(
            logits.float(), neighbour_counts.float(), self.proto_margins.to(device), self.neighbour_margins.to(device)
        )
        directions[self.store.reliable[real_rows].to(device)] = 0
        momentum = ema_momentum(
            self.epoch,
            self.num_epochs,
            self.settings.ema_start,
            self.settings.ema_end,
            self.settings.update_soft_start,
        )
        moved = directions.sum(1) > 0
        refined = torch.where(moved.unsqueeze(1), l1_normalize(momentum * soft + (1 - momentum) * directions), soft)
        self.store.probabilities[real_rows] = refined.cpu()
        return refined

    def _target_loss(self, batch, mask, real_rows, soft, logits):
        reliable = self.store.reliable[real_rows].to(soft.device)
        pruned_entity = self._pruned_entity_mask(batch, mask, soft)
        hard = soft.argmax(1)
        kept = reliable & (pruned_entity | (hard == 0))
        filtered = reliable & (hard != 0) & ~pruned_entity
        adjusted = logits + self.settings.ul_tau * torch.log(self.target_prior).to(logits)
        loss = target_span_loss(adjusted, soft, kept, filtered, self.settings.target_loss_input)
        return loss * global_mean_factor((kept | filtered).sum())

    def _pruned_entity_mask(self, batch, mask, soft):
        """True for the real spans that survive overlap pruning of the soft labels as entities."""
        counts = mask.sum(1).tolist()
        soft_numpy = soft.detach().cpu().numpy()
        words = batch["span_words"].cpu().numpy()
        survived = np.zeros(len(soft_numpy), dtype=bool)
        start = 0
        for row, count in enumerate(counts):
            kept = decode_span_indices(
                words[row, :count], soft_numpy[start : start + count], self.settings.pseudo_label_pruning
            )
            survived[np.asarray(kept, dtype=np.int64) + start] = True
            start += count
        return torch.from_numpy(survived).to(soft.device)

    # -- helpers -------------------------------------------------------------------------------------------------

    @staticmethod
    def _update_vmf_statistics(core, projections: torch.Tensor, labels: torch.Tensor) -> None:
        """Adds the batch's per-class projection sums and counts, over all processes, to the vMF estimators."""
        sums, counts = core.vmf_class_statistics(projections, labels)
        core.add_vmf_statistics(all_reduce_sum(sums), all_reduce_sum(counts))

    def _normalize_prior(self, mass: torch.Tensor) -> torch.Tensor:
        prior = mass.double() / mass.sum().clamp(min=1e-300)
        return prior.clamp(min=self.settings.prior_floor).float()

    def _bernoulli(self, shape, device) -> torch.Tensor:
        draws = torch.rand(shape, generator=self.sampling_generator)
        return (draws < self.settings.knn_o_keep_rate).to(device)

    def _add_to_bank(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        self.bank_features.append(all_gather_rows(features.float().cpu()))
        self.bank_label_list.append(all_gather_rows(labels.cpu()))

    def _reset_epoch_accumulators(self) -> None:
        num_labels = self.store.num_labels
        self.prior_sum = torch.zeros(num_labels, dtype=torch.float64)
        self.proto_sums = torch.zeros(num_labels, dtype=torch.float64)
        self.proto_counts = torch.zeros(num_labels, dtype=torch.float64)
        self.neighbour_sums = torch.zeros(num_labels, dtype=torch.float64)
        self.neighbour_counts = torch.zeros(num_labels, dtype=torch.float64)
        self.bank_features: list[torch.Tensor] = []
        self.bank_label_list: list[torch.Tensor] = []

    # -- state ---------------------------------------------------------------------------------------------------

    STATE_TENSORS = (
        "target_prior",
        "proto_margins",
        "neighbour_margins",
        "margins_estimated",
        "bank",
        "bank_labels",
        "prior_sum",
        "proto_sums",
        "proto_counts",
        "neighbour_sums",
        "neighbour_counts",
    )

    def _generators(self) -> tuple[torch.Generator, ...]:
        return self.estimator_generator, self.sampling_generator, self.masked_lm.generator

    def state_dict(self):
        bank_features = torch.cat(self.bank_features) if self.bank_features else torch.zeros(0, 0)
        bank_labels = torch.cat(self.bank_label_list) if self.bank_label_list else torch.zeros(0, dtype=torch.long)
        return {
            **super().state_dict(),
            **{name: getattr(self, name) for name in self.STATE_TENSORS},
            "epoch_bank": bank_features,
            "epoch_bank_labels": bank_labels,
            "generators": [generator.get_state() for generator in self._generators()],
        }

    def load_state_dict(self, state):
        super().load_state_dict(state)
        for name in self.STATE_TENSORS:
            setattr(self, name, state[name])
        self.bank_features = [state["epoch_bank"]] if len(state["epoch_bank"]) else []
        self.bank_label_list = [state["epoch_bank_labels"]] if len(state["epoch_bank_labels"]) else []
        for generator, generator_state in zip(self._generators(), state["generators"]):
            generator.set_state(generator_state)
