"""The process composes its pieces: known answers for the loss and the ELBO, one network call per term."""

import math

import pytest
import torch

from bsi.engine import example_generators, make_process


class Oracle:
    """A denoiser that knows x (rows of ``x`` in order, repeated over the draws) or predicts zero."""

    def __init__(self, x=None):
        self.x, self.calls, self.rows = x, 0, []

    def __call__(self, mu, lam):
        self.calls += 1
        self.rows.append(mu.shape[0])
        if self.x is None:
            return torch.zeros_like(mu)
        return self.x.repeat_interleave(mu.shape[0] // self.x.shape[0], 0).to(mu.dtype)


def data(n=3, d=5):
    return torch.linspace(-1, 1, n * d, dtype=torch.float64).reshape(n, d)


def test_training_loss_of_a_zero_prediction_is_the_weighted_squared_norm():
    """x_hat = 0: h = ||x||^2/2 and BSI's log-uniform weight is lam ln(lambda_max/lambda_min), averaged over dims."""
    proc = make_process("bsi")
    x, u = data(), torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    out = proc.training_loss(x, Oracle(), u=u)
    lam = proc.lambda_min * (proc.lambda_max / proc.lambda_min) ** u
    h = 0.5 * (x**2).sum(1)
    torch.testing.assert_close(out.lam, lam)
    torch.testing.assert_close(out.integrand, h.float(), check_dtype=False)
    torch.testing.assert_close(out.loss.double(), h * lam * math.log(proc.lambda_max / proc.lambda_min) / 5,
                               rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", ["bsi", "bfn", "vdm"])
def test_k_step_elbo_of_a_zero_prediction_is_exact_with_one_draw_per_step(name):
    """x_hat = 0: sum_i alpha_i/2 ||x||^2 = (lambda_max - lambda_min)/2 ||x||^2; k stratified draws hit each step once."""
    proc = make_process(name)
    x, k = data(), 8
    terms = proc.elbo(x, Oracle(), steps=k, n_samples=k, generator=torch.Generator().manual_seed(0))
    expected = 0.5 * (x**2).sum(1) * (proc.lambda_max - proc.lambda_min)
    torch.testing.assert_close(terms["measurement"], expected, rtol=1e-12, atol=0)


def test_infinite_step_elbo_of_a_zero_prediction_converges_to_the_integral():
    proc = make_process("bsi")
    x = data(2)
    terms = proc.elbo(x, Oracle(), n_samples=4096, generator=torch.Generator().manual_seed(1))
    expected = 0.5 * (x**2).sum(1) * (proc.lambda_max - proc.lambda_min)
    torch.testing.assert_close(terms["measurement"], expected, rtol=2e-3, atol=0)


def test_an_oracle_pays_only_the_reconstruction_in_one_call_per_term():
    """x_hat = x: no measurement cost; the reconstruction of each element is ln erf(h sqrt(alpha_r/2)), h the half bin."""
    bins = 17
    proc = make_process("bsi", data_bins=bins)
    x = torch.linspace(-1, 1, bins, dtype=torch.float64).reshape(1, bins).repeat(3, 1)
    den = Oracle(x)
    terms = proc.elbo(x, den, n_samples=4, generator=torch.Generator().manual_seed(2), reconstruction_samples=2)
    assert den.calls == 2 and den.rows == [3 * 4, 3 * 2]  # all draws of a term in one network call
    assert terms["measurement"].abs().max() == 0 and terms["prior"].abs().max() == 0
    inner = math.log(math.erf(1 / (bins - 1) * math.sqrt(proc.space.alpha_r / 2)))
    edge = math.log(0.5 * (1 + math.erf(1 / (bins - 1) * math.sqrt(proc.space.alpha_r / 2))))  # open edge bins
    expected = -(15 * inner + 2 * edge)
    torch.testing.assert_close(terms["reconstruction"], torch.full((3,), expected, dtype=torch.float64))
    torch.testing.assert_close(terms["total"], terms["reconstruction"])


@pytest.mark.parametrize("steps", [None, 10])
def test_each_examples_estimate_depends_only_on_its_own_generator(steps, digits):
    from bsi.engine.exact import ExactDenoiser

    proc = make_process("vdm", data_bins=17, output="discretised")
    points = digits[:16].double()
    den = ExactDenoiser(points, proc.family, bins=17)
    x = points[:6]
    whole = proc.elbo(x, den, steps=steps, n_samples=3, generator=example_generators(4, range(6)))
    parts = [proc.elbo(x[i : i + 2], den, steps=steps, n_samples=3, generator=example_generators(4, range(i, i + 2)))
             for i in (0, 2, 4)]
    for term in ("measurement", "reconstruction", "total"):
        torch.testing.assert_close(whole[term], torch.cat([p[term] for p in parts]))


def test_bad_draw_counts_and_bad_shapes_are_clear_errors():
    proc = make_process("bsi")
    with pytest.raises(ValueError, match="n_samples"):
        proc.elbo(data(), Oracle(), n_samples=0)
    with pytest.raises(ValueError, match="denoiser returned shape"):
        proc.elbo(data(), lambda mu, lam: mu[:, :2])
    with pytest.raises(ValueError, match=r"lam must have shape \(B,\)"):
        proc.belief(data(), torch.ones(2))
    with pytest.raises(ValueError, match="unknown solver"):
        proc.sample(Oracle(), (2, 5), steps=3, solver="heun")


def test_sampling_grid_starts_where_each_solver_can():
    """Ancestral on a lam grid starts at lambda_min; ODE solvers where sigma = sqrt(s2)/a falls to sigma_max."""
    proc = make_process("bfn")
    assert proc.sampling_grid(5, "ancestral")[0].item() == proc.lambda_min
    start = proc.sampling_grid(5, "ode2", "edm")[0]
    sigma = proc.family.sigma(start)
    assert start > proc.lambda_min and sigma.item() == pytest.approx(proc.sampling.sigma_max, rel=1e-9)


def test_calibration_adds_the_outputs_log_likelihood_and_trains_only_its_spread():
    """loss = (h w - c sum ln p(x)) / D; the added term leaves the location's gradient unchanged."""
    from bsi.engine import discretised_gaussian_log_prob

    x = torch.linspace(-1, 1, 17).reshape(1, 1, 17).repeat(4, 1, 1).double()
    u = torch.tensor([0.2, 0.4, 0.6, 0.8], dtype=torch.float64)
    grads = {}
    for c in (0.0, 0.7):
        proc = make_process("bsi", output="discretised", data_bins=17, calibration=c or None)
        raw = torch.zeros(4, 2, 17, dtype=torch.float64, requires_grad=True)
        den = proc.parameterize(lambda x_in, t: raw + 0.1)
        out = proc.training_loss(x, den, generator=torch.Generator().manual_seed(0), u=u)
        out.loss.sum().backward()
        grads[c] = raw.grad.clone()
        if c:
            mu = proc.belief(x, out.lam, torch.Generator().manual_seed(0))  # the same draw as inside
            dist = den(mu, out.lam)
            m, scale, _ = dist._gaussian
            weight = out.lam * math.log(proc.lambda_max / proc.lambda_min)
            nll = -discretised_gaussian_log_prob(x, m, scale, 17).sum((1, 2))
            expected = (out.integrand.double() * weight + c * nll) / 17
            torch.testing.assert_close(out.loss.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[0.7][:, 0], grads[0.0][:, 0])  # location: untouched
    assert (grads[0.7][:, 1] - grads[0.0][:, 1]).abs().max() > 1e-3  # spread: trained by the added term too
    with pytest.raises(ValueError, match="calibration"):
        make_process("bsi", calibration=0.5)


def test_low_variance_k_step_estimator_agrees_with_one_draw_and_is_less_noisy(digits):
    """Both estimate the same k-step bound; quadrature over the measurement removes the draw's noise."""
    from bsi.engine.exact import ExactDenoiser

    points = digits[:32].double()
    x = points.repeat(8, 1, 1, 1)
    totals = {}
    for estimator in ("low_variance", "one_draw"):
        proc = make_process("bsi", data_bins=17, output="discretised", kstep_estimator=estimator)
        den = ExactDenoiser(points, proc.family, bins=17)
        totals[estimator] = proc.elbo(x, den, steps=20, n_samples=4, generator=torch.Generator().manual_seed(3))["total"]
    lv, od = totals["low_variance"], totals["one_draw"]
    se = (lv.var() / len(lv) + od.var() / len(od)).sqrt()
    assert abs(lv.mean() - od.mean()) < 4 * se, (lv.mean(), od.mean(), se)
    assert lv.std() < 0.8 * od.std(), (lv.std(), od.std())
