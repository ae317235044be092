"""Probe, not a feature: could a faster BPE engine count tokens exactly for the data build?

Exact selection tokenizes every candidate inside the cut-offs, and on SlimPajama-shaped
corpora about 60% of those tokens belong to documents that turn out short: they are encoded
only to be counted. That tokenizing is most of the paper job's CPU (the *tokenize floor* of
``benchmarks/data_build.py``). This script measures whether ``tiktoken``, fed the embedded
SmolLM2 tokenizer's merges, gives the same per-document counts as HF ``tokenizers`` and at
what CPU, on the documents you point it at.

The translation: byte-level tokens are turned back into bytes (GPT-2's byte-to-unicode table),
each merge's result is ranked 256 + its position in the merge list, the pre-tokenizer is
GPT-2's regex (SmolLM2's ``ByteLevel`` with ``use_regex``), and the text is first split on the
tokenizer's added tokens, each counted as one (HF matches them in any text).

Equal counts here are evidence, not proof: tiktoken takes a whole piece that is in the
vocabulary as one token and merges any adjacent pair whose bytes form a token, where HF
(``ignore_merges`` false) applies only listed merges in rank order; and the two use
different regex engines. So the build does not use it.

    pip install tiktoken
    python benchmarks/fast_counter_probe.py CORPUS [CORPUS ...] [--search 120] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def _unicode_to_byte() -> dict[str, int]:
    """GPT-2's byte-to-unicode table, inverted (the characters byte-level BPE stores)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def _raw(token: str, to_byte: dict[str, int]) -> bytes:
    return bytes(to_byte[c] for c in token)


def _merges(model: dict) -> list[tuple[str, str]]:
    return [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]


def tiktoken_encoding(spec: dict):
    """tiktoken's Encoding of a byte-level BPE tokenizer.json's merges (merge i: rank 256+i)."""
    import tiktoken

    pre, model = spec["pre_tokenizer"] or {}, spec["model"]
    if pre.get("type") != "ByteLevel" or not pre.get("use_regex") or model["type"] != "BPE":
        raise SystemExit("not a GPT-2-style byte-level BPE tokenizer")
    to_byte = _unicode_to_byte()
    ranks = {bytes([b]): b for b in range(256)}
    for i, (a, b) in enumerate(_merges(model)):
        ranks[_raw(a, to_byte) + _raw(b, to_byte)] = 256 + i
    return tiktoken.Encoding("probe", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={})


def tiktoken_counter(tokenizer_json: Path):
    """A function text -> token count built from a byte-level BPE tokenizer.json."""
    spec = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    enc = tiktoken_encoding(spec)
    added = sorted((t["content"] for t in spec["added_tokens"]), key=len, reverse=True)
    split = re.compile("|".join(map(re.escape, added))) if added else None

    def count(text: str) -> int:
        if split is None:
            return len(enc.encode_ordinary(text))
        n, last = 0, 0
        for m in split.finditer(text):
            n += len(enc.encode_ordinary(text[last:m.start()])) + 1
            last = m.end()
        return n + len(enc.encode_ordinary(text[last:]))

    return count


def search_pieces(tokenizer_json: Path, seconds: float, seed: int = 0) -> dict:
    """Pieces where the two BPE algorithms could part: a vocabulary token that also splits
    into two vocabulary tokens other than its listed merge (tiktoken would merge such a pair,
    HF would not), with random vocabulary tokens around it. Only pieces GPT-2's regex yields
    whole are compared: token by token, HF's model against tiktoken on the same bytes."""
    import random

    import regex
    from tokenizers import Tokenizer

    spec = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    enc, hf = tiktoken_encoding(spec), Tokenizer.from_file(str(tokenizer_json)).model
    vocab, to_byte = spec["model"]["vocab"], _unicode_to_byte()
    listed = {a + b: (a, b) for a, b in _merges(spec["model"])}
    added = {t["content"] for t in spec["added_tokens"]}
    tokens = [t for t in vocab if t not in added]
    odd = [t for t in tokens if any(t[:i] in vocab and t[i:] in vocab
                                    and (t[:i], t[i:]) != listed.get(t) for i in range(1, len(t)))]
    pattern, rng = regex.compile(GPT2_PATTERN), random.Random(seed)
    checked, differ, examples = 0, 0, []
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        t, a, b = rng.choice(odd), rng.choice(tokens), rng.choice(tokens)
        for piece in (t + a, a + t, a[-1:] + t + b[:1], t[1:] + a, t + t):
            raw = _raw(piece, to_byte)
            text = raw.decode("utf-8", "replace")
            if "\ufffd" in text or len(pattern.findall(text)) != 1:
                continue  # not a piece the pre-tokenizer yields whole
            checked += 1
            ours = [_raw(x.value, to_byte) for x in hf.tokenize(piece)]
            # tiktoken's BPE on the bytes alone, without its regex (a private helper of theirs)
            theirs = [enc.decode_single_token_bytes(x) for x in enc._encode_bytes(raw)]
            if ours != theirs:
                differ += 1
                examples = (examples + [text])[:5]
    return {"tokens_with_an_unlisted_split": len(odd), "pieces_checked": checked,
            "pieces_that_differ": differ, "examples": examples, "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("corpora", nargs="+", help="corpus files or folders (jsonl, parquet, ...)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--search", type=float, default=0.0, metavar="SECONDS",
                    help="also search constructed pieces for one the two algorithms split apart")
    a = ap.parse_args()
    try:
        import tiktoken  # noqa: F401
    except ImportError:
        raise SystemExit("fast_counter_probe.py needs tiktoken: pip install tiktoken") from None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["TOKENIZERS_PARALLELISM"] = "true"  # as the build's workers encode:
    os.environ["RAYON_NUM_THREADS"] = "1"  # one thread, so CPU compares like with like
    from longctx.data.readers import Fields, expand_inputs, iter_file
    from longctx.data.tokenizer import load_tokenizer, resolve_tokenizer_dir

    tok = load_tokenizer(None)
    tokenizer_json = resolve_tokenizer_dir(None)[1] / "tokenizer.json"
    count = tiktoken_counter(tokenizer_json)
    fields = Fields(domain="@file")  # every record with a text counts, whatever its meta
    results = {}
    for corpus in a.corpora:
        texts = [d.text for f in expand_inputs([corpus]) for d in iter_file(f, fields)]
        c0 = time.process_time()
        hf = [n for k in range(0, len(texts), 256)
              for n in map(len, tok.backend.encode_batch_fast(texts[k:k + 256],
                                                              add_special_tokens=False))]
        c1 = time.process_time()
        fast = [count(t) for t in texts]
        c2 = time.process_time()
        bad = [i for i, (x, y) in enumerate(zip(hf, fast, strict=True)) if x != y]
        results[corpus] = {"docs": len(texts), "tokens": sum(hf), "mismatched_docs": len(bad),
                           "hf_cpu_s": c1 - c0, "tiktoken_cpu_s": c2 - c1}
        print(f"{corpus}: {len(texts):,} docs, {sum(hf):,} tokens, {len(bad)} counts differ; "
              f"CPU HF encode_batch_fast {c1 - c0:.2f} s, tiktoken {c2 - c1:.2f} s "
              f"(x{(c2 - c1) / (c1 - c0):.2f})")
    if a.search:
        found = search_pieces(tokenizer_json, a.search)
        results["piece_search"] = found
        print(f"piece search ({a.search:.0f} s): {found['tokens_with_an_unlisted_split']:,} "
              f"vocabulary tokens with an unlisted split; {found['pieces_checked']:,} pieces "
              f"checked, {found['pieces_that_differ']} differ {found['examples']}")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
