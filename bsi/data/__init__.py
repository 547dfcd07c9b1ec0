"""Datasets as uint8 images, and the one conversion to the engine's [-1, 1] floats.

Datasets (``data.name``): ``digits``, ``binarized_digits``, ``binarized_mnist``, ``text8``, ``mnist5k``,
``cifar10``, ``imagenet32`` (see :mod:`.datasets` for shapes, levels and splits), and your own
images: ``folder`` and ``npz`` with ``data.path`` (:mod:`.custom`).
``build_dataset(cfg, split)`` returns an :class:`ImageDataset` of uint8 ``(C, H, W)`` images (no
labels; text8: ``(1, 256)`` sequences, shown as text by :func:`decode`) with ``.shape`` and
``.bins``; :func:`to_float` and :func:`to_uint8` are the only places where levels become floats
and back.  :class:`ResumableSampler` and :func:`build_loader` feed whole uint8 batches
``(B, C, H, W)`` to training, resumable mid-epoch.  Missing, corrupt or mismatched files raise
:class:`DatasetError` with a one-line message that says what to do.

Files live under ``root/NAME/``: the official downloads and the converted ``NAME.h5``;
``python -m bsi.data prepare NAME --root ROOT`` converts explicitly (first use does it too).  The
root must exist (it is never created); only ``root/NAME/`` and cache folders inside it
(:func:`cache_folder`) are.
"""

from .datasets import DATASETS, DatasetSpec, ImageDataset, build_dataset, cache_folder, data_root, has_val, prepare
from .errors import DatasetError
from .levels import to_float, to_uint8
from .sampler import ResumableLoader, ResumableSampler, build_loader
from .text8 import decode

__all__ = [
    "DATASETS", "DatasetError", "DatasetSpec", "ImageDataset", "ResumableLoader", "ResumableSampler",
    "build_dataset", "build_loader", "cache_folder", "data_root", "decode", "has_val", "prepare", "to_float", "to_uint8",
]
