"""Data spaces against their definitions: one-hot coordinates, BFN's logits and input distribution, readers."""

import math

import pytest
import torch

from bsi.engine import CategoricalOutput, Continuous, DiscretisedOutput, OneHot, PointOutput


def test_continuous_space_is_the_identity_and_checks_the_range():
    space = Continuous(bins=17, alpha_r=1e4)
    x = torch.linspace(-1, 1, 17).reshape(1, 17)
    assert space.encode(x) is x and space.belief_shape((4, 3, 8, 8)) == (4, 3, 8, 8)
    assert space.in_channels(3) == 3 and space.out_channels(3, "point") == 3 and space.out_channels(3, "discretised") == 6
    mu = torch.randn(2, 5)
    assert all(a is b for a, b in zip(space.to_data(mu, torch.ones(2), mu), (mu, mu)))
    with pytest.raises(ValueError, match=r"\[-1, 1\].*to_float"):
        space.check(x * 1.5)
    with pytest.raises(ValueError, match=r"batched as \(B, \.\.\.\)"):
        space.check(torch.zeros(5))
    Continuous(bins=None).check(x * 100)  # continuous data may take any value
    with pytest.raises(ValueError, match="at least 2 levels"):
        Continuous(bins=1)


def test_continuous_read_gives_a_point_with_the_spaces_reconstruction():
    """The point's reconstruction of x_hat = x is the mass of x's bin under N(x, 1/alpha_r): erf(h sqrt(alpha_r/2))."""
    alpha_r, bins = 400.0, 5
    space = Continuous(bins, alpha_r)
    x = torch.tensor([[0.0, 0.5]], dtype=torch.float64)
    out = space.read(x.clone())
    assert isinstance(out, PointOutput) and (out.alpha_r, out.bins) == (alpha_r, bins)
    half_width = 1 / (bins - 1)
    expected = math.log(math.erf(half_width * math.sqrt(alpha_r / 2)))
    torch.testing.assert_close(out.log_prob(x), torch.full_like(x, expected), rtol=1e-9, atol=1e-12)
    dist = DiscretisedOutput(torch.zeros(1, 2, bins).log_softmax(-1))
    assert space.read(dist) is dist
    with pytest.raises(ValueError, match="tensor or an output"):
        space.read([1.0])


def test_one_hot_encodes_levels_and_class_indices_alike():
    space = OneHot(3)
    levels = torch.tensor([[-1.0, 0.0, 1.0, 0.0]])
    indices = torch.tensor([[0, 1, 2, 1]])
    expected = torch.eye(3)[[0, 1, 2, 1]][None]
    assert torch.equal(space.encode(levels), expected) and torch.equal(space.encode(indices), expected)
    assert space.belief_shape((2, 1, 4)) == (2, 1, 4, 3) and space.in_channels(2) == space.out_channels(2, "x") == 6
    assert space.bins == 3
    with pytest.raises(ValueError, match=r"class indices must lie in \[0, 3\)"):
        space.check(torch.tensor([[3, 0]]))
    with pytest.raises(ValueError, match="levels"):
        space.check(torch.tensor([[0.3, 1.0]]))
    with pytest.raises(ValueError, match="at least 2 classes"):
        OneHot(1)


def test_bfn_logits_and_theta():
    """theta = softmax(lam mu) is softmax of BFN's logits lam mu - lam/K (a shift per variable)."""
    space = OneHot(4)
    mu = torch.randn(3, 2, 4, dtype=torch.float64)
    lam = torch.tensor([0.5, 2.0, 40.0], dtype=torch.float64)
    logits = space.logits(mu, lam)
    torch.testing.assert_close(logits, lam[:, None, None] * (mu - 0.25))
    torch.testing.assert_close(space.theta(mu, lam), torch.softmax(logits, -1))
    belief, prediction = space.to_data(mu, lam, torch.full_like(mu, 0.25))
    torch.testing.assert_close(belief, space.theta(mu, lam) @ torch.linspace(-1, 1, 4, dtype=torch.float64))
    torch.testing.assert_close(prediction, torch.zeros(3, 2, dtype=torch.float64))  # uniform: the middle


def test_one_hot_read_takes_probabilities_and_their_log_prob_is_ln_p():
    space = OneHot(3)
    probs = torch.tensor([[[0.2, 0.5, 0.3]]], dtype=torch.float64)
    out = space.read(probs)
    assert isinstance(out, CategoricalOutput)
    e = space.encode(torch.tensor([[2]]), dtype=torch.float64)
    torch.testing.assert_close(out.log_prob(e), torch.tensor([[math.log(0.3)]], dtype=torch.float64))
    assert space.read(out) is out and isinstance(space.read(PointOutput(probs)), CategoricalOutput)
    with pytest.raises(ValueError, match="class probabilities"):
        space.read("logits")


def test_training_loss_checks_the_range_unless_told_the_data_is_on_the_levels():
    """The check reads the batch's extremes on the host (a wait on an accelerator): the trainer, whose batches
    are levels by construction, skips it with check=False; the loss is the same either way."""
    from bsi.engine import make_process

    proc = make_process("bsi", output="point", data_bins=17)
    denoiser = proc.parameterize(lambda x, t: torch.zeros_like(x))
    x, u = torch.linspace(-1, 1, 17).repeat(4, 1).reshape(4, 1, 17), torch.tensor([0.1, 0.3, 0.6, 0.9])
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        proc.training_loss(x * 1.5, denoiser, u=u, generator=torch.Generator().manual_seed(0))
    loss = proc.training_loss(x, denoiser, u=u, generator=torch.Generator().manual_seed(0)).loss
    unchecked = proc.training_loss(x, denoiser, u=u, generator=torch.Generator().manual_seed(0), check=False).loss
    assert torch.equal(loss, unchecked)
    assert torch.isfinite(proc.training_loss(x * 1.5, denoiser, u=u, check=False).loss).all()
