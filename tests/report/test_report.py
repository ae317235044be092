"""``longctx report`` on hand-written stage outputs (tests/report/conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from longctx.report.collect import ReportError, collect
from longctx.report.html import write_report

from .htmlparse import decode_png, parse
from .report_fixtures import BASE_LOSS, HOSTILE, PER_SOURCE_DIFF, make_run


def _render(tmp_path: Path, *runs: Path) -> str:
    out = tmp_path / "report.html"
    write_report(list(runs), out)
    return out.read_text(encoding="utf-8")


def test_collect_finds_every_stage_output(run_dir: Path) -> None:
    (run,) = collect([run_dir])
    kinds = sorted(o.kind for o in run.outputs)
    assert kinds == ["bookqa", "build", "loss", "needle", "needle", "stats", "train"]
    assert [o.label for o in run.of("needle")] == ["needle-before", "needle-after"]
    (train,) = run.of("train")
    assert [m["loss"] for m in train.metrics] == [3.0, 2.8, 2.7, 2.65]
    (stats,) = run.of("stats")  # stats.json wins over its bare manifest: one entry, not two
    assert stats.png is not None and stats.png.name == "stats.png"


def test_report_is_self_contained_with_decodable_pngs(tmp_path: Path, run_dir: Path) -> None:
    p = parse(_render(tmp_path, run_dir))
    # stats, mixture, training curve, needle before + after, loss
    assert len(p.imgs) >= 6
    for src in p.imgs:
        w, h = decode_png(src)
        assert w > 0 and h > 0
    external = [u for u in p.urls if not u[2].startswith("data:")]
    assert external == []
    assert not any(u[2].lower().startswith(("http:", "https:", "//")) for u in p.urls)
    assert p.scripts == 0


def test_stage_pngs_are_reused_and_missing_ones_drawn(tmp_path: Path, run_dir: Path) -> None:
    import base64

    stage_png = (run_dir / "stats" / "stats.png").read_bytes()
    doc = _render(tmp_path, run_dir)
    assert base64.b64encode(stage_png).decode() in doc
    # without stage PNGs the report draws them from the JSON: same number of images
    bare = make_run(tmp_path / "bare", with_pngs=False, loss_values=BASE_LOSS)
    assert len(parse(_render(tmp_path, bare)).imgs) == len(parse(doc).imgs)


def test_hostile_strings_are_escaped(tmp_path: Path, run_dir: Path) -> None:
    doc = _render(tmp_path, run_dir)
    assert "<script>" not in doc
    assert '<img src="http://evil' not in doc
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in doc
    p = parse(doc)
    # the browser shows the response as text, exactly as the model wrote it
    assert HOSTILE in "".join(p.text)
    assert p.scripts == 0


def test_hostile_domain_name_is_escaped(tmp_path: Path, run_dir: Path) -> None:
    path = run_dir / "stats" / "stats.json"
    stats = json.loads(path.read_text())
    stats["domains"]['<b onmouseover="x()">evil</b>'] = stats["domains"].pop("RedPajamaC4")
    path.write_text(json.dumps(stats))
    doc = _render(tmp_path, run_dir)
    assert "<b onmouseover" not in doc
    assert "&lt;b onmouseover=&quot;x()&quot;&gt;evil&lt;/b&gt;" in doc


def test_mixture_table_shows_input_and_output_shares(tmp_path: Path, run_dir: Path) -> None:
    p = parse(_render(tmp_path, run_dir))
    (t,) = [t for t in p.tables if t.heading.startswith("Mixture before / after")]
    header, *rows = t.texts()
    assert header[:4] == ["domain", "input docs", "input tokens", "input share"]
    book = next(r for r in rows if r[0] == "RedPajamaBook")
    # input: 400 / 1000 tokens; output: 820 / 2048 tokens; long fractions 1.0 both sides
    assert book[2] == "400 (est.)"
    assert book[3] == "40.0%"
    assert book[7] == f"{100 * 820 / 2048:.1f}%"
    gh = next(r for r in rows if r[0] == "RedPajamaGithub")
    assert (gh[4], gh[8]) == ("20.0%", "60.0%")


def test_training_section_shows_rope_base_and_losses(tmp_path: Path, run_dir: Path) -> None:
    doc = _render(tmp_path, run_dir)
    text = "".join(parse(doc).text)
    assert "RoPE base: 1,000,000" in text
    assert "last loss: 2.6500" in text
    p = parse(doc)
    cfg = next(t for t in p.tables if ["key", "value"] in t.texts())
    rope = [r for r in cfg.rows if r[0][0] == "rope.rope_theta"]
    assert rope and rope[0][1] == ("1000000.0", "l rope")


def test_needle_section_per_length_averages(tmp_path: Path, run_dir: Path) -> None:
    p = parse(_render(tmp_path, run_dir))
    avg_tables = [t for t in p.tables if t.texts() and t.texts()[0][0] == "length"
                  and len(t.rows) == 2]
    # before: scores cycle 1,0,1 over (1024: 0,50,100), (2048: 0,50,100) -> 2/3 and 2/3
    before = avg_tables[0].texts()
    assert before[0] == ["length", "1,024", "2,048"]
    assert before[1] == ["average score", "0.667", "0.667"]
    text = "".join(p.text)
    assert "average (ruler): 0.667" in text and "average (ruler): 1.000" in text


def test_comparison_matches_hand_computed_differences(tmp_path: Path, two_runs) -> None:
    a, b = two_runs
    p = parse(_render(tmp_path, a, b))
    for j, bucket in enumerate(["0-4096", "4096-131072"]):
        (t,) = [t for t in p.tables if t.heading == f"{bucket} tokens"]
        header, base_row, diff_row = t.rows
        domains = [h for h, _ in header[1:]]
        assert domains == ["C4", "Book", "Github"]
        full = {"C4": "RedPajamaC4", "Book": "RedPajamaBook", "Github": "RedPajamaGithub"}
        for k, short in enumerate(domains, start=1):
            d = full[short]
            assert base_row[k][0] == f"{BASE_LOSS[d][j]:.3f}"
            expected = PER_SOURCE_DIFF[d][j]
            text, cls = diff_row[k]
            assert text == f"{expected:+.3f}"
            # no per-document losses: the noise is unknown, so nothing is highlighted
            assert "better" not in cls and "worse" not in cls
    (t,) = [t for t in p.tables if t.heading == "4096-131072 tokens"]
    assert t.rows[2][1] == ("-0.010", "")


def test_comparison_highlights_only_differences_beyond_the_paired_interval(
    tmp_path: Path, two_runs
) -> None:
    import json

    import numpy as np

    a, b = two_runs
    rng = np.random.default_rng(0)
    docs = {"RedPajamaBook": 30, "RedPajamaC4": 30}
    ids = [f"{i}:0" for i in range(60)]
    doms = ["RedPajamaBook"] * 30 + ["RedPajamaC4"] * 30
    base = rng.uniform(1.0, 3.0, 60)
    # Book: every document 0.065 lower (beyond noise); C4: +0.002 on average but each
    # document moves by +-0.5 (within noise)
    noise = np.concatenate([np.full(30, -0.065), rng.choice([-0.5, 0.5], 30) + 0.002])
    for run, vals in ((a, base), (b, base + noise)):
        path = run / "loss" / "loss.json"
        loss = json.loads(path.read_text())
        loss["per_document"] = {"id": ids, "domain": doms,
                                "bucket_sums": [[float(v) * 100, 0.0] for v in vals],
                                "bucket_counts": [[100, 0] for _ in vals]}
        path.write_text(json.dumps(loss))
    assert sum(docs.values()) == 60
    p = parse(_render(tmp_path, a, b))
    (t,) = [t for t in p.tables if t.heading == "0-4096 tokens"]
    header, _, diff_row = t.rows
    cls = {h: c for (h, _), (_, c) in zip(header[1:], diff_row[1:], strict=True)}
    assert "better" in cls["Book"]
    assert "better" not in cls["C4"] and "worse" not in cls["C4"]
    assert "[" in diff_row[2][0]  # the interval is printed beside the difference


def test_loss_table_and_null_values(tmp_path: Path) -> None:
    values = dict(BASE_LOSS)
    values["RedPajamaArXiv"] = (1.66, None)  # no tokens in the long bucket
    run = make_run(tmp_path / "r", with_pngs=False, loss_values=values)
    p = parse(_render(tmp_path, run))
    t = next(t for t in p.tables if t.heading.startswith("Loss by domain"))
    rows = {r[0]: r[1:] for r in t.texts()}
    assert rows["RedPajamaArXiv"] == ["1.6600", "–"]
    assert rows["overall"] == ["2.0000", "1.5000"]
    pos = next(t for t in p.tables if t.texts()[0][0] == "Loss@")
    assert pos.texts()[0] == ["Loss@", "1024", "4096", "16384"]


def test_partial_and_broken_outputs_do_not_stop_the_report(tmp_path: Path) -> None:
    run = tmp_path / "partial"
    (run / "train").mkdir(parents=True)
    (run / "train" / "manifest.json").write_text(json.dumps(
        {"stage": "train", "status": "running", "config": {"rope_theta": 5e5}}))
    (run / "train" / "metrics.jsonl").write_text(
        '{"step": 1, "loss": 3.0, "lr": 1e-4, "tokens": 10, "tokens_per_s": 1}\n{"step": 2, "lo')
    (run / "needle").mkdir()
    (run / "needle" / "needle.json").write_text("{not json")
    doc = _render(tmp_path, run)
    p = parse(doc)
    assert len(p.imgs) == 1  # the training curve from the one complete metrics line
    decode_png(p.imgs[0])
    text = "".join(p.text)
    assert "needle.json: unreadable" in text
    assert "metrics.jsonl:2: not valid JSON" in text
    assert "RoPE base: 500,000" in text


def test_missing_or_empty_run_dir_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="not found"):
        collect([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="no stage outputs"):
        collect([tmp_path / "empty"])


def test_report_cli(tmp_path: Path, run_dir: Path, capsys) -> None:
    from longctx.cli import main

    out = tmp_path / "sub" / "r.html"
    main(["report", str(run_dir), "--out", str(out)])
    assert out.is_file()
    assert f"report: {out}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["report", str(tmp_path / "missing"), "--out", str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: run directory not found") and "\n" not in err


def test_needle_before_after_comparison(tmp_path: Path, run_dir: Path) -> None:
    p = parse(_render(tmp_path, run_dir))
    (t,) = [t for t in p.tables if t.texts() and t.texts()[0][:4] == ["run", "model", "average",
                                                                       "vs first"]]
    header, before, after = t.texts()
    assert header[4:] == ["@1,024", "@2,048"]
    assert before == ["needle-before", "smollm2-135m", "0.667", "baseline", "0.667", "0.667"]
    # after: every cell 1.0 -> +1/3 against the first needle run
    assert after == ["needle-after", "smollm2-135m-trained", "1.000", "+0.333", "1.000", "1.000"]


def test_report_reads_files_only_never_stage_code(tmp_path: Path, run_dir: Path) -> None:
    """The report depends on the output contracts, not on the stages' Python modules."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from longctx.report.html import write_report\n"
        f"write_report([Path({str(run_dir)!r})], Path({str(tmp_path / 'r.html')!r}))\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[:2] in (['longctx', 'data'],"
        " ['longctx', 'eval'], ['longctx', 'train'], ['longctx', 'mix'], ['longctx', 'pack'])"
        " or m == 'torch')\n"
        "print('IMPORTED', bad)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "IMPORTED []" in proc.stdout
    assert (tmp_path / "r.html").is_file()
