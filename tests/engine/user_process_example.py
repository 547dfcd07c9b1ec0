"""A user's own process, named by dotted path: the worked example of docs/design.md, "Adding a process"."""

import torch

from bsi.engine import GaussianSettings


class Steeper:
    """``lam(t) = lam_min (lam_max/lam_min)^(t^2)``: a schedule that lingers at low precision."""

    name = "steeper"

    def __init__(self, precision):
        self.precision = precision

    def lam(self, t):
        return self.precision.at(t.double() ** 2)

    def t(self, lam):
        return self.precision.position(lam).clamp(min=0).sqrt()

    def dlam_dt(self, t):
        return self.lam(t) * self.precision.log_ratio * 2 * t.double()


class SnrCapped:
    """A weighting: the proposal's precisions, each example's weight ``min(snr, cap)`` on ``1/2 ||x - x_hat||^2``."""

    name = "snr_capped"

    def __init__(self, cap: float = 10.0):
        self.cap = cap

    def draw(self, u, parts):
        lam, _ = parts.proposal.lam(u)
        snr = parts.beliefs.mean_coef(lam) ** 2 / parts.beliefs.variance(lam)
        return lam, torch.clamp(snr, max=self.cap)


# A whole process: a variance-exploding belief (a = 1, s2 = 1/lam) on [1e-3, 1e5], trained on the
# unbiased ELBO with t ~ U(0, 1) under the user's schedule, sampled ancestrally on that schedule's time.
STEEP_VE = GaussianSettings(
    lam0=0.0, drawn_start=True, lambda_min=1e-3, lambda_max=1e5, prediction="x", scale_input=True, clip=False,
    proposal="uniform_t", alpha_r=1e5, schedule="user_process_example.Steeper", sample_spacing="time",
)
