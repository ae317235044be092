"""Tokenizer loading, identity and fast batched encoding.

We load anything ``AutoTokenizer`` accepts locally (a plain ``tokenizer.json`` folder without
importing transformers) and encode with the Rust ``tokenizers`` backend directly: ``encode_batch`` without special tokens, then add BOS/EOS
ourselves so the policy is explicit and identical for every tokenizer family.

Any document size: a text over ``piece_chars`` characters is encoded in pieces split at
verified seams (see ``_piecewise_ids``), with the same ids as encoding it whole, so a 50 MB
document does not hold the whole text's encoding (tokens, offsets, normalization
alignments) in memory at once.

Identity: ``fingerprint`` hashes the tokenizer's *content* (model vocab/merges, added
tokens, BOS/EOS ids), not its files, so a tokenizer re-saved next to a trained model still
matches the data it was trained on.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from longctx.errors import LongctxError

# Longer texts are encoded in pieces of about this many characters. Measured on a 50 MB
# document: 256K-char pieces add nothing to the peak that reading the text has (~500 MB),
# 1M-char pieces add ~180 MB; both take the same CPU.
PIECE_CHARS = 1 << 18
SEAM_WINDOW = 128  # characters each side of a seam its check re-encodes, beyond added tokens
SEAM_TRIES = 16  # candidate seams checked per piece before the piece grows by another piece
# Candidate seams: a single space or newline between two non-whitespace characters. No
# regex pre-tokenizer match (GPT-2 / byte-level BPE style) spans such a position, and
# LLaMA-2's SentencePiece vocabulary has no piece with a newline or with '▁' after another
# character, so its BPE merges cannot cross one either. Other tokenizers need not be so
# kind: every candidate is checked (``_seam_holds``) and the next one tried if it fails.
_SEAM = re.compile(r"(?<=\S)[ \n](?=\S)")

Encode = Callable[..., list]  # backend.encode_batch or encode_batch_fast


def document_affixes(
    bos_id: int | None, eos_id: int | None, add_bos: bool, add_eos: bool
) -> tuple[list[int], list[int]]:
    """The one BOS/EOS rule: (ids before, ids after) every document. BOS when ``add_bos`` and
    the tokenizer has one, EOS likewise (the paper: BOS per document, no EOS)."""
    pre = [bos_id] if add_bos and bos_id is not None else []
    post = [eos_id] if add_eos and eos_id is not None else []
    return pre, post


def specials_per_doc(bos_id: int | None, eos_id: int | None, add_bos: bool, add_eos: bool) -> int:
    """Tokens :func:`document_affixes` adds to each document."""
    pre, post = document_affixes(bos_id, eos_id, add_bos, add_eos)
    return len(pre) + len(post)


class TokenizerError(LongctxError):
    pass


@dataclass
class Tokenizer:
    """A loaded tokenizer plus the document-boundary policy used to encode documents."""

    name: str
    backend: Any  # tokenizers.Tokenizer
    bos_id: int | None
    eos_id: int | None
    source_dir: Path | None = None
    add_bos: bool = True
    add_eos: bool = False
    piece_chars: int = PIECE_CHARS
    _hf: Any = field(default=None, repr=False)

    @property
    def vocab_size(self) -> int:
        return int(self.backend.get_vocab_size(with_added_tokens=True))

    @property
    def dtype(self) -> np.dtype:
        """Smallest unsigned dtype that holds every id (uint16 up to 65,536 ids)."""
        return np.dtype(np.uint16) if self.vocab_size <= 1 << 16 else np.dtype(np.uint32)

    def __reduce__(self) -> tuple:
        """Pickle as the backend's JSON (no transformers object): cheap to send to workers,
        and a worker rebuilds the exact same Rust tokenizer without importing transformers."""
        return (
            _rebuild,
            (
                self.name,
                self.backend.to_str(),
                self.bos_id,
                self.eos_id,
                None if self.source_dir is None else str(self.source_dir),
                self.add_bos,
                self.add_eos,
                self.piece_chars,
            ),
        )

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of what decides token ids: normalizer, pre-tokenizer, model, added tokens,
        BOS/EOS ids (not file names or formatting, so a re-saved copy matches)."""
        spec = json.loads(self.backend.to_str())
        content = {
            "normalizer": spec.get("normalizer"),
            "pre_tokenizer": spec.get("pre_tokenizer"),
            "model": spec.get("model"),
            "added_tokens": [
                (t.get("id"), t.get("content")) for t in spec.get("added_tokens") or []
            ],
            "bos": self.bos_id,
            "eos": self.eos_id,
        }
        blob = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    @property
    def hf(self) -> Any:
        """The transformers tokenizer (for decode, chat templates and save_pretrained)."""
        if self._hf is None:
            from transformers import AutoTokenizer

            self._hf = AutoTokenizer.from_pretrained(str(self.source_dir), trust_remote_code=False)
        return self._hf

    @cached_property
    def seam_window(self) -> int:
        """Characters each side of a seam that its check re-encodes: SEAM_WINDOW plus the
        longest added token, so an added token that contains a seam is inside the window."""
        added = self.backend.get_added_tokens_decoder().values()
        return SEAM_WINDOW + max((len(t.content) for t in added), default=0)

    def _encoder(self, fast: bool) -> Encode:
        """``encode_batch_fast`` where asked and available (same ids, no character offsets)."""
        if fast:
            return getattr(self.backend, "encode_batch_fast", None) or self.backend.encode_batch
        return self.backend.encode_batch

    def _plain_encoded(self, texts: Sequence[str], encode: Encode) -> list[Any]:
        """Per text, without special tokens: its ``Encoding`` up to ``piece_chars`` (one batch
        call), an id array of ``dtype`` for a longer text (encoded in pieces). ``len()`` of
        either is the token count, so a caller that needs only counts builds no id lists."""
        out: list[Any] = [None] * len(texts)
        short = [i for i, t in enumerate(texts) if len(t) <= self.piece_chars]
        if short:
            encs = encode([texts[i] for i in short], add_special_tokens=False)
            for i, e in zip(short, encs, strict=True):
                out[i] = e
        for i, t in enumerate(texts):
            if out[i] is None:
                out[i] = self._piecewise_ids(t, encode)
        return out

    def _plain_ids(self, texts: Sequence[str], encode: Encode) -> list[list[int] | np.ndarray]:
        """Ids without special tokens: a list per text up to ``piece_chars``, an array of
        ``dtype`` per longer text."""
        encoded = self._plain_encoded(texts, encode)
        return [x if isinstance(x, np.ndarray) else x.ids for x in encoded]

    def _piecewise_ids(self, text: str, encode: Encode) -> np.ndarray:
        """Ids of a long text encoded span by span between verified seams: the ids of encoding
        it whole, while only one span's encoding is in memory at a time."""
        bounds = [0, *self._seams(text, encode), len(text)]
        done: list[tuple[int, np.ndarray]] = []  # (span start, its ids)
        for start, end in zip(bounds, bounds[1:], strict=False):
            ids = self._span_ids(text, start, end, encode)
            while ids is None:  # this seam is no token boundary after all: join the span before
                start = done.pop()[0]
                ids = self._span_ids(text, start, end, encode)
            done.append((start, ids))
        return np.concatenate([ids for _, ids in done])

    def _span_ids(self, text: str, start: int, end: int, encode: Encode) -> np.ndarray | None:
        """Ids of ``text[start:end]`` as they are inside the whole text (None: not separable)."""
        if start == 0:
            chunk = text if end == len(text) else text[:end]
            return np.asarray(encode([chunk], add_special_tokens=False)[0].ids, dtype=self.dtype)
        ids = _after_anchor(text[start - 1 : end], encode)
        return None if ids is None else np.asarray(ids, dtype=self.dtype)

    def _seams(self, text: str, encode: Encode) -> list[int]:
        """Verified seams about ``piece_chars`` apart. Where none of the first ``SEAM_TRIES``
        candidates in a piece's length holds, the piece grows by another piece's length (a
        text with no seam at all is encoded whole)."""
        seams: list[int] = []
        target = self.piece_chars
        while target < len(text):
            seam = self._seam_near(text, target, encode)
            if seam is None:
                target += self.piece_chars
            else:
                seams.append(seam)
                target = seam + self.piece_chars
        return seams

    def _seam_near(self, text: str, target: int, encode: Encode) -> int | None:
        """The first candidate seam at or after ``target`` that holds, if one is found soon."""
        stop = min(len(text), target + self.piece_chars)
        for tries, m in enumerate(_SEAM.finditer(text, target, stop)):
            if tries == SEAM_TRIES:
                return None
            if _seam_holds(text, m.start(), encode, self.seam_window):
                return m.start()
        return None

    def encode_plain(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids without any special tokens."""
        ids = self._plain_ids(texts, self.backend.encode_batch)
        return [x.tolist() if isinstance(x, np.ndarray) else x for x in ids]

    @property
    def special_per_doc(self) -> int:
        """Tokens the document policy adds to each document (BOS and/or EOS)."""
        return specials_per_doc(self.bos_id, self.eos_id, self.add_bos, self.add_eos)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts of whole documents with the BOS/EOS policy applied (= lengths of
        ``encode_documents``), without building id arrays or offsets."""
        return [n for n, _ in self.encode_documents_where(texts, lambda k, n: False, fast=True)]

    def encode_documents(self, texts: Sequence[str], *, fast: bool = False) -> list[np.ndarray]:
        """Token ids of whole documents with the BOS/EOS policy applied.

        ``fast``: through ``encode_batch_fast`` where the backend has it (same ids; it skips
        character offsets, which a data build never needs: ~25% less CPU, less memory)."""
        return [ids for _, ids in self.encode_documents_where(texts, lambda k, n: True, fast=fast)]

    def encode_documents_where(
        self, texts: Sequence[str], wanted: Callable[[int, int], bool], *, fast: bool = False
    ) -> list[tuple[int, Any]]:
        """(tokens, ids) of whole documents as ``encode_documents`` gives them, with the ids
        built only where ``wanted(position, tokens)`` (None elsewhere): a scan that keeps few
        of the documents it counts skips most of the per-token work in Python."""
        dt = self.dtype
        pre, post = document_affixes(self.bos_id, self.eos_id, self.add_bos, self.add_eos)
        extra = len(pre) + len(post)
        out: list[tuple[int, Any]] = []
        for k, enc in enumerate(self._plain_encoded(texts, self._encoder(fast))):
            n = len(enc) + extra
            if not wanted(k, n):
                out.append((n, None))
            elif isinstance(enc, np.ndarray):
                out.append((n, np.concatenate([np.asarray(pre, dt), enc, np.asarray(post, dt)])))
            else:
                ids = enc.ids
                out.append((n, np.asarray(pre + ids + post if extra else ids, dtype=dt)))
        return out

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self.backend.decode(list(map(int, ids)), skip_special_tokens=skip_special_tokens)

    def describe(self) -> dict[str, Any]:
        """The manifest's ``tokenizer`` entry."""
        return {
            "name": self.name,
            "sha256": self.fingerprint,
            "vocab_size": self.vocab_size,
            "bos_id": self.bos_id,
            "eos_id": self.eos_id,
            "add_bos": self.add_bos,
            "add_eos": self.add_eos,
        }


def _rebuild(
    name: str,
    backend_json: str,
    bos_id: int | None,
    eos_id: int | None,
    source_dir: str | None,
    add_bos: bool,
    add_eos: bool,
    piece_chars: int,
) -> Tokenizer:
    from tokenizers import Tokenizer as RustTokenizer

    return Tokenizer(
        name=name,
        backend=RustTokenizer.from_str(backend_json),
        bos_id=bos_id,
        eos_id=eos_id,
        source_dir=None if source_dir is None else Path(source_dir),
        add_bos=add_bos,
        add_eos=add_eos,
        piece_chars=piece_chars,
    )


def _after_anchor(chunk: str, encode: Encode) -> list[int] | None:
    """Ids of ``chunk[1:]`` as they are after ``chunk[0]``: ``chunk`` encoded with its first
    character as an anchor whose own ids are then dropped, so a tokenizer that marks the start
    of a text (a SentencePiece '▁' dummy prefix) does not mark a piece's start. None when the
    anchor's ids are not a prefix (the anchor is no token boundary there)."""
    head, whole = encode([chunk[0], chunk], add_special_tokens=False)
    k = len(head.ids)
    ids = whole.ids
    return ids[k:] if ids[:k] == head.ids else None


def _seam_holds(text: str, seam: int, encode: Encode, window: int) -> bool:
    """Whether ``window`` characters each side of ``seam`` encode to the same ids whole as
    split there."""
    lo, hi = max(0, seam - window), min(len(text), seam + window)
    whole, left = encode([text[lo:hi], text[lo:seam]], add_special_tokens=False)
    right = _after_anchor(text[seam - 1 : hi], encode)
    return right is not None and whole.ids == left.ids + right


def resolve_tokenizer_dir(spec: str | Path | None) -> tuple[str, Path]:
    """(name, directory) for a tokenizer spec: None/"smollm2-135m" = the embedded default."""
    from longctx.embedded import EMBEDDED_NAME, embedded_tokenizer_dir

    if spec is None or str(spec) in ("", EMBEDDED_NAME):
        return EMBEDDED_NAME, embedded_tokenizer_dir()
    p = Path(spec)
    if p.is_file() and p.name in ("tokenizer.json", "tokenizer.model"):
        return str(p.parent), p.parent
    if not p.is_dir():
        raise TokenizerError(
            f"tokenizer {spec!s}: not a directory (give a folder with tokenizer.json, an HF model "
            f"folder, or omit --tokenizer for the embedded {EMBEDDED_NAME})"
        )
    return str(p), p


_RUST: dict[str, Any] = {}


def rust_tokenizer(path: str | Path) -> Any:
    """Load a tokenizer.json once per process (about 0.3 CPU-s each time otherwise)."""
    key = str(path)
    tok = _RUST.get(key)
    if tok is None:
        from tokenizers import Tokenizer as RustTokenizer

        try:
            tok = RustTokenizer.from_file(key)
        except Exception as e:  # noqa: BLE001 - tokenizers raises a bare Exception
            raise TokenizerError(f"{key}: not a valid tokenizer.json ({_one_line(e)})") from None
        _RUST[key] = tok
    return tok


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _token_content(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def plain_special_ids(folder: Path) -> tuple[int | None, int | None] | None:
    """BOS/EOS ids read from ``tokenizer.json`` + ``tokenizer_config.json`` without importing
    transformers (seconds of CPU per process), or None when only AutoTokenizer can tell."""
    tj, tc = folder / "tokenizer.json", folder / "tokenizer_config.json"
    if not tj.is_file():
        return None
    if not tc.is_file():
        return None, None  # a bare tokenizer.json declares no BOS/EOS
    try:
        cfg = json.loads(tc.read_text())
    except (OSError, ValueError):
        return None
    backend = rust_tokenizer(tj)
    ids = []
    for key in ("bos_token", "eos_token"):
        if key not in cfg and (folder / "special_tokens_map.json").is_file():
            return None  # the special tokens may live in the map: let transformers decide
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


def load_tokenizer(
    spec: str | Path | None = None, *, add_bos: bool = True, add_eos: bool = False
) -> Tokenizer:
    """Load a local tokenizer; ``None`` loads the embedded SmolLM2 tokenizer.

    A folder with ``tokenizer.json`` whose BOS/EOS can be read plainly loads without
    transformers; anything else (e.g. a SentencePiece ``tokenizer.model``) goes through
    ``AutoTokenizer``. Both give the same ids and the same fingerprint.
    """
    name, folder = resolve_tokenizer_dir(spec)
    hf = None
    ids = plain_special_ids(folder)
    if ids is not None:
        backend = rust_tokenizer(folder / "tokenizer.json")
        bos_id, eos_id = ids
    else:
        from transformers import AutoTokenizer

        try:
            hf = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
        except Exception as e:  # noqa: BLE001 - transformers raises many types here
            raise TokenizerError(f"tokenizer {folder}: cannot be loaded: {_one_line(e)}") from None
        backend = getattr(hf, "backend_tokenizer", None)
        if backend is None:
            raise TokenizerError(f"tokenizer {folder}: no fast (Rust) tokenizer available")
        bos_id, eos_id = hf.bos_token_id, hf.eos_token_id
    return Tokenizer(
        name=name,
        backend=backend,
        bos_id=bos_id,
        eos_id=eos_id,
        source_dir=folder,
        add_bos=add_bos,
        add_eos=add_eos,
        _hf=hf,
    )
