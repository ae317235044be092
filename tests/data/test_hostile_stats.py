"""``longctx data stats`` on hostile corpora, through the real CLI entry point: a counted skip
or one line ``error: ...`` with exit code 2, never a traceback, never a lost good record."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from longctx.data.stats import plot_stats
from longctx.plotting import MAX_DOMAINS
from longctx.plotting import stats_rows as plot_rows

from ..cli_helpers import assert_one_line_error as _one_line_error
from ..cli_helpers import run_main as _run
from .datahelpers import record, write_lines


def _stats(corpus: Path, out: Path, tok: Path, capsys, *extra: str) -> tuple[int, str, str]:
    return _run(["data", "stats", str(corpus), "--out", str(out), "--tokenizer", str(tok),
                 "--long-threshold", "8", *extra], capsys)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_deeply_nested_lines_are_counted_and_the_rest_of_the_file_kept(
    tmp_path, word_tokenizer_dir, capsys
):
    lines = [
        record("w " * 20, "A"),
        b"[" * 100_000 + b"]" * 100_000,
        record("w " * 30, "B"),
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        record("w " * 40, "A"),
    ]
    corpus = write_lines(tmp_path / "c" / "a.jsonl", lines).parent
    write_lines(corpus / "b.jsonl.gz", [record("w " * 5, "B")], "gz")
    code, out, err = _stats(corpus, tmp_path / "s", word_tokenizer_dir, capsys)
    assert code == 0, err
    s = json.loads((tmp_path / "s" / "stats.json").read_text())
    assert s["skipped"] == {"too_deep": 2}
    assert s["total_docs"] == 4 and s["total_tokens"] == 20 + 30 + 40 + 5
    assert {d: v["docs"] for d, v in s["domains"].items()} == {"A": 2, "B": 2}
    code, _, err = _stats(corpus, tmp_path / "strict", word_tokenizer_dir, capsys, "--strict")
    _one_line_error(code, err, "a.jsonl:2: too_deep")


def test_lone_surrogates_anywhere_are_skipped_and_outputs_stay_utf8(
    tmp_path, word_tokenizer_dir, capsys
):
    lines = [
        record("w w w", "A"),
        b'{"text": "w w", "meta": {"redpajama_set_name": "Evil\\ud800"}}',
        b'{"text": "w \\udfff w", "meta": {"redpajama_set_name": "A"}}',
        record("w w w w", "B"),
    ]
    corpus = write_lines(tmp_path / "c" / "a.jsonl", lines).parent
    code, out, err = _stats(corpus, tmp_path / "s", word_tokenizer_dir, capsys)
    assert code == 0, err
    s = json.loads((tmp_path / "s" / "stats.json").read_text(encoding="utf-8"))
    assert s["skipped"] == {"invalid_unicode": 2}
    assert list(s["domains"]) == ["B", "A"] and s["total_docs"] == 2
    assert (tmp_path / "s" / "stats.png").is_file()
    code, _, err = _stats(corpus, tmp_path / "strict", word_tokenizer_dir, capsys, "--strict")
    _one_line_error(code, err, "a.jsonl:2: invalid_unicode")


HOSTILE_NAMES = [r"$\undefinedcmd$", "$x^2$ and $", r"a_b%#&{}\\", "tab\there", "\x00nul",
                 "verylong" * 40, "$"]


def test_domain_names_are_drawn_as_plain_text(tmp_path, word_tokenizer_dir, capsys):
    names = [n for n in HOSTILE_NAMES if len(n) <= 256]  # longer names are invalid_domain
    lines = [record("w " * (i + 1), n) for i, n in enumerate(names)]
    lines.append(record("w w", "verylong" * 40))
    corpus = write_lines(tmp_path / "c" / "a.jsonl", lines).parent
    code, out, err = _stats(corpus, tmp_path / "s", word_tokenizer_dir, capsys)
    assert code == 0, err
    s = json.loads((tmp_path / "s" / "stats.json").read_text())
    assert set(s["domains"]) == set(names) and s["skipped"] == {"invalid_domain": 1}
    assert _png_size(tmp_path / "s" / "stats.png")[0] == 1300


def test_plot_of_a_received_stats_file_with_surrogate_names(tmp_path):
    """stats.json from elsewhere may hold anything JSON can: the figure still draws."""
    domains = {}
    for i, n in enumerate(["A\ud800", "\udcff", *HOSTILE_NAMES]):
        domains[n] = {"tokens": 10 + i, "token_share": 0.1, "long_token_fraction": 0.5,
                      "length_bins": [0.5, 0.5] + [0.0] * 8}
    stats = {"domains": domains, "long_threshold": 8, "total_tokens": 100}
    plot_stats(stats, tmp_path / "p.png")
    assert _png_size(tmp_path / "p.png") == (1300, 460)


def test_tens_of_thousands_of_domains(tmp_path, word_tokenizer_dir, capsys):
    """33,000 one-document domains overflow int16 codes; the plot and the printed table stay
    bounded, and every domain is still counted in stats.json."""
    n = 33_000
    lines = [record("w " * (1 + i % 3), f"d{i:05d}") for i in range(n)]
    corpus = write_lines(tmp_path / "c" / "a.jsonl", lines).parent
    code, out, err = _stats(corpus, tmp_path / "s", word_tokenizer_dir, capsys)
    assert code == 0, err
    s = json.loads((tmp_path / "s" / "stats.json").read_text())
    assert s["total_docs"] == n and len(s["domains"]) == n
    assert s["total_tokens"] == sum(1 + i % 3 for i in range(n))
    assert s["domains"]["d32999"]["tokens"] == 1 + 32999 % 3
    assert all(d["docs"] == 1 for d in s["domains"].values())
    assert len(out.splitlines()) <= 40 and "32,970 smaller domains" in out
    rows = plot_rows(s)
    assert len(rows) == MAX_DOMAINS and rows[-1][0] == f"other ({n - MAX_DOMAINS + 1:,} domains)"
    assert sum(d["token_share"] for _, d in rows) == pytest.approx(1.0)
    w, h = _png_size(tmp_path / "s" / "stats.png")
    assert w == 1300 and h <= 1000


def test_same_size_edit_that_keeps_the_mtime_is_not_reused(tmp_path, word_tokenizer_dir, capsys):
    corpus = write_lines(tmp_path / "c" / "a.jsonl", [record("w w w", "A")]).parent
    path = corpus / "a.jsonl"
    code, _, err = _stats(corpus, tmp_path / "s", word_tokenizer_dir, capsys)
    assert code == 0, err
    before = os.stat(path)
    path.write_text(path.read_text().replace('"A"', '"B"'))  # same size, new content
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert after.st_size == before.st_size and after.st_mtime_ns == before.st_mtime_ns
    code, _, err = _stats(corpus, tmp_path / "s", word_tokenizer_dir, capsys)
    assert code == 0, err
    assert list(json.loads((tmp_path / "s" / "stats.json").read_text())["domains"]) == ["B"]
