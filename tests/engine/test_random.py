"""Noise that depends on the example, not the batch: per-example generators and their blocks."""

import pytest
import torch

from bsi.engine import example_generators
from bsi.engine.random import rand, randn


def test_per_example_generators_make_draws_independent_of_the_batch():
    together = randn((4, 3, 2), example_generators(7, range(4)))
    alone = torch.cat([randn((1, 3, 2), example_generators(7, [i])) for i in range(4)])
    assert torch.equal(together, alone)
    shifted = randn((2, 3, 2), example_generators(7, [2, 3]))
    assert torch.equal(shifted, together[2:])


def test_rows_per_example_are_one_block_of_that_examples_stream():
    """With n rows per example (example-major), example i's rows are its generator's next n draws."""
    blocks = randn((6, 5), example_generators(1, range(2)))  # 3 rows per example
    g = example_generators(1, [1])[0]
    expected = torch.randn((3, 5), generator=g)
    assert torch.equal(blocks[3:], expected)
    with pytest.raises(ValueError, match="one per example"):
        randn((5, 5), example_generators(1, range(2)))


def test_seeds_give_distinct_streams_and_one_generator_works_too():
    a, b = (rand((1, 1000), example_generators(0, [i])) for i in (0, 1))
    c = rand((1, 1000), example_generators(1, [0]))
    assert not torch.equal(a, b) and not torch.equal(a, c)
    u = rand((10000,), torch.Generator().manual_seed(3), dtype=torch.float64)
    assert abs(u.mean().item() - 0.5) < 4 * (1 / 12 / 10000) ** 0.5  # uniform on [0, 1)
    assert torch.equal(randn((3,), torch.Generator().manual_seed(5)), torch.randn(3, generator=torch.Generator().manual_seed(5)))
