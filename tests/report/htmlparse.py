"""A small structural reader for the report's HTML (stdlib html.parser): images, links,
scripts, and every table with the heading above it, so tests check what a browser shows."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class Table:
    heading: str
    rows: list[list[tuple[str, str]]] = field(default_factory=list)  # (text, class) per cell

    def texts(self) -> list[list[str]]:
        return [[t for t, _ in r] for r in self.rows]


class ReportParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.imgs: list[str] = []
        self.urls: list[tuple[str, str, str]] = []  # (tag, attr, value)
        self.scripts = 0
        self.tables: list[Table] = []
        self.text: list[str] = []
        self._heading = ""
        self._in_heading = False
        self._cell: list[str] | None = None
        self._cell_class = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for k in ("src", "href", "action", "poster", "data"):
            if a.get(k):
                self.urls.append((tag, k, a[k] or ""))
        if tag == "img":
            self.imgs.append(a.get("src") or "")
        elif tag == "script":
            self.scripts += 1
        elif tag in ("h2", "h3", "h4"):
            self._in_heading, self._heading = True, ""
        elif tag == "table":
            self.tables.append(Table(self._heading.strip()))
        elif tag == "tr" and self.tables:
            self.tables[-1].rows.append([])
        elif tag in ("td", "th"):
            self._cell, self._cell_class = [], a.get("class") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag in ("h2", "h3", "h4"):
            self._in_heading = False
        elif tag in ("td", "th") and self._cell is not None and self.tables:
            self.tables[-1].rows[-1].append(("".join(self._cell).strip(), self._cell_class))
            self._cell = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_heading:
            self._heading += data
        if self._cell is not None:
            self._cell.append(data)


def parse(doc: str) -> ReportParser:
    p = ReportParser()
    p.feed(doc)
    p.close()
    return p


def decode_png(src: str) -> tuple[int, int]:
    """Decode a data-URI PNG with PIL; returns (width, height). Raises when it is not one."""
    from PIL import Image

    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), src[:60]
    raw = base64.b64decode(src[len(prefix):], validate=True)
    with Image.open(io.BytesIO(raw)) as im:
        im.load()
        assert im.format == "PNG"
        return im.size
