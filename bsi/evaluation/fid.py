"""FID (and KID, Inception Score, precision/recall) through torch-fidelity, with offline weights.

torch-fidelity takes datasets of uint8 ``(3, H, W)`` pixel images and resizes them for Inception
itself; :class:`RGBImages` turns level images (grayscale or colour, any number of levels) into
that.  The reference side (a dataset split) is named, so torch-fidelity caches its features and
statistics under ``cache_dir`` (kept beside the data: computed once per dataset and extractor).

As papers report them: FID against published statistics (``reference_stats``: an ``.npz`` with
``mu`` ``(F,)`` and ``sigma`` ``(F, F)`` of the reference's pool features, F = 2048 for Inception,
e.g. the ADM evaluation suite's reference batches); Inception Score (``isc``: mean and standard
deviation over 10 splits, torch-fidelity's); precision and recall (``prc``: k = 3 nearest
neighbours on the same Inception features, as ADM's evaluation suite computes them; torch-fidelity's
own default would be VGG-16 features).

The Inception weights come from a file: torch-fidelity would download them on first use, which
hangs or fails on machines without internet, so :func:`inception_weights` checks first (that the
file exists and is the published one, by the sha256 prefix in its name) and says where to get it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .progress import StopCheck, check

INCEPTION = "inception-v3-compat"  # torch-fidelity's name for the standard FID network


class FIDError(Exception):
    """An input of the FID computation cannot be used; the message is one line that says what to do."""


class WeightsMissing(FIDError):
    """The Inception weights are not on this machine (or the file is not them); the message says how to get them."""


class ReferenceStatsError(FIDError):
    """A ``reference_stats`` file is missing, unreadable or does not fit the feature extractor."""


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


def load_reference_stats(path: str | Path) -> dict[str, np.ndarray]:
    """``{"mu": (F,), "sigma": (F, F)}`` float64 from an ``.npz`` of published statistics."""
    path = Path(path).expanduser()
    try:
        with np.load(path, allow_pickle=False) as f:
            stats = {key: np.asarray(f[key], dtype=np.float64) for key in ("mu", "sigma")}
    except FileNotFoundError:
        raise ReferenceStatsError(f"fid.reference_stats={path} not found") from None
    except KeyError as err:
        raise ReferenceStatsError(f"fid.reference_stats={path} lacks {err}: it must hold arrays mu (F,) and "
                                  f"sigma (F, F)") from None
    except (OSError, ValueError) as err:
        raise ReferenceStatsError(f"fid.reference_stats={path} is unreadable ({type(err).__name__}: {err}): "
                                  f"it must be an .npz with mu and sigma") from None
    n = stats["mu"].shape[0] if stats["mu"].ndim == 1 else -1
    if n < 1 or stats["sigma"].shape != (n, n):
        raise ReferenceStatsError(f"fid.reference_stats={path}: mu {stats['mu'].shape} and sigma "
                                  f"{stats['sigma'].shape} must be (F,) and (F, F)")
    return stats


def frechet_distance(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """The Frechet distance of two Gaussians ``{"mu", "sigma"}`` (torch-fidelity's formula), in squared feature units."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    cast = [{k: np.asarray(s[k], dtype=np.float64) for k in ("mu", "sigma")} for s in (a, b)]
    return float(fid_statistics_to_metric(*cast, verbose=False)[KEY_METRIC_FID])


def feature_statistics(images: Dataset, feature_extractor: str, weights: str | None, batch_size: int, cuda: bool,
                       verbose: bool) -> dict[str, np.ndarray]:
    """Mean ``(F,)`` and covariance ``(F, F)`` of the FID features of ``images`` (uint8 ``(3, H, W)`` each)."""
    from torch_fidelity.metric_fid import fid_featuresdict_to_statistics
    from torch_fidelity.utils import (
        create_feature_extractor, extract_featuresdict_from_input_id, resolve_feature_layer_for_metric,
    )

    options = dict(input1=images, feature_extractor=feature_extractor, feature_extractor_weights_path=weights,
                   batch_size=batch_size, cuda=cuda, verbose=verbose, save_cpu_ram=True)
    layer = resolve_feature_layer_for_metric("fid", **options)
    extractor = create_feature_extractor(feature_extractor, [layer], **options)
    return fid_featuresdict_to_statistics(extract_featuresdict_from_input_id(1, extractor, **options), layer)


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
    isc: bool = False,
    prc: bool = False,
    reference_stats: str | Path | None = None,
    feature_extractor: str = INCEPTION,
    weights: str | None = None,
    batch_size: int = 64,
    cuda: bool = False,
    verbose: bool = True,
) -> dict[str, Any]:
    """FID (and KID, Inception Score, precision/recall) of ``samples`` against ``reference``
    (both :class:`RGBImages`-style datasets; ``reference`` may be ``None`` with ``reference_stats``
    and neither ``kid`` nor ``prc``).

    The reference's features and statistics are cached in ``cache_dir`` under ``reference_name``
    (torch-fidelity adds the extractor's name).  ``reference_stats`` (an ``.npz`` of ``mu`` and
    ``sigma``) replaces the reference's statistics for the FID.  Returns ``fid`` (with
    ``fid_reference``: ``"stats"`` or ``"images"``), ``kid``/``kid_std``, ``isc``/``isc_std``,
    ``precision``/``recall`` (each when asked), ``n_samples`` and ``n_reference``: FIDs are only
    comparable at equal sample counts.
    """
    import torch_fidelity

    stats = load_reference_stats(reference_stats) if reference_stats else None
    out: dict[str, Any] = {}
    if stats is not None:
        mine = feature_statistics(samples, feature_extractor, weights, batch_size, cuda, verbose)
        if mine["mu"].shape != stats["mu"].shape:
            raise ReferenceStatsError(f"fid.reference_stats={reference_stats} has {stats['mu'].shape[0]} features, "
                                      f"{feature_extractor} gives {mine['mu'].shape[0]}: statistics of another network")
        out.update(fid=frechet_distance(mine, stats), fid_reference="stats")
    binary = stats is None or kid or prc
    if reference is None and binary:
        raise ReferenceStatsError("KID and precision/recall need reference images, not only fid.reference_stats")
    if binary or isc:
        subset = min(kid_subset_size, len(samples), len(reference) if reference is not None else len(samples))
        metrics = torch_fidelity.calculate_metrics(
            input1=samples, input2=reference if binary else None, fid=stats is None, kid=kid, isc=isc, prc=prc,
            kid_subset_size=subset, cuda=cuda, batch_size=batch_size, feature_extractor=feature_extractor,
            feature_extractor_weights_path=weights, cache=True, cache_root=str(cache_dir),
            input2_cache_name=reference_name if binary else None, verbose=verbose,
            # Its only effect here: no DataLoader workers (4 by default), which cost more than they save
            # on in-memory images; Inception dominates the time.
            save_cpu_ram=True,
        )
        if stats is None:
            out.update(fid=float(metrics["frechet_inception_distance"]), fid_reference="images")
        if kid:
            out.update(kid=float(metrics["kernel_inception_distance_mean"]),
                       kid_std=float(metrics["kernel_inception_distance_std"]), kid_subset_size=subset)
        if isc:
            out.update(isc=float(metrics["inception_score_mean"]), isc_std=float(metrics["inception_score_std"]))
        if prc:
            out.update(precision=float(metrics["precision"]), recall=float(metrics["recall"]))
    out.update(n_samples=len(samples), n_reference=len(reference) if reference is not None else None,
               feature_extractor=feature_extractor)
    return out
