"""Training, split by job: :mod:`.setup` (checked configuration, data, process, backbone, resume),
:mod:`.state` (the run, its checkpoints and random streams), :mod:`.step` (one optimiser step),
:mod:`.evaluation` (validation, grids, the final test) and :mod:`.loop` (:func:`train`)."""

from .loop import train

__all__ = ["train"]
