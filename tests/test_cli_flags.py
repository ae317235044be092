"""Flags are generated from the stage configs: every config field has exactly one flag and
every flag a field, ``--help`` shows the dataclass defaults, precedence is defaults < YAML <
typed flags < ``--set``, every preset in ``configs/`` loads through the loader its command uses,
and one error handler turns user and usage errors into one ``error:`` line with exit code 2."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from longctx.cli import app, main
from longctx.cliopts import (
    cli_default,
    config_fields,
    count_flag,
    flag_names,
    opt,
    stage_command,
    weights_flag,
)
from longctx.config import ConfigError, build_config

REPO = Path(__file__).resolve().parents[1]
ALWAYS = {"config", "set_", "help"}  # --config, --set, --help on every stage command
# Command-only flags (not config fields), by command: what they do is documented in --help.
COMMAND_ONLY = {
    "data build": {"progress"},
    "eval needle": {"out", "force"},
    "eval loss": {"out", "force"},
    "eval bookqa": {"out", "force"},
}
STAGE_COMMANDS = {"data demo-corpus", "data stats", "data build", "train", "eval needle",
                  "eval loss", "eval bookqa", "report"}


def _walk(cmd: Any, path: list[str]) -> list[tuple[str, Any]]:
    if isinstance(getattr(cmd, "commands", None), dict):
        return [x for name, sub in sorted(cmd.commands.items()) for x in _walk(sub, path + [name])]
    return [(" ".join(path), cmd)]


def _stage_commands() -> list[tuple[str, Any, type]]:
    """(path, click command, config class) of every command generated from a config."""
    found = []
    for path, cmd in _walk(typer.main.get_command(app), []):
        cls = getattr(cmd.callback, "config_class", None)
        if cls is not None:
            found.append((path, cmd, cls))
    return found


STAGES = _stage_commands()
IDS = [p for p, _, _ in STAGES]


def test_every_stage_command_is_generated_from_its_config() -> None:
    assert {p for p, _, _ in STAGES} == STAGE_COMMANDS


@pytest.mark.parametrize("path,cmd,cls", STAGES, ids=IDS)
def test_every_field_has_exactly_one_flag_and_every_flag_a_field(path, cmd, cls) -> None:
    fields = {f.name: (f, hint) for f, hint in config_fields(cls)}
    params = {p.name: p for p in cmd.params}
    assert len(params) == len(cmd.params), f"{path}: two parameters share a name"
    extra = set(params) - set(fields) - ALWAYS
    assert extra == COMMAND_ONLY.get(path, set()), f"{path}: flags without a config field"
    assert set(fields) <= set(params), f"{path}: fields without a flag: {set(fields) - set(params)}"
    seen: dict[str, str] = {}
    for p in cmd.params:
        for opt_name in [*p.opts, *getattr(p, "secondary_opts", [])]:
            assert opt_name not in seen, f"{path}: {opt_name} is {seen[opt_name]} and {p.name}"
            seen[opt_name] = p.name
    for name, (f, hint) in fields.items():
        p = params[name]
        if p.param_type_name == "argument":
            continue
        # the flag is the key: --seq-len <-> seq_len (the README promises it)
        assert f"--{name.replace('_', '-')}" in p.opts, (path, name, p.opts)
        declared = [o for d in flag_names(f, hint) for o in d.split("/")]
        assert sorted([*p.opts, *p.secondary_opts]) == sorted(declared), (path, name)


@pytest.mark.parametrize("path,cmd,cls", STAGES, ids=IDS)
def test_flag_defaults_are_the_dataclass_defaults(path, cmd, cls) -> None:
    params = {p.name: p for p in cmd.params}
    typed = {}
    for f, _ in config_fields(cls):
        p = params[f.name]
        assert p.default == cli_default(f), (path, f.name, p.default)
        if p.default is not None:
            typed[f.name] = p.default
    # the defaults as typed on the command line build exactly the dataclass defaults
    assert build_config(cls, cli=typed, validate=False) == cls()


@pytest.mark.parametrize("path,cmd,cls", STAGES, ids=IDS)
def test_help_shows_the_dataclass_defaults(path, cmd, cls) -> None:
    res = CliRunner().invoke(app, [*path.split(), "--help"], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    flat = " ".join(re.sub(r"[│╭╮╰╯─]", " ", res.output).split())
    for f, _ in config_fields(cls):
        p = next(q for q in cmd.params if q.name == f.name)
        if isinstance(p.show_default, str):
            shown = f"({p.show_default})"
        elif p.default is None or p.default == "" or (p.is_flag and not p.secondary_opts
                                                      and p.default is False):
            continue
        elif p.secondary_opts:  # --x/--no-x shows the name of the default side
            shown = (p.opts if p.default else p.secondary_opts)[0].lstrip("-")
        else:
            shown = str(p.default)
        assert f"[default: {shown}]" in flat, (path, f.name, shown)


# ----------------------------------------------------------------------------- precedence
@dataclass
class _Cfg:
    size: int = opt(8, "Size.")
    name: str = opt("x", "Name.", flags=("--name", "-n"))
    fast: bool = opt(False, "Fast.")
    lengths: list[int] = opt(factory=lambda: [1, 2], help="Lengths.")
    mix: dict[str, float] = opt(factory=dict, parse=weights_flag, help="Weights.")
    count: int | None = opt(None, "Count.", cli_type=str, parse=count_flag)


def _app(seen: list) -> typer.Typer:
    def run(cfg: _Cfg, tag: str) -> None:
        """Test command."""
        seen.append((cfg, tag))

    from longctx.cliopts import param

    tiny = typer.Typer()
    tiny.command()(stage_command(_Cfg, run, head=[param("tag", str, typer.Option(
        "t", "--tag", help="Command-only."))]))
    return tiny


def test_precedence_defaults_yaml_typed_flags_set(tmp_path) -> None:
    seen: list = []
    y = tmp_path / "c.yaml"
    y.write_text("size: 3\nname: yaml\nfast: true\nlengths: [5]\n")
    res = CliRunner().invoke(_app(seen), ["--config", str(y), "--name", "flag", "--size", "4",
                                         "--set", "size=5", "--mix", "A=1,B=3", "--count", "2K",
                                         "--tag", "T"])
    assert res.exit_code == 0, res.output
    cfg, tag = seen[-1]
    # size: YAML 3 < flag 4 < --set 5; name: flag beats YAML; fast and lengths: YAML beats
    # the (untyped) flag defaults; parse hooks turn typed text into config values
    assert (cfg.size, cfg.name, cfg.fast, cfg.lengths) == (5, "flag", True, [5])
    assert cfg.mix == {"A": 1.0, "B": 3.0} and cfg.count == 2000 and tag == "T"
    res = CliRunner().invoke(_app(seen), ["-n", "short", "--lengths", "7,8", "--fast"])
    assert res.exit_code == 0, res.output
    assert seen[-1][0] == _Cfg(name="short", lengths=[7, 8], fast=True)
    assert seen[-1][1] == "t"


def test_parse_hooks_name_the_flag() -> None:
    with pytest.raises(ConfigError, match="--mix"):
        weights_flag("A", "--mix")
    with pytest.raises(ConfigError, match="--sample-docs"):
        count_flag("lots", "--sample-docs")


def test_a_field_without_help_is_refused() -> None:
    with pytest.raises(TypeError, match="help"):
        opt(3)

    @dataclass
    class Bare:
        plain: int = 3

    with pytest.raises(TypeError, match="plain"):
        stage_command(Bare, lambda cfg: None)


def test_typed_mix_and_sample_docs_errors_name_the_flag(tmp_path, capsys) -> None:
    for argv, flag in ((["data", "build", str(tmp_path), "--out", str(tmp_path / "o"),
                         "--tokens", "1K", "--mix", "A"], "--mix"),
                       (["data", "stats", str(tmp_path), "--out", str(tmp_path / "o"),
                         "--sample-docs", "lots"], "--sample-docs")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and flag in err and "\n" not in err


# ----------------------------------------------------------------------------- presets
def _preset_loader(path: Path):
    """The loader the preset's command uses: ablate's own, or build_config of the stage."""
    from longctx.ablate.config import load_ablation_config
    from longctx.train.config import TrainConfig

    if path.name.startswith("ablate-"):
        return lambda: load_ablation_config(path, out="runs/x")
    # train presets name a model and data folder of the machine they are meant for: keys,
    # types and values are checked here; paths are checked when the command runs
    def train():
        cfg = build_config(TrainConfig, config_file=path, cli={"data": "d", "out": "o"},
                           validate=False)
        cfg._validate_values()
        return cfg

    return train


PRESETS = sorted((REPO / "configs").glob("*.yaml"))


def test_there_are_presets() -> None:
    assert len(PRESETS) >= 6


@pytest.mark.parametrize("path", PRESETS, ids=[p.name for p in PRESETS])
def test_every_preset_loads_through_its_commands_loader(path: Path) -> None:
    assert _preset_loader(path)() is not None


def test_a_preset_typo_is_caught(tmp_path) -> None:
    from longctx.train.config import TrainConfig

    bad = tmp_path / "t.yaml"
    bad.write_text((REPO / "configs" / "demo-smollm2-cpu.yaml").read_text() + "learnin_rate: 1\n")
    with pytest.raises(ConfigError, match="learnin_rate"):
        build_config(TrainConfig, config_file=bad, validate=False)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("module", ["longctx", "longctx.train"])
def test_usage_error_is_one_error_line_exit_2(module: str) -> None:
    prefix = [] if module == "longctx.train" else ["train"]
    env = dict(os.environ, NO_COLOR="1", HF_HUB_OFFLINE="1")
    for argv, what in ((["--steps", "many"], "--steps"), (["--bogus"], "--bogus"),
                       (["--config", "/no/such.yaml"], "/no/such.yaml")):
        proc = subprocess.run([sys.executable, "-m", module, *prefix, *argv],
                              capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and what in lines[0], lines


def test_no_arguments_still_prints_help(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["eval"])
    assert "needle" in capsys.readouterr().out


def test_help_imports_no_torch() -> None:
    code = ("import sys\nfrom longctx.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
            "assert not bad, bad\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr


def test_field_lists_match_the_dataclasses() -> None:
    """config_fields sees inherited fields (the eval model block) first, once."""
    from longctx.eval.loss import LossConfig
    from longctx.eval.model_args import EvalModelArgs

    names = [f.name for f, _ in config_fields(LossConfig)]
    shared = [f.name for f in dataclasses.fields(EvalModelArgs)]
    assert names[: len(shared)] == shared == ["model", "rope_theta", "dtype", "device"]
    assert len(set(names)) == len(names)
