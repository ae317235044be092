"""The ordered worker pool: task order, the in-flight window, the skip hook, stop and errors."""

from __future__ import annotations

import multiprocessing
import os
import sys
import time

import pytest

from longctx.data.workers import ordered_results, run_ordered


def _slow_square(k: int) -> tuple[int, int]:
    """Later tasks finish first, so results arrive out of order unless the pool reorders."""
    time.sleep(0.02 * (6 - k) if k < 6 else 0.0)
    return k * k, os.getpid()


def _sleep_past_three(k: int) -> int:
    if k > 3:
        time.sleep(60)  # only a terminated pool lets the test end in time
    return k


def _fail_on_two(k: int) -> int:
    if k == 2:
        raise ValueError(f"task {k} is bad")
    return k


@pytest.mark.parametrize("workers", [1, 3])
def test_results_come_in_task_order(workers):
    got = list(ordered_results(_slow_square, 8, lambda k: k, workers))
    assert [r for r, _ in got] == [k * k for k in range(8)]
    pids = {pid for _, pid in got}
    assert (pids == {os.getpid()}) if workers == 1 else (os.getpid() not in pids)


def test_a_task_is_made_only_when_the_window_has_room():
    consumed: list[int] = []
    seen_at_make: dict[int, int] = {}

    def make(k: int) -> int:
        seen_at_make[k] = len(consumed)
        return k

    for r in ordered_results(_slow_square, 10, make, workers=2):
        consumed.append(r[0])
    window = 3  # workers + 1
    assert all(seen_at_make[k] >= k - window + 1 for k in range(10))


def test_finished_tasks_are_taken_from_the_done_hook():
    def done(k: int):
        return (-k, 0) if k % 2 == 0 else None

    got = [r for r, _ in ordered_results(_slow_square, 6, lambda k: k, 2, done=done)]
    assert got == [0, 1, -2, 9, -4, 25]


@pytest.mark.parametrize("workers", [1, 2])
def test_stop_ends_the_run_and_terminates_the_workers(workers):
    seen: list[int] = []
    t0 = time.monotonic()
    run_ordered(_sleep_past_three, 20, lambda k: k, workers,
                lambda r: seen.append(r) or r == 2)
    assert seen == [0, 1, 2]
    assert time.monotonic() - t0 < 30
    assert not multiprocessing.active_children()


def test_a_worker_error_reaches_the_caller():
    with pytest.raises(ValueError, match="task 2 is bad"):
        list(ordered_results(_fail_on_two, 5, lambda k: k, 2))
    assert not multiprocessing.active_children()


def _server_pid() -> int | None:
    import multiprocessing.forkserver as fs

    return getattr(getattr(fs, "_forkserver", None), "_forkserver_pid", None)


def _parent_pid(k: int) -> int:
    return os.getppid()  # a forkserver worker's parent is the fork server


def test_keep_server_shares_one_fork_server_across_pools():
    """A build runs several pools (pass 1, then each round); with keep_server they fork from
    one server, which the caller stops; by default a pool stops it at its end."""
    from longctx.data.workers import stop_forkserver

    if "forkserver" not in multiprocessing.get_all_start_methods():
        pytest.skip("no forkserver on this platform")
    try:
        first = {p for p in ordered_results(_parent_pid, 3, lambda k: k, 2, keep_server=True)}
        server = _server_pid()
        second = {p for p in ordered_results(_parent_pid, 3, lambda k: k, 2, keep_server=True)}
        assert server is not None and first == second == {server}
        assert _server_pid() == server
        list(ordered_results(_parent_pid, 3, lambda k: k, 2))
        assert _server_pid() is None
    finally:
        stop_forkserver()


def test_fork_server_preloads_a_script_main_but_not_a_module_main(monkeypatch):
    """A ``-m`` main (``python -m longctx``: the whole CLI) is skipped by workers anyway;
    a script main would be imported by every worker, so the server imports it once."""
    import types

    from longctx.data import workers

    as_module = types.ModuleType("__main__")
    as_module.__file__ = "/x/longctx/__main__.py"
    as_module.__spec__ = types.SimpleNamespace(name="longctx.__main__")
    monkeypatch.setitem(sys.modules, "__main__", as_module)
    assert "__main__" not in workers._preload_modules(_slow_square)
    script = types.ModuleType("__main__")
    script.__file__ = "/x/run_build.py"
    script.__spec__ = None
    monkeypatch.setitem(sys.modules, "__main__", script)
    assert workers._preload_modules(_slow_square)[0] == "__main__"
