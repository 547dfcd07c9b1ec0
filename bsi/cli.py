"""The command lines of ``bsi.train`` and ``bsi.evaluate``: ``python -m ...`` and the ``bsi-*`` console scripts.

Hydra reports a bad override (a typo in a key, an unknown config group option, a syntax error)
itself, but over several lines, with a traceback and status 1.  Scripts rely on status 2 meaning
"the command line cannot make a run and nothing ran", so :func:`run` composes the configuration
first, as hydra will, and turns any such failure into one line on stderr and :data:`EXIT_USAGE`.

The check composes the configuration and validates it whole against its schema
(:func:`bsi.config.schema.validate`: unknown keys, types, ranges), so that ``+train.bogus=1`` or a
misspelt key in a config file is one line and status 2 too.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from .config import CONFIGS
from .exits import EXIT_USAGE

# Flags after which the command line is still checked here; any other flag (help, config printing,
# completion) leaves it to hydra.
CHECKED_FLAGS = ("-m", "--multirun")
COMPLETION_FLAGS = ("-sc", "--shell-completion")
EVALUATE_TASKS = ("likelihood", "sample", "fid")
EVALUATE_USAGE = "usage: python -m bsi.evaluate likelihood|sample|fid checkpoint=PATH [key=value ...]"


def one_line(err: BaseException) -> str:
    """An exception's message on one line (hydra's are several, with a config search path at the end)."""
    lines = []
    for line in str(err).splitlines():
        if line.strip().startswith("Config search path"):
            break
        lines.append(line.strip())
    return " ".join(part for part in lines if part) or type(err).__name__


def sweep_variants(args: list[str]) -> list[list[str]]:
    """The override lists that cover every value of every sweep in ``args`` (``a=1,2 b=x,y``: 3 lists).

    Raises hydra's ``OverrideParseException`` on a syntax error.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = OverridesParser.create().parse_overrides(args)

    def first(o: Any) -> str:
        return f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}" if o.is_sweep_override() else o.input_line

    base = [first(o) for o in overrides]
    variants = [base]
    for i, o in enumerate(overrides):
        if o.is_sweep_override():
            variants += [base[:i] + [f"{o.get_key_element()}={v}"] + base[i + 1:]
                         for v in list(o.sweep_string_iterator())[1:]]
    return variants


def check_command_line(args: list[str], config_name: str, configs: Path = CONFIGS) -> str | None:
    """Compose ``configs/<config_name>.yaml`` with ``args`` as hydra will; why it cannot be, in one line, or ``None``.

    With ``-m`` every value of every sweep is checked.  Other flags (``--help``, ``--cfg``,
    ``--shell-completion``, ``-cp`` ...) leave the whole command line to hydra.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    if any(arg.startswith("-") and arg not in CHECKED_FLAGS for arg in args):
        return None
    try:
        variants = sweep_variants([arg for arg in args if not arg.startswith("-")])
        with initialize_config_dir(config_dir=str(configs), version_base="1.3", job_name=config_name):
            configs = [compose(config_name, overrides=variant) for variant in variants]
    except (HydraException, OmegaConfBaseException) as err:
        cause = err.__cause__
        if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and getattr(cause, "full_key", None):
            # hydra would advise +KEY=VALUE, which the schema refuses too
            return f"unknown key {cause.full_key}: check its spelling (--cfg job prints every key)"
        return one_line(err)
    from .config.validate import validate

    for cfg in configs:
        if problems := validate(cfg, config_name):
            return "; ".join(problems)
    return None


def live_run_refusal(args: list[str]) -> str | None:
    """Why ``python -m bsi.train ARGS`` would meet a live run in its run directory, or ``None``.

    Asked before hydra starts: hydra writes ``RUN/.hydra/`` and appends to ``RUN/train.log`` before
    the training takes the run's lock, which would mix a refused run's lines into the live run's log.
    """
    if any(arg.startswith("-") for arg in args):  # sweeps and hydra's own flags: each job checks its lock
        return None
    from hydra import compose, initialize_config_dir

    from .runlock import RunLock

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3", job_name="train"):
        cfg = compose("train", overrides=args, return_hydra_config=True)
    return RunLock(cfg.hydra.run.dir, force=bool(cfg.force_lock)).refusal()


def fail(message: str, status: int = EXIT_USAGE) -> NoReturn:
    """End the program with ``error: message`` on stderr (one line) and ``status``."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


