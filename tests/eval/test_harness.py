"""``longctx eval harness``: lm-eval on a tiny local task (offline) and a tiny random LLaMA.

The tests that run lm-eval skip when the optional extra is not installed; the refusals
(missing lm-eval, pickled weights) run without it.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from longctx.cli import app
from longctx.stage import sha256_file

from ..cli_helpers import assert_one_line_error, run_main

DOCS = [
    {"question": "The capital of France is", "choices": ["Paris", "Berlin", "Madrid"],
     "label": 0, "answer": "Paris"},
    {"question": "Two plus two equals", "choices": ["five", "four", "nine"], "label": 1,
     "answer": "four"},
    {"question": "The sky on a clear day is", "choices": ["green", "red", "blue"], "label": 2,
     "answer": "blue"},
    {"question": "Ice is frozen", "choices": ["water", "sand", "air"], "label": 0,
     "answer": "water"},
]
# One multiple-choice task (acc) and one loglikelihood task (perplexity, a continuous score).
MC_TASK = """task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {cache}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_target: label
doc_to_choice: choices
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""
LL_TASK = """task: tiny_ll
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {cache}
test_split: test
output_type: loglikelihood
doc_to_text: "{{{{question}}}}"
doc_to_target: " {{{{answer}}}}"
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
"""

# MMLU's shape: a group whose score aggregates its subtasks'.
GROUP = """group: tiny_group
task:
  - tiny_mc
  - tiny_mc_again
aggregate_metric_list:
  - metric: acc
    weight_by_size: true
"""


@pytest.fixture
def needs_lm_eval():
    pytest.importorskip("lm_eval", reason="the optional extra: pip install 'longctx[harness]'")


def _tokenizer_files(folder: Path) -> None:
    from longctx.data.tokenizer import load_tokenizer

    src = load_tokenizer(None).source_dir
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (src / name).is_file():
            shutil.copy2(src / name, folder / name)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A random 1-layer LLaMA with SmolLM2's tokenizer, saved as safetensors."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    config = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=256, tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(folder))
    _tokenizer_files(folder)
    return folder


