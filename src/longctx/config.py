"""Typed stage configs: dataclass defaults < YAML file < command-line flags < ``key=value`` overrides.

Every stage declares one dataclass; :mod:`longctx.cliopts` generates its flags from the
fields and builds it with :func:`build_config`, so the same names work as flags
(``--short-keep 0.2``), YAML keys (``short_keep: 0.2``) and dotted overrides
(``--set short_keep=0.2`` or ``--set optim.lr=2e-5`` for nested configs).
Unknown keys and values of the wrong type fail early with a message naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from longctx.errors import LongctxError

T = TypeVar("T")


class ConfigError(LongctxError):
    """A user-facing configuration error; the message names the key and the value."""


_COUNT_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kKmMbBtT]?)\s*$")
_COUNT_SCALE = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "t": 10**12}
# 1,000T tokens is ~70x the largest pretraining runs: anything above is a typo, and counts
# become numpy int64 arithmetic (token offsets, budgets x seq_len) further down.
MAX_COUNT = 10**15
# Config integers end up in numpy and C APIs: beyond int64 they overflow, never mean anything.
_INT_LIMIT = 2**63


def parse_count(value: str | int | float, *, name: str = "value", maximum: int = MAX_COUNT) -> int:
    """Parse a token count such as ``5B``, ``100M``, ``600K`` or ``12345`` into an int in
    1..``maximum``."""
    expected = f"{name}: expected a count like 600K, 100M or 5B, got {value!r}"
    if isinstance(value, bool):
        raise ConfigError(expected)
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(expected)
    if isinstance(value, (int, float)):
        n = int(value)
    else:
        m = _COUNT_RE.match(str(value))
        if not m:
            raise ConfigError(expected)
        n = int(round(float(m.group(1)) * _COUNT_SCALE[m.group(2).lower()]))
    if n <= 0:
        raise ConfigError(f"{name}: must be positive, got {value!r}")
    if n > maximum:
        raise ConfigError(f"{name}: {value!r} is more than the {maximum:,} this tool accepts")
    return n


def parse_weights(value: str | Mapping[str, Any] | None, *, name: str) -> dict[str, float]:
    """Parse ``A=0.5,B=2`` (or a mapping) into ``{"A": 0.5, "B": 2.0}``."""
    if value is None or value == "":
        return {}
    if isinstance(value, Mapping):
        items = list(value.items())
    else:
        items = []
        for part in str(value).split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise ConfigError(f"{name}: expected DOMAIN=WEIGHT pairs, got {part!r}")
            k, v = part.split("=", 1)
            items.append((k.strip(), v.strip()))
    out: dict[str, float] = {}
    for k, v in items:
        try:
            w = float(v)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: weight for {k!r} is not a number: {v!r}") from None
        if not math.isfinite(w) or w < 0:
            raise ConfigError(f"{name}: weight for {k!r} must be a finite number >= 0, got {w}")
        out[str(k)] = w
    return out


def strip_optional(tp: Any) -> Any:
    """``X | None`` -> ``X`` (any other type unchanged)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Coerce a YAML/CLI value to the dataclass field type, or raise ConfigError naming key."""
    if value is None:
        return None
    tp = strip_optional(tp)
    origin = typing.get_origin(tp)
    try:
        if tp is Any:
            return value
        if tp is bool:
            if isinstance(value, bool):
                return value
            s = str(value).strip().lower()
            if s in ("1", "true", "yes", "on"):
                return True
            if s in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if tp is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            n = int(value)
            if not -_INT_LIMIT <= n < _INT_LIMIT:
                raise ConfigError(f"config key {key!r}: {value!r} is out of range (int64)")
            return n
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            x = float(value)
            if not math.isfinite(x):
                raise ConfigError(f"config key {key!r}: must be a finite number, got {value!r}")
            return x
        if tp is str:
            if isinstance(value, (dict, list)):
                raise ValueError
            return str(value)
        if origin in (list, tuple):
            (inner,) = typing.get_args(tp)[:1] or (Any,)
            if isinstance(value, str):
                value = [v for v in value.split(",") if v.strip()]
            elif not isinstance(value, (list, tuple)):
                value = [value]  # `--set depths=50` parses as a scalar: a one-item list
            return [_coerce(v, inner, key) for v in value]
        if origin is dict:
            if isinstance(value, str):
                return parse_weights(value, name=key)
            if not isinstance(value, Mapping):
                raise ValueError
            _, vt = typing.get_args(tp)
            return {str(k): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, Mapping):
                raise ValueError
            return _from_mapping(tp, value, prefix=f"{key}.")
    except ConfigError:
        raise
    except (TypeError, ValueError, OverflowError):
        tname = getattr(tp, "__name__", str(tp))
        raise ConfigError(f"config key {key!r}: expected {tname}, got {value!r}") from None
    return value


def _from_mapping(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    obj = cls()  # type: ignore[call-arg]
    _merge(obj, data, prefix)
    return obj


def _merge(obj: Any, data: Mapping[str, Any], prefix: str = "") -> None:
    fields = {f.name: f for f in dataclasses.fields(obj)}
    hints = typing.get_type_hints(type(obj))
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"unknown config key {prefix + key!r} (known keys: {known})")
        tp = hints[key]
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current) and isinstance(value, Mapping):
            _merge(current, value, prefix=f"{prefix}{key}.")
        else:
            setattr(obj, key, _coerce(value, tp, prefix + key))


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {p!r} is not a section")
    node[parts[-1]] = value


def parse_overrides(overrides: Iterable[str]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=x,y"]`` into a nested dict; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        _set_dotted(out, key.strip(), value)
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML config file as a mapping; every problem is one line naming the file and line."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"config file {p}: cannot be read ({e.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(
            f"{p}:{line}: not UTF-8 text (byte 0x{raw[e.start]:02x}); save the file as UTF-8"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(_yaml_error(p, e)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        line = _first_content_line(text)
        raise ConfigError(
            f"{p}:{line}: top level must be a mapping of config keys, got {type(data).__name__}"
        )
    return data


def _yaml_error(path: Path, e: yaml.YAMLError) -> str:
    """``file:line:column: problem`` from PyYAML's multi-line message."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    what = getattr(e, "problem", None) or getattr(e, "context", None) or str(e)
    what = " ".join(str(what).split())
    if mark is None:
        return f"{path}: not valid YAML: {what}"
    return f"{path}:{mark.line + 1}:{mark.column + 1}: not valid YAML: {what}"


