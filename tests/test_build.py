"""From a composed configuration to a process and a backbone sized for it."""


import pytest
import torch
from hydra import compose, initialize_config_dir

from bsi.build import build_backbone, build_process
from bsi.engine import make_process

from bsi.config import CONFIGS  # noqa: E402


def config(*overrides):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.mark.parametrize("method", ["bsi", "bfn", "vdm"])
@pytest.mark.parametrize("output", ["point", "discretised"])
def test_config_builds_the_preset_with_the_runs_output_and_levels(method, output):
    proc = build_process(config(f"method={method}", f"output={output}"), bins=17)
    ref = make_process(method, output=output, data_bins=17)
    assert (proc.space, proc.beliefs, proc.precision, proc.parameterization) == (
        ref.space, ref.beliefs, ref.precision, ref.parameterization)
    backbone = build_backbone(config(f"method={method}", f"output={output}"), (1, 8, 8), proc)
    out = backbone(torch.zeros(2, 1, 8, 8), torch.zeros(2))
    assert out.shape == (2, 2 if output == "discretised" else 1, 8, 8)


def test_overrides_reach_the_process_and_categorical_channels_follow_the_classes():
    proc = build_process(config("method=vdm", "method.proposal=adaptive", "method.snr_min=1e-3"), bins=17)
    assert proc.proposal.name == "adaptive" and proc.lambda_min == 1e-3
    cfg = config("method=bfn-discrete", "method.beta_1=2.0", "data=binarized_digits")
    proc = build_process(cfg, bins=2)
    assert proc.lambda_max == 4.0 and proc.in_channels(1) == proc.out_channels(1) == 2
    backbone = build_backbone(cfg, (1, 8, 8), proc)
    assert backbone(torch.zeros(3, 2, 8, 8), torch.zeros(3)).shape == (3, 2, 8, 8)


def test_a_setting_the_process_ignores_is_refused():
    with pytest.raises(ValueError, match="alpha_r has no effect"):
        build_process(config("method=bsi", "output=discretised", "method.alpha_r=1e5"), bins=17)
