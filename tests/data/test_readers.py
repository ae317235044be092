from __future__ import annotations

import gzip
import json
import tracemalloc
import zlib
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from longctx.data import readers as R
from longctx.data.readers import (
    DataError,
    Document,
    Fields,
    expand_inputs,
    iter_documents,
    iter_file,
)

from .datahelpers import record, write_lines

GOOD = [record(f"document number {i} " * (i + 1), "ABC"[i % 3]) for i in range(30)]


def _docs(path, fields=None, strict=False):
    fields = fields or Fields()
    skipped: Counter = Counter()
    docs = list(iter_file(path, fields, skipped, strict))
    return docs, skipped


@pytest.mark.parametrize("compress", [None, "gz", "zst"])
def test_jsonl_formats_read_the_same(tmp_path, compress):
    suffix = {None: ".jsonl", "gz": ".jsonl.gz", "zst": ".jsonl.zst"}[compress]
    path = write_lines(tmp_path / f"c{suffix}", GOOD, compress)
    docs, skipped = _docs(path)
    assert not skipped
    assert [(d.text, d.domain, d.index) for d in docs] == [
        (json.loads(r)["text"], "ABC"[i % 3], i + 1) for i, r in enumerate(GOOD)
    ]
    assert docs[4].doc_id == f"{path}:5"


def test_parquet_with_nested_meta(tmp_path):
    rows = [json.loads(r) for r in GOOD]
    rows[3]["text"] = ""  # empty text is skipped in parquet too
    path = tmp_path / "c.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=7)
    skipped: Counter = Counter()
    docs = list(R.iter_parquet(path, Fields(), skipped, batch_size=5))
    assert skipped == {R.EMPTY_TEXT: 1}
    assert [d.index for d in docs] == [i for i in range(1, 31) if i != 4]
    assert docs[0].domain == "A" and docs[0].text == rows[0]["text"]


def test_parquet_missing_column_and_unreadable_file(tmp_path):
    path = tmp_path / "c.parquet"
    pq.write_table(pa.Table.from_pylist([{"body": "x"}, {"body": "y"}]), path)
    docs, skipped = _docs(path)
    assert docs == [] and skipped == {R.MISSING_TEXT: 2}
    docs, skipped = _docs(path, Fields(text="body", domain="@file"))
    assert [(d.text, d.domain) for d in docs] == [("x", "c"), ("y", "c")]
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not a parquet file at all")
    docs, skipped = _docs(bad)
    assert docs == [] and skipped == {R.UNREADABLE_FILE: 1}
    with pytest.raises(DataError, match="bad.parquet"):
        _docs(bad, strict=True)


def test_dotted_fields_and_domain_from_path(tmp_path):
    lines = [json.dumps({"doc": {"body": "hello"}, "src": {"set": {"name": "Wiki"}}})]
    path = write_lines(tmp_path / "books" / "part.jsonl", lines)
    docs, _ = _docs(path, Fields(text="doc.body", domain="src.set.name"))
    assert [(d.text, d.domain) for d in docs] == [("hello", "Wiki")]
    docs, _ = _docs(path, Fields(text="doc.body", domain="@dir"))
    assert docs[0].domain == "books"
    docs, _ = _docs(path, Fields(text="doc.body", domain="@file"))
    assert docs[0].domain == "part"


