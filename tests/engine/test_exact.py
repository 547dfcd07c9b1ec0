"""The exact denoiser of a point set: the posterior over the points, computed independently here."""

import torch

from bsi.engine import DiscretisedOutput, make_process
from bsi.engine.exact import ExactDenoiser


def brute_force_weights(points, mu, a, s2):
    """softmax_i of -||mu - a x_i||^2 / (2 s2), with the full distance (no term dropped)."""
    d2 = ((mu[:, None, :] - a[:, None, None] * points[None]) ** 2).sum(-1)
    return torch.softmax(-d2 / (2 * s2[:, None]), dim=1)


def test_weights_are_the_posterior_over_the_points():
    proc = make_process("bsi")
    points = torch.randn(7, 3, dtype=torch.float64)
    den = ExactDenoiser(points, proc.family, chunk=2)  # chunks of 2 rows: the batch is cut and rejoined
    lam = torch.tensor([0.05, 1.0, 30.0, 2e3, 1e6], dtype=torch.float64)
    mu = torch.randn(5, 3, dtype=torch.float64)
    a, s2 = proc.family.mean_coef(lam), proc.family.variance(lam)
    expected = brute_force_weights(points, mu, a, s2)
    torch.testing.assert_close(den.weights(mu, lam), expected)
    torch.testing.assert_close(den(mu, lam), expected @ points)
    assert den.calls == 1


def test_no_signal_gives_the_mean_and_full_precision_the_nearest_point():
    proc = make_process("bsi")
    points = torch.tensor([[-1.0, 0.0], [1.0, 0.5], [0.0, 1.0]], dtype=torch.float64)
    den = ExactDenoiser(points, proc.family)
    at_start = den(torch.randn(2, 2, dtype=torch.float64), torch.full((2,), proc.family.lam0, dtype=torch.float64))
    torch.testing.assert_close(at_start, points.mean(0).expand(2, 2))  # a = 0: every point equally likely
    near = points[[2, 0]] + 1e-3
    lam = torch.full((2,), 1e6, dtype=torch.float64)
    torch.testing.assert_close(den(proc.family.mean_coef(lam)[:, None] * near, lam), points[[2, 0]])


def test_level_probabilities_of_the_discretised_posterior():
    proc = make_process("vdm", output="discretised", data_bins=3)
    points = torch.tensor([[-1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    den = ExactDenoiser(points, proc.family, bins=3)
    lam = torch.tensor([0.1, 5.0], dtype=torch.float64)
    mu = torch.tensor([[0.3, 0.0], [-0.2, 0.1]], dtype=torch.float64)
    out = den(mu, lam)
    assert isinstance(out, DiscretisedOutput)
    w = brute_force_weights(points, mu, proc.family.mean_coef(lam), proc.family.variance(lam))
    # first element: level 0 with the weight of point 0, level 2 with that of point 1; second: always level 1
    torch.testing.assert_close(out.probs[:, 0], torch.stack([w[:, 0], torch.zeros(2, dtype=torch.float64), w[:, 1]], 1))
    torch.testing.assert_close(out.probs[:, 1], torch.tensor([[0.0, 1.0, 0.0]] * 2, dtype=torch.float64))
    torch.testing.assert_close(out.mean, w @ points)
