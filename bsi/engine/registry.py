"""Every axis of a process by name or by a user's own piece, and what each axis must provide.

An axis (schedule, proposal, prediction, weighting, the preset itself) takes a registered name
(``"cosine"``), a dotted path to a user's class or function (``"mylab.schedules.Steeper"``) or the
object itself.  :func:`resolve` is the one place that turns such a value into the object;
:func:`dotted_path` turns a class or function back into the string a run's record keeps, so that
the record reloads without the object at hand.  The protocols below say what a user's piece must
provide; the engine's own pieces satisfy them.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class ScheduleLike(Protocol):
    """A schedule over the precision range, built as ``Factory(precision: PrecisionRange)``.

    ``t`` is the schedule's time in [0, 1] (0 at ``lambda_min``, 1 at ``lambda_max``); all float64 ``(B,)``.
    """

    name: str

    def lam(self, t: Tensor) -> Tensor: ...  # precision at time t
    def t(self, lam: Tensor) -> Tensor: ...  # inverse of lam
    def dlam_dt(self, t: Tensor) -> Tensor: ...  # derivative of lam, > 0


@runtime_checkable
class ProposalLike(Protocol):
    """An importance proposal over precision, built as ``Factory(precision, schedule, **proposal_options)``."""

    name: str
    # Optional: ``learns = False`` when update() does nothing, so training skips gathering its inputs.

    def lam(self, u: Tensor) -> tuple[Tensor, Tensor]: ...  # u in [0, 1) -> (lam, 1/p(lam)), float64 (B,)
    def update(self, lam: Tensor, integrand: Tensor) -> None: ...  # what the training loss saw (may do nothing)
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


@runtime_checkable
class PredictionLike(Protocol):
    """What a backbone predicts, built as ``Factory()``: the preconditioning of ``x_hat = c_skip mu + c_out F(c_in mu, t)``.

    ``coefficients(a, s2, sigma_data, scale_input)`` gets the belief's ``a(lam)`` and ``s2(lam)`` (float64
    ``(B,)``) and returns ``c_in``, ``c_skip``, ``c_out`` and ``base_scale`` (the spread of ``x`` per unit of
    ``F`` in data units, which scales a discretised output), float64 ``(B,)`` each.
    """

    name: str

    def coefficients(self, a: Tensor, s2: Tensor, sigma_data: float, scale_input: bool) -> dict[str, Tensor]: ...


@runtime_checkable
class WeightingLike(Protocol):
    """A training loss, built as ``Factory(**weighting_options)``: the density of ``lam`` and each example's weight.

    ``draw(u, parts)`` maps stratified uniforms ``u`` ``(B,)`` (float64, CPU) to precisions inside the
    range and weights on the integrand ``h = 1/2 ||x - x_hat||^2`` (nats), float64 ``(B,)`` each;
    ``parts`` (:class:`bsi.engine.weighting.LossParts`) holds the belief family, the range, the
    process's proposal and the data's standard deviation.
    """

    name: str

    def draw(self, u: Tensor, parts: Any) -> tuple[Tensor, Tensor]: ...


def import_dotted(path: str, axis: str, choices: Mapping[str, Any]) -> Any:
    """The object at ``package.module.Name`` (nested attributes allowed); a one-line ``ValueError`` if it fails."""
    module_name, _, attribute = path.rpartition(".")
    hint = f"choose one of {', '.join(choices)} or give a dotted path to your own (package.module.Name)"
    while module_name:
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            # a module missing inside the user's own module is its error, not a sign to look one level up
            if err.name is None or not (module_name == err.name or module_name.startswith(err.name + ".")):
                raise ValueError(f"could not import {axis} '{path}': {err}") from err
            module_name, _, head = module_name.rpartition(".")
            attribute = f"{head}.{attribute}"
            continue
        except Exception as err:  # noqa: BLE001 - a user's module failing to import is reported, not re-raised bare
            raise ValueError(f"could not import {axis} '{path}': {type(err).__name__}: {err}") from err
        for part in attribute.split("."):
            if not hasattr(obj, part):
                raise ValueError(f"unknown {axis} '{path}': {obj.__name__ if hasattr(obj, '__name__') else obj} "
                                 f"has no attribute '{part}'; {hint}")
            obj = getattr(obj, part)
        return obj
    raise ValueError(f"unknown {axis} '{path}': no module of it can be imported; {hint}")


def resolve(axis: str, value: Any, choices: Mapping[str, Any]) -> Any:
    """``choices[value]`` for a registered name, the imported object for a dotted path, else ``value`` itself.

    A string that is neither a name in ``choices`` nor a dotted path raises a one-line ``ValueError``
    naming the options.
    """
    if not isinstance(value, str):
        return value
    if value in choices:
        return choices[value]
    if "." not in value:
        raise ValueError(f"unknown {axis} '{value}': choose one of {', '.join(choices)} "
                         f"or give a dotted path to your own (package.module.Name)")
    return import_dotted(value, axis, choices)


def is_factory(value: Any) -> bool:
    """Whether ``value`` builds an axis's object (a class or a function) rather than being one."""
    return isinstance(value, type) or (callable(value) and hasattr(value, "__qualname__") and
                                       not hasattr(value, "__self__"))


def build(what: str, given: Any, found: Any, protocol: type, needs: str, *args: Any,
          options: dict | None = None) -> Any:
    """``found`` (resolved from ``given``) as an object of ``protocol``: a factory is called as
    ``found(*args, **options)``, an object is used as it is; a one-line ``ValueError`` otherwise."""
    if is_factory(found):
        try:
            found = found(*args, **(options or {}))
        except TypeError as err:
            raise ValueError(f"{what}_options {options} do not fit {what} {given!r}: {err}") from err
    elif options:
        raise ValueError(f"{what}_options apply to a {what} that is built, not to the object {found!r}")
    if not isinstance(found, protocol):
        raise ValueError(f"{what} {given!r} must provide {needs}: see bsi.engine.registry.{protocol.__name__}")
    return found


def dotted_path(value: Any) -> Any:
    """The value a record keeps: names and paths as given, a class or function as its dotted path.

    Other objects (instances), and classes or functions that their path does not import again
    (defined inside a function, a lambda), are kept as they are: they work, but a record holding one
    cannot be written to a file and reloaded.
    """
    if isinstance(value, str) or value is None or not is_factory(value):
        return value
    path = f"{getattr(value, '__module__', '')}.{value.__qualname__}"
    try:
        return path if import_dotted(path, "piece", {}) is value else value
    except ValueError:
        return value


__all__ = ["PredictionLike", "ProposalLike", "ScheduleLike", "WeightingLike", "build", "dotted_path", "import_dotted",
           "is_factory", "resolve"]
