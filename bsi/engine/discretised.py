"""The mean and level draws of a Gaussian discretised onto evenly spaced levels, in O(1) work per element.

Data with ``bins`` levels lies on ``c_k = -1 + 2k/(bins-1)``; bin ``k`` spans ``c_k ± w/2`` with
``w = 2/(bins-1)``, and the two edge bins are open to ±infinity.  ``N(m, s^2)`` integrated over the
bins has the mean

    sum_k p_k c_k = (w/2) sum_j erf((m - e_j) / (s sqrt 2))

over the ``N = bins - 1`` inner edges ``e_j = -1 + (j - 1/2) w``: O(bins) work per element, as the
table of level probabilities is.  :func:`discretised_mean` gets the same number in a fixed amount of
work whatever ``bins`` is, from one of three forms chosen per element by the scale ``s``:

* ``s < K w``: only the edges within a few ``s`` of ``m`` differ from ±1 in float rounding, so the
  sum runs over a window of the ``W`` edges nearest ``m`` (every edge when ``N <= W``: 24 in float32,
  so the digits' 17 levels always take this exact form); the edges below the window count +1 and
  those above -1.  The edges left out are at least ``W/(2K)`` scales away.
* ``K w <= s < s_T``: the sum is the midpoint rule for ``∫_{-1}^{1} (Phi((m - t)/s) - 1/2) dt``, which is
  the mean of ``clamp(Y, -1, 1)`` and has a closed form in ``psi(x) = x Phi(x) + phi(x)``.  The rule's
  error is the Euler-Maclaurin series of the odd derivatives at ``±1`` (Hermite polynomials times
  ``phi``) plus a periodic part of size ``exp(-2 pi^2 s^2 / w^2)`` (Poisson summation), which is below
  float rounding for ``s >= K w``.  The series is asymptotic, so ``K`` cannot be made much smaller.
* ``s >= s_T``: each ``erf`` is expanded around ``mu = m/s`` in powers of ``e_j/s``; summed over the
  edges, the odd powers cancel and the even ones leave the edges' moments ``M_2k = (w/2) sum_j e_j^2k``:
  ``mean = erf(mu/√2) - 2 phi(mu) sum_k M_2k He_{2k-1}(mu) / ((2k)! s^2k)``.  Unlike the clamp form,
  this does not take differences of numbers of size ``s`` when ``s`` is large.

The forward pass computes the two partial derivatives from the same exponentials and error functions,
so the backward pass is two products.  Work is done in at least float32 (bf16 inputs are promoted),
with the window, thresholds and series lengths of ``_PLANS`` for float32 and float64, which keep the
approximation error below each dtype's rounding (checked against the exact sum in
``tests/engine/test_discretised.py``).  On a CPU each form runs on its own elements, in pieces that
stay in cache; elsewhere every form runs on every element and ``where`` picks (no data-dependent
shapes).  The polynomial series are one small matrix product per form, because on a CPU each tensor
operation costs a few microseconds whatever its size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .random import GeneratorLike, randn

_SQRT1_2 = math.sqrt(0.5)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)


@dataclass(frozen=True)
class _Plan:
    """How one dtype evaluates the mean: the regimes' boundaries and sizes (see the module docstring)."""

    window: int  # W: edges summed exactly when s < K w
    reach: float  # edges left out of the window are at least this many scales away from m
    em_terms: int  # Euler-Maclaurin terms at each end of [-1, 1], from s = K w on
    taylor_from: float  # s_T: the moment expansion from this absolute scale on
    taylor_terms: int
    # Subnormal numbers make exp, erfc and products several times slower on a CPU, so densities and
    # tails are floored at small normal numbers by capping |x| at ``cap``: phi(cap) and Phi(-cap) are
    # far below any term that matters even after the products they enter.
    cap: float

    @property
    def em_from(self) -> float:
        """``K = W / (2 reach)``: the window serves ``s < K w``, the Euler-Maclaurin form the rest."""
        return self.window / (2 * self.reach)


