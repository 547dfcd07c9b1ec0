"""The command lines of ``bsi.train`` and ``bsi.evaluate`` (``python -m ...`` and the ``bsi-*`` console scripts).

Hydra reports a bad override (a typo in a key, an unknown config group option, a syntax error)
itself, but over several lines, with a traceback and status 1.  Scripts rely on status 2 meaning
"the command line cannot make a run and nothing ran", so :func:`run` composes the configuration
first, as hydra will, and turns any such failure into one line on stderr and :data:`EXIT_USAGE`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
EXIT_USAGE = 2  # the same status as bsi.train's EXIT_CONFIG: nothing was run
# Flags after which the command line is hydra's to interpret (help, config printing, completion).
HYDRA_FLAGS_CHECKED = ("-m", "--multirun")


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
    from omegaconf.errors import OmegaConfBaseException

    if any(arg.startswith("-") and arg not in HYDRA_FLAGS_CHECKED for arg in args):
        return None
    try:
        variants = sweep_variants([arg for arg in args if not arg.startswith("-")])
        with initialize_config_dir(config_dir=str(configs), version_base="1.3", job_name=config_name):
            for variant in variants:
                compose(config_name, overrides=variant)
    except (HydraException, OmegaConfBaseException) as err:
        return one_line(err)
    return None


def fail(message: str, status: int = EXIT_USAGE) -> NoReturn:
    """End the program with ``error: message`` on stderr (one line) and ``status``."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


def run(hydra_main: Callable[[], Any], config_name: str, args: list[str] | None = None) -> None:
    """Check ``args`` (default ``sys.argv[1:]``), then call the ``@hydra.main`` function on them.

    ``sys.argv[0]`` is kept: hydra's shell completion names the program after it (``bsi-train``).
    """
    args = list(sys.argv[1:] if args is None else args)
    reason = check_command_line(args, config_name)
    if reason is not None:
        fail(reason)
    saved = sys.argv
    sys.argv = [saved[0], *args]
    try:
        hydra_main()
    finally:
        sys.argv = saved
