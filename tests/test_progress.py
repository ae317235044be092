"""The one progress bar: on stderr, off when stderr is not a terminal unless forced."""

from __future__ import annotations

from longctx.progress import progress_bar


def test_progress_bar_follows_the_terminal_unless_forced():
    auto = progress_bar()  # pytest captures stderr: not a terminal
    assert auto.disable and auto.console.stderr
    assert not progress_bar(True).disable
    assert progress_bar(False).disable
    assert progress_bar(True, transient=True).live.transient
    assert not progress_bar(True).live.transient


def test_a_disabled_bar_is_silent(capsys):
    with progress_bar(False) as bar:
        task = bar.add_task("work", total=3)
        bar.advance(task)
    captured = capsys.readouterr()
    assert captured.out == captured.err == ""
