"""Markdown for one results file of :mod:`benchmarks.reference` (``render_device``; ``benchmarks.report``
calls ``benchmarks.reference.render`` with every device's file).

Ratios are ours over the reference: below 1, ours is faster (smaller).
"""

from __future__ import annotations

from benchmarks.timing import fmt_ratio

VARIANTS = ("reference", "point", "discretised", "point, default size", "discretised, default size")
# ours in the fresh-process table: through bsi.train, and the point variant from the library alone
PROCESS_COLUMNS = ("point", "discretised", "point, as a library")
# the parts that train one backbone on 8-bit images -> what their table compares
IMAGE_PARTS = {
    "unet": "U-Net training step at batch {batch} (8-bit levels, drawn), ours (the mnist5k preset: 32 channels in 8 "
            "GroupNorm groups, 2 blocks) over the "
            "reference (dim 32, 2 levels)",
    "dit": "DiT-S/4 training step at batch {batch} (8-bit levels, drawn), ours (`model=dit`) over the reference's "
           "DiT at the same size (dim 384, depth 12, 6 heads, patch 4)",
}


def targets(results: dict) -> list[str]:
    """The target rows: every ratio at most 1.0x (for likelihood and samplers: below 1, the lead kept)."""
    rows = []

    def add(name: str, ratio: dict | None) -> None:
        if ratio is not None:
            # met as shown: a median that rounds to 1.00x is not told apart from the reference
            rows.append(f"| {name} | {fmt_ratio(ratio)} | {'yes' if round(ratio['median'], 2) <= 1.0 else 'no'} |")

    for batch, row in results.get("network", {}).items():
        add(f"MLP alone, batch {batch}", row["ours"]["ratio"])
    for batch, row in results.get("steps", {}).items():
        for variant in VARIANTS[1:]:
            add(f"training step, {variant}, batch {batch}", row[variant]["ratio"])
    for shape, row in results.get("unet", {}).items():
        add(f"U-Net step, {shape}, point", row["point"]["ratio"])
    for shape, row in results.get("dit", {}).items():
        add(f"DiT-S/4 step, {shape}, point", row["point"]["ratio"])
    for name, row in results.get("inference", {}).items():
        add(f"{name}, point", row["point"]["ratio"])
    for steps, row in results.get("process", {}).items():
        for variant in ("point", "point, as a library"):  # the point variant, through bsi.train and as a library
            if variant not in row["total_s"]:
                continue
            add(f"whole process, {steps} steps, {variant}", row["total_s"][variant]["ratio"])
            add(f"CPU time to the first step ({steps}-step rounds), {variant}", row["first_step_s"][variant]["ratio"])
            add(f"peak memory ({steps}-step rounds), {variant}", row["maxrss_mb"][variant]["ratio"])
    if not rows:
        return []
    return ["Targets: every row at most 1.00x the reference (median of the per-block or per-round ratios, to two "
            "decimals):", "",
            "| row | ours / reference | met |", "|---|---|---|", *rows, ""]


