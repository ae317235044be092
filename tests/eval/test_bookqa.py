"""BookQA (InfiniteBench En.QA format) on a tiny made-up file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from longctx.eval import scorers
from longctx.eval.bookqa import BookQAConfig, middle_truncate, read_items, run_bookqa
from longctx.eval.generate import EvalError

BOOK = (
    "Chapter one. Tom lived in a small village by the sea. Every morning he walked along the "
    "harbour with his dog. Tom's dog was named Biscuit. Biscuit liked to chase the gulls. "
)
FILLER = "The weather was grey and the boats rocked gently at their moorings. " * 40


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_middle_truncate_by_hand():
    ids = list(range(10))
    assert middle_truncate(ids, 4) == [0, 1, 8, 9]
    assert middle_truncate(ids, 5) == [0, 1, 7, 8, 9]
    assert middle_truncate(ids, 10) == ids and middle_truncate(ids, 20) == ids


def test_read_items_and_errors(tmp_path: Path):
    good = _write(
        tmp_path / "qa.jsonl",
        [
            {"id": 7, "context": "c", "input": "q?", "answer": ["a", "b"], "options": []},
            {"context": "c2", "input": "q2?", "answer": "single"},
        ],
    )
    items = read_items(good)
    assert [i.id for i in items] == ["7", "1"]
    assert items[1].answers == ["single"]
    assert len(read_items(good, max_items=1)) == 1
    bad = _write(tmp_path / "bad.jsonl", [{"context": "c", "answer": ["a"]}])
    with pytest.raises(EvalError, match=r"bad.jsonl:1: record lacks field\(s\) \['input'\]"):
        read_items(bad)
    (tmp_path / "broken.jsonl").write_text('{"context": \n')
    with pytest.raises(EvalError, match="broken.jsonl:1: not valid JSON"):
        read_items(tmp_path / "broken.jsonl")
    with pytest.raises(EvalError, match="not found"):
        read_items(tmp_path / "missing.jsonl")


def test_bookqa_run_on_tiny_file(tmp_path: Path):
    data = _write(
        tmp_path / "longbook_qa_eng.jsonl",
        [
            {
                "id": 0,
                "context": BOOK + FILLER,
                "input": "What was the name of Tom's dog?",
                "answer": ["Biscuit"],
            },
            {
                "id": 1,
                "context": BOOK,
                "input": "Where did Tom live?",
                "answer": ["in a small village by the sea", "a village"],
            },
        ],
    )
    truncate = 240
    cfg = BookQAConfig(data=str(data), truncate=truncate, max_new_tokens=12)
    cfg.validate()
    result = run_bookqa(cfg, tmp_path / "out", progress=False)
    assert result["stage"] == "eval.bookqa" and result["n"] == 2
    first, second = result["items"]
    # item 0's prompt (~700 tokens) is cut to exactly `truncate`; the question survives
    assert first["truncated"] and first["prompt_tokens"] == truncate
    assert not second["truncated"] and second["prompt_tokens"] < truncate
    for item in result["items"]:
        assert item["f1"] == pytest.approx(scorers.qa_f1_score(item["response"], item["answers"]))
    assert result["f1"] == pytest.approx((first["f1"] + second["f1"]) / 2)
    # on the short, untruncated book the model finds the answer (in its chat template)
    assert result["chat_template"] is True
    assert "village" in second["response"].lower(), second["response"]
    assert second["f1"] > 0.3
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["stage"] == "eval.bookqa" and manifest["status"] == "done"
