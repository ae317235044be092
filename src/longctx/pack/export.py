"""``data export``: packed shards -> the paper's released-dataset schema (parquet or JSONL).

The paper's dataset (``yaofu/slimpajama-per-source-length-upsample``; FACTS.md §2) has one
row per sequence with ``input_ids`` (int64 list of seq_len), ``labels`` (one int64: the
first token of the *next* row) and ``source`` (list of ``{source, start, end}``: each
document piece's domain and chunk-relative, end-exclusive span). Our last row has no next
row; its ``labels`` is -100 (the usual ignore index) and the export manifest says so.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from longctx.errors import LongctxError
from longctx.pack.shards import PackedDataset
from longctx.stage import (
    Timer,
    claimed_stage,
    config_hash,
    is_done,
    read_manifest,
    sha256_file,
    write_manifest,
)

STAGE = "data.export"
FORMATS = ("paper", "jsonl")
LAST_LABEL = -100
BATCH_ROWS = 16

SOURCE_TYPE = pa.struct(
    [pa.field("source", pa.string()), pa.field("start", pa.int64()), pa.field("end", pa.int64())]
)
PAPER_SCHEMA = pa.schema(
    [
        pa.field("input_ids", pa.list_(pa.int64())),
        pa.field("labels", pa.int64()),
        pa.field("source", pa.list_(SOURCE_TYPE)),
    ]
)


class ExportError(LongctxError):
    pass


def _shard_rows(data: PackedDataset) -> Iterator[tuple[int, int, int]]:
    """(shard index, first global row, rows) per shard, in manifest order."""
    start = 0
    for k, entry in enumerate(data.manifest["shards"]):
        yield k, start, int(entry["rows"])
        start += int(entry["rows"])


def _batch(data: PackedDataset, r0: int, r1: int) -> dict[str, Any]:
    """Rows r0..r1 in the paper's layout (numpy ids, scalar labels, source span lists)."""
    ids = np.stack([data.input_ids(i) for i in range(r0, r1)]).astype(np.int64)
    labels = []
    sources = []
    for i in range(r0, r1):
        labels.append(int(data.input_ids(i + 1)[0]) if i + 1 < len(data) else LAST_LABEL)
        row = data.row(i)
        offs = row.doc_offsets
        sources.append(
            [
                {"source": data.domain_vocab[int(d)], "start": int(offs[k]), "end": int(offs[k + 1])}
                for k, d in enumerate(row.doc_domains)
            ]
        )
    return {"input_ids": ids, "labels": labels, "source": sources}


def _write_parquet(path: Path, data: PackedDataset, r0: int, n: int) -> None:
    import pyarrow.parquet as pq

    with pq.ParquetWriter(str(path), PAPER_SCHEMA) as w:
        for a in range(r0, r0 + n, BATCH_ROWS):
            b = _batch(data, a, min(a + BATCH_ROWS, r0 + n))
            ids = b["input_ids"]
            offsets = pa.array(np.arange(0, ids.size + 1, data.seq_len, dtype=np.int32))
            table = pa.table(
                {
                    "input_ids": pa.ListArray.from_arrays(offsets, pa.array(ids.reshape(-1))),
                    "labels": pa.array(b["labels"], type=pa.int64()),
                    "source": pa.array(b["source"], type=pa.list_(SOURCE_TYPE)),
                },
                schema=PAPER_SCHEMA,
            )
            w.write_table(table)


def _write_jsonl(path: Path, data: PackedDataset, r0: int, n: int) -> None:
    with open(path, "w") as f:
        for a in range(r0, r0 + n, BATCH_ROWS):
            b = _batch(data, a, min(a + BATCH_ROWS, r0 + n))
            for ids, label, src in zip(b["input_ids"], b["labels"], b["source"], strict=True):
                rec = {"input_ids": ids.tolist(), "labels": label, "source": src}
                f.write(json.dumps(rec, separators=(",", ":")) + "\n")


def run_export(data_dir: str | Path, out: str | Path, fmt: str = "paper",
               force: bool = False) -> dict[str, Any]:
    """Export a packed folder; returns the export manifest."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    data = PackedDataset(data_dir)
    out = Path(out)
    cfg = {"format": fmt, "source_config_hash": data.manifest.get("config_hash"),
           "shards": [s["sha256"] for s in data.manifest["shards"]]}
    cfg_hash = config_hash(cfg)
    if not force and is_done(out, cfg_hash):
        return read_manifest(out) or {}
    with claimed_stage(out, STAGE, cfg_hash, force=force, inputs=[data_dir]):
        manifest = _export(data, data_dir, out, fmt, cfg, cfg_hash)
        write_manifest(out, manifest)
    return manifest


def _export(data: PackedDataset, data_dir: str | Path, out: Path, fmt: str,
            cfg: dict[str, Any], cfg_hash: str) -> dict[str, Any]:
    with Timer() as timer:
        n_shards = len(data.manifest["shards"])
        files = []
        for k, r0, n in _shard_rows(data):
            if fmt == "paper":
                path = out / f"train-{k:05d}-of-{n_shards:05d}.parquet"
                _write_parquet(path, data, r0, n)
            else:
                path = out / f"train-{k:05d}-of-{n_shards:05d}.jsonl"
                _write_jsonl(path, data, r0, n)
            files.append({"path": path.name, "rows": n, "sha256": sha256_file(path)})
        manifest = {
            "stage": STAGE,
            "status": "done",
            "format": fmt,
            "config": cfg,
            "config_hash": cfg_hash,
            "source": str(Path(data_dir)),
            "source_manifest_sha256": hashlib.sha256(
                json.dumps(data.manifest, sort_keys=True).encode()).hexdigest(),
            "seq_len": data.seq_len,
            "num_sequences": len(data),
            "last_row_label": LAST_LABEL,
            "tokenizer": data.manifest.get("tokenizer"),
            "files": files,
        }
    manifest["seconds"] = {"wall": round(timer.wall, 3), "cpu": round(timer.cpu, 3)}
    return manifest
