"""``python -m longctx.eval needle|ruler|loss|...``: the ``longctx eval`` commands alone.

Same flags as ``longctx eval ...``; the entry point for several processes, e.g. ``torchrun
--nproc-per-node 8 -m longctx.eval needle --model M --out DIR``, which shares the grid's
cells (or the loss rows) over the ranks and writes the files one process would write.
"""

from __future__ import annotations

from longctx.cliopts import run_app
from longctx.eval.cli import app
from longctx.eval.distributed import shutdown


def main(argv: list[str] | None = None) -> None:
    try:
        run_app(app, argv)
    finally:
        shutdown()


if __name__ == "__main__":
    main()
