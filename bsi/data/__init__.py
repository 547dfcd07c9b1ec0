"""Datasets as uint8 images, and the one conversion to the engine's [-1, 1] floats.

``build_dataset(cfg, split)`` returns a dataset of uint8 ``(C, H, W)`` tensors with ``.shape`` and
``.bins``; :func:`to_float` and :func:`to_uint8` are the only places where levels become floats and
back.  Missing or corrupt files raise :class:`DatasetError` with a one-line message.
"""

from .convert import DatasetError
from .datasets import DATASETS, ImageDataset, build_dataset
from .levels import to_float, to_uint8
from .sampler import ResumableSampler, build_loader

__all__ = [
    "DATASETS", "DatasetError", "ImageDataset", "ResumableSampler", "build_dataset", "build_loader",
    "to_float", "to_uint8",
]
