"""Both sides of :mod:`benchmarks.reference`: the reference's modules loaded by path, the networks, the data.

The reference's package is also called ``bsi``: :func:`load_reference` imports its modules while
``bsi`` names it and then puts ours back, so both live in one process.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

REFERENCE_MODULES = ("bsi", "models.dit", "models.mlp", "models.pos_emb", "models.vdm_unet", "nn", "tasks.ema_pytorch")


def load_reference(path: Path) -> dict[str, ModuleType]:
    """The reference's modules :data:`REFERENCE_MODULES` (name without ``bsi.`` -> module); ours stay ``bsi``."""
    root = str(Path(path).resolve())
    ours = {k: sys.modules.pop(k) for k in list(sys.modules) if k == "bsi" or k.startswith("bsi.")}
    sys.path.insert(0, root)
    try:
        return {name: importlib.import_module(f"bsi.{name}") for name in REFERENCE_MODULES}
    finally:
        sys.path.remove(root)
        for k in [k for k in sys.modules if k == "bsi" or k.startswith("bsi.")]:
            del sys.modules[k]  # the reference's modules keep working: their globals hold what they imported
        sys.modules.update(ours)


def digits(device: str, cache: Path | None = None) -> torch.Tensor:
    """The 1797 sklearn digits as ``(N, 1, 8, 8)`` float32 on their 17 levels in [-1, 1].

    With ``cache`` (a ``.pt`` file the parent wrote), read from there: the processes then measure the
    packages' start-up, not scikit-learn's (which both would pay alike).
    """
    if cache is not None and cache.exists():
        return torch.load(cache).to(device)
    from sklearn.datasets import load_digits

    data = torch.from_numpy(load_digits().images).float()[:, None] / 8 - 1
    if cache is not None:
        torch.save(data, cache)
    return data.to(device)


def random_images(shape: tuple[int, ...], device: str, n: int = 256) -> torch.Tensor:
    """``n`` images of uniformly drawn 8-bit levels in [-1, 1], ``(n, *shape)``."""
    g = torch.Generator().manual_seed(0)
    return (torch.randint(0, 256, (n, *shape), generator=g).float() * 2 / 255 - 1).to(device)


def cycle(data: torch.Tensor, batch: int) -> Callable[[], torch.Tensor]:
    """A function returning the next batch of ``data`` each call, round and round."""
    batches = data[: len(data) // batch * batch].split(batch) if len(data) >= batch else [data.repeat(
        -(-batch // len(data)), 1, 1, 1)[:batch]]
    state = {"i": 0}

    def next_batch() -> torch.Tensor:
        state["i"] += 1
        return batches[state["i"] % len(batches)]

    return next_batch


def reference_network(ref: dict[str, ModuleType], shape: tuple[int, ...], kind: str = "mlp") -> nn.Module:
    """The reference's MLP (its config: width 256, 2 hidden layers; 205,376 parameters on 8x8), its VDM U-Net
    at dim 32 and 2 levels, or its DiT at DiT-S/4's size (dim 384, depth 12, 6 heads, patch 4), with its
    Nyquist embedding (32, rate 100) and Fourier features 6..8."""
    embedding = ref["models.pos_emb"].NyquistPositionalEmbedding(32, 100)
    features = ref["nn"].FourierFeatures(n_min=6, n_max=8)
    if kind == "dit":
        return ref["models.dit"].DenoisingDiT(shape, patch_size=4, dim=384, depth=12, heads=6,
                                              fourier_features=features)
    if kind == "unet":
        return ref["models.vdm_unet"].DenoisingVDMUNet(shape, embedding, "silu", 32, 2, 4, dropout=0.1,
                                                       fourier_features=features)
    return ref["models.mlp"].DenoisingMLP(shape, embedding, 256, 2, "silu", False, fourier_features=features)


# Our MLP against the reference's in the network-alone rows: today's, and bsi 0.2's (LayerNorms, the
# time MLP, two-matrix blocks), each fitted to the reference's parameter count.  name -> MLP options.
MLP_OPTIONS: dict[str, dict] = {
    "ours": {"fourier_features": [2, 4]},
    "ours, bsi 0.2's MLP": {"num_blocks": 2, "block_layers": 2, "norm": True, "time_mlp": True},
}


def mlp_option(options: dict, target: int = 205_376) -> nn.Module:
    """Our MLP (point output, 8x8) with ``options``, its width and noise features fitted to ``target`` parameters.

    The width is a multiple of 16 (unaligned widths run slower per FLOP), the noise features (even)
    make up the rest.
    """
    from bsi.models import MLP

    def build(width: int, embedding_dim: int) -> nn.Module:
        return MLP(1, 1, 8, width=width, embedding_dim=embedding_dim, **options)

    def miss(sizes: tuple[int, int]) -> int:
        with torch.device("meta"):
            return abs(sum(p.numel() for p in build(*sizes).parameters()) - target)

    return build(*min(((w, e) for w in range(64, 513, 16) for e in range(16, 129, 4)), key=miss))


def reference_model(ref: dict[str, ModuleType], shape: tuple[int, ...], device: str, seed: int = 0,
                    kind: str = "mlp") -> nn.Module:
    """The reference's ``BSI`` (its paper settings, EDM preconditioning) around its network."""
    torch.manual_seed(seed)
    net = reference_network(ref, shape, kind).to(device)
    return ref["bsi"].BSI(net, data_shape=shape, lambda_0=1e-2, alpha_M=1e6, alpha_R=2e6, k=50, preconditioning="edm",
                          discretization=ref["bsi"].Discretization(-1.0, 1.0, levels(kind))).to(device)


def levels(kind: str) -> int:
    """The data's levels for a backbone kind: the digits' 17 for the MLP, 8-bit images otherwise."""
    return 17 if kind == "mlp" else 256


# our config overrides per backbone kind: the small U-Net of the mnist5k preset, DiT-S/4 (model=dit)
OUR_BACKBONES = {"mlp": [], "unet": ["experiment=mnist5k_unet"], "dit": ["model=dit"]}


def ours_model(output: str, sizes: dict[str, int], shape: tuple[int, ...], device: str, seed: int = 0,
               kind: str = "mlp"):
    """``(cfg, proc, backbone, denoiser)``: ours from the default config with ``output`` and the MLP's ``sizes``."""
    from hydra import compose, initialize_config_dir

    from bsi.build import build_backbone, build_process
    from bsi.config import CONFIGS

    overrides = [f"output={output}", *(f"model.{k}={v}" for k, v in sizes.items()), *OUR_BACKBONES[kind]]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    torch.manual_seed(seed)
    proc = build_process(cfg, levels(kind))
    backbone = build_backbone(cfg, shape, proc).to(device)
    return cfg, proc, backbone, proc.parameterize(backbone)
