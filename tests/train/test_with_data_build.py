"""Integration: `longctx data build` output trains directly (tokenizer check, doc mask, export)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

WORDS = ("the model reads long documents and learns to retrieve facts from far back in its "
         "context window while the short ones teach it local syntax").split()


def write_corpus(path: Path, n: int = 40) -> Path:
    rnd = random.Random(0)
    with open(path, "w") as f:
        for i in range(n):
            domain = ["Book", "ArXiv", "RedPajamaC4"][i % 3]
            words = rnd.choices(WORDS, k=rnd.choice([20, 40, 300]))
            f.write(json.dumps({"text": " ".join(words),
                                "meta": {"redpajama_set_name": domain}}) + "\n")
    return path


@pytest.mark.slow
def test_train_on_data_build_output(tmp_path):
    from longctx.cli import main
    from longctx.config import build_config
    from longctx.train.config import TrainConfig
    from longctx.train.loop import train

    corpus = write_corpus(tmp_path / "corpus.jsonl")
    data = tmp_path / "data"
    try:
        main(["data", "build", str(corpus), "--out", str(data), "--seq-len", "128",
              "--tokens", "2K", "--long-threshold", "64", "--seed", "0"])
    except SystemExit as e:
        assert e.code in (None, 0)
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["stage"] == "data.build" and manifest["seq_len"] == 128
    cfg = build_config(TrainConfig, cli={"data": str(data), "out": str(tmp_path / "out"),
                                         "model": "tiny", "steps": 2, "seq_len": 64,
                                         "doc_mask": "mask", "lr": 1e-3})
    result = train(cfg)
    assert result["status"] == "done" and result["steps"] == 2
    assert result["data_tokenizer"]["sha256"] == manifest["tokenizer"]["sha256"]
    recs = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 2] and all(r["loss"] > 0 for r in recs)
    assert (tmp_path / "out" / "final" / "model.safetensors").is_file()
