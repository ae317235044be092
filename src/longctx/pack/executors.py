"""Run a list of build tasks on a datatrove executor (local processes, Slurm) or on Ray.

The steps stay apart from the executors, as in datatrove: a step is one of the build's
per-task functions (count a range's lines, index a file or range, tokenize a round's rows of
one), unchanged; :func:`run_tasks` runs a list of its tasks to completion and only checks
that each left its marker. Every result goes through the marker and spill files in the
build's work folder (``OUT/.work``), so the processes may run on other machines: everything
a task needs is in the task object and that folder, which must be on a filesystem every node
shares (as must the corpus and the executor's logs). A task already finished (its marker
there) is not run again, so a rerun after a failure only runs what is missing.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longctx.errors import LongctxError

EXECUTORS = ("pool", "local", "slurm", "ray")
SCALE_HINT = "pip install 'longctx[scale]'"
SLURM_POLL_S = 30.0


class ExecutorError(LongctxError):
    pass


@dataclass(frozen=True)
class ExecutorSettings:
    """Where and how the tasks run (the build's ``executor*``, ``slurm_*``, ``ray_*`` keys)."""

    kind: str  # local | slurm | ray
    logs: str  # datatrove's logging folder (one subfolder per task list)
    tasks: int = 0  # datatrove tasks (ranks) a list is spread over; 0: one per task
    workers: int = 1  # ranks at once (local); 0 on slurm/ray: no limit
    slurm_partition: str | None = None
    slurm_time: str = "24:00:00"
    slurm_cpus_per_task: int = 1
    slurm_mem_per_cpu_gb: int = 2
    slurm_qos: str = ""
    slurm_env: str | None = None  # shell command activating the Python environment in a job
    ray_address: str | None = None


class RunTasks:
    """datatrove's pipeline step: run rank ``r``'s share (every ``world_size``-th task from
    ``r``) of a task list, skipping finished ones. A failure is raised (datatrove logs it
    with its traceback); the caller finds it by the missing marker."""

    def __init__(self, step: Callable[[Any], Any], tasks: Sequence[Any],
                 done: Callable[[Any], Any]) -> None:
        self.step, self.tasks, self.done = step, list(tasks), done

    def __call__(self, data: Any = None, rank: int = 0, world_size: int = 1) -> None:
        for task in self.tasks[rank::world_size]:
            if self.done(task) is None:
                self.step(task)

    def __repr__(self) -> str:  # what datatrove logs and writes to executor.json
        return f"longctx {self.step.__name__} ({len(self.tasks)} tasks)"


def make_executor(settings: ExecutorSettings, pipeline: list[Any], logs: str,
                  n_tasks: int) -> Any:
    """The datatrove executor for ``n_tasks`` tasks (not started)."""
    try:
        from datatrove.executor import (
            LocalPipelineExecutor,
            RayPipelineExecutor,
            SlurmPipelineExecutor,
        )
    except ImportError as e:
        raise ExecutorError(f"--executor {settings.kind} needs datatrove: {SCALE_HINT}") from e
    ranks = min(settings.tasks or n_tasks, n_tasks)
    common = dict(pipeline=pipeline, tasks=ranks, logging_dir=logs, skip_completed=False)
    if settings.kind == "local":
        return LocalPipelineExecutor(**common, workers=max(1, min(settings.workers, ranks)))
    if settings.kind == "slurm":
        if not settings.slurm_partition:
            raise ExecutorError("--executor slurm needs --slurm-partition")
        return SlurmPipelineExecutor(
            **common, workers=settings.workers or -1, time=settings.slurm_time,
            partition=settings.slurm_partition, cpus_per_task=settings.slurm_cpus_per_task,
            mem_per_cpu_gb=settings.slurm_mem_per_cpu_gb, qos=settings.slurm_qos,
            env_command=settings.slurm_env, job_name="longctx-build",
        )
    if settings.kind == "ray":
        return RayPipelineExecutor(**common, workers=settings.workers or -1)
    raise ExecutorError(f"executor: expected one of {', '.join(EXECUTORS)}, got {settings.kind!r}")


def run_tasks(settings: ExecutorSettings, name: str, step: Callable[[Any], Any],
              tasks: Sequence[Any], done: Callable[[Any], Any],
              label: Callable[[Any], str]) -> None:
    """Run every task of ``tasks`` not done yet on the executor; raise one error line naming
    the first task left without its marker (and the logs) unless all finished."""
    todo = [t for t in tasks if done(t) is None]
    if not todo:
        return
    logs = str(Path(settings.logs) / name)
    if settings.kind == "ray":
        _ray_init(settings)
    executor = make_executor(settings, [RunTasks(step, todo, done)], logs, len(todo))
    failure = ""
    try:
        executor.run()
        if settings.kind == "slurm":
            _wait_for_slurm(executor)
    except ExecutorError:
        raise
    except Exception as e:  # a task raised: the markers below say which tasks are missing
        failure = f" ({type(e).__name__}: {e})"
    missing = [t for t in todo if done(t) is None]
    if missing:
        raise ExecutorError(
            f"{len(missing)} of {len(todo)} {name} task(s) did not finish on the "
            f"{settings.kind} executor{failure}; first: {label(missing[0])}; logs: {logs}"
        )


def _ray_init(settings: ExecutorSettings) -> None:
    try:
        import ray
    except ImportError as e:
        raise ExecutorError(f"--executor ray needs ray: {SCALE_HINT} ray") from e
    if not ray.is_initialized():
        ray.init(address=settings.ray_address, log_to_driver=False)


def _wait_for_slurm(executor: Any, poll_s: float = SLURM_POLL_S) -> None:
    """Block until the submitted job array has left the queue (finished, failed or
    cancelled); the markers then say what finished."""
    job = executor.job_id
    if job in (None, -1):
        return
    while True:
        try:
            queued = subprocess.run(["squeue", "-h", "-j", str(job), "-o", "%i"],
                                    capture_output=True, text=True, check=False).stdout
        except OSError as e:
            raise ExecutorError(f"slurm job {job} submitted but squeue cannot run: {e}") from e
        if not queued.strip():
            return
        time.sleep(poll_s)
