from dataclasses import dataclass, field

import pytest

from longctx.config import ConfigError, build_config, parse_count, parse_weights


@dataclass
class Optim:
    lr: float = 2e-5
    warmup: int = 0


@dataclass
class Cfg:
    steps: int = 10
    name: str = "x"
    strict: bool = False
    mix: dict[str, float] = field(default_factory=dict)
    optim: Optim = field(default_factory=Optim)

    def validate(self) -> None:
        if self.optim.lr <= 0:
            raise ConfigError(f"optim.lr must be positive, got {self.optim.lr}")


@pytest.mark.parametrize(
    "text,expected",
    [("600K", 600_000), ("100M", 100_000_000), ("5B", 5_000_000_000), ("1.5k", 1500), ("42", 42), (7, 7)],
)
def test_parse_count(text, expected):
    assert parse_count(text) == expected


@pytest.mark.parametrize("bad", ["", "5X", "-3", "0", "abc"])
def test_parse_count_rejects(bad):
    with pytest.raises(ConfigError):
        parse_count(bad, name="--tokens")


def test_parse_weights():
    assert parse_weights("A=0.5, B=2", name="--mix") == {"A": 0.5, "B": 2.0}
    with pytest.raises(ConfigError, match="B"):
        parse_weights("A=1,B=x", name="--mix")


def test_precedence_yaml_then_cli_then_overrides(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("steps: 5\nname: from-yaml\noptim:\n  lr: 1.0e-4\n")
    cfg = build_config(Cfg, config_file=y, cli={"name": "from-cli"}, overrides=["optim.warmup=3", "mix=A=1,B=3"])
    assert cfg.steps == 5 and cfg.name == "from-cli"
    assert cfg.optim.lr == pytest.approx(1e-4) and cfg.optim.warmup == 3
    assert cfg.mix == {"A": 1.0, "B": 3.0}


def test_unknown_key_names_the_key(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("stepz: 5\n")
    with pytest.raises(ConfigError, match="stepz"):
        build_config(Cfg, config_file=y)
    with pytest.raises(ConfigError, match="optim.lrr"):
        build_config(Cfg, overrides=["optim.lrr=1"])


def test_wrong_type_and_validate():
    with pytest.raises(ConfigError, match="steps"):
        build_config(Cfg, overrides=["steps=ten"])
    with pytest.raises(ConfigError, match="steps"):
        build_config(Cfg, overrides=["steps=1.5"])
    with pytest.raises(ConfigError, match="optim.lr"):
        build_config(Cfg, overrides=["optim.lr=-1"])
    assert build_config(Cfg, overrides=["strict=yes"]).strict is True


@dataclass
class Lists:
    inputs: list[str] = field(default_factory=list)
    sample: int | None = None
    ratio: float = 0.5


def test_lists_optionals_and_yaml_errors(tmp_path):
    cfg = build_config(Lists, overrides=["inputs=a.jsonl,b.jsonl", "sample=10", "ratio=1"])
    assert cfg.inputs == ["a.jsonl", "b.jsonl"] and cfg.sample == 10 and cfg.ratio == 1.0
    assert build_config(Lists, cli={"sample": None}).sample is None
    assert build_config(Cfg, overrides=["strict=off"]).strict is False
    with pytest.raises(ConfigError, match="not found"):
        build_config(Lists, config_file=tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        build_config(Lists, config_file=bad)
    bad.write_text("inputs: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        build_config(Lists, config_file=bad)
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        build_config(Lists, overrides=["ratio"])
    with pytest.raises(ConfigError, match="ratio"):
        build_config(Lists, overrides=["ratio=true"])


def test_explicit_cli_values_keeps_only_typed_flags():
    import typer
    from typer.testing import CliRunner

    from longctx.config import explicit_cli_values

    seen = {}
    app = typer.Typer()

    @app.command()
    def cmd(ctx: typer.Context, steps: int = 10, name: str = "x") -> None:
        seen.update(explicit_cli_values(ctx, {"steps": steps, "name": name}))

    result = CliRunner().invoke(app, ["--name", "typed"])
    assert result.exit_code == 0, result.output
    assert seen == {"name": "typed"}  # the default of --steps must not override a YAML value


@dataclass
class ListCfg:
    depths: list[int] = field(default_factory=lambda: [0, 50, 100])


def test_scalar_override_becomes_one_item_list():
    assert build_config(ListCfg, overrides=["depths=50"]).depths == [50]
    assert build_config(ListCfg, overrides=["depths=0,25"]).depths == [0, 25]
    assert build_config(ListCfg, overrides=["depths=[10, 20]"]).depths == [10, 20]
    with pytest.raises(ConfigError, match="depths"):
        build_config(ListCfg, overrides=["depths=x"])


# ---- hostile config files and absurd numbers -------------------------------------------


@pytest.mark.parametrize(
    "content,where,what",
    [
        (b"steps: 5\nname: caf\xe9\n", ":2:", "not UTF-8"),  # a Latin-1 file
        (b"steps: 5\nmix: [unclosed\n", ":3:", "not valid YAML"),
        (b"steps: 5\n\tname: x\n", ":2:1:", "not valid YAML"),
        (b"steps: 5\nname: 'x\n", ":", "not valid YAML"),
        (b"a: !!python/object/apply:os.system ['echo pwned']\n", ":1:", "not valid YAML"),
        (b"# a comment\n- just\n- a list\n", ":2:", "top level must be a mapping"),
        (b"42\n", ":1:", "top level must be a mapping"),
    ],
)
def test_bad_yaml_file_is_one_line_naming_file_and_line(tmp_path, content, where, what):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as e:
        build_config(Cfg, config_file=path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}{where}") and what in msg, msg


def test_empty_yaml_is_no_settings(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing set\n")
    assert build_config(Cfg, config_file=path) == Cfg()


@pytest.mark.parametrize("bad", ["100000T", "1e999", float("inf"), float("nan"), 10**16])
def test_parse_count_bounds(bad):
    with pytest.raises(ConfigError, match="--tokens"):
        parse_count(bad, name="--tokens")


def test_parse_count_accepts_up_to_its_maximum():
    assert parse_count("100T") == 10**14 and parse_count("1000T") == 10**15
    assert parse_count("5K", maximum=5000) == 5000
    with pytest.raises(ConfigError, match="more than the 4,999"):
        parse_count("5K", maximum=4999)


@pytest.mark.parametrize(
    "override,key",
    [("optim.lr=.inf", "optim.lr"), ("optim.lr=.nan", "optim.lr"), ("optim.lr=-.inf", "optim.lr"),
     ("steps=1e999", "steps"), ("steps=99999999999999999999999", "steps")],
)
def test_non_finite_and_out_of_range_numbers_are_refused(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_config(Cfg, overrides=[override])


def test_cli_float_infinity_is_refused():
    with pytest.raises(ConfigError, match="finite"):
        build_config(Cfg, cli={"optim": {"lr": float("1e999")}})


@pytest.mark.parametrize("bad", ["A=inf", "A=nan", "A=-1"])
def test_weights_must_be_finite_and_non_negative(bad):
    with pytest.raises(ConfigError, match="'A'"):
        parse_weights(bad, name="--mix")
