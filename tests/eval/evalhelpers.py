"""Helpers of the eval tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SEQ_LEN = 256
DOCS_PER_DOMAIN = 2
MAX_DOC_TOKENS = 120


def build_packed(folder: Path, jsonl: Path, tokenizer, *, tokenizer_sha: str | None = None) -> Path:
    """Pack the first DOCS_PER_DOMAIN docs of every domain (cut to MAX_DOC_TOKENS) into rows
    of SEQ_LEN tokens with ShardWriter, continuing documents across rows like data build."""
    from longctx.data.readers import iter_documents
    from longctx.pack.shards import ShardWriter
    from longctx.stage import write_manifest

    picked: dict[str, list[str]] = {}
    for doc in iter_documents([jsonl]):
        if len(picked.setdefault(doc.domain, [])) < DOCS_PER_DOMAIN:
            picked[doc.domain].append(doc.text)
    vocab = sorted(picked)
    stream: list[tuple[np.ndarray, int]] = []
    for d, name in enumerate(vocab):
        for ids in tokenizer.encode_documents(picked[name]):
            stream.append((ids[:MAX_DOC_TOKENS], d))
    rows, offsets, domains, continues = [], [], [], []
    buf: list[int] = []
    offs, doms = [0], []
    cont = False
    for ids, d in stream:
        ids = ids.tolist()
        while ids:
            take = ids[: SEQ_LEN - len(buf)]
            ids = ids[len(take) :]
            buf += take
            offs.append(len(buf))
            doms.append(d)
            if len(buf) == SEQ_LEN:
                rows.append(buf)
                offsets.append(offs)
                domains.append(doms)
                continues.append(cont)
                cont = bool(ids)
                buf, offs, doms = [], [0], []
    writer = ShardWriter(folder / "shard-00000.arrow", SEQ_LEN, tokenizer.dtype)
    writer.write(np.asarray(rows), offsets, domains, continues)
    entry = writer.close()
    write_manifest(
        folder,
        {
            "stage": "data.build",
            "status": "done",
            "seq_len": SEQ_LEN,
            "num_sequences": len(rows),
            "domain_vocab": vocab,
            "shards": [entry],
            "tokenizer": {"name": tokenizer.name, "sha256": tokenizer_sha or tokenizer.fingerprint},
        },
    )
    return folder
