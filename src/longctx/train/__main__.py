"""``python -m longctx.train``: the train command alone (imports only the training stack).

Same flags as ``longctx train``; handy under torchrun (``torchrun --nproc-per-node 8 -m
longctx.train --config ...``) and on machines without the report/eval dependencies.
"""

from __future__ import annotations

import typer

from longctx.cliopts import run_app
from longctx.train.cli import train_command


def main(argv: list[str] | None = None) -> None:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(train_command)
    run_app(app, argv)


if __name__ == "__main__":
    main()
