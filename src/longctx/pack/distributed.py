"""Pre-scan corpus files on datatrove executors (optional extra ``longctx[scale]``).

The per-file function is the same ``scan_file`` the local build runs. For a corpus beyond
one machine, datatrove runs it over the first ``files`` files of the build's seeded reading
order on many nodes (Slurm) or processes (local); every scan lands in ``OUT/.work`` with its
marker. ``longctx data build`` with the same arguments then reuses those scans (a file
scanned without skipping anything is valid whatever the build later freezes), reads any
further files it still needs itself, selects and packs: the output is byte-identical to a
build that never used datatrove.

    from longctx.pack.build import BuildConfig, run_build
    from longctx.pack.distributed import prescan
    cfg = BuildConfig(inputs=["slimpajama/train"], out="data/ps5b", tokens="5B", seq_len=81920)
    prescan(cfg, files=2000, executor="slurm", tasks=500, partition="cpu")  # many nodes
    run_build(cfg)  # one node: selection + packing
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from longctx.errors import LongctxError
from longctx.pack.build import BuildConfig, open_work_dir, plan_scan
from longctx.pack.scan import ScanTask, scan_or_load


class ScaleError(LongctxError):
    pass


def scan_ranks(tasks: list[ScanTask], rank: int, world_size: int) -> int:
    """Scan this rank's share of the tasks (round robin); returns files scanned."""
    n = 0
    for task in tasks[rank::world_size]:
        scan_or_load(task)
        n += 1
    return n


def _step(tasks: list[ScanTask]) -> Any:
    from datatrove.pipeline.base import PipelineStep

    class ScanFiles(PipelineStep):
        """longctx scan of corpus files (tokenize what selection can use, spill, mark)."""

        name = "longctx scan"
        type = "Tokenizer"

        def __init__(self, tasks: list[ScanTask]) -> None:
            super().__init__()
            self.tasks = tasks

        def run(self, data: Any = None, rank: int = 0, world_size: int = 1) -> None:
            with self.track_time(unit="file"):
                n = scan_ranks(self.tasks, rank, world_size)
            self.stat_update("files", value=n)

    return ScanFiles(tasks)


def prescan(
    cfg: BuildConfig,
    *,
    files: int | None = None,
    executor: str = "local",
    tasks: int = 1,
    workers: int = -1,
    logging_dir: str | None = None,
    **executor_kwargs: Any,
) -> dict[str, Any]:
    """Scan the first ``files`` files (default: all) of the build's reading order with a
    datatrove executor (``local`` or ``slurm``; extra keyword arguments go to it)."""
    try:
        from datatrove.executor import LocalPipelineExecutor, SlurmPipelineExecutor
    except ImportError as e:
        raise ScaleError(
            "datatrove is not installed: pip install 'longctx[scale]' (or pip install datatrove)"
        ) from e
    plan = plan_scan(cfg)
    plan.out.mkdir(parents=True, exist_ok=True)
    open_work_dir(plan)
    chosen = plan.tasks[: files or len(plan.tasks)]
    logs = logging_dir or str(Path(plan.work) / "datatrove-logs")
    pipeline = [_step(chosen)]
    if executor == "local":
        ex = LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=workers,
                                   logging_dir=logs, **executor_kwargs)
    elif executor == "slurm":
        ex = SlurmPipelineExecutor(pipeline=pipeline, tasks=tasks, logging_dir=logs,
                                   **executor_kwargs)
    else:
        raise ScaleError(f"executor {executor!r}: expected 'local' or 'slurm'")
    ex.run()
    return {"files": len(chosen), "tasks": tasks, "work_dir": str(plan.work), "logs": logs}
