"""What every backbone is told besides the image: the noise level ``t`` and fine detail of its input.

* :class:`SinusoidalEmbedding` turns ``t`` in [0, 1] into sinusoids of ``t`` at geometrically spaced
  frequencies; :class:`NoiseEmbedding` passes them through an MLP (DiT's timestep embedder with our
  frequencies).
* :class:`FourierFeatures` is VDM's precision encoding: ``sin``/``cos`` of the input at high
  frequencies, appended as extra channels, so the network can see where a value sits between the
  data's levels once the belief is precise.

Both compute their sinusoids from float32 copies of their inputs (autocast leaves elementwise
maths alone): bfloat16 cannot even place ``2^8 pi x`` within a full period.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

# The slowest frequency (rad per unit t): sin(t/2) stays within 4% of t/2 on [0, 1], so one feature
# is almost linear in t and orders all noise levels, however coarse the sampler's grid.
MIN_FREQUENCY = 0.5


def noise_frequencies(count: int, max_steps: int) -> Tensor:
    """``count`` angular frequencies (rad per unit ``t``), geometric from 0.5 to just below Nyquist.

    A sampler with ``max_steps`` steps evaluates ``t`` on a grid of spacing ``1/max_steps``, whose
    Nyquist frequency is ``pi * max_steps``.  Frequencies above it alias: two steps would look alike
    at that frequency.  The grid is geometric and half-open, so its top is one ratio step below
    Nyquist, and at that irrational fraction of it the fastest feature never repeats along the grid.
    """
    nyquist = math.pi * max_steps
    if nyquist <= MIN_FREQUENCY:
        raise ValueError(f"max_steps={max_steps} is too small for a noise embedding")
    exponents = torch.arange(count, dtype=torch.float64) / count
    return (MIN_FREQUENCY * (nyquist / MIN_FREQUENCY) ** exponents).float()


class SinusoidalEmbedding(nn.Module):
    """``t (B,)`` in [0, 1] -> ``(B, features)`` float32: ``[sin(w t), cos(w t)]`` with the frequencies
    of :func:`noise_frequencies` (half sines, half cosines).

    Args:
        features: number of features (even).
        max_steps: the most sampling steps expected; sets the top frequency.
    """

    def __init__(self, features: int, max_steps: int = 1000):
        super().__init__()
        if features % 2:
            raise ValueError(f"features must be even (sines and cosines), got {features}")
        frequencies = noise_frequencies(features // 2, max_steps)
        self.register_buffer("frequencies", frequencies, persistent=False)
        # cos(w t) = sin(w t + pi/2): one multiply-add and one sine for all features, no concatenation
        self.register_buffer("_scales", frequencies.repeat(2), persistent=False)
        self.register_buffer("_offsets", torch.zeros(features).index_fill_(0, torch.arange(features // 2, features),
                                                                           math.pi / 2), persistent=False)

    def features(self, t: Tensor) -> Tensor:
        """The sinusoids: ``(B,)`` -> ``(B, features)`` float32."""
        return torch.addcmul(self._offsets, t.float()[:, None], self._scales).sin()

    forward = features


class NoiseEmbedding(SinusoidalEmbedding):
    """``t (B,)`` in [0, 1] -> ``(B, dim)``: :class:`SinusoidalEmbedding`, then a 2-layer MLP (DiT's
    timestep embedder with our frequencies).

    Args:
        dim: output width (and hidden width of the MLP).
        max_steps: the most sampling steps expected; sets the top frequency (see
            :func:`noise_frequencies`).
        features: number of sinusoidal features (half sines, half cosines).
    """

    def __init__(self, dim: int, max_steps: int = 1000, features: int = 256):
        super().__init__(features, max_steps)
        self.mlp = nn.Sequential(nn.Linear(features, dim), nn.SiLU(), nn.Linear(dim, dim))
        for layer in self.mlp[0], self.mlp[2]:
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)

    def forward(self, t: Tensor) -> Tensor:
        """``(B,)`` -> ``(B, dim)``."""
        return self.mlp(self.features(t))


class FourierFeatures(nn.Module):
    """Precision encoding: ``(B, C, H, W)`` -> ``(B, C (1 + 2K), H, W)``, the input first.

    Appends ``sin(2^k pi x)`` and ``cos(2^k pi x)`` for each integer ``k`` in ``[k_min, k_max]``
    (``K`` values).  For data in [-1, 1] on 256 levels, ``k = 8`` has a period of one level, so
    ``[6, 8]`` sees periods of 4, 2 and 1 level.  (VDM's own code, ``start=6, stop=8`` with
    ``2 pi 2^n``, is ``k`` in {7, 8} here; ``[7, 8]`` reproduces it exactly.)
    """

    def __init__(self, exponents: Sequence[int]):
        super().__init__()
        k_min, k_max = (int(k) for k in exponents)
        if k_max < k_min:
            raise ValueError(f"fourier_features needs [k_min, k_max] with k_min <= k_max, got {list(exponents)}")
        scales = math.pi * 2.0 ** torch.arange(k_min, k_max + 1, dtype=torch.float64)
        self.register_buffer("scales", scales.float(), persistent=False)
        # (sin, cos) x K scales as (2, 1, K, 1, 1) against x as (B, 1, C, 1, H, W), cos(p) = sin(p + pi/2):
        # one multiply-add and one sine give every feature, already in the output's channel order.
        self.register_buffer("_scales", scales.float().repeat(2, 1).view(2, 1, -1, 1, 1), persistent=False)
        self.register_buffer("_offsets", torch.tensor([0.0, math.pi / 2]).view(2, 1, 1, 1, 1), persistent=False)

    @property
    def multiplier(self) -> int:
        """Output channels per input channel."""
        return 1 + 2 * len(self.scales)

    def features(self, x: Tensor) -> Tensor:
        """The appended channels alone: ``(B, C, H, W)`` -> ``(B, 2 C K, H, W)`` in ``x``'s dtype."""
        # (B, 1, C, 1, H, W) -> (B, 2, C, K, H, W) -> (B, 2 C K, H, W): all sines (C-major), then all cosines
        features = torch.addcmul(self._offsets, x.float()[:, None, :, None], self._scales).sin().flatten(1, 3)
        return features if features.dtype == x.dtype else features.to(x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` -> ``(B, C (1 + 2K), H, W)``."""
        return torch.cat([x, self.features(x)], dim=1)


def precision_encoding(exponents: Sequence[int] | None) -> nn.Module:
    """:class:`FourierFeatures` for ``[k_min, k_max]``, or the identity for ``None``."""
    return FourierFeatures(exponents) if exponents is not None else nn.Identity()


def encoded_channels(in_channels: int, exponents: Sequence[int] | None) -> int:
    """Channels after :func:`precision_encoding` of ``in_channels`` channels."""
    return in_channels if exponents is None else in_channels * (1 + 2 * (int(exponents[1]) - int(exponents[0]) + 1))
