"""Independent checks of a packed folder against the corpus and the tokenizer."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from longctx.pack.shards import PackedDataset


def read_line(path: Path, line: int) -> dict:
    with open(path, "rb") as f:
        for i, raw in enumerate(f, start=1):
            if i == line:
                return json.loads(raw)
    raise AssertionError(f"{path} has no line {line}")


def verify_against_tokenizer(out: Path, base: Path, tok, text_field=("text",),
                             domain_field=("meta", "redpajama_set_name")) -> dict:
    """Re-tokenize every packed document from the corpus and compare it with the shards.

    Returns per-domain tokens and long tokens recounted from the shards (not the manifest).
    """
    data = PackedDataset(out)
    man = data.manifest
    files = [base / f["path"] for f in man["files"]]
    T = man["long_threshold"]
    cache: dict = {}
    tokens: Counter = Counter()
    long_tokens: Counter = Counter()
    table_cache = {}
    import pyarrow as pa

    for k, entry in enumerate(man["shards"]):
        table_cache[k] = pa.ipc.open_stream(pa.memory_map(str(out / entry["path"]))).read_all()
    row = 0
    for table in table_cache.values():
        pf = table.column("piece_file").to_pylist()
        pl = table.column("piece_line").to_pylist()
        ps = table.column("piece_start").to_pylist()
        for j in range(table.num_rows):
            r = data.row(row)
            assert r.doc_offsets[0] == 0 and r.doc_offsets[-1] == data.seq_len
            for p in range(len(r.doc_domains)):
                key = (pf[j][p], pl[j][p])
                if key not in cache:
                    rec = read_line(files[key[0]], key[1])
                    text = rec
                    for f in text_field:
                        text = text[f]
                    dom = rec
                    for f in domain_field:
                        dom = dom[f]
                    cache[key] = (tok.encode_documents([text])[0], dom, text)
                ids, dom, _ = cache[key]
                a, b = int(r.doc_offsets[p]), int(r.doc_offsets[p + 1])
                s = ps[j][p]
                np.testing.assert_array_equal(r.input_ids[a:b], ids[s : s + b - a])
                assert data.domain_vocab[int(r.doc_domains[p])] == dom
                tokens[dom] += b - a
                if len(ids) >= T:
                    long_tokens[dom] += b - a
            row += 1
    return {"tokens": tokens, "long_tokens": long_tokens, "docs": cache}