BAD_LINES = [
    (b"{not json", R.MALFORMED_JSON),
    (b"[1, 2, 3]", R.NOT_AN_OBJECT),
    (b'"just a string"', R.NOT_AN_OBJECT),
    (json.dumps({"meta": {"redpajama_set_name": "A"}}).encode(), R.MISSING_TEXT),
    (json.dumps({"text": None, "meta": {"redpajama_set_name": "A"}}).encode(), R.MISSING_TEXT),
    (json.dumps({"text": 42, "meta": {"redpajama_set_name": "A"}}).encode(), R.NON_STRING_TEXT),
    (json.dumps({"text": ["a"], "meta": {"redpajama_set_name": "A"}}).encode(), R.NON_STRING_TEXT),
    (json.dumps({"text": "", "meta": {"redpajama_set_name": "A"}}).encode(), R.EMPTY_TEXT),
    (json.dumps({"text": " \n\t", "meta": {"redpajama_set_name": "A"}}).encode(), R.EMPTY_TEXT),
    (json.dumps({"text": "t"}).encode(), R.MISSING_DOMAIN),
    (json.dumps({"text": "t", "meta": {"redpajama_set_name": ""}}).encode(), R.MISSING_DOMAIN),
    (json.dumps({"text": "t", "meta": {"redpajama_set_name": ["A"]}}).encode(), R.INVALID_DOMAIN),
    (b'{"text": "caf\xe9", "meta": {"redpajama_set_name": "A"}}', R.INVALID_UTF8),
    (b'{"text": "lone \\ud800 surrogate", "meta": {"redpajama_set_name": "A"}}', R.INVALID_UNICODE),
    (b'{"text": "t", "meta": {"redpajama_set_name": "A\\udfff"}}', R.INVALID_UNICODE),
    (b'{"text": "t", "meta": {"redpajama_set_name": "' + b"d" * 300 + b'"}}', R.INVALID_DOMAIN),
    (b"[" * 100_000 + b"]" * 100_000, R.TOO_DEEP),
    (b'{"a":' * 5000 + b'{}' + b"}" * 5000, R.TOO_DEEP),
    (b'{"text": "t", "meta": {"redpajama_set_name": "A"}, "x": ' + b"[" * 300 + b"]" * 300
     + b"}", R.TOO_DEEP),
    (b"\x00\x01binary\xff\x00garbage", R.INVALID_UTF8),
    (b'{"text": "nul \x00 raw", "meta": {"redpajama_set_name": "A"}}', R.MALFORMED_JSON),
]


def _mixed_lines() -> tuple[list[bytes], list[int], Counter]:
    """Good and bad lines interleaved; returns lines, the good line numbers, expected counts."""
    lines: list[bytes] = []
    good: list[int] = []
    for i, (bad, _) in enumerate(BAD_LINES):
        lines.append(GOOD[i].encode())
        good.append(len(lines))
        lines.append(bad)
    lines.append(b"")  # a blank line is layout, not a record
    lines.append(GOOD[-1].encode())
    good.append(len(lines))
    return lines, good, Counter(reason for _, reason in BAD_LINES)


@pytest.mark.parametrize("compress", [None, "gz", "zst"])
def test_every_skip_reason_is_counted_and_good_docs_kept(tmp_path, compress):
    lines, good, expected = _mixed_lines()
    suffix = {None: ".jsonl", "gz": ".jsonl.gz", "zst": ".jsonl.zst"}[compress]
    path = write_lines(tmp_path / f"mixed{suffix}", lines, compress)
    docs, skipped = _docs(path)
    assert skipped == expected
    assert [d.index for d in docs] == good
    assert all(d.text.encode("utf-8") for d in docs)


@pytest.mark.parametrize("which", range(len(BAD_LINES)))
def test_strict_names_file_and_line(tmp_path, which):
    bad, reason = BAD_LINES[which]
    path = write_lines(tmp_path / "s.jsonl", [GOOD[0].encode(), GOOD[1].encode(), bad])
    with pytest.raises(DataError) as e:
        _docs(path, strict=True)
    assert f"s.jsonl:3: {reason}" in str(e.value)


def test_utf8_bom_and_crlf(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD[0].encode() + b"\r\n" + GOOD[1].encode() + b"\r\n")
    docs, skipped = _docs(path)
    assert not skipped and [d.index for d in docs] == [1, 2]


def _big_lines(n: int) -> list[str]:
    return [record(f"line {i} " + "lorem ipsum " * (i % 50)) for i in range(n)]


def test_truncated_zst_keeps_every_decodable_doc(tmp_path):
    lines = _big_lines(20000)
    data = "".join(x + "\n" for x in lines).encode()
    blob = zstandard.ZstdCompressor(level=3).compress(data)
    cut = blob[: int(len(blob) * 0.6)]
    # Reference: what zstd itself can decode from the truncated bytes.
    decodable = zstandard.ZstdDecompressor().decompressobj().decompress(cut)
    complete = decodable.count(b"\n")
    assert 0 < complete < len(lines)
    path = tmp_path / "t.jsonl.zst"
    path.write_bytes(cut)
    docs, skipped = _docs(path)
    assert skipped == {R.TRUNCATED_FILE: 1}
    assert [d.index for d in docs] == list(range(1, complete + 1))
    with pytest.raises(DataError, match=rf"t.jsonl.zst:{complete + 1}: truncated_file"):
        _docs(path, strict=True)


