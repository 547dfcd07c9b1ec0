"""Heavy dependencies are imported only by the backbone or metric that needs them.

timm (and the torchvision it pulls in) costs about 2 s of CPU and 200 MB at start-up, torch-fidelity
and TensorBoard more: a run that trains the MLP, or a script that only uses the engine, needs none.
Each check runs in a fresh interpreter, since this test process may have imported anything.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# h5py is light next to these (about 40 ms), but the built-in digits never open an HDF5 file
HEAVY = ("timm", "torchvision", "torch_fidelity", "tensorboard", "torch.utils.tensorboard", "h5py")


def imported_after(code: str) -> list[str]:
    """Which of :data:`HEAVY` are in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    probe = f"import json, sys\n{code}\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("module", ["bsi.train", "bsi.engine", "bsi.models", "bsi.build", "bsi.evaluation", "bsi.evaluate"])
def test_importing_does_not_import_heavy_dependencies(module):
    assert imported_after(f"import {module}") == []


def test_building_the_mlp_does_not_import_timm():
    code = "from bsi.models import build_model\nbuild_model('mlp', 1, 1, 8)"
    assert imported_after(code) == []


def test_a_backbone_that_needs_timm_imports_it_when_built():
    code = "from bsi.models import build_model\nbuild_model('dit', 1, 1, 8, dim=32, depth=1, num_heads=2, patch_size=4)"
    assert "timm" in imported_after(code)


def test_checking_the_default_config_does_not_import_timm():
    code = ("from hydra import compose, initialize_config_dir\nfrom bsi.config import CONFIGS\n"
            "import bsi.train\n"
            "with initialize_config_dir(config_dir=str(CONFIGS), version_base='1.3'):\n"
            "    cfg = compose('train')\n"
            "from bsi.config.validate import validate\nassert validate(cfg) == []\n"
            "from bsi.models import MODELS\nassert 'dit' in MODELS and len(MODELS) == 4 and MODELS['mlp'].__name__ == 'MLP'")
    assert imported_after(code) == []
