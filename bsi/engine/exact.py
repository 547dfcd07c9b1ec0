"""Exact denoisers: the best known answers to test the engine against.

For data uniform on points ``x_1..x_N``, the posterior over which point produced ``mu`` at
precision ``lam`` is a softmax of ``-||mu - a(lam) x_i||^2 / (2 s2(lam))``; its mean is the ideal
``x_hat``.  A model with this denoiser is uniform on the points, so its ELBO is close to ``ln N``.

For data whose elements are iid on the levels with probabilities ``p``, the posterior factorises
per element: ``p_j N(mu; a c_j, s2)`` normalised over the levels ``c_j``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .belief import BeliefFamily
from .output import DiscretisedOutput, level_index, levels


class ExactDenoiser:
    """``denoiser(mu, lam)`` of the uniform distribution on ``points`` ``(N, ...)``.

    With ``bins`` set it returns the posterior's per-element level probabilities as a
    :class:`DiscretisedOutput` (the points must lie on the levels); otherwise the posterior mean.
    Computed in float64 and returned in ``mu``'s dtype.
    """

    def __init__(self, points: Tensor, family: BeliefFamily, bins: int | None = None, chunk: int = 4096):
        self.points = points.double().flatten(1)
        self.shape = points.shape[1:]
        self.sq_norms = (self.points**2).sum(1)
        self.family, self.bins, self.chunk = family, bins, chunk
        self.calls = 0
        if bins is not None:
            self.one_hot = torch.nn.functional.one_hot(level_index(self.points, bins), bins).double()

    def weights(self, mu: Tensor, lam: Tensor) -> Tensor:
        """Posterior probabilities of the points, ``(B, N)`` float64."""
        a = self.family.mean_coef(lam).to(mu.device)[:, None]
        s2 = self.family.variance(lam).to(mu.device)[:, None]
        m = mu.double().flatten(1)
        # ||mu - a x||^2 without the term that is the same for every point
        dist = -2 * a * (m @ self.points.to(mu.device).T) + a**2 * self.sq_norms.to(mu.device)
        safe = torch.where(s2 > 0, s2, torch.ones_like(s2))
        logits = torch.where(s2 > 0, -dist / (2 * safe), torch.zeros_like(dist))
        return torch.softmax(logits, dim=1)

    def __call__(self, mu: Tensor, lam: Tensor) -> Tensor | DiscretisedOutput:
        self.calls += 1
        w = torch.cat([self.weights(mu[i : i + self.chunk], lam[i : i + self.chunk]) for i in range(0, len(mu), self.chunk)])
        if self.bins is None:
            return (w @ self.points.to(mu.device)).reshape(mu.shape).to(mu.dtype)
        probs = torch.einsum("bn,ndk->bdk", w, self.one_hot.to(mu.device))
        log_probs = probs.clamp_min(1e-300).log().reshape(*mu.shape, self.bins)
        return DiscretisedOutput(log_probs.to(torch.promote_types(mu.dtype, torch.float32)))


class IidLevelsDenoiser:
    """``denoiser(mu, lam)`` of data whose elements are iid on ``len(probs)`` levels with probabilities ``probs``.

    Returns each element's exact posterior over the levels as a float64 :class:`DiscretisedOutput`.
    With it a k-step bound whose start is measured against ``probs`` is ``-ln p(x)`` in expectation
    for every ``k``, and the entropy of ``probs`` per element on average over the data.
    """

    def __init__(self, probs: Tensor, family: BeliefFamily):
        self.log_p = probs.double().log()
        self.family = family

    def __call__(self, mu: Tensor, lam: Tensor) -> DiscretisedOutput:
        c = levels(len(self.log_p), device=mu.device, dtype=torch.float64)
        a = self.family.mean_coef(lam).to(mu.device).reshape(-1, *[1] * mu.dim())  # (B, 1, ..., 1) against (B, ..., K)
        s2 = self.family.variance(lam).to(mu.device).reshape(-1, *[1] * mu.dim())
        log_w = self.log_p.to(mu.device) - (mu.double()[..., None] - a * c) ** 2 / (2 * s2)
        return DiscretisedOutput(torch.log_softmax(log_w, -1))
