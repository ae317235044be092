"""Input token estimates where not every document was tokenized (hand-computed)."""

from __future__ import annotations

from longctx.mix.input_stats import InputStats
from longctx.pack.scan import STAT_KEYS


def _summary(**st):
    full = {k: 0 for k in STAT_KEYS}
    full.update(st)
    return {"stats": {"A": full}, "skipped": {"malformed_json": 1}}


def test_estimate_untokenized_short_docs_and_frozen_domain():
    s = InputStats(specials=1)
    # 10 docs, 1000 bytes: 3 long docs (279 tokens) + 1 drawn short doc (21 tokens, 80 bytes)
    # tokenized; 6 provably short rejected docs (480 bytes) never tokenized.
    s.add(_summary(docs=10, bytes=1000, tok_docs=4, tok_tokens=300, drawn_docs=1,
                   drawn_tokens=21, drawn_bytes=80, untok_docs=6, untok_bytes=480, long_docs=3,
                   long_tokens=279, kept_docs=4, kept_tokens=300, kept_long_tokens=279))
    e = s.estimate()["A"]
    # tokens per byte of short text: (21 - 1 BOS) / 80 = 0.25; untokenized: 480 * 0.25 + 6 BOS
    assert e["tokens"] == 300 + 126 and e["long_tokens"] == 279
    assert e["short_tokens"] == 147 and e["estimated"]
    assert s.eligible("A") == 300 and s.skipped["malformed_json"] == 1
    # once A is frozen, a later file adds its bytes only: tokens scale with bytes (x2 here)
    s.frozen.add("A")
    s.add(_summary(docs=9, bytes=1000, tok_docs=9, tok_tokens=500, long_tokens=400,
                   kept_docs=9, kept_tokens=500))
    e = s.estimate()["A"]
    assert e["docs"] == 19 and e["bytes"] == 2000
    assert e["tokens"] == 852 and e["long_tokens"] == 558
    assert s.eligible("A") == 300  # nothing from the frozen file joins the pool
