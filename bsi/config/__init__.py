"""Configuration: the schema every ``train`` and ``evaluate`` configuration is checked against, the resume
policy, and the record a run keeps of what it ran (see :mod:`.schema`, :mod:`.resume`, :mod:`.record`)."""

from pathlib import Path

# The hydra configs, shipped inside the package (``bsi/configs/``).
CONFIGS = Path(__file__).resolve().parents[1] / "configs"

from .schema import register  # noqa: E402  (hydra finds the schemas by name once they are stored)

register()
