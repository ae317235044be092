"""The ``longctx`` command line: every command's ``--help`` is complete, and a user error is
one ``error: ...`` line with exit code 2 (no traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from longctx.cli import app, main


def _is_group(cmd: Any) -> bool:
    # duck-typed: typer >= 0.26 vendors its own click, whose classes are not click's
    return isinstance(getattr(cmd, "commands", None), dict)


def _commands() -> list[tuple[list[str], Any]]:
    """Every command path in the CLI tree, groups included: (["data", "build"], cmd)."""
    root = typer.main.get_command(app)
    found: list[tuple[list[str], Any]] = []

    def walk(path: list[str], cmd: Any) -> None:
        found.append((path, cmd))
        if _is_group(cmd):
            for name, sub in sorted(cmd.commands.items()):
                walk(path + [name], sub)

    walk([], root)
    return found


COMMANDS = _commands()


def _exit_code(fn) -> int:
    """0 when the command returns, else its SystemExit code."""
    try:
        fn()
    except SystemExit as e:
        return 0 if e.code is None else int(e.code)
    return 0


def test_the_tree_has_every_stage() -> None:
    paths = {" ".join(p) for p, _ in COMMANDS}
    for expected in ("data", "data demo-corpus", "data stats", "data build", "data export",
                     "train", "eval", "report", "demo", "ablate", "version"):
        assert expected in paths


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=[" ".join(p) or "longctx" for p, _ in COMMANDS])
def test_help_exits_0_and_lists_every_option(path, cmd, capsys) -> None:
    assert _exit_code(lambda: main([*path, "--help"])) == 0
    out = capsys.readouterr().out
    assert "Usage:" in out
    assert (cmd.help or "").strip(), f"`longctx {' '.join(path)}` has no help text"
    for param in cmd.params:
        if param.param_type_name == "option" and not getattr(param, "hidden", False):
            name = max(param.opts, key=len)
            assert name in out, f"{name} missing from `longctx {' '.join(path)} --help`"
            if name != "--help":
                assert (param.help or "").strip(), f"{name} of `{' '.join(path)}` has no help"
        elif param.param_type_name == "argument":
            assert param.name.upper() in out.upper()
            assert (getattr(param, "help", None) or "").strip(), f"{param.name} has no help"
    if _is_group(cmd):
        for sub in cmd.commands:
            assert sub in out


def test_report_help_names_its_options(capsys) -> None:
    assert _exit_code(lambda: main(["report", "--help"])) == 0
    out = capsys.readouterr().out
    for opt in ("--out", "--title", "run_dirs"):
        assert opt in out
    assert _exit_code(lambda: main(["demo", "--help"])) == 0
    out = capsys.readouterr().out
    for opt in ("--out", "--quick", "--steps", "--rope-theta"):
        assert opt in out


def test_user_error_is_one_line_exit_2(tmp_path: Path) -> None:
    """Through the real entry point in a subprocess: stderr is exactly one `error:` line."""
    missing = tmp_path / "no-such-run"
    env = dict(os.environ, NO_COLOR="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "longctx", "report", str(missing), "--out",
         str(tmp_path / "r.html")],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and str(missing) in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "r.html").exists()


def test_out_pointing_at_a_directory_is_a_user_error(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    (run / "loss").mkdir(parents=True)
    (run / "loss" / "loss.json").write_text('{"stage": "eval.loss", "buckets": [], "domains": {}}')
    with pytest.raises(SystemExit) as e:
        main(["report", str(run), "--out", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --out") and "\n" not in err


def test_bad_option_value_exits_2(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["demo", "--steps", "zero"])
    assert e.value.code == 2
    assert "--steps" in capsys.readouterr().err


def test_demo_flags_make_the_plan(monkeypatch, tmp_path: Path) -> None:
    """`longctx demo` flags reach the plan it runs (run_demo captured: the demo itself takes
    minutes); the defaults are the full plan into runs/demo."""
    from longctx import demo

    seen: list[tuple[Path, demo.DemoPlan]] = []
    monkeypatch.setattr(demo, "run_demo", lambda out, plan: seen.append((out, plan)))
    main(["demo"])
    assert seen[-1] == (Path("runs/demo"), demo.DemoPlan.full())
    main(["demo", "--quick", "-o", str(tmp_path), "--steps", "3", "--rope-theta", "5e5"])
    quick = demo.DemoPlan.quick()
    quick.steps, quick.rope_theta = 3, 5e5
    assert seen[-1] == (tmp_path, quick)
    main(["demo", "--out", str(tmp_path), "--steps", "7"])
    assert seen[-1][1].steps == 7 and not seen[-1][1].quick_mode
    for argv in (["--steps", "0"], ["--rope-theta", "0.5"], ["--config", "x.yaml"]):
        with pytest.raises(SystemExit) as e:
            main(["demo", *argv])
        assert e.value.code == 2
    assert len(seen) == 3


@pytest.mark.parametrize("name,absent", [
    ("data", ("longctx.eval.cli", "longctx.train.cli", "longctx.report.cli", "longctx.demo")),
    ("train", ("longctx.eval.cli", "longctx.pack.commands", "longctx.report.cli")),
    ("version", ("longctx.eval.cli", "longctx.pack.commands", "longctx.train.cli")),
])
def test_one_command_imports_only_its_own_modules(name, absent):
    """`longctx NAME ...` registers NAME alone, so the other commands' modules stay unloaded."""
    code = (f"import sys; from longctx.cli import build_app; build_app({name!r}); "
            f"print(','.join(m for m in {absent!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "", f"{name} imported {out}"


def test_a_single_command_tree_is_still_a_group(capsys):
    """With one command registered, `longctx version` still needs its name (not the default)."""
    main(["version"])
    assert capsys.readouterr().out.strip()
    with pytest.raises(SystemExit) as e:
        main(["--no-such-flag"])
    assert e.value.code == 2
