"""The eval CLI: complete --help, config precedence (defaults < YAML < flags < --set), errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from longctx.cli import app, main

runner = CliRunner()


@pytest.mark.parametrize(
    "cmd,flags",
    [
        ("needle", ["--out", "--model", "--lengths", "--depths", "--paper-grid", "--haystack",
                    "--needle", "--rope-theta", "--trained-length", "--config", "--set"]),
        ("loss", ["--data", "--out", "--model", "--buckets", "--positions", "--max-rows",
                  "--attention", "--config", "--set"]),
        ("bookqa", ["--data", "--out", "--model", "--truncate", "--chat", "--config", "--set"]),
    ],
)
def test_help_lists_every_option(cmd, flags):
    res = runner.invoke(app, ["eval", cmd, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    for flag in flags:
        assert flag in res.output, flag


def test_eval_help_lists_commands():
    res = runner.invoke(app, ["eval", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    for cmd in ("needle", "loss", "bookqa"):
        assert cmd in res.output


def test_config_precedence_yaml_flags_set(tmp_path: Path):
    """YAML sets three keys; a flag overrides one, --set another; the run records the result."""
    cfg = tmp_path / "needle.yaml"
    cfg.write_text("lengths: [300]\ndepths: [0, 100]\nmax_new_tokens: 9\nneedle: paper\n")
    out = tmp_path / "out"
    main(["eval", "needle", "--config", str(cfg), "--needle", "ruler", "--set", "depths=[50]",
          "--set", "max_new_tokens=3", "--out", str(out)])
    manifest = json.loads((out / "manifest.json").read_text())
    c = manifest["config"]
    assert c["lengths"] == [300]  # from YAML
    assert c["needle"] == "ruler"  # flag beats YAML
    assert c["depths"] == [50] and c["max_new_tokens"] == 3  # --set beats both
    assert manifest["stage"] == "eval.needle"
    assert all(cell["new_tokens"] <= 3 for cell in json.loads((out / "needle.json").read_text())[
        "cells"])
    # same config again: skipped as done
    res = runner.invoke(app, ["eval", "needle", "--config", str(cfg), "--needle", "ruler", "--set",
                              "depths=[50]", "--set", "max_new_tokens=3", "--out", str(out)])
    assert res.exit_code == 0 and "already done" in res.output


@pytest.mark.parametrize(
    "argv,message",
    [
        (["eval", "needle", "--needle", "haystack", "--out", "X"], "needle"),
        (["eval", "needle", "--set", "bogus=1", "--out", "X"], "bogus"),
        (["eval", "loss", "--data", "/nonexistent/packed", "--out", "X"], "not found"),
        (["eval", "bookqa", "--data", "/nonexistent/qa.jsonl", "--out", "X"], "not found"),
    ],
)
def test_user_errors_exit_2_with_message(argv, message, tmp_path, capsys):
    argv = [a if a != "X" else str(tmp_path / "o") for a in argv]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
