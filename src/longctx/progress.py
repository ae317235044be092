"""The one progress bar of every stage: rich, on stderr, silent off a terminal unless forced."""

from __future__ import annotations

from typing import Any


def progress_bar(enabled: bool | None = None, *, transient: bool = False) -> Any:
    """A ``rich.progress.Progress`` drawing on stderr (stdout stays for results).

    ``enabled``: ``None`` shows it only when stderr is a terminal, ``True``/``False`` force it
    on or off. ``transient`` erases it when done. Columns: description, bar, done/total,
    elapsed, remaining. Use it as a context manager (or ``start``/``stop``).
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    disable = not console.is_terminal if enabled is None else not enabled
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=disable,
        transient=transient,
    )
