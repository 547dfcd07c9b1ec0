"""Categorical data (BFN's discrete data) on known answers: BFN's own formulas and the exact predictor."""

import math

import pytest
import torch

from bsi.engine import CategoricalOutput, OneHot, make_process
from bsi.engine.exact import ExactDenoiser

K = 5


def bfn_time(proc, lam):
    """BFN's time tau of precision lam = K beta_1 tau^2."""
    return torch.sqrt(lam / proc.lambda_max)


def predictor(theta, tau):
    """A fixed, non-trivial output network of BFN's inputs: probabilities from theta and tau."""
    shape = [-1] + [1] * (theta.dim() - 1)
    return torch.softmax(3 * theta + torch.arange(theta.shape[-1], dtype=theta.dtype) * tau.reshape(shape), -1)


def engine_predictor(proc):
    def den(mu, lam):
        return predictor(OneHot.theta(mu, lam), bfn_time(proc, lam).to(mu.dtype))
    return den


def test_belief_logits_have_bfns_closed_form():
    """logits ~ N(beta (K e_x - 1), beta K I) for the accumulated accuracy beta = lam / K."""
    proc = make_process("bfn-discrete", num_classes=K, beta_1=2.0)
    x = torch.arange(K).repeat(4000)[:, None]  # every class, many times
    beta = 0.7
    lam = torch.full((len(x),), K * beta, dtype=torch.float64)
    mu = proc.belief(x, lam, generator=torch.Generator().manual_seed(0)).double()
    assert mu.shape == (len(x), 1, K)
    logits = OneHot.logits(mu, lam)[:, 0]
    e = torch.nn.functional.one_hot(x[:, 0], K).double()
    resid = logits - beta * (K * e - 1)
    n = len(x)
    assert resid.mean(0).abs().max() < 5 * math.sqrt(beta * K / n)
    assert (resid.var(0) / (beta * K) - 1).abs().max() < 5 * math.sqrt(2 / n)


def test_bayesian_update_is_bfns_discrete_update():
    """The engine's Gaussian update of mu, on mapped measurements, adds BFN's y to BFN's logits exactly."""
    proc = make_process("bfn-discrete", num_classes=K)
    g = torch.Generator().manual_seed(1)
    e = torch.nn.functional.one_hot(torch.randint(0, K, (64,), generator=g), K).double()
    alphas = [0.05, 0.3, 0.01, 1.2]
    bfn_logits = torch.zeros_like(e)  # theta_0 uniform
    mu, lam = torch.zeros_like(e), torch.zeros(64, dtype=torch.float64)
    for alpha in alphas:
        y = alpha * (K * e - 1) + math.sqrt(alpha * K) * torch.randn(e.shape, generator=g, dtype=torch.float64)
        bfn_logits = bfn_logits + y  # theta' ∝ e^y theta
        y_engine = y / (alpha * K) + 1 / K  # the same measurement of e_x, precision alpha K
        a = torch.full_like(lam, alpha * K)
        mu, lam = proc.family.update(mu, lam, y_engine, a), lam + a
    ours = OneHot.logits(mu, lam)
    assert torch.allclose(ours, bfn_logits, atol=1e-10)
    assert torch.allclose(OneHot.theta(mu, lam), torch.softmax(bfn_logits, -1), atol=1e-12)


