"""The ``longctx`` command: one sub-command per pipeline stage.

Every command is registered here, so no stage imports another stage's commands: the stage
groups (``data``, ``train``, ``eval``; :mod:`longctx.stage_cli`), then ``plan``, ``report``, ``demo``,
``ablate`` and ``version``. User-facing errors (:class:`longctx.errors.LongctxError`) and
usage errors become a one-line message and exit code 2 instead of a traceback
(:func:`longctx.cliopts.run_app`, shared with ``python -m longctx.train``). An invocation
registers only the command it names (:func:`build_app`): the whole tree's imports cost about
0.2 CPU-s more than one command's. Stage modules import heavy libraries (torch) inside their
commands, so ``longctx --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import typer

from longctx import __version__
from longctx.cliopts import run_app
from longctx.stage_cli import STAGES, add_stage_commands

COMMANDS = (*STAGES, "plan", "report", "demo", "ablate", "version")
HELP = "Long-context continual pretraining: data -> mix -> pack -> train -> eval -> report."


def version() -> None:
    """Print the longctx version."""
    typer.echo(__version__)


def _register(app: typer.Typer, name: str) -> None:
    if name in STAGES:
        add_stage_commands(app, only=name)
    elif name == "plan":
        from longctx.train.plan import plan_command

        app.command("plan")(plan_command)
    elif name == "report":
        from longctx.report.cli import report_command

        app.command("report")(report_command)
    elif name == "demo":
        from longctx.demo import demo_command

        app.command("demo")(demo_command)
    elif name == "ablate":
        from longctx.ablate.cli import ablate_command

        app.command("ablate")(ablate_command)
    elif name == "version":
        app.command("version")(version)


def build_app(only: str | None = None) -> typer.Typer:
    """The command tree, or (``only``) a tree holding just that top-level command."""
    app = typer.Typer(name="longctx", help=HELP, no_args_is_help=True, add_completion=False,
                      pretty_exceptions_enable=False)
    if only is not None:
        app.callback()(lambda: None)  # a group even with one command: `longctx NAME ...`
    for name in COMMANDS if only is None else (only,):
        _register(app, name)
    return app


def __getattr__(name: str) -> Any:
    """``longctx.cli.app``: the whole tree, built on first use (tests, --help walkers)."""
    if name == "app":
        globals()["app"] = build_app()
        return globals()["app"]
    raise AttributeError(name)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in args if not a.startswith("-")), None)
    if first == "data":
        # The data stage multiplies no matrices, but numpy's OpenBLAS starts a thread per core
        # on import (~0.07 CPU-s in each process: this one, and the build's fork server,
        # whose workers inherit the setting). A value the user set is kept.
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    run_app(build_app(first if first in COMMANDS else None), argv)
