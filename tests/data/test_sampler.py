"""The resumable sampler and loader: determinism, distributed coverage, exact resume, workers."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
import torch

from bsi.data import ResumableSampler, build_dataset, build_loader


def shards(n: int, world_size: int, epoch: int, **kw) -> list[np.ndarray]:
    return [ResumableSampler(n, rank=r, world_size=world_size, seed=3, **kw).shard(epoch) for r in range(world_size)]


def test_each_epoch_is_a_new_permutation_from_seed_and_epoch():
    s = ResumableSampler(50, seed=1)
    e0, e1 = s.shard(0), s.shard(1)
    assert sorted(e0.tolist()) == sorted(e1.tolist()) == list(range(50)) and not np.array_equal(e0, e1)
    assert np.array_equal(ResumableSampler(50, seed=1).shard(0), e0)
    assert not np.array_equal(ResumableSampler(50, seed=2).shard(0), e0)
    assert not np.array_equal(ResumableSampler(50, seed=0).shard(1), ResumableSampler(50, seed=1).shard(0))
    assert ResumableSampler(50, shuffle=False).shard(4).tolist() == list(range(50))


@pytest.mark.parametrize("n", [100, 101])
def test_two_ranks_cover_every_index_exactly_once(n):
    for epoch in range(3):
        a, b = shards(n, 2, epoch, drop_last=False)
        assert sorted(np.concatenate([a, b]).tolist()) == list(range(n))
        assert abs(len(a) - len(b)) <= 1


def test_drop_last_gives_disjoint_equal_batches_on_every_rank():
    samplers = [ResumableSampler(101, seed=3, rank=r, world_size=2) for r in range(2)]
    data = torch.arange(101)
    batches = [list(build_loader(data, 8, s)) for s in samplers]
    assert [len(b) for b in batches] == [6, 6] and all(len(x) == 8 for b in batches for x in b)
    seen = torch.cat([x for b in batches for x in b]).tolist()
    assert len(set(seen)) == len(seen) == 96
    assert all(s.state_dict()["epoch"] == 1 and s.consumed == 0 for s in samplers)  # rolled over


def test_state_moves_only_as_batches_are_handed_out():
    sampler = ResumableSampler(40, seed=0)
    loader = build_loader(torch.arange(40), 8, sampler)
    it = iter(loader)
    next(it), next(it)
    assert sampler.state_dict()["epoch"] == 0 and sampler.state_dict()["consumed"] == 16
    assert len(loader) == 3
    sampler.set_epoch(0)  # the current epoch keeps its position
    assert sampler.consumed == 16
    sampler.set_epoch(5)
    assert (sampler.epoch, sampler.consumed) == (5, 0)


def test_resume_refuses_a_different_order():
    state = ResumableSampler(40, seed=0).state_dict() | {"consumed": 8}
    with pytest.raises(ValueError, match="seed=1"):
        ResumableSampler(40, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="world_size=2"):
        ResumableSampler(40, seed=0, world_size=2).load_state_dict(state)


@pytest.fixture
def cifar_train(cifar_root):
    root, _ = cifar_root
    return build_dataset({"name": "cifar10", "root": str(root), "val_size": 0, "hflip": True}, "train")


def run(dataset, state: dict | None, steps: int, num_workers: int) -> tuple[list[torch.Tensor], dict]:
    sampler = ResumableSampler(len(dataset), seed=7)
    if state is not None:
        sampler.load_state_dict(state)
    loader = build_loader(dataset, 4, sampler, num_workers=num_workers)
    batches = list(itertools.islice(loader.forever(), steps))
    return batches, loader.state_dict()


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resumed_run_continues_exactly_where_it_stopped(cifar_train, num_workers):
    # 30 images, batches of 4: 7 batches per epoch; 17 steps cross two epoch boundaries.
    straight, end = run(cifar_train, None, 17, num_workers=0)
    first, saved = run(cifar_train, None, 10, num_workers)
    assert (saved["epoch"], saved["consumed"]) == (1, 12)
    rest, resumed_end = run(cifar_train, saved, 7, num_workers)
    assert all(torch.equal(x, y) for x, y in zip(first + rest, straight, strict=True))
    assert resumed_end == end and (end["epoch"], end["consumed"]) == (2, 12)


def test_dataset_pickles_without_its_file_handle(cifar_train):
    before = cifar_train.__getitems__([0, 5, 9])  # opens the file in this process
    clone = pickle.loads(pickle.dumps(cifar_train))
    assert clone.images._handle is None
    assert torch.equal(clone.__getitems__([0, 5, 9]), before)