def test_truncated_gz_keeps_what_gzip_reads(tmp_path):
    lines = _big_lines(20000)
    blob = gzip.compress("".join(x + "\n" for x in lines).encode(), mtime=0)
    cut = blob[: len(blob) // 2]
    path = tmp_path / "t.jsonl.gz"
    path.write_bytes(cut)
    n_ref = 0  # reference: lines Python's gzip module yields before it raises
    with pytest.raises(EOFError):
        with gzip.open(path, "rb") as f:
            for _ in f:
                n_ref += 1
    docs, skipped = _docs(path)
    assert skipped == {R.TRUNCATED_FILE: 1}
    assert len(docs) == n_ref > 0
    assert zlib.decompressobj(31).decompress(cut).count(b"\n") == n_ref


def test_multi_frame_zst_and_multi_member_gz(tmp_path):
    a, b = GOOD[:10], GOOD[10:]
    enc = [("".join(x + "\n" for x in part)).encode() for part in (a, b)]
    z = zstandard.ZstdCompressor()
    (tmp_path / "m.jsonl.zst").write_bytes(z.compress(enc[0]) + z.compress(enc[1]))
    (tmp_path / "m.jsonl.gz").write_bytes(gzip.compress(enc[0]) + gzip.compress(enc[1]))
    for name in ("m.jsonl.zst", "m.jsonl.gz"):
        docs, skipped = _docs(tmp_path / name)
        assert not skipped and len(docs) == len(GOOD)
    # A second frame cut short: the first frame's documents all survive.
    second = z.compress(enc[1])
    (tmp_path / "m2.jsonl.zst").write_bytes(z.compress(enc[0]) + second[: len(second) // 2])
    docs, skipped = _docs(tmp_path / "m2.jsonl.zst")
    assert skipped == {R.TRUNCATED_FILE: 1} and len(docs) >= 10


def test_corrupt_zst_is_counted(tmp_path):
    blob = bytearray(zstandard.ZstdCompressor().compress(b"".join(g.encode() + b"\n" for g in GOOD)))
    blob[20:40] = b"\xff" * 20
    (tmp_path / "c.jsonl.zst").write_bytes(bytes(blob))
    docs, skipped = _docs(tmp_path / "c.jsonl.zst")
    assert sum(skipped.values()) >= 1
    assert set(skipped) <= {R.CORRUPT_FILE, R.TRUNCATED_FILE, R.MALFORMED_JSON, R.INVALID_UTF8}


def test_expand_inputs_files_folders_globs(tmp_path):
    a = write_lines(tmp_path / "d" / "b.jsonl", GOOD[:2])
    b = write_lines(tmp_path / "d" / "sub" / "a.jsonl.zst", GOOD[:2], "zst")
    write_lines(tmp_path / "d" / "manifest.json", ['{"stage": "x"}'])  # a stage file, not corpus
    write_lines(tmp_path / "d" / ".hidden.jsonl", GOOD[:1])
    (tmp_path / "d" / "notes.txt").write_text("not a corpus file")
    assert expand_inputs([tmp_path / "d"]) == [a, b]
    assert expand_inputs([str(tmp_path / "d" / "**" / "*.jsonl*")]) == [a, b]
    # Duplicates across inputs are read once; explicit order of inputs is kept.
    assert expand_inputs([b, tmp_path / "d", a]) == [b, a]
    with pytest.raises(DataError, match="nope"):
        expand_inputs([tmp_path / "nope"])
    with pytest.raises(DataError, match="unsupported"):
        expand_inputs([tmp_path / "d" / "notes.txt"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no corpus files"):
        expand_inputs([tmp_path / "empty"])
    docs = list(iter_documents([tmp_path / "d"]))
    assert [d.file for d in docs] == [str(a)] * 2 + [str(b)] * 2


def test_streaming_memory_stays_flat(tmp_path):
    # ~24 MB of text-like records per file; reading must not hold a file in memory.
    import random

    rng = random.Random(0)
    words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9)))
             for _ in range(5000)]
    lines = [record(" ".join(rng.choices(words, k=600))) for _ in range(6000)]
    data = ("".join(line + "\n" for line in lines)).encode()
    (tmp_path / "big.jsonl.zst").write_bytes(zstandard.ZstdCompressor(level=3).compress(data))
    (tmp_path / "big.jsonl.gz").write_bytes(gzip.compress(data, compresslevel=1))
    (tmp_path / "big.jsonl").write_bytes(data)
    for name in ("big.jsonl.zst", "big.jsonl.gz", "big.jsonl"):
        tracemalloc.start()
        try:
            n = sum(1 for _ in iter_file(tmp_path / name))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert n == 6000
        assert peak < 8 * 2**20, f"{name}: peak {peak / 2**20:.1f} MiB for {len(data) / 2**20:.0f} MiB"


# ---- real data ----------------------------------------------------------------------------

# arxiv/sample_arxiv2.jsonl line 3 (arXiv 2203.15475) is a real record whose text is "\n".
FOLDER_DOCS = {"arxiv": 19, "book": 2, "c4-rp": 1000, "cc": 20, "github": 200,
               "stackexchange": 1000, "wiki": 20}


def test_redpajama_originals_by_folder(redpajama_samples):
    skipped: Counter = Counter()
    folders = [redpajama_samples / f for f in FOLDER_DOCS]
    docs = Counter(d.domain for d in iter_documents(folders, Fields(domain="@dir"), skipped))
    assert docs == FOLDER_DOCS and skipped == {R.EMPTY_TEXT: 1}
    with pytest.raises(DataError, match=r"sample_arxiv2.jsonl:3: empty_text"):
        list(iter_documents([redpajama_samples / "arxiv"], Fields(domain="@dir"), strict=True))


def test_redpajama_cc_rows_have_no_meta(redpajama_samples):
    cc = redpajama_samples / "cc"
    skipped: Counter = Counter()
    assert list(iter_documents([cc], Fields(), skipped)) == []
    assert skipped == {R.MISSING_DOMAIN: 20}
    docs = list(iter_documents([cc], Fields(domain="source")))
    assert len(docs) == 20 and all(d.domain.startswith("cc/2019-30/") for d in docs)
    # GitHub's meta.language is a list: not a domain name.
    skipped = Counter()
    docs = list(iter_documents([redpajama_samples / "github"], Fields(domain="meta.language"), skipped))
    assert docs == [] and skipped == {R.INVALID_DOMAIN: 200}
    docs = list(iter_documents([redpajama_samples / "github"], Fields(domain="meta.source")))
    assert {d.domain for d in docs} == {"github"} and len(docs) == 200


def test_slimpajama_schema_file(slimpajama_jsonl):
    skipped: Counter = Counter()
    docs = list(iter_documents([slimpajama_jsonl], Fields(), skipped))
    assert not skipped and len(docs) == 536
    assert Counter(d.domain for d in docs) == {
        "RedPajamaArXiv": 5, "RedPajamaBook": 1, "RedPajamaC4": 200,
        "RedPajamaCommonCrawl": 20, "RedPajamaGithub": 100, "RedPajamaStackExchange": 200,
        "RedPajamaWikipedia": 10,
    }
    # Texts are the originals: the same bytes as the source folders' first documents.
    first_wiki = next(d for d in docs if d.domain == "RedPajamaWikipedia")
    orig = json.loads(Path(slimpajama_jsonl).parent.joinpath("wiki/sample_wiki1.jsonl")
                      .open(encoding="utf-8").readline())
    assert first_wiki.text == orig["text"]


def test_repeated_domain_values_keep_their_outcome(tmp_path):
    """The reader remembers each domain value's check per file: a value seen again (good,
    blank, too long, a lone surrogate, a number) gets the same outcome, and past the memo's
    size every value is still checked."""
    values = [b'"A"', b'""', b'"  "', b'"' + b"d" * 300 + b'"', b'"A\\udfff"', b"7", b"true"]
    lines = [b'{"text": "t", "meta": {"redpajama_set_name": ' + v + b"}}"
             for _ in range(3) for v in values]
    lines += [json.dumps({"text": "t", "meta": {"redpajama_set_name": f"D{i}"}}).encode()
              for i in range(R._DOMAIN_MEMO + 50)]
    lines += [b'{"text": "t", "meta": {"redpajama_set_name": "' + b"e" * 300 + b'"}}'] * 2
    docs, skipped = _docs(write_lines(tmp_path / "repeat.jsonl", lines, None))
    head = [d.domain for d in docs[:9]]
    assert head == ["A", "7", "True"] * 3
    assert [d.domain for d in docs[9:]] == [f"D{i}" for i in range(R._DOMAIN_MEMO + 50)]
    assert skipped == {R.MISSING_DOMAIN: 6, R.INVALID_DOMAIN: 5, R.INVALID_UNICODE: 3}


def test_an_ascii_text_with_an_escaped_backslash_u_is_kept(tmp_path):
    """A text holding the six characters \\ud800 (an escaped backslash) is ASCII and valid;
    a non-ASCII text with a real lone surrogate is not."""
    lines = [b'{"text": "path \\\\ud800 literal", "meta": {"redpajama_set_name": "A"}}',
             b'{"text": "caf\\u00e9 \\ud800", "meta": {"redpajama_set_name": "A"}}',
             b'{"text": "caf\\u00e9 \\ud83d\\ude00", "meta": {"redpajama_set_name": "A"}}']
    docs, skipped = _docs(write_lines(tmp_path / "esc.jsonl", lines, None))
    assert [d.text for d in docs] == ["path \\ud800 literal", "caf\u00e9 \U0001F600"]
    assert skipped == {R.INVALID_UNICODE: 1}


def _outcome(got: object) -> object:
    if isinstance(got, Document):
        return ("doc", got.text, got.domain)
    return got if got is None else got[0]


def _nested(depth: int) -> bytes:
    return b'{"text": "t", "meta": {"redpajama_set_name": "A"}, "x": ' + b"[" * depth \
        + b"]" * depth + b"}"


TRICKY_LINES = [line for line, _ in BAD_LINES] + [
    b'{"text": "a", "text": "b", "meta": {"redpajama_set_name": "A"}}',  # duplicate key
    b'{"text": "t", "meta": {"redpajama_set_name": NaN}}',
    b'{"text": "t", "meta": {"redpajama_set_name": Infinity}}',
    b'{"text": "t", "meta": {"redpajama_set_name": 1e400}}',
    b'{"text": "t", "meta": {"redpajama_set_name": 0.1}}',
    b'{"text": "t", "meta": {"redpajama_set_name": -0}}',
    b'{"text": "t", "meta": {"redpajama_set_name": 123456789012345678901234567890}}',
    b'{"text": "t", "meta": {"redpajama_set_name": false}}',
    b'{"text": "t", "meta": {"redpajama_set_name": null}}',
    b'{"text": "t\\u0000\\n\\"", "meta": {"redpajama_set_name": "A"}}',
    b'{"text": "pair \\ud83d\\ude00", "meta": {"redpajama_set_name": "A"}}',
    b'{"text": "reversed \\ude00\\ud83d", "meta": {"redpajama_set_name": "A"}}',
    b'{"\\ud800": 1, "text": "t", "meta": {"redpajama_set_name": "A"}}',
    b'{"text": "tab\there", "meta": {"redpajama_set_name": "A"}}',
    b'{"text": "t", "meta": {"redpajama_set_name": "A"}}\r',
    b'\xef\xbb\xbf{"text": "t", "meta": {"redpajama_set_name": "A"}}',  # a BOM past line 1
    b'{"text": "caf\xc3\xa9 \xe2\x80\x9cq\xe2\x80\x9d", "meta": {"redpajama_set_name": "A"}}',
    b'{"text": "over \xc0\xaf long", "meta": {"redpajama_set_name": "A"}}',
    b'{"text": "encoded \xed\xa0\x80 surrogate", "meta": {"redpajama_set_name": "A"}}',
    b'{"text": "t", "meta": {"redpajama_set_name": "A"}} trailing',
    b'{"text": "t", "meta": {"redpajama_set_name": "A"},}',
    b"{'text': 't'}",
    b'  {"text": "t", "meta": {"redpajama_set_name": "A"}}  ',
    _nested(150), _nested(250), _nested(1100), _nested(30_000),
]


def test_orjson_and_the_standard_parser_agree_on_every_line(monkeypatch):
    """Lines are parsed by orjson, and by Python's json where orjson refuses one: the outcome
    (document or skip reason) must be what Python's json alone gives, line by line."""
    fields = Fields()
    fast = [_outcome(R._parse_line(line, fields, "f", 2)) for line in TRICKY_LINES]

    def refuse(_raw: bytes) -> None:
        raise R.orjson.JSONDecodeError("refused", "", 0)

    monkeypatch.setattr(R.orjson, "loads", refuse)
    slow = [_outcome(R._parse_line(line, fields, "f", 2)) for line in TRICKY_LINES]
    assert fast == slow
    assert {o[0] if isinstance(o, tuple) else o for o in slow} >= {
        "doc", R.MALFORMED_JSON, R.INVALID_UNICODE, R.INVALID_UTF8, R.TOO_DEEP}