_PLANS = {
    # Left-out edges >= 6 scales away: their share of the mean is below Phi(-6) w = 1e-9 w and of
    # d/ds below 6 phi(6) w/s = 4e-8 w/s; Euler-Maclaurin remainder below 2e-10 for s >= 2 w,
    # Taylor remainder below 1e-10 for s >= 2; phi(11) = 2e-27.
    torch.float32: _Plan(window=24, reach=6.0, em_terms=4, taylor_from=2.0, taylor_terms=6, cap=11.0),
    # Left-out edges >= 8.4 scales away; remainders below 1e-16; phi(26) = 8e-148.
    torch.float64: _Plan(window=32, reach=8.4, em_terms=12, taylor_from=2.0, taylor_terms=12, cap=26.0),
}


def _hermite_in_square(n: int) -> list[int]:
    """Coefficients of ``He_n(x)`` (even ``n``) or ``He_n(x)/x`` (odd ``n``) in powers of ``x^2``."""
    coef = [0] * (n // 2 + 1)
    for j in range(n // 2 + 1):  # He_n = sum_j (-1)^j n! / (j! (n-2j)! 2^j) x^(n-2j)
        coef[(n - 2 * j) // 2] = (-1) ** j * math.factorial(n) // (math.factorial(j) * math.factorial(n - 2 * j) * 2**j)
    return coef


def _series_matrix(rows: list[tuple[float, int]], width: int, dtype, device) -> Tensor:
    """``(len(rows), width)``: row ``i`` is ``weight_i He_(n_i)`` in powers of ``x^2`` (see :func:`_hermite_in_square`)."""
    out = torch.zeros(len(rows), width, dtype=torch.float64)
    for i, (weight, n) in enumerate(rows):
        for j, c in enumerate(_hermite_in_square(n)):
            out[i, j] = weight * c
    return out.to(device=device, dtype=dtype)


@lru_cache(maxsize=None)
def _em_matrix(terms: int, dtype, device) -> Tensor:
    """``(3 terms, terms + 1)``: ``beta_k He_(2k-2+n)`` for ``n = 0, 1, 2`` (rows ``n * terms + k - 1``).

    ``beta_k = B_2k(1/2) / (2k)!`` are the midpoint rule's Euler-Maclaurin coefficients.
    """
    bern = [Fraction(1)]
    for n in range(1, 2 * terms + 1):
        bern.append(-sum(math.comb(n + 1, k) * bern[k] for k in range(n)) / (n + 1))
    beta = [float(-(1 - Fraction(2) ** (1 - 2 * k)) * bern[2 * k] / math.factorial(2 * k)) for k in range(1, terms + 1)]
    rows = [(beta[k - 1], 2 * k - 2 + n) for n in range(3) for k in range(1, terms + 1)]
    return _series_matrix(rows, terms + 1, dtype, device)


@lru_cache(maxsize=None)
def _taylor_matrix(bins: int, terms: int, dtype, device) -> Tensor:
    """``(3 terms, terms + 1)``: ``c_k He_(2k-1)``, ``c_k He_2k``, ``2k c_k He_(2k-1)``, ``c_k = M_2k / (2k)!``."""
    n_edges = bins - 1
    edges = [Fraction(2 * j - 1 - n_edges, n_edges) for j in range(1, n_edges + 1)]
    c = [float(sum(e ** (2 * k) for e in edges) / n_edges / math.factorial(2 * k)) for k in range(1, terms + 1)]
    ks = range(1, terms + 1)
    rows = [(c[k - 1], 2 * k - 1) for k in ks] + [(c[k - 1], 2 * k) for k in ks] + [(2 * k * c[k - 1], 2 * k - 1) for k in ks]
    return _series_matrix(rows, terms + 1, dtype, device)


def _powers(x: Tensor, n: int) -> Tensor:
    """``(n, ...)``: ``x^1 .. x^n``."""
    return x.expand(n, *x.shape).cumprod(0)


def _series(matrix: Tensor, x_squared: Tensor, weights: Tensor) -> Tensor:
    """``(3, ...)``: ``sum_k weights_k (matrix @ x^2 powers)_(n, k)`` for the three series ``n``.

    ``x_squared`` ``(...)``; ``weights`` ``(terms, ...)`` broadcasting against it.
    """
    terms = matrix.shape[0] // 3
    powers = torch.cat([torch.ones_like(x_squared)[None], _powers(x_squared, terms)])
    poly = (matrix @ powers.reshape(terms + 1, -1)).view(3, terms, *x_squared.shape)
    return (poly * weights).sum(1)


@lru_cache(maxsize=None)
def _offsets(width: int, every_edge: bool, dtype, device) -> Tensor:
    """``(width, 1)``: the window's edges in bin widths from its first edge (``j - 1/2``), or from
    ``-1`` when the window is every edge (``j + 1/2``, so the window needs no first edge)."""
    return (torch.arange(width, dtype=dtype, device=device) + (0.5 if every_edge else -0.5)).view(-1, 1)


def _window(m: Tensor, s: Tensor, bins: int, width: int, cap: float, grad: bool):
    """Exact sum over the ``width`` edges nearest ``m`` (all of them when ``width >= bins - 1``); ``m``, ``s`` ``(n,)``."""
    n_edges, w = bins - 1, 2.0 / (bins - 1)
    width = min(width, n_edges)
    every_edge = width == n_edges
    pos = m.add(1.0).mul_(1 / w)  # (m + 1) / w: edge j sits at pos = j - 1/2
    if not every_edge:
        # First edge of the window: width/2 edges on each side of m (odd widths centre on the nearest
        # edge), moved inside [1, N] where m is near or beyond -1 or 1.
        first = torch.add(pos, 1.5 - width / 2).floor_().clamp_(1, n_edges - width + 1)
        pos.sub_(first)
    r = s.reciprocal().mul_(w * _SQRT1_2)  # one bin width in units of s sqrt 2
    # (m - e_j) / (s sqrt 2), (width, n), capped where erf is exactly ±1 in the dtype already, which
    # floors the densities below and keeps z phi(z) from growing with m.  The window runs along
    # dim 0: reducing over a leading dim is faster than over a short last one.
    z = torch.addcmul(pos.mul_(r), _offsets(width, every_edge, m.dtype, m.device), r, value=-1)
    z = z.clamp_(-cap * _SQRT1_2, cap * _SQRT1_2)
    buf = torch.erf(z)
    mean = buf.sum(0).mul_(w / 2)
    if not every_edge:  # edges below the window count +1, above -1
        mean.add_(first.mul_(w).add_(0.5 * w * (width - 2 - n_edges)))
    if not grad:
        return mean, None, None
    dens = torch.addcmul(z.new_zeros(()), z, z, value=-1, out=buf).exp_()  # sqrt(2 pi) phi, in place
    r_pi = r.mul_(1 / math.sqrt(math.pi))  # in place: r is not needed any more
    d_dm = dens.sum(0).mul_(r_pi)  # (w/s) sum phi
    return mean, d_dm, dens.mul_(z).sum(0).mul_(r_pi).mul_(-math.sqrt(2.0))  # -(w/s) sum x phi(x), x = z sqrt 2


def _euler_maclaurin(m: Tensor, s: Tensor, bins: int, plan: _Plan, grad: bool):
    """Closed-form mean of ``clamp(Y, -1, 1)`` plus the midpoint rule's end corrections (``s >= K w``)."""
    w = 2.0 / (bins - 1)
    sign, mp = torch.sign(m), m.abs()  # the mean is odd in m: work at |m|
    # Both ends at once, t = 1 then t = -1: u = (|m| - t) / s.
    dist = torch.stack([mp - 1, mp + 1])
    u = dist / s
    x = u.abs()
    far = x > plan.cap
    x = x.clamp_(max=plan.cap)
    # Phi(-|u|), exactly 0 beyond the cap, where |m - t| Phi(-|u|) would otherwise grow with m
    tails = torch.erfc(x * _SQRT1_2).masked_fill_(far, 0.0) * 0.5
    dens = torch.exp(x * x * -0.5) * _INV_SQRT_2PI
    # E[clamp(Y, -1, 1)] = min(m, 1) - s psi(-|u_1|) + s psi(-u_-1), s psi(-|u|) = s phi(u) - |m - t| Phi(-|u|):
    # tail quantities only, so nothing of size 1/s cancels.
    psi = s * dens - dist.abs() * tails
    clamped = mp.clamp(max=1.0) - psi[0] + psi[1]
    # Corrections sum_k beta_k r^2k He_(2k-2+n)(u) phi(u), at t = 1 minus at t = -1, for n = 0 (value),
    # 1 (d/dm), 2 (d/ds); He_(2k-1) is odd, hence the factor u on the n = 1 series.
    uc = u.clamp(-plan.cap, plan.cap)
    r2 = (w / s) ** 2
    g = _series(_em_matrix(plan.em_terms, m.dtype, m.device), uc * uc, _powers(r2, plan.em_terms)[:, None])
    g[1] = g[1] * uc
    ends = g[:, 0] * dens[0] - g[:, 1] * dens[1]
    mean = sign * (clamped - s * ends[0])
    if not grad:
        return mean, None, None
    d_clamped_dm = torch.where(mp < 1, 1 - tails[0] - tails[1], tails[0] - tails[1])  # Phi(a) - Phi(b)
    d_clamped_ds = dens[1] - dens[0]  # phi(a) - phi(b)
    return mean, d_clamped_dm + ends[1], sign * (d_clamped_ds - ends[2])


def _taylor(m: Tensor, s: Tensor, bins: int, plan: _Plan, grad: bool):
    """The moment expansion in ``1/s^2`` around ``mu = m/s`` (``s >= s_T``)."""
    mu = m / s
    muc = mu.clamp(-plan.cap, plan.cap)
    dens = torch.exp(muc * muc * -0.5) * _INV_SQRT_2PI
    # value = sum_k c_k He_(2k-1)(mu) / s^2k, slope = sum_k c_k He_2k(mu) / s^2k,
    # scale_part = sum_k 2k c_k He_(2k-1)(mu) / s^2k; the odd ones carry a factor mu.
    g = _series(_taylor_matrix(bins, plan.taylor_terms, m.dtype, m.device), muc * muc,
                _powers(1 / (s * s), plan.taylor_terms))
    mean = torch.erf(mu * _SQRT1_2) - 2 * dens * muc * g[0]
    if not grad:
        return mean, None, None
    d_dm = (2 / s) * dens * (1 + g[1])
    return mean, d_dm, muc * ((2 / s) * dens * g[2] - d_dm)


def _regimes(s: Tensor, bins: int, plan: _Plan) -> list[tuple[Tensor | None, object, int]]:
    """``(mask, form, size)`` triples whose masks cover every element exactly once (None: all).

    ``form(m, s, grad)`` evaluates one regime; ``size`` is its temporaries' size per element.
    """
    def window(m_, s_, grad):
        return _window(m_, s_, bins, plan.window, plan.cap, grad)

    window_size = min(plan.window, bins - 1)
    if bins - 1 <= plan.window:  # the window holds every edge: exact at every scale
        return [(None, window, window_size)]
    small = s < plan.em_from * (2.0 / (bins - 1))  # below taylor_from, since bins - 1 > window
    large = s >= plan.taylor_from
    return [
        (small, window, window_size),
        (~small & ~large, lambda m_, s_, grad: _euler_maclaurin(m_, s_, bins, plan, grad), 6 * plan.em_terms),
        (large, lambda m_, s_, grad: _taylor(m_, s_, bins, plan, grad), 3 * plan.taylor_terms),
    ]


# Elements per piece, per unit of a form's per-element temporaries: pieces of about 512 KiB of
# float32 stay in a CPU's cache, which halves the time of large batches.
_CHUNK = 2**17


def _run_in_pieces(form, size: int, m: Tensor, s: Tensor, idx: Tensor | None, grad: bool, out: list[Tensor]) -> None:
    """``form`` on the elements ``idx`` of flat ``m``, ``s`` (all if None), in cache-sized pieces, into ``out``."""
    count = m.numel() if idx is None else idx.numel()
    step = max(1024, _CHUNK // size)
    for start in range(0, count, step):
        stop = min(start + step, count)
        if idx is None:
            parts = form(m[start:stop], s[start:stop], grad)
            for o, p in zip(out, parts):
                o[start:stop] = p
        else:
            piece = idx[start:stop]
            parts = form(m.index_select(0, piece), s.index_select(0, piece), grad)
            for o, p in zip(out, parts):
                o.index_copy_(0, piece, p)


def _mean_and_partials(m: Tensor, s: Tensor, bins: int, grad: bool, gather: bool | None = None):
    """``mean`` and, if ``grad``, ``d mean/d m`` and ``d mean/d s``; ``m``, ``s`` same shape and dtype.

    ``gather``: evaluate each form on its own elements only (the default on a CPU), or every form on
    all elements merged with ``where`` (the default elsewhere: no data-dependent shapes, which
    would synchronise an accelerator).  Both give the same numbers.
    """
    plan = _PLANS[m.dtype]
    n_out = 3 if grad else 1
    regimes = _regimes(s, bins, plan)
    if gather is None:
        gather = m.device.type == "cpu"
    flat_m, flat_s = m.reshape(-1), s.reshape(-1)
    if len(regimes) == 1 and (not gather or flat_m.numel() <= _CHUNK // regimes[0][2]):
        out = list(regimes[0][1](flat_m, flat_s, grad)[:n_out])
    elif not gather:
        out = list(regimes[-1][1](flat_m, flat_s, grad)[:n_out])
        for mask, form, _ in regimes[-2::-1]:
            out = [torch.where(mask.reshape(-1), p, o) for p, o in zip(form(flat_m, flat_s, grad), out)]
    else:
        out = [torch.empty_like(flat_m) for _ in range(n_out)]
        for mask, form, size in regimes:
            idx = None if mask is None else mask.reshape(-1).nonzero().squeeze(1)
            if idx is not None and idx.numel() == flat_m.numel():
                idx = None
            if idx is None or idx.numel():
                _run_in_pieces(form, size, flat_m, flat_s, idx, grad, out)
            if idx is None:
                break
    out = [o.view(m.shape) for o in out]
    return (out[0], None, None) if not grad else tuple(out)


class _DiscretisedMean(torch.autograd.Function):
    @staticmethod
    def forward(ctx, m: Tensor, s: Tensor, bins: int) -> Tensor:
        grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        mean, d_m, d_s = _mean_and_partials(m, s, bins, grad)
        if grad:
            ctx.save_for_backward(d_m, d_s)
        return mean

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_mean: Tensor):
        d_m, d_s = ctx.saved_tensors
        return grad_mean * d_m, grad_mean * d_s, None


def _check_bins(bins: int) -> None:
    if bins < 2:
        raise ValueError(f"a discretised Gaussian needs bins >= 2 levels, got bins={bins}")


def _promote(m: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
    """``m``, ``scale`` broadcast, contiguous, in at least float32."""
    dtype = torch.promote_types(torch.promote_types(m.dtype, scale.dtype), torch.float32)
    m, scale = torch.broadcast_tensors(m.to(dtype), scale.to(dtype))
    return m.contiguous(), scale.contiguous()


def discretised_mean(m: Tensor, scale: Tensor, bins: int) -> Tensor:
    """``sum_k p_k c_k`` of ``N(m, scale^2)`` integrated over the ``bins`` levels' bins (edge bins open).

    ``m`` and ``scale`` (a standard deviation, > 0) broadcast to ``(B, ...)``; returns ``(B, ...)`` in at
    least float32, differentiable once in ``m`` and ``scale``.  Agrees with the exact O(bins) sum to
    float rounding; the work per element does not grow with ``bins``.
    """
    _check_bins(bins)
    m, scale = _promote(m, scale)
    return _DiscretisedMean.apply(m, scale, bins)


def discretised_level_draw(m: Tensor, scale: Tensor, bins: int, generator: GeneratorLike = None) -> Tensor:
    """A level drawn from ``N(m, scale^2)`` integrated over the bins: ``m + scale z`` rounded to the nearest level.

    Rounding and clamping to ``[-1, 1]`` send ``y = m + scale z`` to level ``k`` exactly when ``y`` lies
    in bin ``k`` (the edge bins open), so the draw has the level probabilities without building them.
    ``m``, ``scale`` ``(B, ...)``; ``generator`` as in :mod:`bsi.engine.random` (per-example generators
    index the ``B`` axis).  Returns level values ``(B, ...)`` in at least float32, without gradient.
    """
    _check_bins(bins)
    m, scale = _promote(m.detach(), scale.detach())
    y = m + scale * randn(m.shape, generator, m.device, m.dtype)
    steps = bins - 1
    k = y.add_(1).mul_(steps / 2).round_().clamp_(0, steps).long()
    # The same values as ``output.levels``, so that draws compare equal to the levels
    # (index_select: several times faster than indexing with a tensor on a CPU).
    table = torch.linspace(-1, 1, bins, device=m.device, dtype=m.dtype)
    return table.index_select(0, k.reshape(-1)).view(k.shape)
