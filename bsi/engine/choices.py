"""The one check of a named choice (solver, spacing, output, ...) against its options."""

from __future__ import annotations

from collections.abc import Iterable


def choice_error(what: str, value: object, choices: Iterable[str]) -> str | None:
    """Why ``value`` is not one of ``choices`` (one line naming the options), or ``None`` if it is."""
    choices = tuple(choices)
    return None if value in choices else f"unknown {what} '{value}': choose one of {', '.join(choices)}"


def check_choice(what: str, value: object, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``, else a ``ValueError`` naming the options."""
    error = choice_error(what, value, choices)
    if error:
        raise ValueError(error)
    return value  # type: ignore[return-value]
