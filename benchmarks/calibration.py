"""A calibrated discretised output (``method.calibration=w``): likelihood bounds and sample quality per weight.

The default digits run (BSI, discretised output, best validation checkpoint) trained with the
output's log-likelihood added to the loss at weight ``w``, for ``w`` in 0, 0.1, 1 and 3, one training
seed each.  Per model: the test bpd (infinite-step and k-step bounds, ``python -m bsi.evaluate
likelihood.n_samples=32``) and the Frechet distance of samples per solver (the statistic of
``python -m benchmarks.solvers --part model``).  The results file :data:`RESULTS` holds both, and
the training step's cost with and without calibration measured side by side.

This module only renders those results (:func:`render`); they are produced by the three commands
above, run per weight.
"""

from __future__ import annotations

from benchmarks.markdown import pm, provenance, table
from benchmarks.solvers import floor_sentence

RESULTS = "benchmarks/results/calibration/results.json"
FD_COLUMNS = ("ancestral:100", "ancestral:200", "ode2:10", "ode2:20", "ode2:50")


def render(results: dict) -> str:
    """Bounds and Frechet distances per weight, and what calibration costs a training step."""
    rows = results["rows"]
    body = []
    for r in rows:
        lik = r["likelihood_n32_seed0"]
        cells = [pm(*lik[k]) for k in ("inf", "10", "100", "1000")]
        gap = lik["100"][0] - lik["inf"][0]
        fd = [f"{pm(r['fd'][c]['mean'], r['fd'][c]['sd'], 2)} ({r['fd'][c]['seeds']})" for c in FD_COLUMNS]
        body.append([f"{r['calibration']:g}", *cells, f"{gap:+.3f}", *fd])
    header = ["w", "inf-step bpd", "k = 10", "k = 100", "k = 1000", "k = 100 − inf",
              *(f"FD {c.replace(':', ' ')}" for c in FD_COLUMNS)]
    lines = [provenance(results), "",
             "Test bpd on the 360 test digits with 32 draws each, ± standard error over the test digits; Frechet "
             f"distance (FD) of {results['fd_samples']:,} samples as in the solver table below, mean ± sd over the "
             "seeds in brackets; one training seed per weight.", "",
             table(header, body), "", floor_sentence(results["floor"])]
    gaps = {r["calibration"]: r["likelihood_n32_seed0"]["100"][0] - r["likelihood_n32_seed0"]["inf"][0] for r in rows}
    if 0.0 in gaps and 1.0 in gaps:
        lines += ["", f"Calibration makes the k-step bounds usable: with `w = 1` the 100-step bound is {gaps[1.0]:.3f} "
                  f"bpd above the infinite-step one, against {gaps[0.0]:.3f} without it. It does not make the "
                  "ancestral sampler catch up with the ODE solvers: at 100 NFE it stays above ode2 at 50 NFE for "
                  "every weight. Use the ODE solvers for samples."]
    if "step_ms" in results:
        ms = results["step_ms"]
        lines += ["", f"Cost: a training step with `w = 1` takes {ms['1.0']} ms against {ms['0.0']} ms without it "
                  f"({ms['1.0'] / ms['0.0']:.2f}x; {results['step_cost_note']}), which is why calibration is off "
                  "by default."]
    return "\n".join(lines)
