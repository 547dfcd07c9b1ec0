"""Noise that can be made independent of the batch size.

Every random draw in the engine takes a ``generator`` that is either ``None`` (torch's global
generator), one ``torch.Generator`` for the whole batch, or a sequence of generators with one per
example.  The last form, as in EDM's sampling code, makes example ``i`` depend only on its own
generator, so sample ``i`` of a run is the same whatever the batch size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

GeneratorLike = torch.Generator | Sequence[torch.Generator] | None


def _draw(fn, shape: Sequence[int], generator: GeneratorLike, device, dtype) -> Tensor:
    shape = tuple(shape)
    if generator is None:
        return fn(shape, device=device, dtype=dtype)
    if isinstance(generator, torch.Generator):
        out = fn(shape, generator=generator, device=generator.device, dtype=dtype)
        return out if device is None else out.to(device)
    if not generator or shape[0] % len(generator):
        raise ValueError(
            f"got {len(generator)} per-example generators for a batch of {shape[0]}: pass one per example"
        )
    rows = shape[0] // len(generator)
    out = torch.cat([fn((rows, *shape[1:]), generator=g, device=g.device, dtype=dtype) for g in generator])
    return out if device is None else out.to(device)


def randn(shape: Sequence[int], generator: GeneratorLike = None, device=None, dtype=None) -> Tensor:
    """Standard normal draws of ``shape``; the first axis is the batch axis."""
    return _draw(torch.randn, shape, generator, device, dtype)


def rand(shape: Sequence[int], generator: GeneratorLike = None, device=None, dtype=None) -> Tensor:
    """Uniform draws on [0, 1) of ``shape``; the first axis is the batch axis."""
    return _draw(torch.rand, shape, generator, device, dtype)


def example_generators(seed: int, indices: Sequence[int] | range, device="cpu") -> list[torch.Generator]:
    """One generator per example index, seeded from ``(seed, index)`` only."""
    gens = []
    for i in indices:
        g = torch.Generator(device=device)
        # Mix the two integers so that neighbouring seeds do not share streams.
        g.manual_seed((int(seed) * 1_000_003 + int(i) * 7_919 + 0x9E3779B9) % (2**63))
        gens.append(g)
    return gens
