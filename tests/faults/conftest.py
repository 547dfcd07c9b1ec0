"""The uninterrupted tiny run that every fault test's outcome is compared with."""

from __future__ import annotations

from pathlib import Path

import pytest

from bsi.train import train
from tests.faults.tiny import tiny


@pytest.fixture(scope="session")
def reference(tmp_path_factory) -> Path:
    """The run directory of the fault tests' run, trained once without interruption."""
    run_dir = tmp_path_factory.mktemp("reference")
    train(tiny(), run_dir=run_dir)
    return run_dir
