"""A picklable tokenizer spec for worker processes, loaded without importing transformers.

``AutoTokenizer`` costs seconds of CPU per process (importing transformers), which would
dominate a data build that tokenizes only what selection needs. When a tokenizer folder
has ``tokenizer.json`` we load the Rust tokenizer directly and read BOS/EOS from
``tokenizer_config.json`` (``longctx.data.tokenizer.plain_special_ids``, the same rule
``load_tokenizer`` uses), so the result is the same :class:`~longctx.data.tokenizer.Tokenizer`
(same ids, same content fingerprint) that ``load_tokenizer`` gives. Anything else falls back
to ``load_tokenizer``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from longctx.data.tokenizer import (
    Tokenizer,
    load_tokenizer,
    plain_special_ids,
    resolve_tokenizer_dir,
    rust_tokenizer,
    specials_per_doc,
)


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
        backend = rust_tokenizer(Path(self.folder) / "tokenizer.json")
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
        return specials_per_doc(self.bos_id, self.eos_id, self.add_bos, self.add_eos)


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
    ids = plain_special_ids(folder)
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
