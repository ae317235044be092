"""A small generated SlimPajama-layout corpus with four domains of different length profiles."""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which "
    "but have an they you were her she there one all we their can has been if more when will "
    "would who so no time people year could them see other than then now only its also back "
    "after use two how our work first well way even new want because any these give day most "
    "us data model long context token paper train mixture length source domain sample book code"
).split()

PROFILES = {
    # domain: (docs, fraction long, short words range, long words range)
    "web": (300, 0.2, (30, 300), (600, 2000)),
    "code": (150, 0.5, (30, 300), (600, 2000)),
    "book": (6, 1.0, (0, 0), (3000, 6000)),
    "qa": (300, 0.1, (20, 200), (520, 1200)),
}


def _text(rng: random.Random, domain: str, n_words: int) -> str:
    words = [rng.choice(WORDS) for _ in range(n_words)]
    if domain == "code":
        lines = [" ".join(words[i : i + 8]) for i in range(0, len(words), 8)]
        return "\n".join(f"    {ln}();" for ln in lines)
    return " ".join(words).capitalize() + "."


def make_corpus(folder: Path, n_files: int = 6, seed: int = 0) -> dict[str, int]:
    """Write ``n_files`` jsonl files with shuffled docs of all domains; returns docs/domain."""
    rng = random.Random(seed)
    docs = []
    for domain, (n, frac_long, short, long) in PROFILES.items():
        for _ in range(n):
            lo, hi = long if rng.random() < frac_long else short
            docs.append({"text": _text(rng, domain, rng.randint(lo, hi)),
                         "meta": {"redpajama_set_name": domain}})
    rng.shuffle(docs)
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n_files):
        with open(folder / f"part-{k:02d}.jsonl", "w") as f:
            for d in docs[k::n_files]:
                f.write(json.dumps(d) + "\n")
    return {d: v[0] for d, v in PROFILES.items()}
