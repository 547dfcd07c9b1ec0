"""Your own images: ``data=folder`` and ``data=npz``, made here in tmp_path, and the CIFAR-10 md5 switch."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bsi.data import DatasetError, build_dataset, has_val
from bsi.data.custom import split_indices
from bsi.data.datasets import prepare

SPLITS = ("train", "val", "test")


def pixels(rng: np.random.Generator, n: int, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8)


def write_pngs(folder: Path, images: np.ndarray) -> list[Path]:
    """``images`` ``(N, C, H, W)`` as ``folder/img_000.png``, ... (grayscale for C = 1)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        path = folder / f"img_{i:03d}.png"
        Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)).save(path)
        paths.append(path)
    return paths


def all_splits(cfg: dict) -> dict[str, np.ndarray]:
    out = {}
    for split in SPLITS:
        ds = build_dataset(cfg, split)
        out[split] = ds.__getitems__(list(range(len(ds)))).numpy()
    return out


def test_split_sizes_are_disjoint_cover_everything_and_follow_the_seed():
    parts = split_indices(50, val_fraction=0.1, test_fraction=0.2, seed=3)
    assert [len(parts[s]) for s in SPLITS] == [35, 5, 10]
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(50))
    again = split_indices(50, 0.1, 0.2, 3)
    assert all(np.array_equal(parts[s], again[s]) for s in SPLITS)
    other = split_indices(50, 0.1, 0.2, 4)
    assert not np.array_equal(parts["test"], other["test"])
    # the documented rule, spelled out: test first, then val, of the seeded permutation
    order = np.random.default_rng(3).permutation(50)
    assert parts["test"].tolist() == sorted(order[:10].tolist()) and parts["val"].tolist() == sorted(order[10:15].tolist())


def test_split_fractions_that_leave_no_training_images_are_refused():
    with pytest.raises(DatasetError, match="leave no training images"):
        split_indices(10, 0.5, 0.5, 0)
    with pytest.raises(DatasetError, match=r"data.val_fraction=1.5 must be in \[0, 1\)"):
        split_indices(10, 1.5, 0.0, 0)


@pytest.mark.parametrize("channels", [1, 3])
def test_folder_pixels_round_trip_exactly_into_the_seeded_split(tmp_path, channels):
    images = pixels(np.random.default_rng(channels), 20, (channels, 6, 6))
    write_pngs(tmp_path / "imgs", images)
    cfg = {"name": "folder", "path": str(tmp_path / "imgs"), "root": str(tmp_path), "val_fraction": 0.15,
           "test_fraction": 0.25, "split_seed": 7}
    got = all_splits(cfg)
    parts = split_indices(20, 0.15, 0.25, 7)
    for split in SPLITS:
        assert got[split].shape == (len(parts[split]), channels, 6, 6)
        assert np.array_equal(got[split], images[parts[split]])  # source order within each split
    ds = build_dataset(cfg, "train")
    assert ds.bins == 256 and ds.shape == (channels, 6, 6) and ds.name.startswith("folder-imgs-")
    assert has_val(cfg) and not has_val({**cfg, "val_fraction": 0})


def test_folder_is_converted_once_and_again_when_it_changes(tmp_path):
    (tmp_path / "data").mkdir()  # the data root must exist; the dataset's own folder is made inside it
    paths = write_pngs(tmp_path / "imgs", pixels(np.random.default_rng(0), 10, (1, 4, 4)))
    cfg = {"name": "folder", "path": str(tmp_path / "imgs"), "root": str(tmp_path / "data")}
    first = build_dataset(cfg, "train")
    stored = first.images.path
    assert stored.parent.parent == tmp_path / "data" and stored.stat().st_size > 0
    mtime = stored.stat().st_mtime_ns
    assert build_dataset(cfg, "test").images.path == stored and stored.stat().st_mtime_ns == mtime
    paths[0].unlink()
    changed = build_dataset(cfg, "train")
    assert changed.images.path != stored and len(changed) + len(build_dataset(cfg, "test")) + len(
        build_dataset(cfg, "val")) == 9


def test_folder_resolution_crops_the_centre_and_resizes(tmp_path):
    wide = np.arange(8 * 12, dtype=np.uint8).reshape(1, 1, 8, 12)  # 12 wide, 8 high: the shorter side is 8
    write_pngs(tmp_path / "a", wide)
    Image.new("RGB", (30, 20), (10, 200, 30)).save(tmp_path / "a" / "flat.jpg", quality=100)
    cfg = {"name": "folder", "path": str(tmp_path / "a"), "root": str(tmp_path), "resolution": 8,
           "val_fraction": 0, "test_fraction": 0}
    ds = build_dataset(cfg, "train")
    assert ds.shape == (3, 8, 8) and len(ds) == 2  # one RGB file makes every image RGB
    cropped, flat = ds[1].numpy(), ds[0].numpy()  # sorted names: flat.jpg, img_000.png
    assert all(np.array_equal(cropped[c], wide[0, 0, :, 2:10]) for c in range(3))  # no resize, exact centre crop
    assert np.abs(flat.astype(int) - np.array([10, 200, 30])[:, None, None]).max() <= 2  # JPEG's rounding


