"""Your own images: a folder of PNG/JPEG files (``data=folder``) or one uint8 array (``data=npz``).

Both are converted once into the checked uint8 HDF5 format of :mod:`.h5store` (256 levels) and read
from there like the built-in datasets.  The converted file is
``root/NAME/NAME.h5`` with ``NAME = folder-<stem>-<hash>`` (``npz-...``), where the hash covers the
source's path, its files' names, sizes and modification times, and the settings below: a changed
source or setting converts again into a new file instead of reading a stale one.

Settings (the ``data`` config):

- ``path``: the folder (searched recursively; files ending ``.png``, ``.jpg``, ``.jpeg`` in any case,
  hidden ones skipped) or the ``.npz``/``.npy`` file.  An ``.npz`` with several arrays must name its
  images ``images``.
- ``resolution`` (folders only; default none): resize so that the shorter side is ``resolution``
  (Lanczos), then centre-crop to ``resolution x resolution``.  Without it every image must have the
  same square size (the backbones take square images), and pixels are stored exactly as read.
- ``val_fraction``, ``test_fraction`` (default 0.1 each), ``split_seed`` (default 0): the split.

Channels: a folder whose images are all 8-bit grayscale (PIL modes ``1``, ``L``, ``LA``; alpha
dropped) gives ``(1, H, W)``; otherwise every image is converted to RGB, ``(3, H, W)``.  An array
``(N, H, W)`` has one channel; for ``(N, A, B, C)`` the last axis is the channels when it is 1 or 3,
otherwise the second axis must be (``N x C x H x W``).

The split: the ``N`` images in source order (folder: sorted relative paths; array: index order)
are shuffled with ``numpy.random.default_rng(split_seed).permutation(N)``; the first
``round(test_fraction * N)`` of the shuffled order are ``test``, the next ``round(val_fraction * N)``
are ``val``, the rest ``train``.  Each split is stored in source order, so the same seed gives the
same split on any machine.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DatasetError
from .h5store import Shape, write_splits

KINDS = ("folder", "npz")
BINS = 256
SUFFIXES = (".png", ".jpg", ".jpeg")
GRAY_MODES = ("1", "L", "LA")
BLOCK = 256  # images decoded and written at a time: a conversion holds one block in memory
SPLITS = ("train", "val", "test")


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Source indices of ``train``, ``val`` and ``test``, each ascending (see the module docstring)."""
    for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise DatasetError(f"data.{key}={value} must be in [0, 1)")
    n_test, n_val = round(test_fraction * n), round(val_fraction * n)
    if n_test + n_val >= n:
        raise DatasetError(f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} leave no training "
                           f"images of {n}: lower them")
    order = np.random.default_rng(seed).permutation(n)
    parts = {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}
    return {split: np.sort(parts[split]) for split in SPLITS}


# -- folders of images ------------------------------------------------------------------------------


