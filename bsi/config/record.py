"""The record a run keeps of its process: every setting it was built with, and the version that built it.

A run's ``config.yaml``, every checkpoint and ``final.json`` hold ``method`` as the complete settings of
:func:`bsi.engine.presets.resolve_settings` (no ``null``, "the preset's value", left) and ``version``.
Loading, evaluating and resuming a run build its process from that record, never from what the presets
say today; where today's presets would differ, :func:`preset_note` says so in one line.  A configuration
with a ``version`` is such a record; a composed one (``version: null``) is a request.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from .. import __version__
from ..engine import Process
from ..engine.presets import preset_differences, process_from_settings, resolve_settings

LEGACY_HINT = "add legacy_presets=true to rebuild its process from today's presets"


def is_record(cfg: DictConfig | dict) -> bool:
    """Whether ``cfg`` is a run's record (its ``method`` complete), not a request with nulls."""
    return bool(cfg.get("version"))


def overrides(cfg: DictConfig | dict) -> dict[str, Any]:
    """The ``make_process`` keywords a request sets: its ``method`` without nulls, with the run's output."""
    method = OmegaConf.to_container(cfg["method"], resolve=True) if isinstance(cfg, DictConfig) else dict(cfg["method"])
    # the data's levels come from the data, the output from the run's top-level setting
    given = {key: value for key, value in method.items() if value is not None and key not in ("name", "data_bins")}
    return {**given, "output": cfg.get("output") or given.get("output")}


def resolve(cfg: DictConfig | dict, bins: int) -> dict[str, Any]:
    """The complete settings of the process that request ``cfg`` asks for, on data with ``bins`` levels."""
    return resolve_settings(cfg["method"]["name"], **overrides(cfg), data_bins=bins)


def record_of(cfg: DictConfig | dict, bins: int) -> dict[str, Any]:
    """``cfg``'s process settings: its record's, or (for a request) resolved with today's presets."""
    if is_record(cfg):
        method = cfg["method"]
        return OmegaConf.to_container(method, resolve=True) if isinstance(method, DictConfig) else dict(method)
    return resolve(cfg, bins)


def build_process(cfg: DictConfig | dict, bins: int) -> Process:
    """The process of a record or a request (see :func:`record_of`)."""
    return process_from_settings(record_of(cfg, bins))


def as_record(cfg: DictConfig, record: dict[str, Any]) -> DictConfig:
    """A copy of ``cfg`` with ``method`` the complete ``record``, ``model`` every constructor keyword of
    the backbone (:func:`bsi.models.model_settings`), ``requested`` what the request set, and ``version``
    this bsi's."""
    from ..models import model_settings

    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    out.model = model_settings(out.model)
    requested = out.requested if is_record(cfg) else requested_keywords(cfg)
    out.method, out.requested, out.version = record, requested, __version__
    return out


def requested_keywords(cfg: DictConfig | dict) -> dict[str, Any]:
    """The method keywords a request set itself (not the run's output or the data's levels)."""
    return {key: value for key, value in overrides(cfg).items() if key != "output"}


def preset_note(record: dict[str, Any], requested: dict[str, Any] | None) -> str | None:
    """One line if today's preset, with the keywords the run asked for, would build another process than ``record``."""
    differences = preset_differences(record, {**(requested or {}), "output": record.get("output"),
                                              "data_bins": record.get("data_bins")})
    if not differences:
        return None
    return (f"the presets of this bsi ({__version__}) would set {', '.join(differences[:6])}"
            f"{' and more' if len(differences) > 6 else ''}; the run keeps its recorded settings")


def method_changes(record: dict[str, Any], requested: dict[str, Any] | None, request: DictConfig | dict) -> list[str]:
    """``method.key=recorded (now asked)`` for each method setting a resume's ``request`` sets otherwise than the
    run's ``record`` (a field) or its ``requested`` keywords (a preset keyword such as ``sigma_1``); a null
    asks for nothing."""
    changes = [f"method.name={record['name']} (now {request['method']['name']})"] \
        if request["method"]["name"] != record["name"] else []
    for key, value in sorted(requested_keywords(request).items()):
        before = record[key] if key in record else (requested or {}).get(key)
        if before != value:
            changes.append(f"method.{key}={before} (now {value})")
    return changes


__all__ = ["LEGACY_HINT", "as_record", "build_process", "is_record", "method_changes", "overrides", "preset_note", "requested_keywords",
           "record_of", "resolve"]
