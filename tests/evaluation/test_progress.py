"""Honest cost: the likelihood's bar counts every network call (the pilot's too) and projects from a timed call."""

from __future__ import annotations

import re
import time

import pytest
import torch

from bsi.engine import make_process
from bsi.evaluation import (
    KSTEP_DRAWS,
    Cost,
    Metered,
    Progress,
    evaluate_likelihood,
    likelihood_cost,
)

BINS = 17


class Network:
    """A stand-in network: the belief mean, after ``first`` seconds on the first call and ``rest`` after."""

    def __init__(self, first: float = 0.0, rest: float = 0.0):
        self.first, self.rest, self.calls, self.rows = first, rest, 0, []

    def __call__(self, mu: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        time.sleep(self.first if self.calls == 0 else self.rest)
        self.calls += 1
        self.rows.append(mu.shape[0])
        return mu.clamp(-1, 1)


def images(n: int) -> torch.Tensor:
    return torch.randint(0, BINS, (n, 1, 4, 4), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


@pytest.mark.parametrize("kstep", KSTEP_DRAWS)
def test_the_cost_counts_every_network_call_the_pass_makes(kstep):
    network = Network()
    settings = {"ks": [3, 5], "n_samples": 2, "batch_size": 6, "kstep": kstep}
    evaluate_likelihood(make_process("bsi", data_bins=BINS), network, images(7), BINS, (1, 4, 4), seed=0, pilot=4,
                        device=torch.device("cpu"), show_progress=False, **settings)
    cost = likelihood_cost(7, pilot_rows=4, **settings)
    assert (cost.calls, cost.rows, cost.largest) == (network.calls, sum(network.rows), max(network.rows))
    # 7 examples in batches of 3, 3, 1 (6 rows / 2 draws); per batch and ELBO 2 calls, or k + 1 for a trajectory
    pilot = {"proposal": 3 + 5, "uniform": 0, "trajectory": 0}[kstep]
    per_elbo = [2, 2, 2] if kstep != "trajectory" else [2, 4, 6]
    assert cost.calls == pilot + 3 * per_elbo[0] + 3 * per_elbo[1] + 3 * per_elbo[2]


def test_the_projection_times_a_representative_call_and_includes_the_pilot(capsys):
    """A slow first call (warm-up) must not be multiplied by every call; the pilot's 40 calls must be counted."""
    network = Network(first=1.0, rest=0.01)
    evaluate_likelihood(make_process("bsi", data_bins=BINS), network, images(4), BINS, (1, 4, 4), ks=[40], n_samples=1,
                        batch_size=4, seed=0, pilot=4, device=torch.device("cpu"), kstep="proposal")
    lines = [line for line in capsys.readouterr().err.splitlines() if "in total for" in line]
    assert len(lines) == 1
    assert "in total for 44 network calls of up to 4 rows (176 rows in all) (timed on call 2: " in lines[0]
    seconds = re.search(r"about (\d+):(\d+) in total", lines[0]).groups()
    assert int(seconds[0]) * 60 + int(seconds[1]) <= 3  # 1 s of warm-up plus 43 calls of about 0.01 s, not 44 s


def test_the_bar_moves_with_each_call_of_a_pass_that_is_one_batch():
    """One batch of a k-step trajectory is many calls: the bar must not sit at 0 until all are done."""
    seen = []
    cost = Cost()
    cost.add(11, 4)
    with Progress(cost=cost, disable=True) as bar:
        network = Metered(lambda mu, lam: seen.append(bar.calls_done) or mu, bar)
        proc = make_process("bsi", data_bins=BINS)
        proc.elbo(torch.zeros(4, 1, 4, 4), network, steps=10, trajectory=True)
        assert bar.calls_done == 11
    assert seen == list(range(11))


def test_smaller_calls_are_not_assumed_cheaper_than_the_timed_one():
    cost = Cost()
    cost.add(3, 100)  # three calls as large as the timed one
    cost.add(10, 10)  # ten small pilot calls: each at least a call's fixed cost
    cost.add(1, 400)  # one call four times as large
    assert (cost.calls, cost.rows, cost.largest) == (14, 800, 400)
    assert cost.in_calls_of(100) == 3 + 10 + 4
