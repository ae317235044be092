"""``longctx data demo-corpus`` and ``longctx data stats`` through the real CLI entry point."""

from __future__ import annotations

import json

import pytest

from ..cli_helpers import run_main as _run
from .datahelpers import record, write_lines


def _corpus(tmp_path):
    lines = [record(" ".join(["w"] * k), dom) for k, dom in
             [(10, "A"), (5000, "A"), (20, "B"), (30, "B"), (40, "C"), (50, "C")]]
    return write_lines(tmp_path / "c" / "part.jsonl", lines).parent


@pytest.mark.parametrize("cmd", ["stats", "demo-corpus"])
def test_help_lists_every_option(cmd, capsys):
    code, out, _ = _run(["data", cmd, "--help"], capsys)
    assert code == 0
    expected = {
        "stats": ["--out", "--tokenizer", "--sample-docs", "--long-threshold", "--workers",
                  "--text-field", "--domain-field", "--seed", "--strict", "--add-eos",
                  "--config", "--set"],
        "demo-corpus": ["--out", "--max-mb", "--seed", "--num-files", "--zstd-level",
                        "--config", "--set"],
    }[cmd]
    for flag in expected:
        assert flag in out, flag


def test_stats_flags_yaml_and_set_precedence(tmp_path, capsys, word_tokenizer_dir):
    corpus = _corpus(tmp_path)
    cfg = tmp_path / "stats.yaml"
    cfg.write_text(f"tokenizer: {word_tokenizer_dir}\nlong_threshold: 7\nseed: 5\n")
    out = tmp_path / "out"
    # YAML says 7, the flag says 25 (flag wins), --set says 45 (wins over both).
    code, stdout, err = _run(["data", "stats", str(corpus), "--out", str(out), "--config",
                              str(cfg), "--long-threshold", "25", "--set", "long_threshold=45"],
                             capsys)
    assert code == 0, err
    s = json.loads((out / "stats.json").read_text())
    assert s["long_threshold"] == 45 and s["seed"] == 5
    assert s["domains"]["B"]["long_token_fraction"] == 0.0
    assert s["domains"]["C"]["long_token_fraction"] == pytest.approx(50 / 90)
    assert "3 domains" in stdout
    code, _, _ = _run(["data", "stats", str(corpus), "--out", str(tmp_path / "o2"), "--config",
                       str(cfg), "--long-threshold", "25"], capsys)
    assert json.loads((tmp_path / "o2" / "stats.json").read_text())["long_threshold"] == 25


def test_stats_sample_docs_accepts_counts_and_strict_errors(tmp_path, capsys, word_tokenizer_dir):
    corpus = _corpus(tmp_path)
    code, _, err = _run(["data", "stats", str(corpus), "--out", str(tmp_path / "o"),
                         "--tokenizer", str(word_tokenizer_dir), "--sample-docs", "1K"], capsys)
    assert code == 0, err
    s = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert s["sample_docs"] == 1000 and s["sampled"] is False  # 1K >= 6 docs: all tokenized
    write_lines(corpus / "bad.jsonl", [record("w"), "{oops"])
    code, _, err = _run(["data", "stats", str(corpus), "--out", str(tmp_path / "o3"),
                         "--tokenizer", str(word_tokenizer_dir), "--strict"], capsys)
    assert code == 2 and "bad.jsonl:2: malformed_json" in err
    code, _, err = _run(["data", "stats", str(tmp_path / "missing"), "--out",
                         str(tmp_path / "o4")], capsys)
    assert code == 2 and "missing" in err
    code, _, err = _run(["data", "stats", "--out", str(tmp_path / "o5")], capsys)
    assert code == 2 and "INPUT" in err
    code, _, err = _run(["data", "stats", str(corpus), "--out", str(tmp_path / "o6"),
                         "--sample-docs", "lots"], capsys)
    assert code == 2 and "--sample-docs" in err


def test_demo_corpus_command(tmp_path, capsys):
    out = tmp_path / "demo"
    code, stdout, err = _run(["data", "demo-corpus", "--out", str(out), "--max-mb", "0.5",
                              "--set", "num_files=2"], capsys)
    assert code == 0, err
    m = json.loads((out / "manifest.json").read_text())
    assert m["stage"] == "data.demo_corpus" and len(m["files"]) == 2
    assert m["config"]["max_mb"] == 0.5
    assert "Docstrings" in stdout
    code, _, err = _run(["data", "demo-corpus", "--out", str(out), "--max-mb", "-1"], capsys)
    assert code == 2 and "max_mb" in err
