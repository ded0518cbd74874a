"""Precise batch-norm statistics: re-estimate a trained model's BN running means and variances at the end.

Why: during training each BN layer keeps an exponential average (momentum 0.1) of its batch statistics,
i.e. of the last ~10 batches. At the CPU recipes' batch of 4 that is ~40 images, seen while the weights
were still moving, so the statistics the evaluation uses are noisy. Recomputing them once with the final
weights, as an equal-weight average over many training batches ("precise BN", Wu & Johnson, "Rethinking
'Batch' in BatchNorm", 2021), costs forward passes only. docs/learning.md (session 25) has the measurement.

The batches should be augmented like the training ones: statistics from un-augmented, full-frame images
describe other inputs than the network was trained on (a step student fell from AP 0.305 to 0.164 that way).
"""
from __future__ import annotations

import contextlib
from typing import Any, ContextManager, Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["batch_norms", "recompute_bn_statistics"]


def batch_norms(model: nn.Module) -> list[_BatchNorm]:
    """The BN layers that track running statistics (the ones evaluation reads)."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def recompute_bn_statistics(model: nn.Module, inputs: Iterable[torch.Tensor], batches: int,
                            autocast: ContextManager[Any] | None = None,
                            memory_format: torch.memory_format = torch.contiguous_format) -> int:
    """Replace every BN layer's running mean/var by the equal-weight average over `batches` input batches.

    The model runs in train mode without gradients (BN normalises with the batch statistics and, with momentum
    None, accumulates a cumulative average of them); the mode and momenta are restored afterwards. Under
    torch.distributed the averages are then averaged over the ranks, so replicas stay identical. Returns the
    number of batches used (fewer when `inputs` runs out; 0 leaves the model untouched).
    """
    norms = batch_norms(model)
    if not norms or batches <= 0:
        return 0
    device = next(model.parameters()).device
    saved_state = {id(m): (m.momentum, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
                   for m in norms}
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
    used = 0
    model.train()
    try:
        with torch.no_grad(), (autocast or contextlib.nullcontext()):
            for x in inputs:
                model(x.to(device, non_blocking=True).contiguous(memory_format=memory_format))
                used += 1
                if used >= batches:  # before asking for another: an endless source is fine
                    break
    finally:
        for m in norms:
            momentum, mean, var, count = saved_state[id(m)]
            m.momentum = momentum
            if used == 0:  # nothing seen: keep the trained statistics rather than the reset ones
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)
        model.train(was_training)
    if used and torch.distributed.is_available() and torch.distributed.is_initialized():
        world = torch.distributed.get_world_size()
        for m in norms:
            for buf in (m.running_mean, m.running_var):
                torch.distributed.all_reduce(buf)
                buf.div_(world)
    return used