def write_tasks(folder: Path, cache: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "docs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    (folder / "tiny_mc.yaml").write_text(MC_TASK.format(data=data, cache=cache))
    (folder / "tiny_ll.yaml").write_text(LL_TASK.format(data=data, cache=cache))
    (folder / "tiny_mc_again.yaml").write_text(
        MC_TASK.format(data=data, cache=cache).replace("task: tiny_mc", "task: tiny_mc_again"))
    (folder / "tiny_group.yaml").write_text(GROUP)
    return folder


@pytest.fixture(scope="session")
def task_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("harness-tasks")
    return write_tasks(root / "tasks", root / "hf-datasets-cache")


def harness_args(model: Path, tasks: Path, out: Path, *extra: str) -> list[str]:
    return ["eval", "harness", "--model", str(model), "--tasks", "tiny_mc,tiny_ll",
            "--include-path", str(tasks), "--device", "cpu", "--out", str(out), *extra]


@pytest.fixture(scope="session")
def full_run(tmp_path_factory, tiny_model, task_dir) -> Path:
    """One full (unlimited) run of both tasks, shared by the tests that only read it."""
    pytest.importorskip("lm_eval", reason="the optional extra: pip install 'longctx[harness]'")
    from longctx.cli import main

    out = tmp_path_factory.mktemp("runs") / "base" / "harness"
    main(harness_args(tiny_model, task_dir, out))
    return out


def test_harness_json_has_each_tasks_metrics(needs_lm_eval, full_run, task_dir):
    h = json.loads((full_run / "harness.json").read_text())
    raw = json.loads((full_run / "lm_eval.json").read_text())
    assert h["stage"] == "eval.harness" and h["tasks"] == ["tiny_mc", "tiny_ll"]
    assert h["limit"] is None and h["limited"] is False and h["comparable"] is True
    assert "note" not in h
    mc, ll = h["results"]["tiny_mc"], h["results"]["tiny_ll"]
    assert mc["kind"] == ll["kind"] == "task"
    assert mc["documents"] == {"original": 4, "effective": 4}
    acc = mc["metrics"]["acc,none"]
    assert acc["value"] == raw["results"]["tiny_mc"]["acc,none"]
    assert acc["value"] in (0.0, 0.25, 0.5, 0.75, 1.0)  # 4 documents
    assert acc["stderr"] == raw["results"]["tiny_mc"]["acc_stderr,none"]
    assert acc["higher_is_better"] is True
    ppl = ll["metrics"]["perplexity,none"]
    assert ppl["value"] > 1 and ppl["higher_is_better"] is False
    # provenance: which lm-eval, which task definitions, which data
    assert h["lm_eval_version"] == "0.4.13"
    assert set(h["provenance"]["task_config_sha256"]) == {"tiny_mc", "tiny_ll"}
    assert mc["config_sha256"] == h["provenance"]["task_config_sha256"]["tiny_mc"]
    data = task_dir / "docs.jsonl"
    assert h["provenance"]["data_files"] == {str(data): sha256_file(data)}
    m = json.loads((full_run / "manifest.json").read_text())
    assert m["stage"] == "eval.harness" and m["status"] == "done" and m["limit"] is None
    assert m["counts"] == {"tasks": 2, "groups": 0}
    for name, digest in m["checksums"].items():
        assert sha256_file(full_run / name) == digest


def test_rerun_skips_and_a_changed_task_file_reruns(needs_lm_eval, tmp_path, tiny_model):
    tasks = write_tasks(tmp_path / "tasks", tmp_path / "cache")
    out = tmp_path / "out"
    runner = CliRunner()
    first = runner.invoke(app, harness_args(tiny_model, tasks, out))
    assert first.exit_code == 0, first.output
    assert "harness: tiny_mc acc " in first.output
    again = runner.invoke(app, harness_args(tiny_model, tasks, out))
    assert again.exit_code == 0 and "already done" in again.output, again.output
    # one more document in the task folder: a different run (the folder is an input)
    with open(tasks / "docs.jsonl", "a") as f:
        f.write(json.dumps(DOCS[0]) + "\n")
    third = runner.invoke(app, harness_args(tiny_model, tasks, out))
    assert third.exit_code == 0 and "already done" not in third.output, third.output
    h = json.loads((out / "harness.json").read_text())
    assert h["results"]["tiny_mc"]["documents"]["effective"] == 5


def test_limit_is_recorded_as_not_comparable(needs_lm_eval, tmp_path, tiny_model, task_dir,
                                              capsys):
    out = tmp_path / "limited"
    code, stdout, err = run_main(harness_args(tiny_model, task_dir, out, "--limit", "2"), capsys)
    assert code == 0, err
    assert "(--limit 2: not comparable)" in stdout
    h = json.loads((out / "harness.json").read_text())
    assert h["limit"] == 2 and h["limited"] is True and h["comparable"] is False
    assert "not comparable" in h["note"]
    assert h["results"]["tiny_mc"]["documents"] == {"original": 4, "effective": 2}
    assert json.loads((out / "manifest.json").read_text())["limit"] == 2


def test_rope_theta_override_reaches_the_evaluated_model(needs_lm_eval, tmp_path, tiny_model,
                                                         task_dir, full_run):
    """The model lm-eval scores is longctx's instance: a different RoPE base, other losses.

    The random model's attention is nearly uniform, so the change is small (~2e-4 relative
    measured), but far above the run-to-run difference of a deterministic CPU run (zero)."""
    from longctx.cli import main

    out = tmp_path / "rope"
    main(harness_args(tiny_model, task_dir, out, "--rope-theta", "7.5"))
    base = json.loads((full_run / "harness.json").read_text())
    moved = json.loads((out / "harness.json").read_text())
    assert moved["provenance"]["rope_theta"] == 7.5
    ppl = [h["results"]["tiny_ll"]["metrics"]["perplexity,none"]["value"] for h in (base, moved)]
    assert abs(ppl[0] - ppl[1]) > 1e-5 * ppl[0], ppl


def test_missing_lm_eval_is_one_line(tmp_path, tiny_model, monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "lm_eval" or m.startswith("lm_eval.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # `import lm_eval` raises ImportError
    out = tmp_path / "out"
    code, _, err = run_main(harness_args(tiny_model, tmp_path, out), capsys)
    assert_one_line_error(code, err, "lm-evaluation-harness is not installed",
                          "pip install 'longctx[harness]'")
    assert not out.exists()


def test_pickled_weights_are_refused_before_lm_eval(tmp_path, monkeypatch, capsys):
    import pickle

    from longctx.eval import harness

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('x')",))

    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama",
                                                    "architectures": ["LlamaForCausalLM"]}))
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Evil()))
    _tokenizer_files(folder)

    def no_lm_eval():
        raise AssertionError("lm-eval was reached with an unsafe model folder")

    monkeypatch.setattr(harness, "import_lm_eval", no_lm_eval)
    out = tmp_path / "out"
    code, _, err = run_main(harness_args(folder, tmp_path, out), capsys)
    assert_one_line_error(code, err, "pytorch_model.bin", "pickle format", "safetensors")
    assert not marker.exists() and not out.exists()


