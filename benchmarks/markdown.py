"""Small markdown helpers shared by the benchmarks' ``render`` functions (see :mod:`benchmarks.report`)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def pm(mean: float, spread: float | None, digits: int = 3, bold: bool = False) -> str:
    """``mean ± spread`` with ``digits`` decimals; the mean alone when there is no spread."""
    text = f"{mean:.{digits}f}"
    if spread is not None and not math.isnan(spread):
        text += f" ± {spread:.{digits}f}"
    return f"**{text}**" if bold else text


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A markdown table; cells are formatted with ``str``, ``None`` as an empty cell."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join("" if c is None else str(c) for c in row) + " |")
    return "\n".join(lines)


def provenance(results: dict, command: str | None = None) -> str:
    """One line: the command that reproduces the results, the machine and the date they were measured."""
    command = command or results["command"]
    line = f"Reproduce: `{command}`. Machine: {results['machine']}."
    if results.get("measured"):
        line += f" Measured: {results['measured']}."
    return line
