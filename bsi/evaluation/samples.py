"""Draw samples that depend only on ``(seed, index)``, and write them as a PNG grid and an ``.npz``.

File formats (written by :func:`save_npz`, :func:`save_trajectory`):

* ``samples.npz``: ``images`` uint8 ``(N, H, W, C)`` pixel values 0..255 (channels last, as the
  ADM/guided-diffusion evaluation suite reads its ``arr_0``; data with fewer than 256 levels is
  spread over 0..255, e.g. digit level ``k`` of 17 -> ``round(255 k / 16)``); ``indices`` ``(N,)``;
  ``bins`` (levels of the data); ``data`` (the data config as JSON) and the sampler settings.
  Sequences (text8) are ``(N, L, C)`` in the same way.
* ``trajectory.npz``: ``lam`` ``(T,)`` float64 precisions of the ``T = steps + 1`` network
  evaluations; ``mu`` and ``x_hat`` float32 ``(T, n, C, H, W)`` in data units ([-1, 1]): the belief
  mean each evaluation saw and the network's prediction, for the first ``n`` samples.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..atomic import atomic_file, write_text
from ..data import decode, to_float, to_uint8
from ..data.text8 import BINS as TEXT8_BINS
from ..engine import Process, example_generators
from .progress import Progress, StopCheck, check


@dataclass
class Trajectory:
    """Beliefs and predictions at every network evaluation, for the examples ``indices``.

    lam: float64 ``(T,)``; mu, x_hat: float32 ``(len(indices), T, C, H, W)`` in data units.
    """

    indices: list[int]
    lam: Tensor
    mu: Tensor
    x_hat: Tensor


@torch.no_grad()
def draw_samples(
    proc: Process,
    denoiser,
    data_shape: Sequence[int],
    indices: Sequence[int],
    bins: int,
    *,
    steps: int,
    solver: str | None,
    spacing: str | None,
    seed: int,
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    trajectory_n: int = 0,
    bar: Progress | None = None,
    should_stop: StopCheck | None = None,
) -> tuple[Tensor, Trajectory | None]:
    """Samples ``indices`` as level indices, uint8 ``(len(indices), C, H, W)``, and their trajectory.

    Sample ``i`` draws all its noise from the generator of ``(seed, i)``, so it is the same for any
    batch size, rank count or position (and torch's global random state is not touched).  The
    trajectory covers the indices below ``trajectory_n``.  ``bar`` counts samples and moves after
    every network evaluation (a batch's samples are spread over its ``steps + 1`` evaluations).
    ``should_stop()`` is polled after every network evaluation; when it returns true,
    :class:`~bsi.evaluation.progress.Stopped` is raised.
    """
    indices = list(indices)
    gen_device = device if device.type == "cuda" else "cpu"
    calls = steps + 1  # network evaluations per batch, for every solver
    levels, traj_rows, traj_mu, traj_xhat, lams = [], [], [], [], []
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        keep = torch.tensor([i < trajectory_n for i in chunk], device=device)
        recording = bool(keep.any())
        mus, xhats, done = [], [], [0]

        def after_call(i: int, lam: Tensor, mu: Tensor, x_hat: Tensor) -> None:
            if recording:
                if len(lams) == i:  # the precisions are the same for every batch
                    lams.append(float(lam[0]))
                mu_data, x_hat_data = proc.in_data_space(mu, lam, x_hat)
                mus.append(mu_data[keep].float())
                xhats.append(x_hat_data[keep].float())
            done[0] += 1
            if bar is not None:  # the share of this batch's samples that this evaluation completes
                bar.update(len(chunk) * done[0] // calls - len(chunk) * (done[0] - 1) // calls)
            check(should_stop)

        x = proc.sample(denoiser, (len(chunk), *data_shape), steps=steps, solver=solver, spacing=spacing,
                        generator=example_generators(seed, chunk, gen_device), device=device, dtype=dtype,
                        callback=after_call)
        levels.append(to_uint8(x, bins))
        if recording:
            traj_rows += [i for i in chunk if i < trajectory_n]
            traj_mu.append(torch.stack(mus, 1))
            traj_xhat.append(torch.stack(xhats, 1))
    out = torch.cat(levels) if levels else torch.zeros((0, *data_shape), dtype=torch.uint8, device=device)
    if trajectory_n <= 0:
        return out, None
    shape = (0, steps + 1, *data_shape)
    traj = Trajectory(
        traj_rows, torch.tensor(lams, dtype=torch.float64),
        torch.cat(traj_mu) if traj_mu else torch.zeros(shape, device=device),
        torch.cat(traj_xhat) if traj_xhat else torch.zeros(shape, device=device),
    )
    return out, traj


def to_pixels(levels: Tensor, bins: int) -> Tensor:
    """Level indices (uint8, ``bins`` levels) -> 8-bit pixel values 0..255, same shape."""
    return levels if bins == 256 else to_uint8(to_float(levels, bins), 256)


VIEW_SIDE = 96  # pixels: save_preview enlarges smaller images to at least this side for a person to see


def viewing_scale(shape: Sequence[int]) -> int:
    """The integer factor that brings images ``(..., H, W)`` to at least :data:`VIEW_SIDE` pixels on
    their longer side (1 for larger images): 12 for 8x8 digits, 4 for 28x28 MNIST, 3 for 32x32."""
    return max(1, math.ceil(VIEW_SIDE / max(shape[-2:])))


def grid_image(pixels: Tensor, nrow: int | None = None, upscale: int = 1) -> Tensor:
    """uint8 pixels ``(N, C, H, W)`` -> one uint8 grid image ``(C, rows, cols)``, ``nrow`` images a row
    (default square), 1-pixel white borders; ``upscale`` repeats every pixel of the grid into an
    ``upscale x upscale`` block (nearest-neighbour, so levels stay exact and borders stay thin lines)."""
    from torchvision.utils import make_grid

    nrow = nrow or max(1, math.ceil(math.sqrt(len(pixels))))
    grid = make_grid(pixels.cpu(), nrow=nrow, padding=1, pad_value=255)
    return grid.repeat_interleave(upscale, dim=-2).repeat_interleave(upscale, dim=-1)


def save_grid(pixels: Tensor, path: str | Path, nrow: int | None = None, upscale: int = 1) -> Path:
    """Write uint8 pixels ``(N, C, H, W)`` as one PNG grid (see :func:`grid_image`), atomically: a failed
    write (a full disk raises ``OSError`` ``ENOSPC``) leaves the previous file as it was."""
    from PIL import Image

    path = Path(path)
    image = Image.fromarray(grid_image(pixels, nrow, upscale).permute(1, 2, 0).numpy())
    # The temporary name has no suffix to tell PIL the format: name it from the destination's.
    image_format = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        image.save(f, format=image_format)
    return path


def save_preview(levels: Tensor, bins: int, path: str | Path, upscale: int | None = None) -> Path:
    """Samples for a person to look at: images ``(N, C, H, W)`` as the PNG grid ``path``, enlarged
    ``upscale`` times (default :func:`viewing_scale`), sequences ``(N, 1, L)`` (text8's characters)
    as one line of text each in ``path`` with the suffix ``.txt``."""
    if levels.dim() != 3:
        return save_grid(to_pixels(levels, bins), path, upscale=upscale or viewing_scale(levels.shape))
    lines = decode(levels) if bins == TEXT8_BINS else [" ".join(map(str, row.flatten().tolist())) for row in levels]
    return write_text(Path(path).with_suffix(".txt"), "\n".join(lines) + "\n")


def save_npz(path: str | Path, pixels: Tensor, indices: Sequence[int], bins: int, **meta: Any) -> Path:
    """Write uint8 pixels ``(N, C, H, W)`` as ``images`` ``(N, H, W, C)`` (sequences ``(N, C, L)`` as ``(N, L, C)``)
    plus metadata (see module doc)."""
    path = Path(path)
    extra = {k: json.dumps(v) if isinstance(v, dict) else v for k, v in meta.items() if v is not None}
    with atomic_file(path) as tmp, open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
        np.savez(f, images=pixels.movedim(1, -1).cpu().numpy(), indices=np.asarray(indices, dtype=np.int64),
                 bins=bins, **extra)
    return path


def load_npz(path: str | Path) -> tuple[Tensor, dict[str, Any]]:
    """uint8 pixels ``(N, C, H, W)`` from ``images`` (or ADM's ``arr_0``) ``(N, H, W, C)``, and the metadata."""
    with np.load(path, allow_pickle=False) as f:
        key = "images" if "images" in f else "arr_0"
        if key not in f:
            raise ValueError(f"{path} holds no 'images' (or 'arr_0') array: not a sample file")
        images = f[key]
        meta = {k: f[k].item() for k in f.files if k not in (key, "indices") and f[k].ndim == 0}
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise ValueError(f"{path}: expected uint8 images (N, H, W, C) or sequences (N, L, C), got {images.dtype} "
                         f"{images.shape}")
    if isinstance(meta.get("data"), str):
        meta["data"] = json.loads(meta["data"])
    return torch.from_numpy(images).movedim(-1, 1).contiguous(), meta


def save_trajectory(path: str | Path, traj: Trajectory) -> Path:
    """Write a :class:`Trajectory` as ``trajectory.npz`` with ``mu``/``x_hat`` ``(T, n, C, H, W)``."""
    path = Path(path)
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, lam=traj.lam.cpu().numpy(), mu=traj.mu.transpose(0, 1).cpu().numpy(),
                 x_hat=traj.x_hat.transpose(0, 1).cpu().numpy(), indices=np.asarray(traj.indices, dtype=np.int64))
    return path
