"""The noise embedding's frequencies and smoothness; the precision encoding's known values."""

from __future__ import annotations

import math

import pytest
import torch

from bsi.models.embeddings import (
    FourierFeatures,
    NoiseEmbedding,
    encoded_channels,
    noise_frequencies,
)


@pytest.mark.parametrize("max_steps", [10, 100, 1000])
def test_frequencies_run_from_linear_to_just_below_nyquist(max_steps):
    freqs = noise_frequencies(64, max_steps).double()
    nyquist = math.pi * max_steps
    assert freqs[0] == 0.5  # sin(t/2) is within 4% of t/2 on [0, 1]: a nearly linear feature
    assert freqs.max() < nyquist
    # geometric, and the top is one ratio step below Nyquist
    ratios = freqs[1:] / freqs[:-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, ratios[0].item()), rtol=1e-5, atol=0)
    assert freqs[-1] * ratios[0] == pytest.approx(nyquist, rel=1e-5)
    # so neighbouring steps of the finest sampling grid never alias: phase advance below pi per step
    assert (freqs / max_steps < math.pi).all()


def test_features_known_values():
    emb = NoiseEmbedding(32, max_steps=1000, features=64)
    feats = emb.features(torch.tensor([0.0, 0.3]))
    assert feats.shape == (2, 64)
    torch.testing.assert_close(feats[0], torch.cat([torch.zeros(32), torch.ones(32)]))
    phase = 0.3 * emb.frequencies.double()
    torch.testing.assert_close(feats[1].double(), torch.cat([phase.sin(), phase.cos()]), atol=2e-4, rtol=0)


def test_neighbouring_t_give_close_embeddings():
    emb = NoiseEmbedding(32, max_steps=1000, features=256)
    t = torch.linspace(0, 0.9, 901)
    base = emb.features(t)
    lipschitz = emb.frequencies.double().square().sum().sqrt().item()
    similarity = []
    for dt in [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]:
        moved = emb.features(t + dt)
        # |d/dt sin(w t)| <= w: the features move no faster than the frequencies allow
        assert (moved - base).norm(dim=1).max() <= lipschitz * dt * 1.01 + 1e-5
        similarity.append(torch.nn.functional.cosine_similarity(base, moved, dim=1).mean().item())
    assert similarity[0] > 0.9999 and similarity[1] > 0.99  # a tenth of a step: nearly the same
    assert similarity[2] < 0.95  # but one step of a 1000-step sampler is told apart
    assert all(a > b for a, b in zip(similarity, similarity[1:]))  # closer in t, closer embedding
    # and the MLP on top keeps nearby t nearby
    out = emb(torch.tensor([0.5, 0.5 + 1e-5, 0.9]))
    assert (out[0] - out[1]).norm() < 1e-2 * (out[0] - out[2]).norm()


def test_fourier_features_known_values():
    ff = FourierFeatures([6, 8])
    assert ff.multiplier == 7 and encoded_channels(3, [6, 8]) == 21 and encoded_channels(3, None) == 3
    x = torch.tensor([0.0, 1 / 512, 1 / 256, -0.5]).view(1, 1, 2, 2).repeat(2, 3, 1, 1)
    out = ff(x)
    assert out.shape == (2, 21, 2, 2)
    torch.testing.assert_close(out[:, :3], x)  # the input comes first, unchanged
    # sin(2^k pi x) for k = 6, 7, 8 at x = 1/512: sin(pi/8), sin(pi/4), sin(pi/2)
    sines = out[0, 3:12].view(3, 3, 4)[0, :, 1]  # channel 0's three sines at pixel 1
    torch.testing.assert_close(sines, torch.tensor([math.sin(math.pi / 8), math.sin(math.pi / 4), 1.0]))
    # k = 8 has a period of 2/256, one level of 8-bit data in [-1, 1]
    k8 = slice(3 + 2, None, 3)  # channels are grouped per input channel, k = 6, 7, 8 within a group
    torch.testing.assert_close(ff(x + 2 / 256)[:, k8], out[:, k8], atol=1e-4, rtol=0)
    with pytest.raises(ValueError):
        FourierFeatures([8, 6])


def test_sinusoids_stay_float32_under_bf16_autocast():
    x, t = torch.rand(2, 1, 4, 4) * 2 - 1, torch.rand(2)
    ff, emb = FourierFeatures([6, 8]), NoiseEmbedding(16, max_steps=1000)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low_ff, low_t = ff(x), emb.features(t)
    assert low_ff.dtype == torch.float32 and low_t.dtype == torch.float32
    torch.testing.assert_close(low_ff, ff(x), atol=0, rtol=0)
    torch.testing.assert_close(low_t, emb.features(t), atol=0, rtol=0)
