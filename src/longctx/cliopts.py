"""Command-line flags generated from a stage's config dataclass, and the one CLI error handler.

A stage declares each setting once, as a field of its config dataclass::

    seq_len: int = opt(8192, "Tokens per packed row.")
    bos: bool = opt(True, "BOS token before every document.", flags=("--bos/--no-bos",))

:func:`stage_command` turns the dataclass into a typer command with one flag per field (named
after the field: ``seq_len`` -> ``--seq-len``; booleans get ``--x/--no-x`` unless ``flags``
says otherwise), plus ``--config FILE.yaml`` and repeatable ``--set key=value``, and builds the
config with :func:`longctx.config.build_config`: defaults < YAML < flags typed on the command
line < ``--set``. List fields are typed as comma-separated text (``--lengths 1024,2048``) and
dict fields as ``D=W,...`` pairs; ``parse`` turns the typed text into the config value where
the flag needs its own parser (counts such as ``20K``).

:func:`flag_command` is the same without ``--config`` and ``--set``, for commands whose few
settings would make a YAML file pointless (``demo``, ``data export``, ``ablate``, whose own
``--config`` is its ablation YAML).

:func:`run_app` is the entry point of ``longctx`` and ``python -m longctx.train``: a user error
(:class:`~longctx.errors.LongctxError`) or a usage error is one ``error: ...`` line on stderr
and exit code 2.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import typer

from longctx.config import (
    build_config,
    explicit_cli_values,
    parse_count,
    parse_weights,
    strip_optional,
)
from longctx.errors import LongctxError

CLI = "longctx.flag"  # the dataclass field metadata key holding a field's Flag
CONFIG_HELP = "YAML file with any of these keys (flag names with underscores)."
SET_HELP = "Override one config key, KEY=VALUE (repeatable); applied last."


@dataclasses.dataclass(frozen=True)
class Flag:
    """How a config field appears on the command line."""

    help: str
    flags: tuple[str, ...] = ()  # e.g. ("--out", "-o") or ("--subset/--read-all",)
    panel: str | None = None  # rich help panel (section of --help)
    show: str | bool | None = None  # what --help says the default is, when not the value
    cli_type: Any = None  # the type typed on the command line (default: from the field)
    parse: Callable[[Any, str], Any] | None = None  # (typed value, flag name) -> config value
    argument: bool = False  # a positional argument (list fields: zero or more)
    required: bool = False  # click refuses the command without it (the field default is None)
    min: float | None = None  # smallest value the flag accepts (numbers)


def opt(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    factory: Callable[[], Any] | Any = dataclasses.MISSING,
    **flag: Any,
) -> Any:
    """A config field with its one default and its command-line help (see :class:`Flag`)."""
    if not help:
        raise TypeError("opt(): every config field needs help text")
    return dataclasses.field(
        default=default, default_factory=factory, metadata={CLI: Flag(help, **flag)}
    )


def count_flag(value: Any, flag: str) -> int:
    """``parse=`` for counts typed as ``20K``, ``100M``, ``5B``."""
    return parse_count(value, name=flag)


def weights_flag(value: Any, flag: str) -> dict[str, float]:
    """``parse=`` for domain weights typed as ``D=W,...``."""
    return parse_weights(value, name=flag)


# ----------------------------------------------------------------------------- fields
def field_flag(f: dataclasses.Field) -> Flag:
    flag = f.metadata.get(CLI)
    if flag is None:
        raise TypeError(f"config field {f.name!r} has no opt(...) declaration (help, flags)")
    return flag


def flag_names(f: dataclasses.Field, hint: Any) -> tuple[str, ...]:
    """The option names of a field of type ``hint``: ``("--seq-len",)``, ``("--out", "-o")``,
    ``("--bos/--no-bos",)``."""
    flag = field_flag(f)
    if flag.flags:
        return flag.flags
    name = "--" + f.name.replace("_", "-")
    return (f"{name}/--no-{name[2:]}",) if strip_optional(hint) is bool else (name,)


def cli_type(f: dataclasses.Field, hint: Any) -> Any:
    """What the flag parses: the field's type, or text for lists and dicts."""
    flag = field_flag(f)
    if flag.cli_type is not None:
        return flag.cli_type
    tp = strip_optional(hint)
    if typing.get_origin(tp) in (list, tuple, dict):
        return list[str] if flag.argument else str
    return tp


def cli_default(f: dataclasses.Field) -> Any:
    """The dataclass default as the command line writes it (lists comma-separated)."""
    if field_flag(f).argument:
        return None
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        value = f.default
    if isinstance(value, Mapping):
        return ",".join(f"{k}={v}" for k, v in value.items()) or None
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or None
    return value


def _field_param(f: dataclasses.Field, hint: Any) -> inspect.Parameter:
    flag = field_flag(f)
    tp = cli_type(f, hint)
    default = ... if flag.required else cli_default(f)
    if flag.argument:
        info = typer.Argument(default, help=flag.help, show_default=False)
    else:
        kw: dict[str, Any] = {"help": flag.help, "rich_help_panel": flag.panel}
        if flag.show is not None:
            kw["show_default"] = flag.show
        if flag.min is not None:
            kw["min"] = flag.min
        info = typer.Option(default, *flag_names(f, hint), **kw)
    return param(f.name, tp, info)


