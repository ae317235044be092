"""Peak memory of one huge document (default 50 MB) through the tokenizer, ``longctx data
build`` and ``longctx data stats``.

Not a test: a benchmark that writes JSON. The document is real text: the RedPajama reference
documents of all seven domains (../shared/reference/redpajama_samples), concatenated in
turn until it reaches the size. The corpus is that one document plus the ~3 MB of normal
documents in ``slimpajama_format_derived.jsonl``.

Every measurement runs in a fresh process; peak RSS is the largest resident set of that
process or any process it started (``RUSAGE_CHILDREN`` of a wrapper), so a worker counts.
"MB" here is 2**20 bytes. No times: on a shared machine they measure the neighbours.

    python benchmarks/huge_document.py [--mb 50] [--json benchmarks/results/huge_document.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REFERENCE = Path(os.environ.get("LONGCTX_SHARED_REFERENCE", REPO.parent / "shared" / "reference"))
SAMPLES = REFERENCE / "redpajama_samples"
DOMAINS = ("arxiv", "book", "c4-rp", "cc", "github", "stackexchange", "wiki")
TARGET_PEAK_MB = 2048


def reference_texts() -> list[str]:
    """Every reference document, domain by domain (so the huge one mixes code, LaTeX, prose)."""
    texts = []
    for domain in DOMAINS:
        for f in sorted((SAMPLES / domain).glob("*.jsonl")):
            with open(f, encoding="utf-8") as fh:
                texts.extend(t for t in (json.loads(line)["text"] for line in fh) if t)
    return texts


def huge_text(mb: float) -> str:
    """Reference documents joined by blank lines, cycled until the text has ``mb`` MB."""
    texts = reference_texts()
    target = int(mb * 1e6)
    parts, size, i = [], 0, 0
    while size < target:
        t = texts[i % len(texts)]
        parts.append(t)
        size += len(t.encode("utf-8")) + 2
        i += 1
    return "\n\n".join(parts)


def write_corpus(folder: Path, mb: float) -> Path:
    """``folder/huge.jsonl`` (the one huge document) + ``folder/normal.jsonl``."""
    folder.mkdir(parents=True, exist_ok=True)
    record = {"text": huge_text(mb), "meta": {"redpajama_set_name": "RedPajamaBook"}}
    (folder / "huge.jsonl").write_text(json.dumps(record, ensure_ascii=False) + "\n")
    shutil.copy(SAMPLES / "slimpajama_format_derived.jsonl", folder / "normal.jsonl")
    return folder


def document_size(corpus: Path) -> dict:
    with open(corpus / "huge.jsonl", encoding="utf-8") as fh:
        text = json.loads(fh.readline())["text"]
    return {
        "document_chars": len(text),
        "document_utf8_mb": round(len(text.encode("utf-8")) / 2**20, 1),
        "jsonl_mb": round((corpus / "huge.jsonl").stat().st_size / 2**20, 1),
    }


def measure(cmd: list[str], env: dict[str, str]) -> dict:
    """Run ``cmd`` in a wrapper process; its children's peak RSS is the command's peak."""
    wrapper = (
        "import resource, subprocess, sys, json;"
        "rc = subprocess.run(sys.argv[1:]).returncode;"
        "print(json.dumps([rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))"
    )
    res = subprocess.run(
        [sys.executable, "-c", wrapper, *cmd], env=env, capture_output=True, text=True
    )
    lines = res.stdout.strip().splitlines()
    rc, peak_kb = json.loads(lines[-1])
    if rc != 0:
        sys.stderr.write(res.stderr[-4000:])
    out = {"rc": rc, "peak_rss_mb": round(peak_kb / 1024, 1)}
    if len(lines) > 1 and lines[-2].startswith("{"):
        out.update(json.loads(lines[-2]))  # what the command itself reported
    return out


def encode_once(corpus: Path, tokenizer: str | None, piece_chars: int) -> None:
    """Child process: encode the huge document once (ids, then count) with ``piece_chars``."""
    import dataclasses

    from longctx.data.tokenizer import load_tokenizer

    with open(corpus / "huge.jsonl", encoding="utf-8") as fh:
        text = json.loads(fh.readline())["text"]
    tok = dataclasses.replace(load_tokenizer(tokenizer), piece_chars=piece_chars)
    ids = tok.encode_documents([text], fast=True)[0]
    assert tok.count_tokens([text]) == [len(ids)]
    print(json.dumps({"tokens": len(ids)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=50.0, help="size of the huge document")
    ap.add_argument("--llama2", default=None,
                    help="folder with LLaMA-2 tokenizer.model (default: a copy of the reference)")
    ap.add_argument("--skip-whole", action="store_true", help="skip encoding it whole")
    ap.add_argument("--json", default=str(REPO / "benchmarks/results/huge_document.json"))
    ap.add_argument("--encode-once", nargs=3, metavar=("CORPUS", "TOKENIZER", "PIECE_CHARS"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.encode_once:
        corpus, tokenizer, piece = args.encode_once
        encode_once(Path(corpus), None if tokenizer == "-" else tokenizer, int(piece))
        return

    from longctx.data.tokenizer import Tokenizer

    work = Path(tempfile.mkdtemp(prefix="longctx-huge-"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    corpus = write_corpus(work / "corpus", args.mb)
    llama2 = args.llama2
    if llama2 is None and (REFERENCE / "tokenizer/llama2_tokenizer.model").is_file():
        llama2 = str(work / "llama2")
        Path(llama2).mkdir()
        shutil.copy(REFERENCE / "tokenizer/llama2_tokenizer.model", Path(llama2) / "tokenizer.model")
    default_piece = Tokenizer.__dataclass_fields__["piece_chars"].default
    results: dict = {
        **document_size(corpus),
        "piece_chars": default_piece,
        "target_peak_rss_mb": TARGET_PEAK_MB,
        "encode": {},
    }
    longctx = [sys.executable, "-m", "longctx"]
    tokenizers = {"smollm2-135m": "-", **({"llama2": llama2} if llama2 else {})}
    for name, spec in tokenizers.items():
        modes = {"pieces": default_piece} if args.skip_whole else {
            "whole": 1 << 40, "pieces": default_piece}
        for mode, piece in modes.items():
            cmd = [sys.executable, __file__, "--encode-once", str(corpus), spec, str(piece)]
            r = measure(cmd, env)
            results["encode"][f"{name}/{mode}"] = r
            print(f"encode {name:13s} {mode:6s} peak {r['peak_rss_mb']:8.1f} MB", flush=True)
    build = [*longctx, "data", "build", str(corpus), "--out", str(work / "out"), "--tokens", "2M",
             "--seq-len", "8192", "--long-threshold", "4096", "--workers", "1"]
    stats = [*longctx, "data", "stats", str(corpus), "--out", str(work / "stats"), "--no-plot"]
    for name, cmd in (("build", build), ("stats", stats)):
        r = measure(cmd, env)
        results[name] = r
        print(f"{name:5s} rc {r['rc']} peak {r['peak_rss_mb']:8.1f} MB", flush=True)
    peaks = [results["build"]["peak_rss_mb"], results["stats"]["peak_rss_mb"]]
    results["pass"] = all(r["rc"] == 0 for r in (results["build"], results["stats"])) and max(
        peaks) < TARGET_PEAK_MB
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
