"""Split examples over ranks and put the per-example results back together in example order.

Rank ``r`` of ``W`` takes examples ``r, r + W, r + 2W, ...``: shards differ in size by at most one,
nothing is padded into the data or dropped, so every example is counted exactly once whatever ``W``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from .. import distributed


def shard(n: int, rank: int = 0, world_size: int = 1) -> range:
    """The example indices of rank ``rank`` among ``world_size`` for ``n`` examples."""
    return range(rank, n, world_size)


def gather_examples(values: Tensor, indices: Sequence[int], n: int) -> Tensor:
    """Assemble per-example rows from every rank into ``(n, ...)`` in example order, on every rank.

    ``values`` ``(len(indices), ...)`` holds this rank's rows for example ``indices``.  Raises
    ``RuntimeError`` unless the ranks together cover ``0..n-1`` exactly once.
    """
    idx = torch.as_tensor(list(indices), dtype=torch.long, device=values.device)
    if len(idx) != values.shape[0]:
        raise ValueError(f"{values.shape[0]} rows for {len(idx)} indices")
    if distributed.initialized():
        # all_gather needs equal shapes: pad every shard to the longest, mark padding with index -1.
        longest = torch.tensor([len(idx)], device=values.device)
        dist.all_reduce(longest, op=dist.ReduceOp.MAX)
        pad = int(longest) - len(idx)
        values = torch.cat([values, values.new_zeros((pad, *values.shape[1:]))])
        idx = torch.cat([idx, idx.new_full((pad,), -1)])
        values, idx = distributed.all_gather_cat(values), distributed.all_gather_cat(idx)
        keep = idx >= 0
        values, idx = values[keep], idx[keep]
    counts = torch.bincount(idx.cpu(), minlength=n)
    if len(counts) != n or not bool((counts == 1).all()):
        raise RuntimeError(f"ranks covered {int((counts > 0).sum())} of {n} examples, some not exactly once")
    out = torch.empty((n, *values.shape[1:]), dtype=values.dtype, device=values.device)
    out[idx] = values
    return out
