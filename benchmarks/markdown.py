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


PATHS = {"--checkpoint": "RUN/checkpoints/best.pt", "--reference": "PATH/TO/martenlienen-bsi"}


def command_line(module: str, argv: Sequence[str], paths: dict[str, str] = PATHS) -> str:
    """``python -m module ARGS`` for a results file: local paths after ``paths`` options become placeholders
    and ``--out`` is left out, so the line reads the same on every machine."""
    words, skip = [], False
    for word in argv:
        if skip:
            skip = False
            continue
        option = word.split("=")[0]
        if option == "--out":
            skip = "=" not in word
            continue
        if option in paths:
            words.append(f"{option} {paths[option]}")
            skip = "=" not in word
            continue
        words.append(word)
    return " ".join([f"python -m {module}", *words])


def provenance(*results: dict) -> str:
    """One line: the commands that reproduce the results, the machine(s) and the date(s) they were measured."""
    def listed(key: str, quote: str = "") -> str:
        # a result may hold one value or a list of them (several commands that made its parts)
        each = [v for r in results if r.get(key) for v in (r[key] if isinstance(r[key], list) else [r[key]])]
        values = list(dict.fromkeys(each))
        return "; ".join(f"{quote}{v}{quote}" for v in values)

    line = f"Reproduce: {listed('command', '`')}. Machine: {listed('machine')}."
    if any(r.get("measured") for r in results):
        line += f" Measured: {listed('measured')}."
    return line


def model_note(results: dict) -> str:
    """``", MODEL"`` for digits results not made with today's default MLP (``""`` for it).

    Results of bsi < 0.3 record no model: they used bsi 0.2's default MLP, now ``model=mlp_v02``.
    """
    model = results.get("model", "mlp_v02")
    return "" if model == "mlp" else f", {model}"
