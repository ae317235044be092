"""``longctx data ...``: demo-corpus and stats (data/commands.py), build and export (pack/commands.py)."""

from __future__ import annotations

import typer

from longctx.data import commands as data_commands
from longctx.pack import commands as pack_commands

app = typer.Typer(no_args_is_help=True)
app.command("demo-corpus")(data_commands.demo_corpus_command)
app.command("stats")(data_commands.stats_command)
app.command("build")(pack_commands.build_command)
app.command("export")(pack_commands.export_command)
