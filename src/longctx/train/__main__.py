"""``python -m longctx.train``: the train command alone (imports only the training stack).

Same flags as ``longctx train``; handy under torchrun (``torchrun --nproc-per-node 8 -m
longctx.train --config ...``) and on machines without the report/eval dependencies.
"""

from __future__ import annotations

import sys

import typer

from longctx.errors import LongctxError
from longctx.train.cli import train_command


def main(argv: list[str] | None = None) -> None:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(train_command)
    try:
        app(args=argv, standalone_mode=False)
    except LongctxError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except Exception as e:
        # usage errors (typer may vendor its own click, so match by shape, not class)
        if hasattr(e, "show") and hasattr(e, "exit_code"):
            e.show()
            sys.exit(e.exit_code)
        if type(e).__name__ == "Abort":
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
