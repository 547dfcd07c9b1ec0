"""FID (and KID) through torch-fidelity, with cached reference statistics and offline weights.

torch-fidelity takes datasets of uint8 ``(3, H, W)`` pixel images and resizes them for Inception
itself; :class:`RGBImages` turns level images (grayscale or colour, any number of levels) into
that.  The reference side (a dataset split) is named, so torch-fidelity caches its features and
statistics under ``cache_dir`` (kept beside the data: computed once per dataset and extractor).

The Inception weights come from a file: torch-fidelity would download them on first use, which
hangs or fails on machines without internet, so :func:`inception_weights` checks first and says
where to get the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from .progress import StopCheck, check

INCEPTION = "inception-v3-compat"  # torch-fidelity's name for the standard FID network


class WeightsMissing(Exception):
    """The Inception weights are not on this machine; the message says how to get them."""


def inception_url() -> str:
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    return URL_INCEPTION_V3


def inception_weights(path: str | None, download: bool = False) -> str | None:
    """The weights file to hand torch-fidelity, or ``None`` to let it use its cache (or download).

    Raises :class:`WeightsMissing` when ``path`` does not exist, or when it is unset, torch's hub
    cache lacks the file and ``download`` is off, and when the file there is not a weights file (a
    broken download, an HTML error page): in one line, before any sampling.
    """
    url = inception_url()
    name = url.rsplit("/", 1)[1]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / name
    how = (f"download {url} (on any machine with internet) and pass fid.inception_weights=/path/to/{name}, "
           f"or put it at {cached}")
    if path:
        if not Path(path).expanduser().is_file():
            raise WeightsMissing(f"Inception weights fid.inception_weights={path} not found: {how}")
        check_weights(Path(path).expanduser(), how)
        return str(Path(path).expanduser())
    if cached.is_file():
        check_weights(cached, how)
        return None
    if download:
        return None
    raise WeightsMissing(f"FID needs the Inception weights, which are not on this machine: {how} "
                         f"(or set fid.download=true where there is internet)")


def check_weights(path: Path, how: str) -> None:
    """:class:`WeightsMissing` unless ``path`` holds a state dict of tensors (what torch-fidelity loads)."""
    try:
        # The safe unpickler: a weights file holds tensors only, and a junk file must not run code.
        state = torch.load(path, map_location="cpu", weights_only=True)
        usable = isinstance(state, dict) and bool(state) and all(isinstance(v, Tensor) for v in state.values())
        reason = "it holds no tensors"
    except Exception as err:  # torch raises many types for a file that is not a checkpoint
        usable, reason = False, f"{type(err).__name__}: {' '.join(str(err).split())[:100]}"
    if not usable:
        raise WeightsMissing(f"Inception weights {path} are not a weights file ({reason}): {how}")


class RGBImages(Dataset[Tensor]):
    """Images as torch-fidelity wants them: uint8 ``(3, H, W)`` pixel values 0..255.

    ``images`` is anything indexable giving uint8 ``(C, H, W)`` (a tensor ``(N, C, H, W)`` or a
    dataset); ``to_pixels`` maps them to 0..255 (identity for 8-bit pixels).  One channel is
    repeated to three.  ``should_stop()`` is polled before every image: torch-fidelity's own loop
    over them (Inception features) then stops within one image of a stop signal, raising
    :class:`~bsi.evaluation.progress.Stopped`.
    """

    def __init__(self, images, to_pixels=None, should_stop: StopCheck | None = None):
        self.images, self.to_pixels, self.should_stop = images, to_pixels, should_stop

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Tensor:
        check(self.should_stop)
        x = self.images[i]
        x = x if self.to_pixels is None else self.to_pixels(x)
        return x.expand(3, *x.shape[1:]).contiguous() if x.shape[0] == 1 else x


def fid_kid(
    samples: Dataset,
    reference: Dataset,
    *,
    reference_name: str,
    cache_dir: str | Path,
    kid: bool = True,
    kid_subset_size: int = 1000,
    feature_extractor: str = INCEPTION,
    weights: str | None = None,
    batch_size: int = 64,
    cuda: bool = False,
    verbose: bool = True,
) -> dict[str, Any]:
    """FID (and KID) of ``samples`` against ``reference`` (both :class:`RGBImages`-style datasets).

    The reference's features and statistics are cached in ``cache_dir`` under ``reference_name``
    (torch-fidelity adds the extractor's name).  Returns ``fid``, ``kid``/``kid_std`` (when asked),
    ``n_samples`` and ``n_reference``: FIDs are only comparable at equal sample counts.
    """
    import torch_fidelity

    subset = min(kid_subset_size, len(samples), len(reference))
    metrics = torch_fidelity.calculate_metrics(
        input1=samples, input2=reference, fid=True, kid=kid, kid_subset_size=subset, cuda=cuda, batch_size=batch_size,
        feature_extractor=feature_extractor, feature_extractor_weights_path=weights, cache=True,
        cache_root=str(cache_dir), input2_cache_name=reference_name, verbose=verbose,
        # Its only effect here: no DataLoader workers (4 by default), which cost more than they save
        # on in-memory images; Inception dominates the time.
        save_cpu_ram=True,
    )
    out: dict[str, Any] = {"fid": float(metrics["frechet_inception_distance"])}
    if kid:
        out.update(kid=float(metrics["kernel_inception_distance_mean"]),
                   kid_std=float(metrics["kernel_inception_distance_std"]), kid_subset_size=subset)
    out.update(n_samples=len(samples), n_reference=len(reference), feature_extractor=feature_extractor)
    return out