def image_files(folder: Path) -> list[Path]:
    """The PNG/JPEG files under ``folder``, sorted by relative path; hidden files and folders skipped."""
    if not folder.is_dir():
        raise DatasetError(f"data.path={folder} is not a folder: point it at a folder of PNG or JPEG images")
    found = [p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    if not found:
        raise DatasetError(f"no PNG or JPEG images in {folder} (nor its subfolders): put images there or fix data.path")
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(path)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DatasetError(f"cannot read image {path} ({type(e).__name__}: {e}): remove or replace it") from None


def _folder_shape(files: list[Path], resolution: int | None) -> Shape:
    """``(C, H, W)`` of the converted images, from the files' headers (no pixels are decoded)."""
    sizes, gray = {}, True
    for path in files:
        with _open(path) as img:
            if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                raise DatasetError(f"{path} has {img.mode} pixels (16-bit or float): save it as 8-bit PNG or JPEG")
            gray &= img.mode in GRAY_MODES
            sizes.setdefault(img.size, path)
    channels = 1 if gray else 3
    if resolution is not None:
        return channels, resolution, resolution
    if len(sizes) > 1:
        (a, pa), (b, pb) = list(sizes.items())[:2]
        raise DatasetError(f"images differ in size: {pa} is {a[0]}x{a[1]}, {pb} is {b[0]}x{b[1]} (width x height); "
                           f"set data.resolution=N to resize and centre-crop them to NxN")
    (w, h), = sizes
    return channels, h, w


def check_square(shape: Shape, source: str) -> Shape:
    """The backbones take square images (their ``image_size`` is one side): refuse others with what to do."""
    if shape[-1] != shape[-2]:
        raise DatasetError(f"{source}: images are {shape[-1]}x{shape[-2]} (width x height), but the models take square "
                           f"images: " + ("set data.resolution=N to resize and centre-crop them to NxN"
                                          if Path(source).is_dir() else "crop or pad the array to a square"))
    return shape


def _decode(path: Path, shape: Shape, resolution: int | None) -> np.ndarray:
    """uint8 ``shape`` pixels of one file (resized and centre-cropped when ``resolution`` is set)."""
    from PIL import Image

    with _open(path) as img:
        try:
            img = img.convert("L" if shape[0] == 1 else "RGB")
        except (OSError, ValueError) as e:  # a truncated file fails only when its pixels are decoded
            raise DatasetError(f"cannot read image {path} ({type(e).__name__}: {e}): remove or replace it") from None
    if resolution is not None:
        w, h = img.size
        scale = resolution / min(w, h)
        if scale != 1:
            img = img.resize((max(resolution, round(w * scale)), max(resolution, round(h * scale))), Image.LANCZOS)
        w, h = img.size
        left, top = (w - resolution) // 2, (h - resolution) // 2
        img = img.crop((left, top, left + resolution, top + resolution))
    pixels = np.asarray(img, dtype=np.uint8)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _folder_blocks(files: list[Path], idx: np.ndarray, shape: Shape, resolution: int | None) -> Iterator[tuple]:
    for start in range(0, len(idx), BLOCK):
        chunk = idx[start:start + BLOCK]
        yield np.stack([_decode(files[i], shape, resolution) for i in chunk]).reshape(len(chunk), *shape), None


# -- arrays -----------------------------------------------------------------------------------------


def load_array(path: Path) -> np.ndarray:
    """The uint8 images ``(N, C, H, W)`` of an ``.npz``/``.npy`` file (layouts: see the module docstring)."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                keys = list(loaded.keys())
                if "images" not in keys and len(keys) != 1:
                    raise DatasetError(f"{path} holds arrays {keys}: name the images 'images' (np.savez(path, images=x))")
                array = loaded["images" if "images" in keys else keys[0]]
        else:
            array = loaded
    except DatasetError:
        raise
    except (OSError, ValueError, EOFError) as e:
        raise DatasetError(f"cannot read {path} ({type(e).__name__}: {e}): save it with np.savez or np.save") from None
    if array.dtype != np.uint8:
        raise DatasetError(f"{path}: images are {array.dtype}, expected uint8 pixel values 0..255; convert them, "
                           f"e.g. np.clip(np.round(x * 255), 0, 255).astype(np.uint8) for floats in [0, 1]")
    if array.ndim == 3:
        return array[:, None]
    if array.ndim == 4 and array.shape[-1] in (1, 3):
        return array.transpose(0, 3, 1, 2)
    if array.ndim == 4 and array.shape[1] in (1, 3):
        return array
    raise DatasetError(f"{path}: images have shape {array.shape}, expected N x H x W, N x H x W x C or N x C x H x W "
                       f"with C = 1 or 3")


# -- the converted file -----------------------------------------------------------------------------


def settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that decide the converted file, checked, from the ``data`` config."""
    kind = cfg.get("name")
    if not cfg.get("path"):
        raise DatasetError(f"data={kind} needs data.path: the {'folder of images' if kind == 'folder' else 'array file'}")
    resolution = cfg.get("resolution")
    if resolution is not None and (kind != "folder" or not isinstance(resolution, int) or resolution < 1):
        raise DatasetError(f"data.resolution={resolution!r} must be a positive integer, and only data=folder resizes")
    return {
        "kind": kind, "path": str(Path(cfg["path"]).expanduser().resolve()), "resolution": resolution,
        "val_fraction": float(cfg.get("val_fraction", 0.1) or 0.0),
        "test_fraction": float(cfg.get("test_fraction", 0.1) or 0.0), "split_seed": int(cfg.get("split_seed") or 0),
    }


def fingerprint(s: Mapping[str, Any], files: list[Path] | None) -> str:
    """12 hex digits of a hash of the settings and the source files' names, sizes and modification times."""
    digest = hashlib.sha256(repr(sorted(s.items())).encode())
    for path in files or [Path(s["path"])]:
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:12]


def dataset_name(cfg: Mapping[str, Any]) -> tuple[str, dict[str, Any], list[Path] | None]:
    """``(NAME, settings, files)``: the converted file is ``root/NAME/NAME.h5``."""
    s = settings(cfg)
    files = image_files(Path(s["path"])) if s["kind"] == "folder" else None
    if files is None and not Path(s["path"]).is_file():
        raise DatasetError(f"data.path={s['path']} does not exist: point it at an .npz or .npy file of uint8 images")
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(s["path"]).stem)[:40] or "data"
    return f"{s['kind']}-{stem}-{fingerprint(s, files)}", s, files


def convert(out: Path, s: Mapping[str, Any], files: list[Path] | None) -> None:
    """Write the split images of the source that ``s`` describes into ``out`` (atomically)."""
    if s["kind"] == "folder":
        shape = check_square(_folder_shape(files, s["resolution"]), s["path"])
        n = len(files)
    else:
        array = load_array(Path(s["path"]))
        shape, n = check_square(tuple(array.shape[1:]), s["path"]), len(array)
        if n == 0:
            raise DatasetError(f"{s['path']} holds no images")
    parts = split_indices(n, s["val_fraction"], s["test_fraction"], s["split_seed"])
    if s["kind"] == "folder":
        blocks = {split: _folder_blocks(files, idx, shape, s["resolution"]) for split, idx in parts.items()}
    else:
        blocks = {split: [(np.ascontiguousarray(array[idx]), None)] for split, idx in parts.items()}
    write_splits(out, shape, blocks, dataset=out.stem, source=s["path"],
                 settings=repr({k: v for k, v in s.items() if k != "path"}))


def stored_shape(path: Path) -> Shape:
    """The item shape ``(C, H, W)`` recorded in a converted file (``()`` if unreadable: the check then says why)."""
    try:
        import h5py  # only when a converted file exists (see bsi.data.h5store)

        with h5py.File(path, "r") as f:
            return tuple(f["train"]["images"].shape[1:])
    except (OSError, KeyError):
        return ()
