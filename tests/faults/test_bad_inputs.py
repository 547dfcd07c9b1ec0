"""Bad input gets one line naming the problem, and nothing on disk is created or damaged."""

from __future__ import annotations

import pytest
import torch

from bsi.data import DatasetError, build_dataset, cache_folder, prepare
from bsi.engine import make_process

# -- the k-step bound's step proposal -------------------------------------------------------------------

@pytest.mark.parametrize("q, problem", [
    (torch.full((10,), 0.2, dtype=torch.float64), "it sums to 2"),
    (torch.full((10,), 0.05, dtype=torch.float64), "it sums to 0.5"),
    (torch.tensor([-0.1, 0.3] + [0.1] * 8, dtype=torch.float64), "zero, negative or non-finite"),
    (torch.tensor([float("nan")] + [0.1] * 9, dtype=torch.float64), "zero, negative or non-finite"),
    (torch.full((9,), 1 / 9, dtype=torch.float64), "its shape is (9,)"),
    ([0.1] * 10, "it is a list, not a tensor"),
])
def test_a_step_proposal_that_is_not_a_probability_vector_is_refused_in_one_line(q, problem):
    proc = make_process("bsi", data_bins=17)
    x = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError) as err:
        proc.elbo(x, lambda mu, lam: torch.zeros_like(mu), steps=10, step_proposal=q)
    message = str(err.value)
    assert message.startswith("step_proposal must hold 10 positive, finite probabilities summing to 1, but ")
    assert problem in message and "\n" not in message


def test_a_step_proposal_summing_to_one_within_float32_rounding_is_accepted():
    proc = make_process("bsi", data_bins=17)
    q = torch.softmax(torch.randn(1000, generator=torch.Generator().manual_seed(0)), 0)  # float32
    terms = proc.elbo(torch.zeros(2, 1, 4, 4), lambda mu, lam: torch.zeros_like(mu), steps=1000, step_proposal=q)
    assert torch.isfinite(terms["total"]).all()


# -- data roots -------------------------------------------------------------------------------------------

def test_a_data_root_that_does_not_exist_is_named_and_not_created(tmp_path):
    root = tmp_path / "nonexistent"
    for name, attempt in (("mnist5k", lambda: build_dataset({"name": "mnist5k", "root": str(root)}, "train")),
                          ("cifar10", lambda: prepare("cifar10", root)),
                          ("cifar10", lambda: cache_folder({"name": "cifar10", "root": str(root)}, "fid_cache"))):
        with pytest.raises(DatasetError) as err:
            attempt()
        assert str(err.value) == (f"data.root={root} does not exist, so {name} cannot be found there: point data.root "
                                  f"(or $BSI_DATA) at the folder that holds the datasets, or create it first")
    assert not root.exists()


def test_a_data_root_that_is_a_file_is_named(tmp_path):
    root = tmp_path / "data"
    root.write_text("not a folder")
    with pytest.raises(DatasetError, match=f"data.root={root} is a file, not a folder"):
        build_dataset({"name": "cifar10", "root": str(root)}, "test")


def test_only_the_datasets_own_folder_is_created_inside_an_existing_root(tmp_path):
    folder = cache_folder({"name": "cifar10", "root": str(tmp_path)}, "fid_cache")
    assert folder == tmp_path / "cifar10" / "fid_cache" and folder.is_dir()
    with pytest.raises(DatasetError, match="CIFAR-10 archive not found"):  # the root exists: the usual message
        build_dataset({"name": "cifar10", "root": str(tmp_path)}, "test")


def test_an_uncreatable_cache_folder_is_one_line(tmp_path):
    (tmp_path / "cifar10").write_text("a file where the dataset's folder belongs")
    with pytest.raises(DatasetError) as err:
        cache_folder({"name": "cifar10", "root": str(tmp_path)}, "fid_cache")
    message = str(err.value)
    assert message.startswith(f"cannot create {tmp_path / 'cifar10' / 'fid_cache'} (") and "\n" not in message
    assert (tmp_path / "cifar10").read_text() == "a file where the dataset's folder belongs"  # untouched
