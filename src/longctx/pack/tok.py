"""A picklable tokenizer spec for worker processes, loaded without importing transformers.

``AutoTokenizer`` costs seconds of CPU per process (importing transformers), which would
dominate a data build that tokenizes only what selection needs. When a tokenizer folder
has ``tokenizer.json`` we load the Rust tokenizer directly and read BOS/EOS from
``tokenizer_config.json``; the result is the same :class:`longctx.data.tokenizer.Tokenizer`
(same ids, same content fingerprint) that ``load_tokenizer`` gives. Anything else falls back
to ``load_tokenizer``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longctx.data.tokenizer import Tokenizer, load_tokenizer, resolve_tokenizer_dir


@dataclass(frozen=True)
class TokenizerSpec:
    """Everything a worker needs to rebuild the tokenizer (paths and ids, not objects)."""

    name: str
    folder: str
    bos_id: int | None
    eos_id: int | None
    add_bos: bool = True
    add_eos: bool = False

    def load(self) -> Tokenizer:
        backend = _rust_tokenizer(str(Path(self.folder) / "tokenizer.json"))
        return Tokenizer(
            name=self.name,
            backend=backend,
            bos_id=self.bos_id,
            eos_id=self.eos_id,
            source_dir=Path(self.folder),
            add_bos=self.add_bos,
            add_eos=self.add_eos,
        )

    @property
    def specials_per_doc(self) -> int:
        return int(self.add_bos and self.bos_id is not None) + int(
            self.add_eos and self.eos_id is not None
        )


_RUST: dict[str, Any] = {}


def _rust_tokenizer(path: str) -> Any:
    """Load a tokenizer.json once per process (about 0.3 CPU-s each time otherwise)."""
    tok = _RUST.get(path)
    if tok is None:
        from tokenizers import Tokenizer as RustTokenizer

        tok = _RUST[path] = RustTokenizer.from_file(path)
    return tok


def _token_content(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _fast_ids(folder: Path) -> tuple[int | None, int | None] | None:
    """BOS/EOS ids from tokenizer_config.json, or None when they cannot be read plainly."""
    tj, tc = folder / "tokenizer.json", folder / "tokenizer_config.json"
    if not tj.is_file():
        return None
    if not tc.is_file():
        return None, None  # load_tokenizer treats a bare tokenizer.json the same way
    try:
        cfg = json.loads(tc.read_text())
    except (OSError, ValueError):
        return None
    backend = _rust_tokenizer(str(tj))
    ids = []
    for key in ("bos_token", "eos_token"):
        content = _token_content(cfg.get(key))
        if content is None:
            if cfg.get(key) is not None:
                return None
            ids.append(None)
            continue
        tid = backend.token_to_id(content)
        if tid is None:
            return None
        ids.append(int(tid))
    return ids[0], ids[1]


def resolve_spec(
    spec: str | None,
    *,
    add_bos: bool = True,
    add_eos: bool = False,
    cache_dir: str | Path | None = None,
) -> TokenizerSpec:
    """A TokenizerSpec for ``--tokenizer`` (None = embedded SmolLM2), cheap when possible.

    A folder without a plain ``tokenizer.json`` (e.g. a SentencePiece ``tokenizer.model``)
    is loaded once through transformers here; its converted Rust tokenizer is written to
    ``cache_dir/tokenizer.json`` so workers load that instead.
    """
    name, folder = resolve_tokenizer_dir(spec)
    ids = _fast_ids(folder)
    if ids is not None:
        return TokenizerSpec(name, str(folder), ids[0], ids[1], add_bos, add_eos)
    tok = load_tokenizer(spec, add_bos=add_bos, add_eos=add_eos)
    if cache_dir is None:
        import tempfile

        cache_dir = tempfile.mkdtemp(prefix="longctx-tokenizer-")
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / "tokenizer.json.tmp"
    tmp.write_text(tok.backend.to_str())
    tmp.replace(cache / "tokenizer.json")
    return TokenizerSpec(name, str(cache), tok.bos_id, tok.eos_id, add_bos, add_eos)
