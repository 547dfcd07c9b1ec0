"""Test-set bits per dimension from the infinite-step and k-step ELBOs, every term separately.

Example ``i`` draws all its noise from the generator of ``(seed, i)``: its ELBO estimate does not
depend on the batch it sits in, on the batch size or on the number of ranks, and all settings
(infinite, each ``k``) see the same noise streams, which makes their differences less noisy.
Nothing here draws from torch's global random state, so an evaluation in the middle of training
(validation) leaves the training's dropout stream where it was.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset

from .. import distributed
from ..data import to_float
from ..engine import Estimate, Process, bits_per_dim, example_generators
from ..engine.choices import check_choice
from ..signals import polling
from .progress import Cost, Metered, Progress, StopCheck, check
from .shards import gather_examples

TERMS = ("measurement", "reconstruction", "prior", "total")
# How a draw of the k-step term picks its steps: one step from a pilot's step proposal (the default: its
# errors are the smallest, docs/results.md), one uniform step, or all k steps of a trajectory.
KSTEP_DRAWS = ("proposal", "uniform", "trajectory")
PILOT_SEED = 0x5EED  # the pilot's noise stream, apart from every example's


@dataclass
class Row:
    """One ELBO (``steps=None``: infinite steps) as bits per dimension per term over the examples."""

    steps: int | None
    terms: dict[str, Estimate]

    @property
    def label(self) -> str:
        return "inf" if self.steps is None else str(self.steps)


@dataclass
class LikelihoodResult:
    """Rows of bpd estimates and what they were computed from."""

    rows: list[Row]
    n_examples: int
    dims: int
    n_samples: int
    dtype: str
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """Plain data: per setting and term the mean bpd, its standard error and 95% interval, and nats per example."""
        nats = self.dims * math.log(2)  # per example: nats per image, or per sequence

        def term(e: Estimate) -> dict:
            return {"bpd": e.mean, "stderr": e.stderr, "ci95": list(e.ci95), "nats": e.mean * nats,
                    "nats_stderr": e.stderr * nats}

        rows = [{"steps": row.steps, **{k: term(e) for k, e in row.terms.items()}} for row in self.rows]
        return {"n_examples": self.n_examples, "dims": self.dims, "n_samples": self.n_samples, "dtype": self.dtype,
                **self.extra, "unit": "bits per dimension", "elbo": rows}

    def table(self) -> str:
        """A fixed-width table: one line per setting, ``mean ± stderr`` per term, 95% interval of the total."""
        head = f"{'steps':>6}  " + "  ".join(f"{k:>17}" for k in TERMS) + f"  {'95% interval (total)':>22}"
        lines = [head, "-" * len(head)]
        for row in self.rows:
            lo, hi = row.terms["total"].ci95
            cells = "  ".join(f"{format(row.terms[k], '.4f'):>17}" for k in TERMS)
            lines.append(f"{row.label:>6}  {cells}  {f'[{lo:.4f}, {hi:.4f}]':>22}")
        return "\n".join(lines)


def longest_shard(count: int, device: torch.device) -> int:
    """The largest ``count`` over ranks (``count`` itself without a process group)."""
    if not distributed.initialized():
        return count
    longest = torch.tensor([count], device=device)
    dist.all_reduce(longest, op=dist.ReduceOp.MAX)
    return int(longest)


def as_batch(items: Tensor | list[Tensor]) -> Tensor:
    """A DataLoader batch as one tensor: datasets with ``__getitems__`` (bsi.data) give it whole."""
    return items if isinstance(items, Tensor) else torch.stack(items)


@torch.no_grad()
def elbo_terms(
    proc: Process,
    denoiser,
    dataset: Dataset,
    indices: Sequence[int],
    bins: int,
    *,
    steps: int | None,
    n_samples: int,
    seed: int,
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    num_workers: int = 0,
    bar: Progress | None = None,
    should_stop: StopCheck | None = None,
    rounds: int = 0,
    reconstruction_samples: int | None = None,
    step_proposal: Tensor | None = None,
    trajectory: bool = False,
) -> dict[str, Tensor]:
    """ELBO terms in nats, float64 ``(len(indices),)`` per term, of ``dataset[indices]`` (uint8 images).

    ``steps=None`` is the infinite-step ELBO, ``steps=k`` the ``k``-step one; ``n_samples`` draws
    per example (``reconstruction_samples`` of the reconstruction term, default ``n_samples``) are
    averaged; ``step_proposal`` and ``trajectory`` as in :meth:`bsi.engine.Process.elbo`.
    ``batch_size`` examples are read at a time, and all their draws of a term go through
    the network in one call.  ``should_stop()`` is polled before every batch, and then until it
    has been polled ``rounds`` times (so every rank polls it equally often and it may be a
    collective); when it returns true, :class:`~bsi.evaluation.progress.Stopped` is raised.
    """
    batches = BatchSampler(indices, batch_size, drop_last=False)
    # A DataLoader draws its workers' base seed at every pass, from the global RNG unless given a
    # generator; the global RNG is the training's dropout stream, which must not move here.
    loader = DataLoader(dataset, batch_sampler=batches, collate_fn=as_batch, num_workers=num_workers,
                        generator=torch.Generator())
    parts: dict[str, list[Tensor]] = {k: [] for k in TERMS}
    gen_device = device if device.type == "cuda" else "cpu"
    polls = 0
    for chunk, images in zip(batches, loader):
        check(should_stop)
        polls += 1
        x = to_float(images.to(device), bins, dtype)
        generators = example_generators(seed, chunk, gen_device)
        terms = proc.elbo(x, denoiser, steps=steps, n_samples=n_samples, generator=generators,
                          reconstruction_samples=reconstruction_samples, step_proposal=step_proposal,
                          trajectory=trajectory)
        for k in TERMS:
            parts[k].append(terms[k].double())
        if bar is not None:
            bar.update(len(chunk))
    for _ in range(polls, rounds):
        check(should_stop)
    empty = torch.zeros(0, dtype=torch.float64, device=device)
    return {k: torch.cat(v) if v else empty for k, v in parts.items()}


def pilot_step_proposal(proc: Process, denoiser, dataset: Dataset, bins: int, steps: int, pilot: int, seed: int,
                        device: torch.device, dtype: torch.dtype = torch.float32,
                        should_stop: StopCheck | None = None) -> Tensor:
    """``(steps,)`` step probabilities from the first ``pilot`` examples of ``dataset`` and a noise stream of its own.

    Every rank computes the same proposal from the same examples.  Any fixed proposal leaves the
    bound unbiased; this one draws the steps whose terms vary most across examples most often.
    Its ``steps`` network calls take long for large ``steps``: ``should_stop()`` is polled before
    each (the same number of times on every rank, so it may be a collective), raising
    :class:`~bsi.evaluation.progress.Stopped` when it returns true.
    """
    x = to_float(as_batch([dataset[i] for i in range(min(pilot, len(dataset)))]).to(device), bins, dtype)
    gen = torch.Generator(device if device.type == "cuda" else "cpu").manual_seed(PILOT_SEED + 7919 * seed + steps)
    return proc.step_proposal(x, polling(denoiser, should_stop), steps, gen)


def likelihood_cost(n_local: int, ks: Sequence[int], *, n_samples: int, batch_size: int, kstep: str = "proposal",
                    pilot_rows: int = 64, reconstruction_samples: int | None = None) -> Cost:
    """The network calls of :func:`evaluate_likelihood` on ``n_local`` examples (this rank's), the pilot's included.

    Per batch of ``max(1, batch_size // n_samples)`` examples and ELBO: one call for the measurement
    term and one for the reconstruction, or ``k + 1`` for a trajectory; before a k-step ELBO with
    ``kstep="proposal"``, ``k`` pilot calls of ``pilot_rows`` rows (``min(pilot, len(dataset))``).
    """
    examples = max(1, batch_size // n_samples)
    full, last = divmod(n_local, examples)
    batches = [examples] * full + ([last] if last else [])
    cost = Cost()
    for steps in [None, *(int(k) for k in ks)]:
        draws = "uniform" if steps is None else kstep
        if draws == "proposal":
            cost.add(steps, pilot_rows)
        for size in batches:
            if draws == "trajectory":
                cost.add(steps + 1, size * n_samples)
            else:
                cost.add(1, size * n_samples)
                cost.add(1, size * (reconstruction_samples or n_samples))
    return cost


def evaluate_likelihood(
    proc: Process,
    denoiser,
    dataset: Dataset,
    bins: int,
    data_shape: Sequence[int],
    *,
    ks: Sequence[int],
    n_samples: int,
    seed: int,
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    indices: Sequence[int] | None = None,
    n_examples: int | None = None,
    num_workers: int = 0,
    show_progress: bool = True,
    desc: str = "likelihood",
    recurring: bool = False,
    should_stop: StopCheck | None = None,
    reconstruction_samples: int | None = None,
    kstep: str = "proposal",
    pilot: int = 64,
) -> LikelihoodResult:
    """bpd of the infinite-step ELBO and the ``k``-step ELBOs for ``k`` in ``ks``, term by term.

    ``batch_size`` is the number of rows per network call (examples times draws): the draws of one
    example always go through the network together, ``max(1, batch_size // n_samples)`` examples at
    a time.  ``reconstruction_samples`` (default ``n_samples``) may be fewer: at the top precision
    the reconstruction term is close to 0 bits and barely varies.

    ``indices`` are this rank's examples among the first ``n_examples`` of ``dataset`` (default:
    all of them); the per-example estimates are gathered from every rank before the mean and its
    standard error (which covers the data's spread and the Monte Carlo noise) are taken.
    ``kstep`` (one of :data:`KSTEP_DRAWS`) is how a k-step draw picks its steps: ``proposal`` spends
    ``k`` network calls on ``pilot`` examples for a step proposal first; ``trajectory`` takes ``k + 1``
    calls per draw (and reads the reconstruction at each trajectory's end).

    The bar counts network calls (:func:`likelihood_cost`), so it moves with each, the pilot's
    too, and its projected total comes from a timed call.  ``recurring`` bars (periodic
    validation) vanish when done and print no projected total.
    ``should_stop()`` is polled before every batch, the same number of times on every rank (it may
    be a collective that makes the ranks agree); when it returns true,
    :class:`~bsi.evaluation.progress.Stopped` is raised.
    """
    check_choice("likelihood.kstep", kstep, KSTEP_DRAWS)
    n = len(dataset) if n_examples is None else n_examples
    indices = list(range(n) if indices is None else indices)
    dims = math.prod(data_shape)
    settings: list[int | None] = [None, *(int(k) for k in ks)]
    examples = max(1, batch_size // n_samples)
    rounds = math.ceil(longest_shard(len(indices), device) / examples) if should_stop is not None else 0
    cost = likelihood_cost(len(indices), ks, n_samples=n_samples, batch_size=batch_size, kstep=kstep,
                           pilot_rows=min(pilot, len(dataset)), reconstruction_samples=reconstruction_samples)
    rows = []
    with Progress(cost=cost, desc=desc, disable=not show_progress, dynamic_ncols=True, leave=not recurring,
                  announce=not recurring) as bar:
        network = Metered(denoiser, bar)  # the bar moves with every network call, the pilot's included
        for steps in settings:
            bar.set_postfix(steps="inf" if steps is None else steps)
            draws = "uniform" if steps is None else kstep
            proposal = None
            if draws == "proposal":
                proposal = pilot_step_proposal(proc, network, dataset, bins, steps, pilot, seed, device, dtype,
                                               should_stop)
            local = elbo_terms(proc, network, dataset, indices, bins, steps=steps, n_samples=n_samples, seed=seed,
                               batch_size=examples, device=device, dtype=dtype, num_workers=num_workers,
                               should_stop=should_stop, rounds=rounds,
                               # a trajectory's end is its reconstruction
                               reconstruction_samples=None if draws == "trajectory" else reconstruction_samples,
                               step_proposal=proposal, trajectory=draws == "trajectory")
            full = {k: gather_examples(v, indices, n) for k, v in local.items()}
            rows.append(Row(steps, {k: bits_per_dim(full[k], dims) for k in TERMS}))
    return LikelihoodResult(rows, n, dims, n_samples, str(dtype).removeprefix("torch."), {"kstep": kstep, "pilot": pilot})
