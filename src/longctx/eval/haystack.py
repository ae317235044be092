"""Haystack text for needle-in-a-haystack: a folder of .txt files, or offline stdlib prose.

The paper concatenates its essays in ``glob`` order, which depends on the file system; we
read files in **sorted** name order and join them with a blank line so a file's last word
never fuses with the next file's first. Without ``--haystack`` we use the Python reference
manual's topic pages shipped with every CPython (``pydoc_data.topics``), so the tool works
offline on any install; its text (and so its sha256) changes with the Python version.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from longctx.errors import LongctxError
from longctx.stage import sha256_text

FILE_SEPARATOR = "\n\n"
DEFAULT_SOURCE = "pydoc_data.topics"


class HaystackError(LongctxError):
    pass


@dataclass(frozen=True)
class Haystack:
    """The haystack text plus where it came from (for provenance)."""

    text: str
    source: str
    files: tuple[str, ...]

    @property
    def sha256(self) -> str:
        return sha256_text(self.text)

    def describe(self) -> dict[str, object]:
        return {
            "source": self.source,
            "files": len(self.files),
            "chars": len(self.text),
            "sha256": self.sha256,
        }


def default_haystack() -> Haystack:
    """The stdlib reference manual's topic pages, in sorted topic order."""
    from pydoc_data.topics import topics

    keys = sorted(topics)
    return Haystack(FILE_SEPARATOR.join(topics[k] for k in keys), DEFAULT_SOURCE, tuple(keys))


def load_haystack(path: str | Path | None = None) -> Haystack:
    """Load a haystack: None = stdlib prose; a folder = its *.txt files in sorted order;
    a .txt file; or a RULER-style .json file with a ``text`` field."""
    if path is None or str(path) == "":
        return default_haystack()
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.glob("*.txt") if f.is_file())
        if not files:
            raise HaystackError(f"haystack folder {p} has no .txt files")
        texts = [_read_text(f) for f in files]
        return Haystack(FILE_SEPARATOR.join(texts), str(p), tuple(f.name for f in files))
    if p.is_file() and p.suffix == ".json":
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except ValueError as e:
            raise HaystackError(f"haystack file {p} is not valid JSON: {e}") from None
        if not isinstance(data, dict) or not isinstance(data.get("text"), str):
            raise HaystackError(f"haystack file {p}: expected a JSON object with a 'text' string")
        return Haystack(data["text"], str(p), (p.name,))
    if p.is_file():
        return Haystack(_read_text(p), str(p), (p.name,))
    raise HaystackError(f"haystack {p}: no such folder or file")


def collapse_whitespace(text: str) -> str:
    """RULER's essay haystack rule: every whitespace run becomes one space."""
    return re.sub(r"\s+", " ", text).strip()


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise HaystackError(f"haystack file {path} is not UTF-8 text: {e}") from None
