"""Run file scans in worker processes, in order, stoppable after any result."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from longctx.pack.scan import ScanTask, init_worker, load_done, scan_or_load


def worker_context(task: ScanTask) -> Any:
    """'forkserver' (workers forked from a server that imported the scan module and parsed the
    tokenizer once) where available, else 'spawn'. Never plain fork: the Rust tokenizer's
    thread pool does not survive it."""
    import multiprocessing as mp
    import multiprocessing.forkserver  # noqa: F401

    from longctx.pack._preload import PRELOAD_ENV

    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    if not getattr(getattr(mp.forkserver, "_forkserver", None), "_forkserver_pid", None):
        os.environ[PRELOAD_ENV] = str(Path(task.tokenizer.folder) / "tokenizer.json")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["__main__", "longctx.pack._preload"])  # import once, fork many
    return ctx


def prestart(tokenizer_json: Path) -> bool:
    """Start the fork server right away, so it imports and parses the tokenizer while the
    main process does the same (saves its start-up from the wall time). True if started."""
    import multiprocessing as mp
    from multiprocessing import forkserver

    if "forkserver" not in mp.get_all_start_methods() or not tokenizer_json.is_file():
        return False
    from longctx.pack._preload import PRELOAD_ENV

    os.environ[PRELOAD_ENV] = str(tokenizer_json)
    mp.get_context("forkserver").set_forkserver_preload(["__main__", "longctx.pack._preload"])
    forkserver.ensure_running()
    return True


def run_scans(
    n_tasks: int,
    make_task: Callable[[int], ScanTask],
    workers: int,
    on_result: Callable[[dict[str, Any]], bool],
) -> None:
    """Scan tasks 0..n-1 in order; ``on_result`` returning True stops (later results unused).

    ``make_task(k)`` is called when task k is submitted (it may use the results consumed so
    far to skip work; the build makes sure the output never depends on that). Workers are
    fresh processes (see ``worker_context``); at most
    ``workers + 1`` files are in flight, and on stop the pool is terminated at once, so
    little work past the stop point is wasted. Spills are written atomically, so a worker
    killed mid-file leaves nothing a rerun could take for finished.
    """
    if workers <= 1 or n_tasks <= 1:
        for k in range(n_tasks):
            if on_result(scan_or_load(make_task(k))):
                return
        return
    window = workers + 1  # small: a task's skip set is fresher, less is wasted at the stop
    pending: deque[Any] = deque()
    nxt = 0
    pool = worker_context(make_task(0)).Pool(workers, initializer=init_worker)
    try:

        def fill() -> None:
            nonlocal nxt
            while nxt < n_tasks and len(pending) < window:
                t = make_task(nxt)
                done = load_done(t)
                pending.append(done if done is not None else pool.apply_async(scan_or_load, (t,)))
                nxt += 1

        fill()
        while pending:
            item = pending.popleft()
            summary = item if isinstance(item, dict) else item.get()
            if on_result(summary):
                return
            fill()
    finally:
        pool.terminate()
        pool.join()
        stop_forkserver()


def stop_forkserver() -> None:
    """Stop (and wait for) the fork server: no process outlives the build, and the CPU time
    of the workers it reaped is accounted to this process's children, where it belongs."""
    import multiprocessing.forkserver as fs

    server = getattr(fs, "_forkserver", None)
    stop = getattr(server, "_stop", None)
    if stop is not None and getattr(server, "_forkserver_pid", None) is not None:
        stop()
