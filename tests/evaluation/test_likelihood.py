"""bpd from bsi.evaluation.likelihood against the engine's own ELBO, on the exact denoiser of a point set."""

import math

import pytest
import torch

from bsi.data import to_float
from bsi.engine import bits_per_dim, example_generators, make_process
from bsi.engine.exact import ExactDenoiser
from bsi.evaluation import KSTEP_DRAWS, TERMS, evaluate_likelihood, shard
from bsi.evaluation.likelihood import elbo_terms, pilot_step_proposal

BINS = 17


@pytest.fixture(scope="module")
def points() -> torch.Tensor:
    """23 random images (uint8 levels, 1x4x4): a set whose size divides by neither 2 nor 3."""
    return torch.randint(0, BINS, (23, 1, 4, 4), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


@pytest.fixture(scope="module")
def model(points):
    proc = make_process("bsi", data_bins=BINS)
    return proc, ExactDenoiser(to_float(points, BINS).double(), proc.beliefs)


def run(model, points, batch_size=5, indices=None, ks=(4,), **kw):
    proc, den = model
    return evaluate_likelihood(proc, den, points, BINS, points.shape[1:], ks=ks, n_samples=3, seed=7,
                               batch_size=batch_size, device=torch.device("cpu"), indices=indices,
                               n_examples=len(points), show_progress=False, **kw)


@pytest.mark.parametrize("kstep", KSTEP_DRAWS)
def test_matches_the_engine_elbo_on_the_same_batch(model, points, kstep):
    proc, den = model
    result = run(model, points, kstep=kstep, pilot=10)
    assert result.to_json()["kstep"] == kstep
    x = to_float(points, BINS)
    for row in result.rows:
        options = {}
        if row.steps is not None and kstep == "proposal":
            options["step_proposal"] = pilot_step_proposal(proc, den, points, BINS, row.steps, 10, 7, torch.device("cpu"))
            assert not torch.allclose(options["step_proposal"], torch.full((row.steps,), 1 / row.steps, dtype=torch.float64))
        options["trajectory"] = row.steps is not None and kstep == "trajectory"
        terms = proc.elbo(x, den, steps=row.steps, n_samples=3, generator=example_generators(7, range(len(points))),
                          **options)
        for k in TERMS:
            want = bits_per_dim(terms[k], x[0].numel())
            assert row.terms[k].mean == pytest.approx(want.mean, abs=1e-9), (row.steps, k)
            assert row.terms[k].stderr == pytest.approx(want.stderr, abs=1e-9), (row.steps, k)


def test_batch_size_does_not_change_the_numbers_and_runs_repeat_exactly(model, points):
    a, b, c = run(model, points, batch_size=8), run(model, points, batch_size=23), run(model, points, batch_size=8)
    for ra, rb, rc in zip(a.rows, b.rows, c.rows):
        for k in TERMS:
            assert ra.terms[k].mean == pytest.approx(rb.terms[k].mean, abs=1e-9)
            assert ra.terms[k] == rc.terms[k]  # same seed, one rank: identical


def test_bpd_of_the_exact_model_is_log2_n_over_dims(model, points):
    """Units check: the model is uniform on the points, so the bound sits near log2(N)/D."""
    result = run(model, points, ks=())
    total = result.rows[0].terms["total"]
    assert total.n == 23 and result.dims == 16
    assert total.mean == pytest.approx(math.log2(23) / 16, abs=0.02 + 3 * total.stderr)


def test_terms_add_up_and_json_has_intervals(model, points):
    out = run(model, points).to_json()
    assert [row["steps"] for row in out["elbo"]] == [None, 4]
    for row in out["elbo"]:
        parts = sum(row[k]["bpd"] for k in ("measurement", "reconstruction", "prior"))
        assert row["total"]["bpd"] == pytest.approx(parts, rel=1e-12)
        lo, hi = row["total"]["ci95"]
        assert lo < row["total"]["bpd"] < hi


def test_shards_cover_every_example_once():
    n = 23
    for world in (1, 2, 3, 5):
        seen = sorted(i for r in range(world) for i in shard(n, r, world))
        assert seen == list(range(n))


def test_a_rank_computes_only_its_shard(model, points):
    proc, den = model
    mine = shard(len(points), 1, 3)
    part = elbo_terms(proc, den, points, mine, BINS, steps=None, n_samples=3, seed=7, batch_size=4,
                      device=torch.device("cpu"))
    full = elbo_terms(proc, den, points, range(len(points)), BINS, steps=None, n_samples=3, seed=7, batch_size=6,
                      device=torch.device("cpu"))
    assert torch.allclose(part["total"], full["total"][list(mine)], rtol=1e-12)


def test_the_global_random_state_is_left_alone(model, points):
    """Validation runs in the middle of training, whose dropout draws from the global RNG."""
    before = torch.get_rng_state()
    run(model, points)
    assert torch.equal(torch.get_rng_state(), before)


def test_should_stop_is_polled_once_per_batch_and_stops_between_batches(model, points):
    from bsi.evaluation import Stopped

    polls = []

    def after_two_batches() -> bool:
        polls.append(1)
        return len(polls) > 2

    with pytest.raises(Stopped):
        run(model, points, batch_size=15, ks=(), should_stop=after_two_batches)  # 15 rows: 5 examples x 3 draws
    assert len(polls) == 3  # two batches of the 23 examples ran, the third was never started
    polls.clear()
    run(model, points, batch_size=15, ks=(4,), should_stop=lambda: polls.append(1) or False)
    assert len(polls) == 2 * 5 + 4  # ceil(23 / 5) batches per ELBO, two ELBOs, and the 4 calls of the pilot
