"""Pre-index corpus files on datatrove executors (optional extra ``longctx[scale]``).

The per-file function is the build's own pass 1, ``index_file`` (read, draws, candidates, a
tokenized ~1% sample). For a corpus beyond one machine, datatrove runs it over the first
``files`` files of the build's seeded reading order on many nodes (Slurm) or processes
(local); every index lands in ``OUT/.work`` with its marker. ``longctx data build`` with the
same arguments then reuses those indexes, indexes any further files it still needs itself,
tokenizes the candidates inside the cut-offs (pass 2, on this machine), selects and packs:
the output is byte-identical to a build that never used datatrove.

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
from longctx.pack.build import STAGE, BuildConfig, open_work_dir, plan_scan
from longctx.pack.index import IndexTask, index_file, load_index_done
from longctx.pack.shards import FORMAT_VERSION
from longctx.stage import stage_output, write_manifest


class ScaleError(LongctxError):
    pass


def index_ranks(tasks: list[IndexTask], rank: int, world_size: int) -> int:
    """Index this rank's share of the tasks (round robin); returns files indexed."""
    n = 0
    for task in tasks[rank::world_size]:
        if load_index_done(task) is None:
            index_file(task)
        n += 1
    return n


def _step(tasks: list[IndexTask]) -> Any:
    from datatrove.pipeline.base import PipelineStep

    class IndexFiles(PipelineStep):
        """longctx pass 1 over corpus files (draws, candidates, sample; spill, mark)."""

        name = "longctx index"
        type = "Tokenizer"

        def __init__(self, tasks: list[IndexTask]) -> None:
            super().__init__()
            self.tasks = tasks

        def run(self, data: Any = None, rank: int = 0, world_size: int = 1) -> None:
            with self.track_time(unit="file"):
                n = index_ranks(self.tasks, rank, world_size)
            self.stat_update("files", value=n)

    return IndexFiles(tasks)


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
    """Index the first ``files`` files (default: all) of the build's reading order with a
    datatrove executor (``local`` or ``slurm``; extra keyword arguments go to it)."""
    try:
        from datatrove.executor import LocalPipelineExecutor, SlurmPipelineExecutor
    except ImportError as e:
        raise ScaleError(
            "datatrove is not installed: pip install 'longctx[scale]' (or pip install datatrove)"
        ) from e
    with stage_output(cfg.out or "", STAGE, force=cfg.force, inputs=cfg.inputs):
        return _prescan(cfg, files, executor, tasks, workers, logging_dir, executor_kwargs,
                        LocalPipelineExecutor, SlurmPipelineExecutor)


def _prescan(cfg: BuildConfig, files: int | None, executor: str, tasks: int, workers: int,
             logging_dir: str | None, executor_kwargs: dict[str, Any], local: Any,
             slurm: Any) -> dict[str, Any]:
    # The folder is the build's: the same running manifest it writes, so the build that
    # follows takes it as its own and reuses the indexes.
    plan = plan_scan(cfg)
    plan.out.mkdir(parents=True, exist_ok=True)
    write_manifest(plan.out, {"stage": STAGE, "status": "running",
                              "format_version": FORMAT_VERSION, "config": plan.out_cfg,
                              "config_hash": plan.cfg_hash})
    open_work_dir(plan)
    chosen = plan.tasks[: files or len(plan.tasks)]
    logs = logging_dir or str(Path(plan.work) / "datatrove-logs")
    pipeline = [_step(chosen)]
    if executor == "local":
        ex = local(pipeline=pipeline, tasks=tasks, workers=workers,
                                   logging_dir=logs, **executor_kwargs)
    elif executor == "slurm":
        ex = slurm(pipeline=pipeline, tasks=tasks, logging_dir=logs,
                                   **executor_kwargs)
    else:
        raise ScaleError(f"executor {executor!r}: expected 'local' or 'slurm'")
    ex.run()
    return {"files": len(chosen), "tasks": tasks, "work_dir": str(plan.work), "logs": logs}
