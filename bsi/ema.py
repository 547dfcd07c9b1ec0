"""An exponential moving average of a model's weights, cheap enough to update after every step.

Warm-up (``train.ema_warmup``): the BSI reference's schedule, :func:`decay_at`.  Early weights are far
from the final ones, and a long fixed decay (0.9999) would keep them in the average for tens of
thousands of steps; the warm-up follows the weights closely first and lengthens the memory as
training settles.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


WARMUP_POWER = 2 / 3  # the BSI reference's (power 2/3, inverse gamma 1)


def decay_at(updates: int, decay: float, warmup: int | None = None) -> float:
    """The decay of the next update of an average that has had ``updates`` updates (0: the first, which copies).

    ``warmup=None``: ``decay`` from the second update on.  ``warmup=N`` (the BSI reference's
    schedule; its configs use N = 1000): the average copies the weights for the first ``N + 2``
    updates, then update ``n`` (counted from 0) uses ``min(decay, 1 - (n - N) ** (-2/3))``, which
    passes 0.99 after about N + 1,000 and 0.999 after about N + 31,600 updates.
    """
    if updates == 0:
        return 0.0
    if warmup is None:
        return decay
    if updates <= warmup + 1:
        return 0.0
    return min(decay, 1.0 - (updates - warmup) ** -WARMUP_POWER)


class EMA(nn.Module):
    """``avg = decay * avg + (1 - decay) * weights`` after every update; the first update copies.

    ``warmup``: the decay follows :func:`decay_at` (None: constant ``decay``).

    The average is the model copy ``self.module`` (evaluate it, sample from it).  Its state dict is
    that of ``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn(decay)`` and
    ``use_buffers=True`` (``module.*`` and ``n_averaged``), and so is the arithmetic of the
    floating-point tensors (one ``lerp`` each); integer buffers such as counters follow the model.
    What ``AveragedModel`` costs per call on top: walking the module tree four times and two
    host-device synchronisations (``n_averaged == 0``, ``n_averaged > 0``), about 8% of the default
    digits model's step on a CPU; here the tensor lists are built once and the count is known on
    the host.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: int | None = None):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        if warmup is not None and warmup < 0:
            raise ValueError(f"EMA warm-up must be an integer >= 0 or None, got {warmup}")
        self.module = copy.deepcopy(model).requires_grad_(False)
        self.decay, self.warmup = decay, warmup
        device = next(iter(model.parameters())).device
        self.register_buffer("n_averaged", torch.tensor(0, dtype=torch.long, device=device))
        self._averaged: int | None = 0  # n_averaged on the host; None: read it from the buffer when needed
        self._pairs: tuple[Any, ...] | None = None

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the current weights (parameters and buffers) of ``model`` into the average."""
        if self._pairs is None or self._pairs[0] is not model:
            mine = [*self.module.parameters(), *self.module.buffers()]
            theirs = [t.detach() for t in (*model.parameters(), *model.buffers())]
            floats = [i for i, t in enumerate(mine) if t.is_floating_point()]
            others = [i for i in range(len(mine)) if i not in set(floats)]
            self._pairs = (model, [mine[i] for i in floats], [theirs[i] for i in floats],
                           [mine[i] for i in others], [theirs[i] for i in others])
        _, avg, new, avg_other, new_other = self._pairs
        if self._averaged is None:
            self._averaged = int(self.n_averaged)
        decay = decay_at(self._averaged, self.decay, self.warmup)
        if decay == 0.0:
            torch._foreach_copy_(avg, new)
        else:
            torch._foreach_lerp_(avg, new, 1.0 - decay)
        for a, b in zip(avg_other, new_other):  # integer buffers (counters) are copied, not averaged
            a.copy_(b)
        self.n_averaged += 1
        self._averaged += 1

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._averaged = None  # the loaded count lives on the device; read it once, at the next update

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)
