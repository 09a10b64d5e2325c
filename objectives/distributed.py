# Copyright 2026 The maral-xner authors. Licensed under the Apache License, Version 2.0.
"""Multi-process consistency (torchrun / accelerate launch): every process holds the same self-training state.

Each helper is a no-op with one process, so objectives call them unconditionally.
"""

from __future__ import annotations

from typing import Any

import torch


def process_rank_and_count() -> tuple[int, int]:
    """`(rank, world_size)` of this process; `(0, 1)` without `torch.distributed`."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of `tensor` over all processes (the tensor itself with one process)."""
    if process_rank_and_count()[1] == 1:
        return tensor
    device = torch.device("cuda", torch.cuda.current_device()) if torch.distributed.get_backend() == "nccl" else None
    reduced = tensor.to(device) if device is not None else tensor.clone()
    torch.distributed.all_reduce(reduced)
    return reduced.to(tensor.device)


def all_gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """The rows of `tensor` from all processes, concatenated in rank order (sizes may differ between processes)."""
    if process_rank_and_count()[1] == 1:
        return tensor
    gathered: list[Any] = [None] * process_rank_and_count()[1]
    torch.distributed.all_gather_object(gathered, tensor.detach().cpu())
    return torch.cat(gathered).to(tensor.device)


def wait_for_all_processes() -> None:
    """A barrier (no-op with one process): files written by the main process are visible to all after it."""
    if process_rank_and_count()[1] > 1:
        torch.distributed.barrier()
