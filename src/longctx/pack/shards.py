"""The packed shard format: Arrow IPC *stream* files plus ``manifest.json`` beside them.

One row is one training sequence of exactly ``seq_len`` tokens:

- ``input_ids``  fixed_size_list<uint16|uint32>[seq_len]
- ``doc_offsets`` list<int32>: piece boundaries, starts at 0, ends at seq_len
- ``doc_domains`` list<int16>: one domain index per piece (into manifest ``domain_vocab``);
  list<int32> when the vocabulary has more than 32,768 domains (readers accept both)
- ``continues``   bool: the first piece continues a document begun in the previous row,
  so its first token is *not* a document start (matters for ``--doc-mask``).

Optional provenance columns (``data build`` writes them; readers that do not know them
ignore them): ``piece_file`` list<int32> (index into manifest ``files``), ``piece_line``
list<int64> (1-based line/row of the document in that file), ``piece_start`` list<int64>
(token offset of the piece inside its document's token sequence).

HF ``datasets.Dataset.from_file`` opens these files in place; we read them with pyarrow
memory maps so training and evaluation never copy a shard into RAM.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from longctx.data.readers import domain_code_dtype
from longctx.errors import LongctxError
from longctx.stage import MANIFEST, read_manifest, verified_file

FORMAT_VERSION = 1


class ShardError(LongctxError):
    pass


PROVENANCE_COLUMNS = {
    "piece_file": pa.int32(),
    "piece_line": pa.int64(),
    "piece_start": pa.int64(),
}


def shard_schema(
    seq_len: int, dtype: np.dtype, provenance: bool = False, num_domains: int | None = None
) -> pa.Schema:
    """The shard columns; domain codes are int16 unless ``num_domains`` needs int32."""
    id_type = pa.uint16() if np.dtype(dtype) == np.uint16 else pa.uint32()
    fields = [
        pa.field("input_ids", pa.list_(id_type, seq_len)),
        pa.field("doc_offsets", pa.list_(pa.int32())),
        pa.field("doc_domains", pa.list_(_domain_type(num_domains))),
        pa.field("continues", pa.bool_()),
    ]
    if provenance:
        fields += [pa.field(k, pa.list_(t)) for k, t in PROVENANCE_COLUMNS.items()]
    return pa.schema(fields)


def _domain_type(num_domains: int | None) -> pa.DataType:
    return pa.from_numpy_dtype(domain_code_dtype(num_domains or 0))


class ShardWriter:
    """Append rows to one Arrow IPC stream file; ``close()`` returns rows and sha256.

    ``num_domains`` (the size of the domain vocabulary) sizes the domain codes."""

    def __init__(
        self,
        path: str | Path,
        seq_len: int,
        dtype: np.dtype,
        provenance: bool = False,
        num_domains: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.seq_len = seq_len
        self.dtype = np.dtype(dtype)
        self.provenance = provenance
        self.schema = shard_schema(seq_len, self.dtype, provenance, num_domains)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._sink = pa.OSFile(str(self.path), "wb")
        self._writer = pa.ipc.new_stream(self._sink, self.schema)
        self.rows = 0

    def write(
        self,
        input_ids: np.ndarray,
        doc_offsets: Sequence[Sequence[int]],
        doc_domains: Sequence[Sequence[int]],
        continues: Sequence[bool],
        provenance: dict[str, Sequence[Sequence[int]]] | None = None,
    ) -> None:
        """Write a batch: ``input_ids`` has shape (rows, seq_len).

        ``provenance`` (required when the writer was opened with ``provenance=True``) maps
        each of ``PROVENANCE_COLUMNS`` to one list per row, one value per piece.
        """
        ids = np.ascontiguousarray(input_ids, dtype=self.dtype)
        if ids.ndim != 2 or ids.shape[1] != self.seq_len:
            raise ShardError(f"input_ids must be (rows, {self.seq_len}), got {ids.shape}")
        n = ids.shape[0]
        if not (len(doc_offsets) == len(doc_domains) == len(continues) == n):
            raise ShardError("input_ids, doc_offsets, doc_domains and continues differ in rows")
        columns = [
            pa.FixedSizeListArray.from_arrays(
                _from_numpy(ids.reshape(-1), self.schema.field("input_ids").type.value_type),
                self.seq_len),
            _list_column(doc_offsets, self.schema.field("doc_offsets").type),
            _domain_column(doc_domains, self.schema.field("doc_domains").type),
            _bool_column(continues),
        ]
        if self.provenance:
            if provenance is None or set(provenance) != set(PROVENANCE_COLUMNS):
                raise ShardError(f"provenance columns required: {sorted(PROVENANCE_COLUMNS)}")
            for name, tp in PROVENANCE_COLUMNS.items():
                values = provenance[name]
                if len(values) != n:
                    raise ShardError(f"provenance column {name} has {len(values)} rows, not {n}")
                columns.append(_list_column(values, pa.list_(tp)))
        batch = pa.record_batch(columns, schema=self.schema)
        self._writer.write_batch(batch)
        self.rows += n

    def close(self) -> dict[str, Any]:
        self._writer.close()
        self._sink.close()
        h = hashlib.sha256()
        with open(self.path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        return {"path": self.path.name, "rows": self.rows, "sha256": h.hexdigest()}


# Columns are built from numpy buffers, not with pa.array: pa.array checks its input
# against pandas types and so imports pandas (~0.2 CPU-s of every build).


def _from_numpy(values: np.ndarray, tp: pa.DataType) -> pa.Array:
    """A null-free Arrow array over ``values`` (already of ``tp``'s numpy dtype)."""
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(tp, len(values), [None, pa.py_buffer(values)])


def _list_column(rows: Sequence[Sequence[int]], tp: pa.ListType) -> pa.Array:
    """list<int> column; OverflowError when a value does not fit ``tp``'s integers."""
    dtype = np.dtype(tp.value_type.to_pandas_dtype())
    parts = [np.asarray(r, dtype=np.int64).reshape(-1) for r in rows]
    values = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    limits = np.iinfo(dtype)
    if len(values) and (int(values.min()) < limits.min or int(values.max()) > limits.max):
        raise OverflowError(f"a value does not fit {tp.value_type}")
    offsets = np.zeros(len(parts) + 1, dtype=np.int32)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    return pa.ListArray.from_arrays(_from_numpy(offsets, pa.int32()),
                                    _from_numpy(values.astype(dtype), tp.value_type), type=tp)


def _bool_column(flags: Sequence[bool]) -> pa.Array:
    bits = np.packbits(np.asarray(flags, dtype=bool), bitorder="little")
    return pa.Array.from_buffers(pa.bool_(), len(flags), [None, pa.py_buffer(bits)])


def _domain_column(doc_domains: Sequence[Sequence[int]], tp: pa.ListType) -> pa.Array:
    try:
        return _list_column(doc_domains, tp)
    except OverflowError:
        raise ShardError(
            f"a domain code does not fit {tp.value_type}: open ShardWriter with "
            "num_domains=len(domain_vocab)"
        ) from None


@dataclass(frozen=True)
class PackedRow:
    input_ids: np.ndarray  # (seq_len,)
    doc_offsets: np.ndarray  # (pieces + 1,), int32
    doc_domains: np.ndarray  # (pieces,), int16 (int32 past 32,768 domains)
    continues: bool

    def position_ids(self) -> np.ndarray:
        """Positions restarting at 0 at each piece boundary (for per-document RoPE)."""
        pos = np.arange(len(self.input_ids), dtype=np.int64)
        starts = self.doc_offsets[:-1]
        lengths = np.diff(self.doc_offsets)
        return pos - np.repeat(starts, lengths)

    def doc_start_mask(self) -> np.ndarray:
        """True at tokens that begin a document (a continued first piece does not)."""
        mask = np.zeros(len(self.input_ids), dtype=bool)
        starts = self.doc_offsets[:-1]
        if self.continues and len(starts):
            starts = starts[1:]
        mask[starts] = True
        return mask


class PackedDataset:
    """Random access over the rows of a packed folder (memory-mapped, zero-copy).

    Shards are listed in the manifest order; ``len`` and indices run across all shards.
    Every shard is confined to the folder and checked against its recorded sha256 before it
    is read. ``stages`` are the manifests accepted: training rows only by default, so a
    held-out folder (``data.heldout``) cannot be trained on.
    """

    def __init__(self, folder: str | Path, stages: tuple[str, ...] = ("data.build",)) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ShardError(f"packed data folder not found: {self.folder}")
        manifest = read_manifest(self.folder)
        if manifest is None:
            why = "is torn or not a JSON object" if (self.folder / MANIFEST).exists() else "is missing"
            raise ShardError(
                f"{self.folder}: manifest.json {why} (not a finished `longctx data build`?)"
            )
        if manifest.get("stage") not in stages:
            raise ShardError(
                f"{self.folder} is not packed data: its manifest says stage "
                f"{manifest.get('stage')!r} (expected the output of `longctx data build`)"
            )
        if manifest.get("status", "done") != "done":
            raise ShardError(
                f"{self.folder}: build did not finish (manifest status {manifest.get('status')!r})"
            )
        shards = manifest.get("shards")
        try:
            self.seq_len = int(manifest["seq_len"])
            if self.seq_len <= 0 or not isinstance(shards, list):
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise ShardError(f"{self.folder / MANIFEST}: seq_len or shards missing or invalid") from None
        self.manifest = manifest
        self.domain_vocab: list[str] = list(manifest.get("domain_vocab", []))
        self._tables: list[pa.Table] = []
        self._starts: list[int] = []
        total = 0
        for entry in shards:
            if not isinstance(entry, dict):
                raise ShardError(f"{self.folder / MANIFEST}: shard entry {entry!r} is not an object")
            path = verified_file(self.folder, entry.get("path"), entry.get("sha256"), what="shard")
            try:
                source = pa.memory_map(str(path), "r")
                table = pa.ipc.open_stream(source).read_all()
            except (OSError, pa.ArrowException) as e:
                raise ShardError(f"{path}: not a readable Arrow stream ({e})") from None
            if "input_ids" not in table.column_names or (
                table.schema.field("input_ids").type.list_size != self.seq_len
            ):
                raise ShardError(f"{path}: rows are not input_ids of length {self.seq_len}")
            self._tables.append(table)
            self._starts.append(total)
            total += table.num_rows
        self._len = total

    def __len__(self) -> int:
        return self._len

    @property
    def tokenizer_sha256(self) -> str | None:
        return (self.manifest.get("tokenizer") or {}).get("sha256")

    def _locate(self, i: int) -> tuple[pa.Table, int]:
        if not 0 <= i < self._len:
            raise IndexError(f"row {i} out of range (0..{self._len - 1})")
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        return self._tables[k], i - self._starts[k]

    def input_ids(self, i: int) -> np.ndarray:
        table, j = self._locate(i)
        chunk_col = table.column("input_ids")
        # find the chunk holding row j without concatenating (keeps the memory map zero-copy)
        for chunk in chunk_col.chunks:
            if j < len(chunk):
                values = chunk.values
                start = (chunk.offset + j) * self.seq_len
                return values.slice(start, self.seq_len).to_numpy(zero_copy_only=True)
            j -= len(chunk)
        raise IndexError(i)

    def row(self, i: int) -> PackedRow:
        table, j = self._locate(i)
        offsets = np.asarray(table.column("doc_offsets")[j].as_py(), dtype=np.int32)
        dom_type = table.schema.field("doc_domains").type.value_type.to_pandas_dtype()
        domains = np.asarray(table.column("doc_domains")[j].as_py(), dtype=dom_type)
        cont = bool(table.column("continues")[j].as_py())
        return PackedRow(self.input_ids(i), offsets, domains, cont)


def check_tokenizer_match(
    data_sha: str | None, model_sha: str, *, data_dir: Any, model: Any
) -> None:
    """Refuse to combine data and a model whose tokenizers differ (clear message, no work done)."""
    if data_sha is None:
        raise ShardError(f"{data_dir}: manifest records no tokenizer sha256; rebuild the data")
    if data_sha != model_sha:
        raise ShardError(
            f"tokenizer mismatch: data {data_dir} was packed with tokenizer sha256 {data_sha[:12]}…, "
            f"but model {model} has tokenizer sha256 {model_sha[:12]}…; rebuild the data with "
            f"--tokenizer pointing at the model's tokenizer"
        )