def with_argv(args: list[str], function: Callable[[], Any]) -> None:
    """Call ``function`` (a ``@hydra.main``) with ``sys.argv[1:]`` set to ``args``.

    ``sys.argv[0]`` is kept: hydra's shell completion names the program after it (``bsi-train``).
    """
    saved = sys.argv
    sys.argv = [saved[0], *args]
    try:
        function()
    finally:
        sys.argv = saved


def complete(config_name: str, args: list[str], first_words: tuple[str, ...] = ()) -> None:
    """Answer hydra's shell completion (``-sc install=bash``, ``-sc query=bash``) from the configs alone.

    ``first_words`` (``bsi-evaluate``'s tasks) come before any override: while the first word is
    typed they are the answer; after it, hydra answers for the line without it.
    """
    import hydra

    line = os.environ.get("COMP_LINE")
    if first_words and line is not None:
        words, typing = line.split(), not line.endswith(" ")
        if len(words) == 1 or (len(words) == 2 and typing and "=" not in words[1] and not words[1].startswith("-")):
            partial = words[1] if len(words) == 2 else ""
            print(" ".join(word for word in first_words if word.startswith(partial)))
            return
        if words[1] in first_words:
            os.environ["COMP_LINE"] = " ".join([words[0], *words[2:]]) + ("" if typing else " ")

    def no_task(cfg: Any) -> None:
        raise AssertionError("hydra runs no task for shell completion")

    with_argv(args, hydra.main(config_path=str(CONFIGS), config_name=config_name, version_base="1.3")(no_task))


def run(load_main: Callable[[], Callable[[], Any]], config_name: str, args: list[str],
        first_words: tuple[str, ...] = ()) -> None:
    """Completion, or the check of ``args``, then the ``@hydra.main`` function that ``load_main`` imports."""
    if any(arg in COMPLETION_FLAGS for arg in args):
        complete(config_name, args, first_words)
        return
    reason = check_command_line(args, config_name)
    if reason is None and config_name == "train":
        reason = live_run_refusal(args)
    if reason is not None:
        fail(reason)
    with_argv(args, load_main())


def arguments(args: list[str] | None) -> list[str]:
    return list(sys.argv[1:] if args is None else args)


def train(args: list[str] | None = None) -> None:
    """``python -m bsi.train`` and ``bsi-train``."""
    # The importable bsi.train, not a __main__ copy: launchers such as submitit pickle the task
    # function, and only a function of an importable module pickles by reference.
    run(lambda: importlib.import_module("bsi.train").main, "train", arguments(args))


def evaluate(args: list[str] | None = None) -> None:
    """``python -m bsi.evaluate`` and ``bsi-evaluate``: the first argument names the task, the rest are hydra's."""
    args = arguments(args)
    if not any(arg in COMPLETION_FLAGS for arg in args):
        if args and args[0] in EVALUATE_TASKS:
            # Last, not first: hydra's parser wants flags such as -m before the first override.
            args = [*args[1:], f"task={args[0]}"]
        elif not args or not (args[0].startswith("-") or "=" in args[0]):
            # Not a task and not an override: a typo like `likelihod` gets this line, not hydra's traceback.
            what = f"unknown task '{args[0]}'" if args else "no task given"
            fail(f"{what}: choose one of {', '.join(EVALUATE_TASKS)} ({EVALUATE_USAGE})")
    run(lambda: importlib.import_module("bsi.evaluate").hydra_main, "evaluate", args, EVALUATE_TASKS)