def test_report_shows_harness_beside_the_same_models_needle(needs_lm_eval, tmp_path, full_run,
                                                            tiny_model, task_dir):
    """Per run a harness table; across runs one row per harness output, with the needle
    average of the same model (folder identity and RoPE base) beside it."""
    from longctx.cli import main
    from longctx.report.collect import collect
    from longctx.report.html import render_report

    from ..report.htmlparse import parse

    base = tmp_path / "base"
    shutil.copytree(full_run, base / "harness")
    h = json.loads((base / "harness" / "harness.json").read_text())
    needle = {"stage": "eval.needle", "model": str(tiny_model),
              "model_identity": h["model_identity"], "average": 0.8, "headline": "ruler",
              "cells": [{"length": 100, "depth": 0, "score": 0.8, "scores": {"ruler": 0.8}}],
              "provenance": {"rope_theta": None}}
    (base / "needle").mkdir()
    (base / "needle" / "needle.json").write_text(json.dumps(needle))
    after = tmp_path / "after"
    main(harness_args(tiny_model, task_dir, after / "harness", "--limit", "2",
                      "--rope-theta", "7.5"))
    doc, _ = render_report(collect([base, after]))
    page = parse(doc)
    acc = h["results"]["tiny_mc"]["metrics"]["acc,none"]
    ppl = h["results"]["tiny_ll"]["metrics"]["perplexity,none"]
    own = [t for t in page.tables if t.heading.startswith("lm-evaluation-harness")]
    assert len(own) == 2
    assert own[0].texts()[1:] == [
        ["tiny_mc", "acc", f"{acc['value']:.4f}", f"{acc['stderr']:.4f}", "4", "0"],
        ["tiny_ll", "perplexity", f"{ppl['value']:.4f}", f"{ppl['stderr']:.4f}", "4", "0"]]
    assert "not comparable" in doc  # the limited run's warning
    [view] = [t for t in page.tables if "Table 3" in t.heading]
    header, first, second = view.texts()
    assert header[:5] == ["run", "model", "RoPE base", "needle", "RULER"]
    assert header[5:7] == ["tiny_mc acc", "tiny_ll perplexity"] and header[-1] == "note"
    assert first[0] == "base/harness" and second[0] == "after/harness"
    assert first[3] == "0.800" and first[4] == "–" and first[5] == f"{acc['value']:.4f}"
    assert second[2] == "7.5" and second[3] == "–"  # another RoPE base: another model
    assert second[-1] == "limited to 2"


