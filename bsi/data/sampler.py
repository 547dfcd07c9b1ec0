"""A deterministic, distributed, resumable sampler and the loader that keeps its state honest.

Epoch ``e`` visits a permutation of ``range(n)`` drawn from ``(seed, e)``.  Rank ``r`` of ``W``
takes positions ``r, r + W, r + 2W, ...`` of it:

- ``drop_last=True`` (training): the permutation is cut to a multiple of ``W``, so the ranks get
  disjoint shards of equal size; the loader then drops each rank's last partial batch, so every
  rank takes the same number of steps.  What is left out (fewer than ``W * batch_size`` indices)
  changes from epoch to epoch.
- ``drop_last=False`` (evaluation, single process): nothing is cut or padded, every index is taken
  exactly once per epoch over all ranks; shards differ in size by at most one.

The state is ``epoch`` and ``consumed`` (indices of this epoch this rank has trained on).  A
DataLoader fetches ahead of the training step, so iterating the sampler never moves its state;
:class:`ResumableLoader` moves it as each batch is handed to the training loop, and a checkpoint
of ``sampler.state_dict()`` taken between steps resumes on exactly the next batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler


class ResumableSampler(Sampler[int]):
    """This rank's indices for the rest of the current epoch (see the module docstring)."""

    def __init__(self, dataset_len: int, *, seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, drop_last: bool = True):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        if dataset_len < (world_size if drop_last else 1):
            raise ValueError(f"{dataset_len} images cannot feed {world_size} rank(s)")
        self.n, self.seed, self.rank, self.world_size = dataset_len, seed, rank, world_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self.epoch, self.consumed = 0, 0

    def shard_size(self) -> int:
        """Indices this rank gets in a whole epoch."""
        usable = self.n - self.n % self.world_size if self.drop_last else self.n
        return len(range(self.rank, usable, self.world_size))

    def shard(self, epoch: int) -> np.ndarray:
        """int64 ``(shard_size,)``: this rank's indices of ``epoch``, in visiting order."""
        # SeedSequence mixes (seed, epoch) properly; seed + epoch would make (0, 1) and (1, 0) collide.
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n) if self.shuffle else np.arange(self.n)
        return order[self.rank : self.rank + self.world_size * self.shard_size() : self.world_size]

    def __iter__(self) -> Iterator[int]:
        return map(int, self.shard(self.epoch)[self.consumed :])  # lazily: no list of 1.28M ints

    def __len__(self) -> int:
        return self.shard_size() - self.consumed

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its beginning; the current epoch (e.g. just resumed) keeps its position."""
        if epoch != self.epoch:
            self.epoch, self.consumed = epoch, 0

    def advance(self, count: int) -> None:
        """Record that ``count`` more indices of this epoch were handed to the training loop."""
        self.consumed = min(self.consumed + count, self.shard_size())

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "consumed": self.consumed, "seed": self.seed, "dataset_len": self.n,
                "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        for key, mine in (("seed", self.seed), ("dataset_len", self.n), ("world_size", self.world_size)):
            if key in state and int(state[key]) != mine and int(state["consumed"]) > 0:
                raise ValueError(f"cannot resume mid-epoch with {key}={mine}: the saved state has {state[key]}")
        self.epoch, self.consumed = int(state["epoch"]), min(int(state["consumed"]), self.shard_size())


def _stacked(batch: Tensor | list[Tensor]) -> Tensor:
    # Datasets with __getitems__ hand over the finished batch; others a list of items.
    return batch if isinstance(batch, Tensor) else torch.stack(batch)


class ResumableLoader:
    """uint8 batches ``(B, *item shape)`` for one rank; iterating gives the rest of the current epoch.

    Each batch is one ``dataset.__getitems__`` call, made in a worker process when
    ``num_workers > 0`` (workers persist across epochs and open the HDF5 file once each).  When a
    batch is handed out the sampler advances; when an epoch ends the sampler moves to the next.
    """

    def __init__(self, dataset: Dataset, batch_size: int, sampler: ResumableSampler, num_workers: int = 0,
                 pin_memory: bool = False):
        if sampler.drop_last and sampler.shard_size() < batch_size:
            raise ValueError(f"an epoch of {sampler.shard_size()} indices per rank holds no batch of {batch_size}")
        self.sampler, self.batch_size = sampler, batch_size
        self.loader = DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, drop_last=sampler.drop_last, num_workers=num_workers,
            collate_fn=_stacked, pin_memory=pin_memory, persistent_workers=num_workers > 0,
        )

    def __len__(self) -> int:
        """Batches left in the current epoch."""
        return len(self.loader)

    def __iter__(self) -> Iterator[Tensor]:
        for batch in self.loader:
            self.sampler.advance(len(batch))  # before handing it out: a checkpoint taken after this step counts it
            yield batch
        self.sampler.set_epoch(self.sampler.epoch + 1)

    def forever(self) -> Iterator[Tensor]:
        """Batches across epochs without end (for step-based training loops)."""
        while True:
            yield from self

    def state_dict(self) -> dict[str, int]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.load_state_dict(state)


def build_loader(dataset: Dataset, batch_size: int, sampler: ResumableSampler | None = None, num_workers: int = 0,
                 *, seed: int = 0, shuffle: bool = True, drop_last: bool = True, pin_memory: bool = False
                 ) -> ResumableLoader:
    """A :class:`ResumableLoader`; without ``sampler``, a single-process one from ``seed``, ``shuffle``, ``drop_last``."""
    if sampler is None:
        sampler = ResumableSampler(len(dataset), seed=seed, shuffle=shuffle, drop_last=drop_last)
    return ResumableLoader(dataset, batch_size, sampler, num_workers=num_workers, pin_memory=pin_memory)