def _first_content_line(text: str) -> int:
    for i, line in enumerate(text.splitlines(), start=1):
        if line.strip() and not line.lstrip().startswith(("#", "---", "%")):
            return i
    return 1


def build_config(
    cls: type[T],
    *,
    config_file: str | Path | None = None,
    cli: Mapping[str, Any] | None = None,
    overrides: Iterable[str] = (),
    validate: bool = True,
) -> T:
    """Build ``cls`` from defaults, then a YAML file, then explicit CLI values, then overrides.

    Calls ``validate()`` on the result when the dataclass defines it (unless ``validate`` is
    False: keys and types are still checked, e.g. for a preset whose paths live elsewhere).
    """
    obj = cls()  # type: ignore[call-arg]
    if config_file:
        _merge(obj, load_yaml(config_file))
    if cli:
        _merge(obj, {k: v for k, v in cli.items()})
    ov = parse_overrides(overrides)
    if ov:
        _merge(obj, ov)
    check = getattr(obj, "validate", None)
    if validate and callable(check):
        check()
    return obj


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (for manifests)."""
    return dataclasses.asdict(cfg)


def explicit_cli_values(ctx: Any, values: Mapping[str, Any]) -> dict[str, Any]:
    """Keep only the parameters the user actually typed (not click/typer defaults).

    ``ctx`` is the click context; parameters whose source is the command line or the
    environment win over the YAML file, defaults do not.
    """
    out = {}
    for name, value in values.items():
        src = ctx.get_parameter_source(name)
        # compare by name: typer >= 0.29 vendors its own click, whose enum is a different class
        if getattr(src, "name", None) in ("COMMANDLINE", "ENVIRONMENT"):
            out[name] = value
    return out
