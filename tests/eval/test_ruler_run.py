"""``eval ruler``: the grid on a tiny random LLaMA (resume, skipped QA, aggregation, CLI errors)
and the issue's must-hold on the embedded SmolLM2-135M."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from longctx.errors import LongctxError
from longctx.eval.ruler.run import RulerConfig, aggregate, run_ruler

TIMINGS = {"seconds"}


def _cfg(model: Path, **kw) -> RulerConfig:
    cfg = RulerConfig(model=str(model), lengths=[300, 420], tasks=["niah_single_1", "qa_1"],
                      samples=2, **kw)
    cfg.validate()
    return cfg


def _without_timings(result: dict) -> dict:
    result = json.loads(json.dumps(result))
    for c in result["cells"]:
        for k in TIMINGS:
            c.pop(k)
    return result


def test_resume_after_interrupt_gives_the_uninterrupted_result(tiny_model, tmp_path, monkeypatch,
                                                               capsys):
    cfg = _cfg(tiny_model)
    whole = run_ruler(cfg, tmp_path / "whole", progress=False)
    assert len(whole["cells"]) == 4  # 1 task x 2 lengths x 2 samples; qa_1 skipped
    assert {(c["task"], c["length"], c["index"]) for c in whole["cells"]} == {
        ("niah_single_1", n, i) for n in (300, 420) for i in (0, 1)}
    for c in whole["cells"]:
        assert c["input_tokens"] == c["length"] - 128
        assert 0 <= c["score"] <= 1 and c["answers"]

    # interrupt the grid in its third cell, after two cells reached cells.jsonl
    from longctx.eval.ruler import run as ruler_run

    real, calls = ruler_run.greedy_generate, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    out = tmp_path / "resumed"
    monkeypatch.setattr(ruler_run, "greedy_generate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_ruler(cfg, out, progress=False)
    monkeypatch.undo()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "running" and not (out / "ruler.json").exists()
    lines = (out / "cells.jsonl").read_text().splitlines()
    assert len(lines) == 2
    with open(out / "cells.jsonl", "a") as f:  # a kill in the middle of a write
        f.write(lines[0][: len(lines[0]) // 2])

    resumed = run_ruler(cfg, out, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "done"
    assert manifest["counts"] == {"cells": 4, "computed_now": 2, "reused": 2, "skipped_tasks": 1}
    assert _without_timings(resumed) == _without_timings(whole)
    assert len((out / "cells.jsonl").read_text().splitlines()) == 4  # the torn line is gone
    on_disk = json.loads((out / "ruler.json").read_text())
    assert _without_timings(on_disk) == _without_timings(whole)
    capsys.readouterr()

    # a finished folder: nothing recomputed; another seed: every cell recomputed
    run_ruler(cfg, out, progress=False)
    assert json.loads((out / "manifest.json").read_text())["counts"]["computed_now"] == 0
    run_ruler(_cfg(tiny_model, seed=7), out, progress=False)
    assert json.loads((out / "manifest.json").read_text())["counts"]["computed_now"] == 4


def test_qa_without_its_file_is_skipped_with_one_message_line(tiny_model, tmp_path, capsys):
    cfg = RulerConfig(model=str(tiny_model), lengths=[300], tasks=["qa_1", "qa_2"], samples=1)
    cfg.validate()
    result = run_ruler(cfg, tmp_path / "out", progress=False)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "eval ruler: qa_1 skipped: needs --squad FILE (SQuAD v2.0 dev JSON, e.g. dev-v2.0.json)",
        "eval ruler: qa_2 skipped: needs --hotpotqa FILE (HotpotQA dev distractor JSON, e.g. "
        "hotpot_dev_distractor_v1.json)",
    ]
    assert [s["task"] for s in result["skipped"]] == ["qa_1", "qa_2"]
    assert result["cells"] == [] and result["tasks"] == [] and result["average"] is None
    assert (tmp_path / "out" / "ruler.png").is_file()


def test_qa_task_runs_when_its_file_is_given(tiny_model, tmp_path):
    squad = tmp_path / "squad.json"
    squad.write_text(json.dumps({"data": [{"title": "Rivers", "paragraphs": [
        {"context": f"River {i} flows into lake {i}. It is long.",
         "qas": [{"question": f"Where does river {i} flow?", "id": str(i), "is_impossible": False,
                  "answers": [{"text": f"lake {i}", "answer_start": 0}]}]}
        for i in range(3)]}]}))
    cfg = RulerConfig(model=str(tiny_model), lengths=[400], tasks=["qa_1"], samples=2,
                      squad=str(squad))
    cfg.validate()
    result = run_ruler(cfg, tmp_path / "out", progress=False)
    assert result["skipped"] == [] and [c["answers"] for c in result["cells"]] == [
        ["lake 0"], ["lake 1"]]
    assert result["provenance"]["datasets"]["squad"]["sha256"]
    assert all(c["input_tokens"] == 400 - 32 for c in result["cells"])
    with pytest.raises(LongctxError, match="fewer than --samples 5"):
        run_ruler(RulerConfig(model=str(tiny_model), lengths=[400], tasks=["qa_1"], samples=5,
                              squad=str(squad)), tmp_path / "out5", progress=False)


def test_aggregation_by_hand():
    def cell(task, length, index, response, answers):
        return {"task": task, "length": length, "index": index, "response": response,
                "answers": answers}

    cells = [
        cell("niah_multivalue", 1000, 0, "1, 2 and 3", ["1", "2", "3", "4"]),  # 3/4
        cell("niah_multivalue", 1000, 1, "4", ["1", "2", "3", "4"]),  # 1/4
        cell("niah_multivalue", 2000, 0, "nothing", ["5", "6"]),  # 0
        cell("niah_multivalue", 2000, 1, "5 6", ["5", "6"]),  # 1
        cell("qa_1", 1000, 0, "Paris, France", ["Paris", "Lyon"]),  # part: 1
        cell("qa_1", 1000, 1, "no idea", ["Rome"]),  # 0
        cell("qa_1", 2000, 0, "ROME", ["rome"]),  # 1 (case-insensitive)
        cell("qa_1", 2000, 1, "rome", ["Rome"]),  # 1
    ]
    got = aggregate(cells, ["niah_multivalue", "qa_1"], [1000, 2000])
    assert got["task_scores"] == {"niah_multivalue": {"1000": 50.0, "2000": 50.0},
                                  "qa_1": {"1000": 50.0, "2000": 100.0}}
    assert got["length_averages"] == {"1000": 50.0, "2000": 75.0}
    assert got["average"] == 62.5


def test_run_cells_aggregate_to_the_reported_scores(tiny_model, tmp_path):
    cfg = RulerConfig(model=str(tiny_model), lengths=[300], tasks=["niah_single_1", "vt"],
                      samples=2)
    cfg.validate()
    with pytest.raises(LongctxError, match="length too short"):  # vt needs more room
        run_ruler(cfg, tmp_path / "short", progress=False)
    assert not (tmp_path / "short" / "cells.jsonl").exists()  # failed before any cell
    cfg = RulerConfig(model=str(tiny_model), lengths=[300, 700],
                      tasks=["niah_single_1", "niah_multikey_2"], samples=2)
    cfg.validate()
    result = run_ruler(cfg, tmp_path / "out", progress=False)
    for t in cfg.tasks:
        for n in cfg.lengths:
            mine = [c["score"] for c in result["cells"] if c["task"] == t and c["length"] == n]
            assert len(mine) == 2
            assert result["task_scores"][t][str(n)] == round(100 * sum(mine) / 2, 2)
    for n in cfg.lengths:
        assert result["length_averages"][str(n)] == round(
            sum(result["task_scores"][t][str(n)] for t in cfg.tasks) / 2, 2)
    prov = result["provenance"]
    assert prov["seed"] == 42 and len(prov["haystack"]["sha256"]) == 64
    assert len(prov["templates_sha256"]) == 64 and prov["tokenizer"]["name"]
    assert prov["decoding"]["tokens_to_generate"] == {"niah_single_1": 128, "niah_multikey_2": 128}


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--tasks", "niah_single_9"], "unknown RULER task 'niah_single_9'"),
        (["--tasks", ""], "tasks"),
        (["--lengths", "4096,abc"], "lengths"),
        (["--lengths", "100"], "no prompt room"),
        (["--lengths", "0"], "positive"),
        (["--samples", "0"], "samples"),
    ],
)
def test_cli_bad_tasks_or_lengths_is_one_error_line(flags, message, tmp_path, capsys):
    from longctx.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["eval", "ruler", *flags, "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and message in err, err
    assert not (tmp_path / "o").exists()


def test_cli_runs_and_skips_when_done(tiny_model, tmp_path, capsys):
    from longctx.cli import main

    argv = ["eval", "ruler", "--model", str(tiny_model), "--lengths", "300", "--tasks",
            "niah_single_1,qa_2", "--samples", "1", "--out", str(tmp_path / "o")]
    main(argv)
    out = capsys.readouterr().out
    assert "qa_2 skipped: needs --hotpotqa FILE" in out
    assert "ruler: 1 cells over 1 tasks" in out and "ruler.json" in out
    main(argv)
    assert "already done" in capsys.readouterr().out


@pytest.mark.slow
def test_must_hold_smollm2_niah_single_1_and_2(tmp_path, ruler_essays_json):
    """The issue's must-hold, niah_single_1 and niah_single_2 averaged over 1K and 2K scoring
    >= 0.8 (80 on RULER's scale) with the embedded SmolLM2-135M, on 5 samples per cell (the
    20-sample grid of the issue is ``benchmarks/ruler_smollm.py``: 80 cells take ~10 CPU-min)."""
    t0 = time.perf_counter()
    cfg = RulerConfig(lengths=[1024, 2048], tasks=["niah_single_1", "niah_single_2"],
                      samples=5, haystack=str(ruler_essays_json))
    cfg.validate()
    result = run_ruler(cfg, tmp_path / "ruler", progress=False)
    seconds = time.perf_counter() - t0
    print(f"smollm2 RULER niah_single_1/2 @1K,2K x5: {result['task_scores']} "
          f"average {result['average']} in {seconds:.0f} s")
    assert len(result["cells"]) == 20
    assert all(c["input_tokens"] + 128 == c["length"] for c in result["cells"])
    assert result["average"] >= 80, result["task_scores"]
