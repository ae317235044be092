"""Tiny packed folders written directly with the shard format (no dependency on `data build`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from longctx.pack.shards import ShardWriter
from longctx.stage import write_manifest

DOMAINS = ["Book", "ArXiv"]


def write_packed(
    folder: Path, *, rows: int = 16, seq_len: int = 128, seed: int = 0, shards: int = 2,
    tokenizer: dict | None = None, vocab_lo: int = 200, vocab_hi: int = 260, bos: int = 1,
) -> Path:
    """Rows of documents (BOS + ids drawn from a small range, with a repeating motif so a tiny
    model can learn something in a few steps), split over ``shards`` files, plus a manifest."""
    from longctx.data.tokenizer import load_tokenizer

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    per = -(-rows // shards)
    made = 0
    for s in range(shards):
        n = min(per, rows - made)
        if n <= 0:
            break
        w = ShardWriter(folder / f"shard-{s:05d}.arrow", seq_len, np.uint16)
        ids = np.empty((n, seq_len), dtype=np.uint16)
        offsets, domains, conts = [], [], []
        for r in range(n):
            cuts = sorted(rng.choice(np.arange(8, seq_len - 8), size=2, replace=False).tolist())
            offs = [0, *cuts, seq_len]
            row = []
            for a, b in zip(offs[:-1], offs[1:], strict=False):
                motif = rng.integers(vocab_lo, vocab_hi, size=4)
                body = np.resize(motif, b - a - 1)
                row.extend([bos, *body.tolist()])
            ids[r] = row
            offsets.append(offs)
            domains.append(rng.integers(0, len(DOMAINS), size=len(offs) - 1).tolist())
            conts.append(bool(r % 2))
        w.write(ids, offsets, domains, conts)
        entries.append(w.close())
        made += n
    tok = tokenizer or load_tokenizer(None).describe()
    write_manifest(folder, {
        "stage": "data.build", "status": "done", "format_version": 1, "seq_len": seq_len,
        "dtype": "uint16", "num_sequences": rows, "domain_vocab": DOMAINS, "shards": entries,
        "tokenizer": {"name": tok["name"], "sha256": tok["sha256"]},
    })
    return folder
