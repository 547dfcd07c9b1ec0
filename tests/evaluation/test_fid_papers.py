"""FID as papers report it: published reference statistics, Inception Score, precision/recall, weights checks.

torch-fidelity's Inception weights cannot be downloaded here, so the metrics run on a stand-in
feature extractor registered through torch-fidelity's extension API.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bsi.evaluation import RGBImages, ReferenceStatsError, WeightsMissing, fid_kid, frechet_distance, inception_weights
from bsi.evaluation.fid import feature_statistics
from tests.evaluation.standin import pooled_pixels

STANDIN = pooled_pixels("bsi-test-fid-features", pool=4, features=16)


def images(n: int, seed: int) -> RGBImages:
    return RGBImages(torch.randint(0, 256, (n, 3, 16, 16), generator=torch.Generator().manual_seed(seed),
                                   dtype=torch.uint8))


def run(samples, reference, tmp_path, **kwargs):
    return fid_kid(samples, reference, reference_name="ref", cache_dir=tmp_path / "cache", feature_extractor=STANDIN,
                   batch_size=50, verbose=False, **{"kid": False, **kwargs})


def test_frechet_distance_known_answers():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(8, 8))
    stats = {"mu": rng.normal(size=8), "sigma": a @ a.T + np.eye(8)}
    assert frechet_distance(stats, stats) == pytest.approx(0.0, abs=1e-8)
    d = rng.normal(size=8)
    assert frechet_distance(stats, {**stats, "mu": stats["mu"] + d}) == pytest.approx(float(d @ d), rel=1e-8)
    # diagonal covariances: sum over features of (sqrt(a_i) - sqrt(b_i))^2
    s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    diag = frechet_distance({"mu": np.zeros(3), "sigma": np.diag(s1)}, {"mu": np.zeros(3), "sigma": np.diag(s2)})
    assert diag == pytest.approx(1.0 + 0.0 + 4.0)


def test_fid_against_published_statistics(tmp_path):
    samples = images(120, seed=1)
    stats = feature_statistics(samples, STANDIN, None, 50, False, False)
    np.savez(tmp_path / "same.npz", mu=stats["mu"], sigma=stats["sigma"])
    d = np.linspace(-0.5, 0.5, 16)
    np.savez(tmp_path / "shifted.npz", mu=stats["mu"] + d, sigma=stats["sigma"])
    same = run(samples, None, tmp_path, reference_stats=tmp_path / "same.npz")
    assert same["fid"] == pytest.approx(0.0, abs=1e-5) and same["fid_reference"] == "stats"
    assert same["n_reference"] is None and "kid" not in same
    shifted = run(samples, None, tmp_path, reference_stats=tmp_path / "shifted.npz")
    assert shifted["fid"] == pytest.approx(float(d @ d), rel=1e-4)


def test_reference_statistics_that_do_not_fit_are_one_line_errors(tmp_path):
    samples = images(40, seed=1)
    np.savez(tmp_path / "no_sigma.npz", mu=np.zeros(16))
    with pytest.raises(ReferenceStatsError, match="lacks .*sigma.*: it must hold arrays mu"):
        run(samples, None, tmp_path, reference_stats=tmp_path / "no_sigma.npz")
    np.savez(tmp_path / "wide.npz", mu=np.zeros(2048), sigma=np.eye(2048))
    with pytest.raises(ReferenceStatsError, match="has 2048 features, bsi-test-fid-features gives 16"):
        run(samples, None, tmp_path, reference_stats=tmp_path / "wide.npz")
    np.savez(tmp_path / "bad.npz", mu=np.zeros(16), sigma=np.eye(3))
    with pytest.raises(ReferenceStatsError, match=r"mu \(16,\) and sigma \(3, 3\) must be \(F,\) and \(F, F\)"):
        run(samples, None, tmp_path, reference_stats=tmp_path / "bad.npz")
    with pytest.raises(ReferenceStatsError, match="not found"):
        run(samples, None, tmp_path, reference_stats=tmp_path / "none.npz")


def test_precision_recall_and_inception_score_known_answers(tmp_path):
    samples = images(60, seed=2)
    result = run(samples, samples, tmp_path, prc=True, isc=True)
    # a set against itself: every sample lies in the reference's k-NN balls and vice versa
    assert result["precision"] == 1.0 and result["recall"] == 1.0
    assert result["fid"] == pytest.approx(0.0, abs=1e-4) and result["fid_reference"] == "images"
    assert math.isfinite(result["isc"]) and result["isc"] > 1.0
    same = RGBImages(torch.full((20, 3, 16, 16), 77, dtype=torch.uint8))
    # identical images have one class distribution: p(y|x) = p(y), so the score is exp(0) = 1
    assert run(same, same, tmp_path, isc=True)["isc"] == pytest.approx(1.0)


def test_a_junk_or_empty_weights_file_is_refused(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(WeightsMissing, match=r"empty.pth are not a weights file \(EOFError.*download https://"):
        inception_weights(str(tmp_path / "empty.pth"))
    (tmp_path / "junk.pth").write_bytes(b"<html>404 not found</html>")
    with pytest.raises(WeightsMissing, match=r"junk.pth are not a weights file \(.*download https://"):
        inception_weights(str(tmp_path / "junk.pth"))
