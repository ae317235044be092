"""A generated corpus shaped like SlimPajama, for benchmarking the data build on the workload
users pay for: hundreds of short documents per long one, every file holding every domain.

Per-domain token shares are the ones the paper's code uses (CC .534, C4 .266, GitHub .050,
ArXiv .043, Book .041, Wikipedia .034, StackExchange .032); document lengths are log-normal
around the paper's per-domain medians (C4 315, CC 1,066, SE 507, Wiki 409, GitHub 520,
ArXiv 14,565, Book 121,602 tokens), divided by ``--length-scale`` (default 8, so the paper's
4,096-token threshold becomes 512 and a small corpus still holds long documents). Words are
drawn from a fixed list whose words are single SmolLM2 tokens or close to it, so one word is
about one token. Documents of all domains are shuffled together into ``--files`` files
(SlimPajama's layout: `text` + `meta.redpajama_set_name`, `.jsonl.zst`).

That word list tokenizes unlike real text: a handful of distinct words, so the tokenizer's
word cache always hits. ``--text-from DIR`` takes each domain's text from real documents
instead (RedPajama-1T's layout: a folder per source, ``arxiv/ book/ c4/ cc/ github/
stackexchange/ wiki/`` holding ``*.jsonl``): a document of n tokens is a window of its
domain's text, at a random offset, of n tokens' worth of characters (the domain's characters
per token, measured with the embedded tokenizer). Common Crawl's window is drawn from the CC
and C4 documents together (C4 is filtered Common Crawl; a small CC sample alone would repeat).

    python benchmarks/slimpajama_shaped.py --out runs/sp-shaped --tokens 8M --files 4
    python benchmarks/slimpajama_shaped.py --out runs/sp-real --tokens 16M --files 16 \
        --text-from ../shared/reference/redpajama_samples
    python benchmarks/data_build.py --corpus runs/sp-shaped
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

SHARES = {"RedPajamaCommonCrawl": 0.534, "RedPajamaC4": 0.266, "RedPajamaGithub": 0.050,
          "RedPajamaArXiv": 0.043, "RedPajamaBook": 0.041, "RedPajamaWikipedia": 0.034,
          "RedPajamaStackExchange": 0.032}
MEDIANS = {"RedPajamaCommonCrawl": 1066, "RedPajamaC4": 315, "RedPajamaGithub": 520,
           "RedPajamaArXiv": 14565, "RedPajamaBook": 121602, "RedPajamaWikipedia": 409,
           "RedPajamaStackExchange": 507}
SIGMA = 1.0  # log-normal spread (natural log): the middle 68% of documents within e^±1
WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she there one all we their can has been if more when "
    "will would who so no time people year could them see other than then now only its also "
    "back after use two how our work first well way even new want because any these give day "
    "most us data model long context token paper train mixture length source domain sample "
    "book code function return value class import file number system"
).split()


# RedPajama-1T's source folders -> SlimPajama's set names
SOURCES = {"arxiv": "RedPajamaArXiv", "book": "RedPajamaBook", "c4": "RedPajamaC4",
           "c4-rp": "RedPajamaC4", "cc": "RedPajamaCommonCrawl",
           "common_crawl": "RedPajamaCommonCrawl", "github": "RedPajamaGithub",
           "stackexchange": "RedPajamaStackExchange", "wiki": "RedPajamaWikipedia",
           "wikipedia": "RedPajamaWikipedia"}
ALSO_FROM = {"RedPajamaCommonCrawl": ["RedPajamaC4"]}  # a domain's window also draws on these


class RealText:
    """Each domain's real text, joined, and its characters per token."""

    def __init__(self, folder: Path) -> None:
        texts: dict[str, list[str]] = {d: [] for d in SHARES}
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            domain = SOURCES.get(sub.name)
            for f in sorted(sub.glob("*.jsonl")) if domain else []:
                texts[domain] += [json.loads(line)["text"] for line in f.open() if line.strip()]
        missing = [d for d, t in texts.items() if not t]
        if missing:
            raise SystemExit(f"--text-from {folder}: no documents for {', '.join(missing)} "
                             f"(expected sub-folders {sorted(SOURCES)})")
        from longctx.data.tokenizer import load_tokenizer

        tok = load_tokenizer(None)
        self.pool, self.chars_per_token = {}, {}
        for d in SHARES:
            joined = "\n\n".join(t for src in [d, *ALSO_FROM.get(d, [])] for t in texts[src])
            self.pool[d] = joined + "\n\n" + joined  # a window may wrap around the end
            self.chars_per_token[d] = len(joined) / sum(tok.count_tokens([joined[k:k + 65536]
                for k in range(0, len(joined), 65536)]))

    def document(self, domain: str, tokens: int, rng: np.random.Generator) -> str:
        pool = self.pool[domain]
        n = min(max(1, round(tokens * self.chars_per_token[domain])), len(pool) // 2)
        at = int(rng.integers(0, len(pool) // 2))
        return pool[at : at + n]


def parse_count(s: str) -> int:
    mult = {"K": 1e3, "M": 1e6, "B": 1e9}.get(s[-1].upper(), 1)
    return int(float(s[:-1] if mult != 1 else s) * mult)


def lengths_for(domain: str, budget: int, scale: float, rng: np.random.Generator) -> list[int]:
    """Log-normal document lengths (in words) around the domain's scaled median until the
    domain's word budget is spent; the last document is cut to fit."""
    mu = math.log(max(MEDIANS[domain] / scale, 8))
    out, total = [], 0
    while total < budget:
        n = max(8, int(rng.lognormal(mu, SIGMA)))
        n = min(n, budget - total) if budget - total >= 8 else n
        out.append(n)
        total += n
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokens", default="8M",
                    help="total words (≈ tokens; with --text-from, tokens), e.g. 8M")
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--length-scale", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--text-from", type=Path, default=None,
                    help="a folder of real documents per source (see the module docstring)")
    args = ap.parse_args()
    import zstandard

    real = RealText(args.text_from) if args.text_from else None

    rng = np.random.default_rng(args.seed)
    total = parse_count(args.tokens)
    docs = []  # (domain, length)
    for d, share in SHARES.items():
        docs += [(d, n) for n in lengths_for(d, int(total * share), args.length_scale, rng)]
    order = rng.permutation(len(docs))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    words = np.asarray(WORDS)
    sinks = [zstandard.ZstdCompressor(level=3).stream_writer(
        open(out / f"chunk_{k:04d}.jsonl.zst", "wb")) for k in range(args.files)]
    counts = {d: [0, 0] for d in SHARES}
    try:
        for j, i in enumerate(order):
            d, n = docs[i]
            text = (real.document(d, n, rng) if real
                    else " ".join(words[rng.integers(0, len(words), n)]))
            rec = {"text": text, "meta": {"redpajama_set_name": d}}
            sinks[j % args.files].write((json.dumps(rec) + "\n").encode())
            counts[d][0] += 1
            counts[d][1] += n
    finally:
        for s in sinks:
            s.close()
    unit = "tokens_drawn" if real else "words"  # a real-text window is about that many tokens
    summary = {"files": args.files, "documents": len(docs), unit: sum(n for _, n in docs),
               "length_scale": args.length_scale, "threshold_equivalent": 4096 / args.length_scale,
               "text": str(args.text_from) if real else "word list",
               **({"chars_per_token": real.chars_per_token} if real else {}),
               "domains": {d: {"documents": c[0], unit: c[1]} for d, c in counts.items()}}
    (out / ".shape.json").write_text(json.dumps(summary, indent=2) + "\n")  # hidden: not input
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
