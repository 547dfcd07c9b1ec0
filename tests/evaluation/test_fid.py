"""FID helpers: finding the Inception weights without the network, and torch-fidelity's input format.

The FID pipeline end to end (stand-in feature extractor, cached reference statistics) is in
tests/test_evaluate.py.
"""

from pathlib import Path

import pytest
import torch

from bsi.evaluation import RGBImages, WeightsMissing, inception_weights, to_pixels
from bsi.evaluation.fid import inception_url

NAME = "weights-inception-2015-12-05-6726825d.pth"


def test_url_is_torch_fidelitys():
    assert inception_url().endswith("/" + NAME) and inception_url().startswith("https://")


def test_missing_weights_say_where_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsMissing) as err:
        inception_weights(None)
    message = str(err.value)
    assert inception_url() in message and "fid.inception_weights=" in message and "\n" not in message
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / NAME) in message
    with pytest.raises(WeightsMissing, match="not found"):
        inception_weights(str(tmp_path / "nowhere.pth"))


def test_found_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert inception_weights(None, download=True) is None  # torch-fidelity downloads it itself
    local = tmp_path / NAME
    torch.save({"conv.weight": torch.zeros(2)}, local)  # a stand-in state dict
    assert inception_weights(str(local)) == str(local)
    cached = Path(tmp_path / "torch" / "hub" / "checkpoints" / NAME)
    cached.parent.mkdir(parents=True)
    torch.save({"conv.weight": torch.zeros(2)}, cached)
    assert inception_weights(None) is None  # torch-fidelity finds it in its cache


@pytest.mark.parametrize("junk", [b"", b"<html>404 Not Found</html>", b"PK\x03\x04 truncated"])
def test_junk_weights_are_named_in_one_line_before_any_sampling(tmp_path, monkeypatch, junk):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for where in (tmp_path / NAME, tmp_path / "torch" / "hub" / "checkpoints" / NAME):
        where.parent.mkdir(parents=True, exist_ok=True)
        where.write_bytes(junk)
        with pytest.raises(WeightsMissing) as err:
            inception_weights(str(where) if where.parent == tmp_path else None)
        message = str(err.value)
        assert message.startswith(f"Inception weights {where} are not a weights file (") and "\n" not in message
        assert inception_url() in message


def test_rgb_images_are_3_channel_8_bit():
    levels = torch.tensor([[[[0, 16], [8, 1]]]], dtype=torch.uint8)  # (1, 1, 2, 2) on 17 levels
    ds = RGBImages(levels, lambda x: to_pixels(x, 17))
    x = ds[0]
    assert len(ds) == 1 and x.dtype == torch.uint8 and x.shape == (3, 2, 2)
    assert x[0].tolist() == [[0, 255], [128, 16]] and torch.equal(x[0], x[2])
    colour = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    assert RGBImages(colour)[1].shape == (3, 4, 4)


def test_rgb_images_poll_should_stop_before_every_image():
    from bsi.evaluation import Stopped

    served = []
    images = RGBImages(torch.zeros(10, 1, 4, 4, dtype=torch.uint8), should_stop=lambda: len(served) >= 3)
    with pytest.raises(Stopped):
        for i in range(len(images)):
            served.append(images[i])
    assert len(served) == 3