def test_folder_errors_name_the_problem(tmp_path, monkeypatch):
    monkeypatch.setenv("BSI_DATA", str(tmp_path))  # an existing data root: the errors are the source's
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(DatasetError, match=f"no PNG or JPEG images in {tmp_path / 'empty'}"):
        build_dataset({"name": "folder", "path": str(tmp_path / "empty")}, "train")
    write_pngs(tmp_path / "mixed", pixels(np.random.default_rng(0), 2, (1, 4, 4)))
    Image.new("L", (5, 4)).save(tmp_path / "mixed" / "z_wide.png")
    with pytest.raises(DatasetError, match=r"images differ in size: .*img_000.png is 4x4, .*z_wide.png is 5x4.*"
                                           r"data.resolution=N"):
        build_dataset({"name": "folder", "path": str(tmp_path / "mixed")}, "train")
    write_pngs(tmp_path / "bad", pixels(np.random.default_rng(0), 2, (1, 4, 4)))
    (tmp_path / "bad" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(DatasetError, match=f"cannot read image {tmp_path / 'bad' / 'broken.png'}.*remove or replace it"):
        build_dataset({"name": "folder", "path": str(tmp_path / "bad"), "root": str(tmp_path)}, "train")
    with pytest.raises(DatasetError, match="needs data.path"):
        build_dataset({"name": "folder"}, "train")
    write_pngs(tmp_path / "wide", pixels(np.random.default_rng(0), 2, (3, 4, 6)))
    with pytest.raises(DatasetError, match=r"images are 6x4 \(width x height\), but the models take square images: "
                                           r"set data.resolution=N"):
        build_dataset({"name": "folder", "path": str(tmp_path / "wide"), "root": str(tmp_path)}, "train")


@pytest.mark.parametrize("layout", ["nhw", "nhwc", "nchw"])
def test_npz_layouts_round_trip_exactly(tmp_path, layout):
    channels = 1 if layout == "nhw" else 3
    images = pixels(np.random.default_rng(1), 30, (channels, 7, 7))  # (N, C, H, W)
    stored = {"nhw": images[:, 0], "nhwc": images.transpose(0, 2, 3, 1), "nchw": images}[layout]
    np.savez(tmp_path / "x.npz", images=stored, labels=np.arange(30))
    cfg = {"name": "npz", "path": str(tmp_path / "x.npz"), "root": str(tmp_path), "split_seed": 5}
    got = all_splits(cfg)
    parts = split_indices(30, 0.1, 0.1, 5)
    assert [len(got[s]) for s in SPLITS] == [24, 3, 3]
    for split in SPLITS:
        assert np.array_equal(got[split], images[parts[split]])


def test_npz_errors_name_the_problem(tmp_path, monkeypatch):
    monkeypatch.setenv("BSI_DATA", str(tmp_path))  # an existing data root: the errors are the source's
    np.savez(tmp_path / "f.npz", x=np.zeros((4, 8, 8), np.float32))
    with pytest.raises(DatasetError, match=r"f.npz: images are float32, expected uint8"):
        build_dataset({"name": "npz", "path": str(tmp_path / "f.npz")}, "train")
    np.savez(tmp_path / "s.npz", x=np.zeros((4, 5, 8, 8), np.uint8))
    with pytest.raises(DatasetError, match=r"s.npz: images have shape \(4, 5, 8, 8\)"):
        build_dataset({"name": "npz", "path": str(tmp_path / "s.npz")}, "train")
    np.savez(tmp_path / "two.npz", a=np.zeros((4, 8, 8), np.uint8), b=np.zeros(4))
    with pytest.raises(DatasetError, match=r"holds arrays \['a', 'b'\]: name the images 'images'"):
        build_dataset({"name": "npz", "path": str(tmp_path / "two.npz")}, "train")
    with pytest.raises(DatasetError, match="does not exist"):
        build_dataset({"name": "npz", "path": str(tmp_path / "none.npz")}, "train")


def test_cifar10_md5_check_can_be_skipped_for_a_local_copy(cifar_root, monkeypatch, caplog):
    import bsi.data.cifar10 as cifar10

    root, batches = cifar_root
    monkeypatch.setattr(cifar10, "CIFAR10_MD5", "0" * 32)  # a repacked copy: another checksum
    with pytest.raises(DatasetError, match="data.verify_md5=false"):
        build_dataset({"name": "cifar10", "root": str(root)}, "test")
    with caplog.at_level(logging.WARNING):
        test = build_dataset({"name": "cifar10", "root": str(root), "verify_md5": False}, "test")
    assert "not checking the md5" in caplog.text
    assert np.array_equal(test[0].numpy().reshape(-1), batches["test_batch"][0][0])
    with pytest.raises(DatasetError, match="applies to cifar10 only"):
        prepare("mnist5k", root, verify_md5=False)


def test_training_runs_on_an_npz(tmp_path):
    """``python -m bsi.train data=npz data.path=FILE`` as composed from the shipped configs, 2 steps."""
    from hydra import compose, initialize_config_dir

    from bsi.checkpoint import latest_checkpoint, load_checkpoint
    from bsi.train import train

    np.savez(tmp_path / "x.npz", images=pixels(np.random.default_rng(0), 80, (8, 8, 3)))  # N x H x W x C
    configs = Path(__file__).resolve().parents[2] / "bsi" / "configs"
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        cfg = compose("train", overrides=[
            "data=npz", f"data.path={tmp_path / 'x.npz'}", f"data.root={tmp_path}", "train.steps=2",
            "train.batch_size=16", "train.warmup=1", "train.eval_every=2", "train.checkpoint_every=2", "eval.ks=[]",
            "eval.grid=0", "eval.n_samples=1", "model.width=32", "model.embedding_dim=16"])
    final = train(cfg, run_dir=tmp_path / "run")
    state = load_checkpoint(latest_checkpoint(tmp_path / "run"))
    assert state["data_shape"] == [3, 8, 8] and state["bins"] == 256
    assert 0 < final["test_bpd"] < 20
