"""What a resume may change: settings that say how long, where and how a run is carried out, reported and
evaluated, not what it learns.  Any other difference from the checkpoint's configuration makes a resume
refuse, unless ``resume_force=true``."""

from __future__ import annotations

from typing import Any

# A key and everything below it.  ``method`` is compared on its own (against the recorded process).
RESUME_MAY_CHANGE = (
    "resume", "resume_force", "force_lock", "legacy_presets", "run_dir", "version", "requested", "method", "device", "cpu_threads",
    "cpu_retain_memory", "data.root",
    "eval", "train.steps", "train.log_every", "train.eval_every", "train.checkpoint_every", "train.keep_checkpoints",
    "train.num_workers", "train.compile", "train.max_nonfinite", "logger", "wandb",
)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``{"a.b.c": leaf}`` (lists are leaves)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def changed_settings(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``key=old (now new)`` for each setting outside :data:`RESUME_MAY_CHANGE` that differs."""
    old, new = flatten(saved), flatten(now)
    free = tuple(RESUME_MAY_CHANGE)
    changes = []
    for key in sorted(old.keys() | new.keys()):
        if key in free or key.startswith(tuple(f"{k}." for k in free)):
            continue
        if old.get(key) != new.get(key):  # a key the checkpoint's bsi did not have counts as null
            changes.append(f"{key}={old.get(key, 'unset')} (now {new.get(key, 'unset')})")
    return changes


def listed(changes: list[str], most: int = 8) -> str:
    """The first ``most`` of ``changes``, comma-separated, and how many more."""
    return ", ".join(changes[:most]) + (f" and {len(changes) - most} more" if len(changes) > most else "")


__all__ = ["RESUME_MAY_CHANGE", "changed_settings", "flatten", "listed"]
