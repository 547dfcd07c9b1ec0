"""The one check of a configuration against its schema (:mod:`.schema`): unknown keys, strict types and the
ranges its fields declare, each problem one ``KEY=VALUE must be ...`` phrase."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from .schema import (
    EvaluateConfig,
    TrainConfig,
    data_schema,
    method_schema,
    model_schema,
)


def _base(annotation: Any) -> tuple[Any, bool]:
    """``(type, may be null)`` of a field's annotation."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return (args[0] if len(args) == 1 else Any), True
    return annotation, False


def requirement(annotation: Any, rule: dict[str, Any]) -> str:
    """What a value of this field must be, as the end of "KEY=VALUE must be ..."."""
    if rule.get("what"):
        return rule["what"]
    kind, optional = _base(annotation)
    low, high = rule.get("low"), rule.get("high")
    if typing.get_origin(kind) is list:
        item = typing.get_args(kind)[0] if typing.get_args(kind) else Any
        text = "a list of " + requirement(item, {**rule, "what": None}).removeprefix("a ").replace(" ", "s ", 1)
    elif kind is bool:
        text = "true or false"
    elif kind is int:
        text = "a whole number" + (f" >= {low:g}" if low is not None else "")
    elif kind is float and low is not None and high is not None:
        text = f"a number in {'(' if rule.get('low_open') else '['}{low:g}, {high:g})"
    elif kind is float:
        text = "a number" + (f" {'>' if rule.get('low_open') else '>='} {low:g}" if low is not None else "")
    elif kind is str and rule.get("choices"):
        text = f"one of {', '.join(map(str, rule['choices']))}"
    elif kind is str:
        text = "a string"
    elif typing.get_origin(kind) is dict:
        text = "a mapping of keys to values"
    else:
        return "any value"
    return text + (" or null" if optional else "")


def _typed(value: Any, annotation: Any) -> bool:
    """Whether ``value`` (plain data) has the type ``annotation`` asks for; no conversions (``3`` is no bool)."""
    kind, optional = _base(annotation)
    if value is None:
        return optional
    if kind is Any:
        return True
    if typing.get_origin(kind) is list:
        item = typing.get_args(kind)[0] if typing.get_args(kind) else Any
        return isinstance(value, list) and all(_typed(v, item) for v in value)
    if typing.get_origin(kind) is dict:
        return isinstance(value, dict)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _in_range(value: Any, rule: dict[str, Any]) -> bool:
    if value is None:
        return True
    if rule.get("each") and isinstance(value, list):
        return all(_in_range(v, {**rule, "each": False}) for v in value)
    if rule.get("choices") is not None:
        return value in rule["choices"]
    low, high = rule.get("low"), rule.get("high")
    if low is not None and (value < low or (rule.get("low_open") and value == low)):
        return False
    return high is None or value < high


def check_node(schema: type, node: Any, prefix: str = "") -> list[str]:
    """Every problem of plain-data ``node`` against dataclass ``schema``: unknown keys, missing required ones,
    types (strict: no conversions) and the ranges of :func:`setting`, as ``KEY=VALUE must be ...`` phrases."""
    if not isinstance(node, dict):
        return [f"{prefix.rstrip('.')}={node!r} must be a mapping of keys to values"]
    hints = typing.get_type_hints(schema)
    known = {f.name: f for f in dataclasses.fields(schema)}
    problems = [f"unknown key {prefix}{key}: check its spelling (--cfg job prints every key)"
                for key in node if key not in known]
    for name, f in known.items():
        key, annotation, rule = f"{prefix}{name}", hints[name], dict(f.metadata)
        if name not in node:
            if f.default is MISSING and f.default_factory is dataclasses.MISSING:
                problems.append(f"{key} is required")
            continue
        value = node[name]
        if value == MISSING:
            label = rule.get("label")
            problems.append(f"no {label} given: choose one of {', '.join(map(str, rule['choices']))}" if label
                            else f"{key} is required")
        elif dataclasses.is_dataclass(annotation):
            problems += check_node(annotation, value, f"{key}.")
        elif rule.get("choices") is not None and isinstance(value, str) and not _in_range(value, rule):
            problems.append(f"unknown {rule.get('label') or key} '{value}' ({key}): choose one of "
                            f"{', '.join(map(str, rule['choices']))}")
        elif not _typed(value, annotation) or not _in_range(value, rule):
            problems.append(f"{key}={value!r} must be {requirement(annotation, rule)}")
    return problems


def validate(cfg: DictConfig | dict, config: str = "train") -> list[str]:
    """Every problem of a composed ``train`` or ``evaluate`` configuration, one phrase each.

    Checks keys (unknown ones are errors), types and ranges; for ``train`` the ``method``, ``model`` and
    ``data`` nodes against their own schemas.  An empty list: the configuration is well formed.
    """
    from ..models import MODELS

    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    plain.pop("hydra", None)
    if config == "evaluate":
        return check_node(EvaluateConfig, plain)
    groups = {key: plain.pop(key, None) for key in ("method", "model", "data")}
    problems = check_node(TrainConfig, {**plain, **{key: {} for key in groups}})
    problems += check_node(method_schema(), groups["method"] or {}, "method.")
    model = groups["model"] or {}
    kind = model.get("kind") or ("dit" if str(model.get("name", "")).startswith("DiT-") else model.get("name"))
    if kind in MODELS:
        problems += check_node(model_schema(kind), model, "model.")
    else:
        problems.append(f"unknown model '{kind}': choose one of {', '.join(MODELS)} (model.kind)")
    problems += check_node(data_schema(), groups["data"] or {}, "data.")
    return problems


__all__ = ["check_node", "requirement", "validate"]
