"""Run one step over tasks 0..n-1 in worker processes and hand back the results in order.

The step says what is done to one task (a picklable top-level function, e.g. scan one
file); this module says how tasks run (here: local worker processes). The two stay apart so
another executor (datatrove, Slurm, Ray) can run the same step. Results arrive in task order
whatever the number of workers, so anything computed from them is identical for any count.
"""

from __future__ import annotations

import os
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

from longctx.data._preload import PRELOAD_ENV

Step = Callable[[Any], Any]


def _preload_modules(*steps: Step) -> list[str]:
    """What the fork server imports before it forks: the tokenizer preload, the steps'
    modules, and ``__main__`` when it is a script (each worker would import it otherwise).
    ``python -m longctx``'s main is left out: workers skip a ``-m`` main anyway, and it is the
    whole CLI (about a CPU-second of imports they never use)."""
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", "") or ""
    script = getattr(main, "__file__", None) is not None and not name.endswith("__main__")
    return ["__main__"] * script + ["longctx.data._preload",
                                    *sorted({s.__module__ for s in steps})]


def worker_context(step: Step, tokenizer_json: Path | None) -> Any:
    """'forkserver' where available (workers forked from a server that imported the step's
    module and parsed the tokenizer once), else 'spawn'. Never plain fork: the Rust
    tokenizer's thread pool does not survive it."""
    import multiprocessing as mp
    import multiprocessing.forkserver  # noqa: F401

    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    running = getattr(getattr(mp.forkserver, "_forkserver", None), "_forkserver_pid", None)
    if tokenizer_json is not None and not running:
        os.environ[PRELOAD_ENV] = str(tokenizer_json)
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(_preload_modules(step))  # import once, fork many
    return ctx


def prestart(steps: Sequence[Step], tokenizer_json: Path) -> bool:
    """Start the fork server right away, so it imports the steps' modules and parses the
    tokenizer while the main process does the same (saves its start-up from the wall time).
    A caller that runs several pools with ``keep_server=True`` shares this one server and
    stops it itself. True if started."""
    import multiprocessing as mp
    from multiprocessing import forkserver

    if "forkserver" not in mp.get_all_start_methods() or not tokenizer_json.is_file():
        return False
    os.environ[PRELOAD_ENV] = str(tokenizer_json)
    mp.get_context("forkserver").set_forkserver_preload(_preload_modules(*steps))
    forkserver.ensure_running()
    return True


def stop_forkserver() -> None:
    """Stop (and wait for) the fork server: no process outlives the run, and the CPU time of
    the workers it reaped is accounted to this process's children, where it belongs."""
    import multiprocessing.forkserver as fs

    server = getattr(fs, "_forkserver", None)
    stop = getattr(server, "_stop", None)
    if stop is not None and getattr(server, "_forkserver_pid", None) is not None:
        stop()


def ordered_results(
    step: Step,
    n_tasks: int,
    make_task: Callable[[int], Any],
    workers: int = 1,
    *,
    done: Callable[[Any], Any] | None = None,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
    tokenizer_json: Path | None = None,
    keep_server: bool = False,
) -> Iterator[Any]:
    """Yield ``step(make_task(k))`` for k = 0..n-1, in order.

    ``make_task(k)`` is called when task k is submitted, after the results before it that
    were already consumed (it may use them to skip work). ``done(task)``, when given, returns
    a finished task's result (or None) in this process instead of running the step again. At
    most ``workers + 1`` tasks are in flight, so memory does not grow with the task count and
    a consumer that stops early (closes the generator) wastes little: the workers are then
    terminated at once. ``initializer(*initargs)`` runs once in each worker process (not here
    when ``workers`` is 1: the step then runs in this process as it is); ``tokenizer_json`` is
    parsed once by the fork server before it forks. The fork server is stopped at the end
    unless ``keep_server`` (the caller runs more pools on it and stops it itself: each start
    costs about a CPU-second of imports).
    """

    def finished(task: Any) -> Any:
        return done(task) if done is not None else None

    if workers <= 1 or n_tasks <= 1:
        for k in range(n_tasks):
            task = make_task(k)
            result = finished(task)
            yield result if result is not None else step(task)
        return
    window = workers + 1  # small: a task made later sees fresher results, less is wasted at a stop
    pending: deque[Any] = deque()
    nxt = 0
    pool = ProcessPoolExecutor(
        workers, mp_context=worker_context(step, tokenizer_json),
        initializer=initializer, initargs=initargs,
    )
    try:
        while True:
            while nxt < n_tasks and len(pending) < window:
                task = make_task(nxt)
                result = finished(task)
                pending.append(result if result is not None else pool.submit(step, task))
                nxt += 1
            if not pending:
                return
            item = pending.popleft()
            yield item.result() if isinstance(item, Future) else item
    finally:
        _terminate(pool)
        if not keep_server:
            stop_forkserver()


def _terminate(pool: ProcessPoolExecutor) -> None:
    """Cancel queued tasks and kill running ones (a stop needs none of their results; steps
    write their outputs atomically, so a killed one leaves nothing to be taken as finished)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())  # gone after shutdown
    for proc in procs:
        proc.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


def run_ordered(
    step: Step,
    n_tasks: int,
    make_task: Callable[[int], Any],
    workers: int,
    on_result: Callable[[Any], bool],
    **options: Any,
) -> None:
    """Feed :func:`ordered_results` to ``on_result`` until it returns True (a stop: later
    results are not needed) or the tasks run out."""
    with closing(ordered_results(step, n_tasks, make_task, workers, **options)) as results:
        for result in results:
            if on_result(result):
                return
