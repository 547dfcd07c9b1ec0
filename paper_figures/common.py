"""What every figure script shares: where outputs go, the default data, and how a model is loaded.

A figure runs on the exact denoiser of the digits by default (seconds on a CPU) or on a trained
checkpoint (``--checkpoint PATH``).  Each writes ``out/NAME.png`` and the numbers behind it as
``out/NAME.csv`` or ``.json`` so that they can be checked without reading the picture.
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # figures are files; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from bsi.engine import Process, make_process  # noqa: E402
from bsi.engine.exact import ExactDenoiser  # noqa: E402

OUT = Path(__file__).parent / "out"


def digits(split: str = "train") -> torch.Tensor:
    """The sklearn digits in file order as (N, 1, 8, 8) in [-1, 1]: train = first 1437, test = last 360."""
    from bsi.data import build_dataset, to_float

    dataset = build_dataset({"name": "digits", "val_size": 0}, split)
    images = torch.stack([dataset[i] for i in range(len(dataset))])
    return to_float(images, dataset.bins)


@dataclass
class Model:
    """A denoiser with its process and data description: exact (default) or trained."""

    name: str
    process: Process
    denoiser: Any
    data_shape: tuple[int, ...]
    bins: int
    data: torch.Tensor  # evaluation data in [-1, 1]


def exact_model(method: str = "bsi", n_points: int | None = None, **overrides) -> Model:
    points = digits("train")[:n_points]
    proc = make_process(method, data_bins=17, **overrides)
    return Model(f"{method} (exact denoiser)", proc, ExactDenoiser(points, proc.family), tuple(points.shape[1:]), 17, points)


def trained_model(checkpoint: str, split: str = "test", device: str = "cpu") -> Model:
    from bsi.checkpoint import load_trained
    from bsi.data import build_dataset, to_float

    trained = load_trained(checkpoint, device=device)
    dataset = build_dataset(trained.cfg.data, split)
    data = to_float(torch.stack([dataset[i] for i in range(len(dataset))]), trained.bins).to(device)
    name = f"{trained.process.name} (step {trained.step})"
    return Model(name, trained.process, trained.denoiser, tuple(trained.data_shape), trained.bins, data)


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", type=Path, default=OUT, help="output directory (default paper_figures/out)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true", help="smallest settings (for the test suite)")
    return p


def save(fig: plt.Figure, out: Path, name: str, rows: list[dict] | None = None, data: Any = None) -> Path:
    """Write ``name.png`` and the data behind it (``name.csv`` for rows, ``name.json`` otherwise)."""
    out.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out / f"{name}.png", dpi=120)
    plt.close(fig)
    if rows is not None:
        with open(out / f"{name}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    if data is not None:
        (out / f"{name}.json").write_text(json.dumps(data, indent=1))
    print(f"wrote {out / name}.png")
    return out / f"{name}.png"