def test_continuous_time_loss_equals_bfns_formula():
    """Our training loss is K beta_1 tau ||e_x - e_hat||^2 (BFN's L_inf integrand) at the same draw."""
    beta_1 = 3.0
    proc = make_process("bfn-discrete", num_classes=K, beta_1=beta_1)
    x = torch.randint(0, K, (32, 1, 6), generator=torch.Generator().manual_seed(2))
    u = torch.rand(32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ours = proc.training_loss(x, engine_predictor(proc), generator=torch.Generator().manual_seed(4), u=u)
    # BFN: tau ~ U(0, 1); here tau = tau_0 + (1 - tau_0) u over the range the engine covers (Jacobian 1 - tau_0).
    tau0 = math.sqrt(proc.lambda_min / proc.lambda_max)
    tau = tau0 + (1 - tau0) * u
    beta = beta_1 * tau**2
    e = torch.nn.functional.one_hot(x, K).double()
    eps = torch.randn(e.shape, generator=torch.Generator().manual_seed(4)).double()  # the engine draws in x's float32
    y = beta[:, None, None, None] * (K * e - 1) + (beta * K).sqrt()[:, None, None, None] * eps
    e_hat = predictor(torch.softmax(y, -1), tau)
    bfn = K * beta_1 * tau * ((e - e_hat) ** 2).sum((1, 2, 3))
    dims = x[0].numel()
    assert torch.allclose(ours.loss.double() * dims, bfn * (1 - tau0), rtol=1e-5)
    assert torch.allclose(ours.lam, K * beta)


def test_one_step_kl_equals_bfns_sender_receiver_log_ratio():
    """For one draw, -logsumexp(log p + alpha (y - y_x)) is BFN's ln p_S(y | x) - ln p_R(y | theta)."""
    g = torch.Generator().manual_seed(5)
    e = torch.nn.functional.one_hot(torch.randint(0, K, (200, 3), generator=g), K).double()
    probs = torch.softmax(torch.randn(200, 3, K, generator=g, dtype=torch.float64), -1)
    alpha_bfn = torch.rand(200, generator=g, dtype=torch.float64) * 2
    ours = CategoricalOutput.from_probs(probs).measurement_kl(e, K * alpha_bfn, torch.Generator().manual_seed(6))
    eps = torch.randn(e.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    a = alpha_bfn[:, None, None]
    y = a * (K * e - 1) + (a * K).sqrt() * eps  # BFN's sender draw with the same noise

    def log_normal(y, mean, var):
        return (-0.5 * (y - mean) ** 2 / var - 0.5 * torch.log(2 * math.pi * var)).sum(-1)

    log_sender = log_normal(y, a * (K * e - 1), a * K)
    classes = torch.eye(K, dtype=torch.float64)
    per_class = torch.stack([log_normal(y, a * (K * classes[k] - 1), a * K) for k in range(K)], -1)
    log_receiver = torch.logsumexp(probs.log() + per_class, -1)
    assert torch.allclose(ours.double(), log_sender - log_receiver, atol=1e-8)


def test_time_grid_has_bfns_step_accuracies():
    """Uniform steps in tau: alpha_i = K beta_1 (2i - 1)/n^2 (BFN's discrete-time accuracies, in precision)."""
    beta_1, n = 0.75, 10
    proc = make_process("bfn-discrete", num_classes=27, beta_1=beta_1)
    lams = proc.step_precisions(n)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    assert torch.allclose(lams.diff(), 27 * beta_1 * (2 * i - 1) / n**2, rtol=1e-3)


def test_k_step_elbo_matches_bfns_discrete_time_loss():
    """Our k-step measurement term against a direct Monte Carlo of BFN's L^n with its own formulas."""
    beta_1, n, reps = 3.0, 6, 3000
    proc = make_process("bfn-discrete", num_classes=K, beta_1=beta_1)
    x = torch.tensor([[0, 3, 1]]).repeat(reps, 1)[:, None]  # (reps, 1, 3) class indices
    ours = proc.elbo(x, engine_predictor(proc), steps=n, generator=torch.Generator().manual_seed(7))["measurement"]
    g = torch.Generator().manual_seed(8)
    e = torch.nn.functional.one_hot(x, K).double()
    i = torch.randint(1, n + 1, (reps,), generator=g, dtype=torch.float64)
    tau = ((i - 1) / n)[:, None, None, None]
    beta = beta_1 * tau**2
    flow = beta * (K * e - 1) + (beta * K).sqrt() * torch.randn(e.shape, generator=g, dtype=torch.float64)
    e_hat = predictor(torch.softmax(flow, -1), tau.flatten())
    alpha = (beta_1 * (2 * i - 1) / n**2)[:, None, None]
    bfn = n * CategoricalOutput.from_probs(e_hat).measurement_kl(e, K * alpha.flatten(), g).sum((1, 2))
    se = math.sqrt(ours.var() / reps + bfn.var() / reps)
    assert abs(ours.mean() - bfn.mean()) < 4 * se, (ours.mean(), bfn.mean(), se)


def sequences(n, length, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    while True:
        s = torch.randint(0, k, (n, 1, length), generator=g)
        if len(torch.unique(s.flatten(1), dim=0)) == n:
            return s


def exact_categorical(proc, seqs):
    return ExactDenoiser(torch.nn.functional.one_hot(seqs, proc.space.num_classes).double(), proc.family)


def test_exact_predictor_of_single_variables_gives_ln_n_at_any_accuracy():
    """One variable: the factorised output is the exact posterior, so the ELBO is ln K (I-MMSE) at text8's beta_1."""
    proc = make_process("bfn-discrete", num_classes=K, beta_1=0.75)
    seqs = torch.arange(K)[:, None, None]
    den = exact_categorical(proc, seqs)
    x = seqs.repeat(400, 1, 1)
    terms = proc.elbo(x, den, n_samples=4, generator=torch.Generator().manual_seed(9))
    total = terms["total"]
    se = total.std().item() / math.sqrt(len(total))
    assert terms["reconstruction"].mean() > 0.1  # far from certain at the top
    assert abs(total.mean().item() - math.log(K)) < 4 * se + 1e-3, (total.mean(), math.log(K), se)
    assert terms["prior"].abs().max() < 1e-6


def test_exact_predictor_of_sequences_gives_ln_n_and_k_steps_fall_towards_it():
    n = 6
    proc = make_process("bfn-discrete", num_classes=4, beta_1=30.0)  # certain at the top
    seqs = sequences(n, 5, 4)
    den = exact_categorical(proc, seqs)
    x = seqs.repeat(100, 1, 1).double() * (2 / 3) - 1  # levels in [-1, 1], as the data pipeline gives them
    g = torch.Generator().manual_seed(10)
    terms = proc.elbo(x, den, n_samples=4, generator=g)
    total = terms["total"]
    se = total.std().item() / math.sqrt(len(total))
    assert terms["reconstruction"].mean() < 1e-2
    assert abs(total.mean().item() - math.log(n)) < 4 * se + 0.01, (total.mean(), math.log(n), se)
    l_k = [proc.elbo(x, den, steps=k, n_samples=2, generator=g)["total"].mean().item() for k in (2, 8, 64)]
    assert l_k[0] > l_k[1] > l_k[2] > total.mean().item() - 4 * se, l_k


@pytest.mark.parametrize("solver", ["ancestral", "ode2", "sde2"])
def test_samplers_return_the_sequences_uniformly(solver):
    n = 6
    proc = make_process("bfn-discrete", num_classes=4, beta_1=30.0)
    seqs = sequences(n, 5, 4)
    den = exact_categorical(proc, seqs)
    out = proc.sample(den, (600, 1, 5), steps=100, solver=solver, generator=torch.Generator().manual_seed(11),
                      dtype=torch.float64)
    assert out.shape == (600, 1, 5)
    classes = OneHot(4).classes(out)
    assert torch.allclose(out, -1 + 2 * classes.double() / 3)  # on the levels
    match = (classes.flatten(1)[:, None] == seqs.flatten(1)[None]).all(-1)  # (600, n)
    assert match.any(1).float().mean() > 0.97
    counts = match.sum(0)
    assert counts.min() > 100 * 0.6 and counts.max() < 100 * 1.4, counts


def test_denoiser_layout_and_a_zero_backbone_predicts_uniform():
    proc = make_process("bfn-discrete", num_classes=3)
    assert proc.in_channels(2) == proc.out_channels(2) == 6
    seen = {}

    def echo(x_in, t):
        seen["x_in"], seen["t"] = x_in, t
        return 10 * x_in  # logits follow theta: channel c K + k must be class k of channel c

    x = torch.randint(0, 3, (4, 2, 5, 5))
    lam = torch.full((4,), 0.5 * proc.lambda_max, dtype=torch.float64)
    mu = proc.belief(x, lam, generator=torch.Generator().manual_seed(12))
    out = proc.parameterize(echo)(mu, lam)
    assert seen["x_in"].shape == (4, 6, 5, 5)
    tau0 = math.sqrt(proc.lambda_min / proc.lambda_max)  # the network sees the schedule's time, BFN's tau on [tau0, 1]
    assert torch.allclose(seen["t"], torch.full((4,), (math.sqrt(0.5) - tau0) / (1 - tau0)), atol=1e-6)
    assert torch.equal(out.probs.argmax(-1), OneHot.theta(mu, lam).argmax(-1))
    zero = proc.parameterize(lambda x_in, t: torch.zeros_like(x_in))(mu, lam)
    assert torch.allclose(zero.probs, torch.full_like(zero.probs, 1 / 3))
    with pytest.raises(ValueError, match="out_channels=6"):
        proc.parameterize(lambda x_in, t: x_in[:, :3])(mu, lam)


def test_bad_input_gets_clear_errors():
    with pytest.raises(ValueError, match="number of classes"):
        make_process("bfn-discrete")
    with pytest.raises(ValueError, match="output=discretised"):
        make_process("bfn-discrete", num_classes=2, output="point")
    with pytest.raises(ValueError, match="disagree"):
        make_process("bfn-discrete", num_classes=2, data_bins=3)
    proc = make_process("bfn-discrete", data_bins=3)
    assert proc.space.num_classes == 3 and proc.lambda_max == 9.0
    lam = torch.full((2,), 1.0, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"class indices must lie in \[0, 3\)"):
        proc.belief(torch.tensor([[0, 3]]).repeat(2, 1), lam)
    with pytest.raises(ValueError, match="levels"):
        proc.belief(torch.tensor([[0.3, 1.0]]).repeat(2, 1), lam)


def test_in_data_space_pictures_classes_as_their_mean_level():
    proc = make_process("bfn-discrete", num_classes=3)
    x = torch.tensor([[0, 1, 2]])
    lam = torch.full((1,), proc.lambda_max, dtype=torch.float64)
    e = proc.space.encode(x).double()
    belief, prediction = proc.in_data_space(10 * e, lam, torch.full_like(e, 1 / 3))
    assert belief.shape == prediction.shape == x.shape
    assert torch.allclose(belief, torch.tensor([[-1.0, 0.0, 1.0]], dtype=torch.float64), atol=1e-6)  # theta ~ one-hot
    assert torch.allclose(prediction, torch.zeros(1, 3, dtype=torch.float64))  # uniform: the middle level
    cont = make_process("bsi")
    mu = torch.randn(2, 4)
    assert all(a is b for a, b in zip(cont.in_data_space(mu, lam, mu), (mu, mu)))