def test_report_escapes_and_survives_odd_harness_json(tmp_path):
    """harness.json from elsewhere: a hostile task name is escaped, wrong shapes are skipped."""
    from longctx.report.collect import collect
    from longctx.report.html import render_report

    from ..report.htmlparse import parse
    from ..report.report_fixtures import HOSTILE

    runs = []
    for name, tasks, metrics in [("a", [HOSTILE], {"acc,none": {"value": 0.5, "stderr": 0.1}}),
                                 ("b", 7, ["not", "a", "dict"])]:
        folder = tmp_path / name / "harness"
        folder.mkdir(parents=True)
        results = {HOSTILE: {"metrics": metrics, "documents": "many"}}
        (folder / "harness.json").write_text(json.dumps(
            {"stage": "eval.harness", "model": HOSTILE, "tasks": tasks, "results": results,
             "provenance": {"rope_theta": [1]}, "limited": True, "limit": 3}))
        runs.append(tmp_path / name)
    doc, _ = render_report(collect(runs))
    page = parse(doc)
    assert HOSTILE not in doc and page.scripts == 0
    [view] = [t for t in page.tables if "Table 3" in t.heading]
    assert view.texts()[0][5] == f"{HOSTILE} acc"  # escaped in the page, text when parsed
    assert [r[5] for r in view.texts()[1:]] == ["0.5000", "–"]


def test_a_group_and_its_subtasks(needs_lm_eval, tmp_path, tiny_model, task_dir):
    from longctx.cli import main
    from longctx.report.collect import collect
    from longctx.report.html import render_report

    from ..report.htmlparse import parse

    out = tmp_path / "run" / "harness"
    main(["eval", "harness", "--model", str(tiny_model), "--tasks", "tiny_group",
          "--include-path", str(task_dir), "--device", "cpu", "--out", str(out)])
    h = json.loads((out / "harness.json").read_text())
    group, a, b = (h["results"][n] for n in ("tiny_group", "tiny_mc", "tiny_mc_again"))
    assert group["kind"] == "group" and group["subtasks"] == ["tiny_mc", "tiny_mc_again"]
    assert a["kind"] == b["kind"] == "task"
    assert group["documents"] == {"effective": 8}
    # the same documents twice: the group's mean equals each subtask's
    assert group["metrics"]["acc,none"]["value"] == pytest.approx(a["metrics"]["acc,none"]["value"])
    assert json.loads((out / "manifest.json").read_text())["counts"] == {"tasks": 2, "groups": 1}
    page = parse(render_report(collect([tmp_path / "run"]))[0])
    top, subs = [t.texts() for t in page.tables if t.heading.startswith("lm-evaluation-harness")]
    assert [r[0] for r in top[1:]] == ["tiny_group"]
    assert [r[0] for r in subs[1:]] == ["tiny_mc", "tiny_mc_again"]


@pytest.mark.slow  # indexes lm-eval's ~15K built-in task files (20-50 s on the shared 2 cores)
def test_unknown_task_is_one_line_before_out_is_claimed(needs_lm_eval, tmp_path, tiny_model,
                                                        task_dir, capsys):
    out = tmp_path / "out"
    args = harness_args(tiny_model, task_dir, out)
    args[args.index("--tasks") + 1] = "tiny_mc,no_such_task"
    code, _, err = run_main(args, capsys)
    line = assert_one_line_error(code, err, "no_such_task",
                                 str(task_dir), "lm-eval ls tasks")
    assert "tiny_mc," not in line and not out.exists()


def test_scores_equal_lm_evals_own_loading(needs_lm_eval, full_run, tiny_model, task_dir):
    """Handing lm-eval longctx's model instance scores what lm-eval's own loading of the same
    folder scores, so the numbers compare with lm-eval's published ones."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    raw = lm_eval.simple_evaluate(
        model="hf", model_args={"pretrained": str(tiny_model), "device": "cpu",
                                "dtype": "float32", "trust_remote_code": False},
        tasks=["tiny_mc", "tiny_ll"], log_samples=False,
        task_manager=TaskManager(include_path=str(task_dir), include_defaults=False))
    ours = json.loads((full_run / "harness.json").read_text())["results"]
    assert ours["tiny_mc"]["metrics"]["acc,none"]["value"] == raw["results"]["tiny_mc"]["acc,none"]
    assert ours["tiny_ll"]["metrics"]["perplexity,none"]["value"] == pytest.approx(
        raw["results"]["tiny_ll"]["perplexity,none"], rel=1e-6)
