"""Every figure script runs on its tiniest settings and writes a picture and finite data."""

import csv
import importlib
import json
import math

import pytest

FIGURES = ["kstep_elbo", "estimator_variance", "solver_quality", "trajectory", "training_curves", "sample_grids"]


def numbers(path):
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        rows = data if isinstance(data, list) else [data]
    else:
        with open(path) as f:
            rows = list(csv.DictReader(f))
    values = []
    for row in rows:
        for v in row.values():
            try:
                values.append(float(v))
            except (TypeError, ValueError):
                pass
    return values


@pytest.mark.parametrize("name", FIGURES)
def test_figure_script_writes_png_and_finite_data(name, tmp_path):
    module = importlib.import_module(f"paper_figures.{name}")
    module.main(["--tiny", "--out", str(tmp_path)])
    png = tmp_path / f"{name}.png"
    assert png.exists() and png.stat().st_size > 1000
    data = [p for p in (tmp_path / f"{name}.csv", tmp_path / f"{name}.json") if p.exists()]
    assert data, "the numbers behind the plot are written next to it"
    values = numbers(data[0])
    assert values and all(math.isfinite(v) for v in values)
    if name == "trajectory":
        assert (tmp_path / "trajectory.gif").exists()
