# Copyright 2026 The maral-xner authors. Licensed under the Apache License, Version 2.0.
"""Multi-process consistency (torchrun / accelerate launch): every process holds the same self-training state.

Each helper is a no-op with one process, so objectives call them unconditionally.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel


def process_rank_and_count() -> tuple[int, int]:
    """`(rank, world_size)` of this process; `(0, 1)` without `torch.distributed`."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of `tensor` over all processes (the tensor itself with one process)."""
    if process_rank_and_count()[1] == 1:
        return tensor
    return _all_reduce(tensor, torch.distributed.ReduceOp.SUM)


def _all_reduce(tensor: torch.Tensor, operation) -> torch.Tensor:
    """`tensor` reduced over all processes (on the backend's device, returned on `tensor`'s)."""
    device = torch.device("cuda", torch.cuda.current_device()) if torch.distributed.get_backend() == "nccl" else None
    reduced = tensor.to(device) if device is not None else tensor.clone()
    torch.distributed.all_reduce(reduced, op=operation)
    return reduced.to(tensor.device)


def all_reduce_max(value: int) -> int:
    """The largest `value` over all processes (`value` itself with one process)."""
    if process_rank_and_count()[1] == 1:
        return value
    return int(_all_reduce(torch.tensor([value], dtype=torch.float64), torch.distributed.ReduceOp.MAX).item())


def global_mean_factor(count: int | torch.Tensor) -> float:
    """`world_size x count / (count summed over processes)`, 1 with one process.

    DDP averages the processes' gradients, so a process's mean loss over its `count` items times this factor gives
    the mean over *every* process's items: 2 processes x batch b then train as 1 process x batch 2b even when the
    processes score different numbers of spans or tokens (sentences of different lengths).
    """
    world_size = process_rank_and_count()[1]
    if world_size == 1:
        return 1.0
    count = float(count)
    total = all_reduce_sum(torch.tensor([count], dtype=torch.float64)).item()
    return world_size * count / total if total > 0 else 0.0


def account_for_every_forward_pass(model, loss: torch.Tensor) -> None:
    """Tells a DDP-wrapped `model` which parameters the backward pass of `loss` will reach.

    DDP with `find_unused_parameters` searches for them from the outputs of the *last* forward call of a step. A step
    with several passes that use different heads (source spans, target spans, the masked LM) would then have a head
    of an earlier pass marked unused although it gets a gradient ("Expected to mark a variable ready only once").
    Searching again from the step's loss, which every pass feeds, covers all of them. A no-op without DDP, without
    `find_unused_parameters`, with a static graph and in gradient-accumulation steps that do not synchronise.
    """
    if not (isinstance(model, DistributedDataParallel) and loss.requires_grad and torch.is_grad_enabled()):
        return
    # The conditions under which `DistributedDataParallel._post_forward` runs this search itself.
    searched = model.find_unused_parameters and not model.static_graph and model.require_backward_grad_sync
    if searched and not getattr(model, "_use_python_reducer", False):
        model.reducer.prepare_for_backward([loss])


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
