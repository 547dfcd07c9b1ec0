"""The one check of a named choice (solver, spacing, output, ...) against its options."""

from __future__ import annotations

from collections.abc import Iterable


def check_choice(what: str, value: object, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``, else a ``ValueError`` naming the options."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"unknown {what} '{value}': choose one of {', '.join(choices)}")
    return value  # type: ignore[return-value]