def param(name: str, tp: Any, info: Any) -> inspect.Parameter:
    """A command-only parameter (not a config field): ``param("force", bool,
    typer.Option(False, "--force", help=...))``."""
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=tp)


def config_fields(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


def cli_values(ctx: Any, cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """The config values of the flags the user typed, parsed where a field says how."""
    typed = explicit_cli_values(ctx, values)
    out = {}
    for f, hint in config_fields(cls):
        value = typed.get(f.name)
        if value is None:
            continue
        parse = field_flag(f).parse
        out[f.name] = parse(value, flag_names(f, hint)[0].split("/")[0]) if parse else value
    return out


# ----------------------------------------------------------------------------- commands
def stage_command(
    cls: type,
    run: Callable[..., Any],
    *,
    head: Sequence[inspect.Parameter] = (),
    tail: Sequence[inspect.Parameter] = (),
    config_flags: tuple[str, ...] = ("--config",),
    config_help: str = CONFIG_HELP,
    set_help: str = SET_HELP,
) -> Callable[..., Any]:
    """A typer command for config class ``cls``: ``head`` flags, one flag per field,
    ``tail`` flags, ``--config`` and ``--set``. It builds the config and calls
    ``run(cfg, **command_only_flags)``; its help is ``run``'s docstring."""
    files = [
        param("config", Path | None, typer.Option(None, *config_flags, help=config_help)),
        param("set_", list[str] | None, typer.Option(None, "--set", help=set_help)),
    ]

    def build(cli: dict[str, Any], config: Path | None, set_: list[str] | None) -> Any:
        return build_config(cls, config_file=config, cli=cli, overrides=set_ or ())

    return _command(cls, run, head, tail, files, build)


def flag_command(
    cls: type,
    run: Callable[..., Any],
    *,
    head: Sequence[inspect.Parameter] = (),
    tail: Sequence[inspect.Parameter] = (),
) -> Callable[..., Any]:
    """:func:`stage_command` without ``--config`` and ``--set``: the config is built from
    the dataclass defaults and the flags typed on the command line only."""
    return _command(cls, run, head, tail, [], lambda cli: build_config(cls, cli=cli))


def _command(
    cls: type,
    run: Callable[..., Any],
    head: Sequence[inspect.Parameter],
    tail: Sequence[inspect.Parameter],
    files: Sequence[inspect.Parameter],
    build: Callable[..., Any],
) -> Callable[..., Any]:
    """The command: ``build(typed field values, **files flags)`` makes the config, then
    ``run(cfg, **head and tail flags)``."""
    extra = [*head, *tail]
    fields = [_field_param(f, hint) for f, hint in config_fields(cls)]
    params = [
        inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context),
        *head,
        *fields,
        *tail,
        *files,
    ]
    names = [p.name for p in params]
    assert len(set(names)) == len(names), f"{cls.__name__}: duplicate flags {names}"

    def command(**kwargs: Any) -> Any:
        ctx = kwargs.pop("ctx")
        extras = {p.name: kwargs.pop(p.name) for p in extra}
        sources = {p.name: kwargs.pop(p.name) for p in files}
        cfg = build(cli_values(ctx, cls, kwargs), **sources)
        return run(cfg, **extras)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = run.__doc__
    command.__name__ = command.__qualname__ = run.__name__.lstrip("_")
    command.__module__ = run.__module__
    command.config_class = cls  # type: ignore[attr-defined]  # tests map flags to fields
    return command


# ----------------------------------------------------------------------------- errors
def _kind(e: BaseException, name: str) -> bool:
    # typer >= 0.26 vendors its own click, older typer uses click's classes: match by name
    return any(c.__name__ == name for c in type(e).__mro__)


def fail(message: str, code: int = 2) -> typing.NoReturn:
    """Print one ``error: ...`` line on stderr and exit."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    sys.exit(code)


def run_app(app: typer.Typer, argv: Iterable[str] | None = None) -> None:
    """Run ``app``; user and usage errors are one ``error:`` line and exit code 2."""
    try:
        app(args=None if argv is None else list(argv), standalone_mode=False)
    except LongctxError as e:
        fail(str(e))
    except KeyboardInterrupt:
        typer.secho("interrupted", fg=typer.colors.YELLOW, err=True)
        sys.exit(130)
    except Exception as e:
        if _kind(e, "Abort"):
            sys.exit(1)
        if not _kind(e, "ClickException"):
            raise
        if _kind(e, "NoArgsIsHelpError"):  # a bare group: its help, as click prints it
            e.show()  # type: ignore[attr-defined]
            sys.exit(e.exit_code)  # type: ignore[attr-defined]
        message = " ".join(str(e.format_message()).split())  # type: ignore[attr-defined]
        ctx = getattr(e, "ctx", None)
        if _kind(e, "UsageError"):
            if ctx is not None:
                message += f" (see `{ctx.command_path} --help`)"
            fail(message, 2)
        fail(message, getattr(e, "exit_code", 1) or 1)
