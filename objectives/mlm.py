# Copyright 2026 The maral-xner authors. Licensed under the Apache License, Version 2.0.
"""The masked-LM auxiliary on target-language text: its settings and the one target-MLM step (teacher and MARAL)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from data_loading.collator import mask_tokens_for_mlm

from .distributed import all_reduce_max, global_mean_factor, process_rank_and_count
from .settings import SettingCheck, help_text


@dataclass
class MlmSettings:
    """Settings of the masked-LM auxiliary on target text.

    Args:
        mlm_weight: weight of the target MLM loss in the teacher stage (1e-3 in the paper; 0 disables).
        mlm_mask_rate: probability that a target subword is masked (both stages).
        mlm_hide_masked_tokens: hide masked positions from attention (upstream behaviour).
    """

    mlm_weight: float = field(default=1e-3, metadata=help_text("Target MLM weight in the teacher stage (0 = off)."))
    mlm_mask_rate: float = field(default=0.25, metadata=help_text("Probability that a target subword is masked."))
    mlm_hide_masked_tokens: bool = field(
        default=True, metadata=help_text("Hide masked positions from attention, as the reference code does.")
    )

    help_group: ClassVar[str] = "Masked-LM auxiliary"
    checks: ClassVar[tuple[SettingCheck, ...]] = (
        SettingCheck("mlm_weight", lambda value: value >= 0, "must be >= 0"),
        SettingCheck("mlm_mask_rate", lambda value: 0 < value < 1, "must be in (0, 1)"),
    )


class TargetMaskedLM:
    """Masks a batch of target sentences and returns the encoder's masked-LM loss on it.

    The loss is computed by calling `model` (`forward(..., mlm_labels=...)`), so a DDP-wrapped model runs it like its
    span passes. With several processes every process draws the masking numbers of the global batch (all
    processes' sentences, padded to the longest) and uses its own rows, and the loss is the process's share of the
    mean over every masked token (`global_mean_factor`): 2 processes x `b` sentences mask and train as 1 process x
    `2b`.

    Args:
        mask_rate: probability that a subword is masked.
        hide_masked_tokens: hide masked positions from attention.
        seed: seed of the masking generator (its state is part of the objective's checkpoint).
    """

    def __init__(self, mask_rate: float, hide_masked_tokens: bool, seed: int) -> None:
        self.mask_rate = mask_rate
        self.hide_masked_tokens = hide_masked_tokens
        self.generator = torch.Generator().manual_seed(seed)

    def loss(self, model, target_batch: dict[str, torch.Tensor], tokenizer, device) -> torch.Tensor:
        """Masked-LM loss of `model` (a `MaralForSpanNER` or its DDP wrapper) on `target_batch` (CPU or device
        tensors)."""
        input_ids = target_batch["input_ids"].cpu()
        masked_ids, attention, labels = mask_tokens_for_mlm(
            input_ids,
            target_batch["attention_mask"].cpu(),
            tokenizer,
            self.mask_rate,
            hide_masked_tokens=self.hide_masked_tokens,
            draws=self._draws(input_ids.shape),
        )
        labels = labels.to(device)
        output = model(input_ids=masked_ids.to(device), attention_mask=attention.to(device), mlm_labels=labels)
        return output.loss * global_mean_factor((labels != -100).sum())

    def _draws(self, shape: torch.Size) -> torch.Tensor:
        """This process's rows of the masking numbers of the global batch (every process draws all of them)."""
        rank, world_size = process_rank_and_count()
        rows, length = shape
        draws = torch.rand((rows * world_size, all_reduce_max(length)), generator=self.generator)
        return draws[rank * rows : (rank + 1) * rows, :length]

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
