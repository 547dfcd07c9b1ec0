"""A deterministic, distributed, resumable sampler, and the loader built on it."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class ResumableSampler(Sampler[int]):
    """Shuffled indices for one rank, reproducible from ``(seed, epoch)`` and resumable mid-epoch.

    Every epoch is a fresh permutation of ``range(n)`` drawn from ``seed + epoch``; rank ``r`` of
    ``world_size`` takes positions ``r, r + world_size, ...``, so the ranks cover every index exactly
    once per epoch (the permutation is padded by wrapping around when ``n`` does not divide, so all
    ranks take the same number of steps).  Iteration never ends: past an epoch the next one starts.

    The state is one number, ``position``: how many indices this rank has been given since the
    start.  A DataLoader with workers fetches ahead of the training step, so a training loop should
    save the number of indices it has *used* (``step * batch_size``) rather than the sampler's own
    count, and restore it with ``load_state_dict({"position": ...})``.
    """

    def __init__(self, n: int, seed: int = 0, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        if n <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.n, self.seed, self.rank, self.world_size, self.shuffle = n, seed, rank, world_size, shuffle
        self.per_rank = -(-n // world_size)
        self.position = 0

    @property
    def epoch(self) -> int:
        return self.position // self.per_rank

    def epoch_indices(self, epoch: int) -> torch.Tensor:
        """This rank's indices in ``epoch``, ``(per_rank,)``."""
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch))
        else:
            order = torch.arange(self.n)
        padded = order.repeat(-(-self.per_rank * self.world_size // self.n))[: self.per_rank * self.world_size]
        return padded[self.rank :: self.world_size]

    def __iter__(self):
        while True:
            epoch, offset = divmod(self.position, self.per_rank)
            for index in self.epoch_indices(epoch)[offset:].tolist():
                self.position += 1
                yield index

    def __len__(self) -> int:
        return self.per_rank

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])


def _as_batch(batch):
    return batch  # the dataset's __getitems__ already stacked the batch


def build_loader(dataset: Dataset, batch_size: int, sampler: Sampler | None = None, num_workers: int = 0,
                 drop_last: bool = True) -> DataLoader:
    """A DataLoader that fetches whole batches through the dataset's ``__getitems__``."""
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, drop_last=drop_last,
        persistent_workers=num_workers > 0, collate_fn=_as_batch,
    )
