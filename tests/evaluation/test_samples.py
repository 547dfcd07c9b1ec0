"""draw_samples and the sample files: per-index noise, trajectories, the .npz layout."""

import numpy as np
import pytest
import torch

from bsi.data import to_float
from bsi.engine import make_process
from bsi.engine.exact import ExactDenoiser
from bsi.evaluation import (
    draw_samples, grid_image, load_npz, save_grid, save_npz, save_preview, save_trajectory, to_pixels, viewing_scale,
)

BINS = 17
SHAPE = (1, 3, 3)


@pytest.fixture(scope="module")
def model():
    points = torch.randint(0, BINS, (5, *SHAPE), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    proc = make_process("bsi", data_bins=BINS)
    return proc, ExactDenoiser(to_float(points, BINS).double(), proc.beliefs)


def draw(model, indices, batch_size, solver="ancestral", trajectory_n=0):
    proc, den = model
    return draw_samples(proc, den, SHAPE, indices, BINS, steps=6, solver=solver, spacing=None, seed=3,
                        batch_size=batch_size, device=torch.device("cpu"), trajectory_n=trajectory_n)


@pytest.mark.parametrize("solver", ["ancestral", "sde2"])
def test_sample_i_depends_only_on_seed_and_i(model, solver):
    a, _ = draw(model, range(7), batch_size=7, solver=solver)
    b, _ = draw(model, range(7), batch_size=3, solver=solver)
    c, _ = draw(model, [4, 5, 6], batch_size=2, solver=solver)  # a later shard on its own
    assert a.dtype == torch.uint8 and a.shape == (7, *SHAPE)
    assert torch.equal(a, b) and torch.equal(a[4:], c)
    assert len({tuple(x.flatten().tolist()) for x in a}) > 1  # different indices, different samples


def test_trajectory_has_every_evaluation_for_the_first_samples(model):
    levels, traj = draw(model, range(5), batch_size=2, trajectory_n=3)
    assert traj.indices == [0, 1, 2] and traj.lam.shape == (7,)
    assert traj.mu.shape == traj.x_hat.shape == (3, 7, *SHAPE)
    assert torch.all(traj.lam[1:] > traj.lam[:-1])
    # the last prediction is already on the sample's levels for the exact denoiser
    assert torch.allclose(traj.x_hat[:, -1], to_float(levels[:3], BINS), atol=1e-3)


def test_levels_become_8_bit_pixels():
    levels = torch.tensor([0, 1, 8, 16], dtype=torch.uint8)
    assert to_pixels(levels, 17).tolist() == [0, 16, 128, 255]
    assert torch.equal(to_pixels(levels, 256), levels)


def test_npz_grid_and_trajectory_files(model, tmp_path):
    levels, traj = draw(model, range(4), batch_size=4, trajectory_n=2)
    pixels = to_pixels(levels, BINS)
    path = save_npz(tmp_path / "s.npz", pixels, range(4), BINS, data={"name": "digits"}, solver="ancestral", steps=6)
    with np.load(path) as f:
        assert f["images"].shape == (4, 3, 3, 1) and f["images"].dtype == np.uint8  # NHWC
        assert f["indices"].tolist() == [0, 1, 2, 3]
    back, meta = load_npz(path)
    assert torch.equal(back, pixels)
    assert meta["data"] == {"name": "digits"} and meta["bins"] == BINS and meta["solver"] == "ancestral"
    assert save_grid(pixels, tmp_path / "g.png").stat().st_size > 0
    with np.load(save_trajectory(tmp_path / "t.npz", traj)) as f:
        assert f["mu"].shape == f["x_hat"].shape == (7, 2, *SHAPE) and f["lam"].shape == (7,)


def test_adm_style_arr_0_is_read_and_bad_files_are_refused(tmp_path):
    np.savez(tmp_path / "adm.npz", arr_0=np.zeros((2, 4, 4, 3), np.uint8))
    images, _ = load_npz(tmp_path / "adm.npz")
    assert images.shape == (2, 3, 4, 4)
    np.savez(tmp_path / "bad.npz", images=np.zeros((2, 4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        load_npz(tmp_path / "bad.npz")


class Counter:
    """A progress bar stand-in that records its updates."""

    def __init__(self):
        self.updates = []

    def update(self, n):
        self.updates.append(n)


def test_the_bar_moves_after_every_network_call_and_stops_cut_sampling_short(model):
    from bsi.evaluation import Stopped

    bar = Counter()
    proc, den = model
    kw = dict(steps=6, solver="ancestral", spacing=None, seed=3, device=torch.device("cpu"))
    before = torch.get_rng_state()
    draw_samples(proc, den, SHAPE, range(5), BINS, batch_size=3, bar=bar, **kw)
    assert torch.equal(torch.get_rng_state(), before)
    # 7 calls per batch; batch 1 has 3 samples, batch 2 has 2: the counts add up to the samples exactly
    assert len(bar.updates) == 14 and sum(bar.updates[:7]) == 3 and sum(bar.updates[7:]) == 2
    assert bar.updates[:7] == [0, 0, 1, 0, 1, 0, 1]  # floor(3 i / 7) - floor(3 (i - 1) / 7)
    calls = []

    def counted(mu, lam):
        calls.append(1)
        return den(mu, lam)

    with pytest.raises(Stopped):
        draw_samples(proc, counted, SHAPE, range(5), BINS, batch_size=3, should_stop=lambda: len(calls) >= 9, **kw)
    assert len(calls) == 9  # the first batch's 7 calls and 2 of the second's


def test_grid_image_upscales_by_repeating_pixels():
    pixels = torch.arange(2 * 1 * 2 * 3, dtype=torch.uint8).reshape(2, 1, 2, 3)
    one = grid_image(pixels, nrow=2)
    assert one.shape == (3, 2 + 2, 2 * 3 + 3)  # grey images become RGB; 1-pixel white borders
    assert torch.equal(one[:, 1:3, 1:4], pixels[0].expand(3, 2, 3)) and torch.equal(one[:, 1:3, 5:8], pixels[1].expand(3, 2, 3))
    assert (one[:, 0] == 255).all() and (one[:, :, 4] == 255).all()
    four = grid_image(pixels, nrow=2, upscale=4)
    assert torch.equal(four, torch.kron(one, torch.ones(1, 4, 4, dtype=torch.uint8)))


def test_previews_are_enlarged_for_viewing(tmp_path):
    from PIL import Image

    assert [viewing_scale((1, s, s)) for s in (8, 28, 32, 64, 96, 128)] == [12, 4, 3, 2, 1, 1]
    levels = torch.zeros(4, 1, 28, 28, dtype=torch.uint8)
    assert Image.open(save_preview(levels, 256, tmp_path / "p.png")).size == (4 * 59, 4 * 59)
    assert Image.open(save_preview(levels, 256, tmp_path / "q.png", upscale=1)).size == (59, 59)
