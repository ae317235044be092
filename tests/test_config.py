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