def render_device(results: dict) -> str:
    """Markdown tables of :func:`main`'s results: ours over the reference, median (min-max) per block or round."""
    when = f" Measured: {results['date']}." if "date" in results else ""
    if results.get("precision", "fp32") != "fp32" or results.get("compile"):
        when += f" Steps in {results.get('precision', 'fp32')}{', compiled' if results.get('compile') else ''}."
    if results.get("retain_freed_memory"):
        when += (" The benchmark's own process keeps freed memory for reuse (`bsi.cpu`, as `bsi.train` does on a"
                 " CPU), for both sides.")
    lines = [f"Reproduce: `python -m benchmarks.reference --reference PATH` (PATH: a checkout of martenlienen/bsi). "
             f"Machine: {results['machine']}.{when}", ""]
    if "network" in results:
        first = next(iter(results["network"].values()))
        lines += ["The MLP alone (forward + backward of a mean square, random inputs), ours over the reference's "
                  "network: ours with the reference's input (the same matrix shapes), and bsi 0.2's MLP (LayerNorms, "
                  "a time MLP, two-matrix blocks) fitted to 205k parameters by its width:", "",
                  "| network | parameters | " + " | ".join(f"batch {b}" for b in results["network"]) + " |",
                  "|---|---|" + "---|" * len(results["network"])]
        for name in first["parameters"]:
            cells = [f"{1000 * row[name]['seconds']['median']:.2f} ms" if name == "reference"
                     else fmt_ratio(row[name]["ratio"]) for row in results["network"].values()]
            lines.append(f"| {name} | {first['parameters'][name]:,} | " + " | ".join(cells) + " |")
        lines.append("")
    if "steps" in results:
        lines += ["Training step (loss, backward, clipping, AdamW, EMA) on the digits, ours over the reference "
                  "(205,376 parameters); per-block ratios, median (min-max):", "",
                  "| variant | parameters | " + " | ".join(f"batch {b}" for b in results["steps"]) + " |",
                  "|---|---|" + "---|" * len(results["steps"])]
        first = next(iter(results["steps"].values()))
        for variant in VARIANTS:
            cells = []
            for row in results["steps"].values():
                ms = 1000 * row[variant]["seconds"]["median"]
                cells.append(f"{ms:.2f} ms" if variant == "reference" else f"{fmt_ratio(row[variant]['ratio'])}")
            lines.append(f"| {variant} | {first['parameters'][variant]:,} | " + " | ".join(cells) + " |")
        lines.append("")
    for part, title in IMAGE_PARTS.items():
        if part not in results:
            continue
        batch = next(iter(results[part].values()))["batch"]
        lines += [f"{title.format(batch=batch)}; per-block ratios, median (min-max), images per second and "
                  "parameters:", "", "| data | reference | point | discretised |", "|---|---|---|---|"]
        for shape, row in results[part].items():
            def cell(variant: str) -> str:
                speed = f"{row['batch'] / row[variant]['seconds']['median']:,.1f} images/s ({row['parameters'][variant]:,})"
                return speed if variant == "reference" else f"{fmt_ratio(row[variant]['ratio'])}, {speed}"
            lines.append(f"| {shape} | {cell('reference')} | {cell('point')} | {cell('discretised')} |")
        lines.append("")
    if "inference" in results:
        lines += ["Likelihood (infinite-step ELBO, one draw, batch 512) and ancestral sampling (256 samples) with the "
                  "equal-size MLPs, ours over the reference in time (below 1: ours is faster); per-block ratios:", "",
                  "| measurement | reference | point | discretised |", "|---|---|---|---|"]
        for name, row in results["inference"].items():
            lines.append(f"| {name} | {1000 * row['reference']['seconds']['median']:.1f} ms | "
                         f"{fmt_ratio(row['point']['ratio'])} | {fmt_ratio(row['discretised']['ratio'])} |")
        lines.append("")
    if "process" in results:
        names = {"first_step_s": "CPU s to the first step", "total_s": "CPU s in all", "maxrss_mb": "peak memory (MB)"}
        columns = [v for v in PROCESS_COLUMNS if v in next(iter(results["process"].values()))["total_s"]]
        lines += ["Fresh processes (import, build, data, N steps at batch 128), ours over the reference; per-round "
                  "ratios, median (min-max), and the reference's own median. `point` and `discretised` start as "
                  "`python -m bsi.train` does (hydra, the config); `point, as a library` builds the same model "
                  "from `bsi.engine` and `bsi.models` alone, as the reference's side is built from its modules:", "",
                  "| steps | measure | reference | " + " | ".join(columns) + " |", "|---|---|---|" + "---|" * len(columns)]
        for steps, row in results["process"].items():
            for key, name in names.items():
                ref = row[key]["reference"]["value"]["median"]
                lines.append(f"| {steps} | {name} | {ref:.3g} | "
                             + " | ".join(fmt_ratio(row[key][v]["ratio"]) for v in columns) + " |")
        lines.append("")
    if "startup" in results:
        lines += ["Importing in a fresh interpreter (CPU seconds of the process, peak memory), median (min-max) over "
                  "rounds:", "", "| import | CPU s | peak memory (MB) |", "|---|---|---|"]
        for name, row in results["startup"].items():
            c, m = row["cpu_s"], row["peak_mb"]
            lines.append(f"| {name} | {c['median']:.2f} ({c['min']:.2f}-{c['max']:.2f}) | {m['median']:.0f} |")
        lines.append("")
    return "\n".join(lines + targets(results))
