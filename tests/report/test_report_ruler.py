"""The report's RULER section: heatmap, per-length averages, skipped tasks, comparison."""

from __future__ import annotations

import json
from pathlib import Path

from longctx.report.collect import collect
from longctx.report.html import write_report

from .htmlparse import decode_png, parse
from .report_fixtures import HOSTILE, ruler_json, tiny_png

BEFORE = {"niah_single_1": {"1024": 100.0, "2048": 90.0}, "vt": {"1024": 50.0, "2048": 20.0}}
AFTER = {"niah_single_1": {"1024": 100.0, "2048": 100.0}, "vt": {"1024": 60.0, "2048": 40.0}}


def _write(folder: Path, data: dict, png: bool = False) -> Path:
    folder.mkdir(parents=True)
    (folder / "ruler.json").write_text(json.dumps(data))
    if png:
        (folder / "ruler.png").write_bytes(tiny_png("blue"))
    return folder


def _render(tmp_path: Path, *runs: Path) -> str:
    out = tmp_path / "report.html"
    write_report(list(runs), out)
    return out.read_text(encoding="utf-8")


def test_ruler_output_is_collected_with_its_png(tmp_path: Path) -> None:
    _write(tmp_path / "run" / "ruler", ruler_json("m", BEFORE), png=True)
    (run,) = collect([tmp_path / "run"])
    (out,) = run.of("ruler")
    assert out.label == "ruler" and out.png is not None and out.png.name == "ruler.png"


def test_ruler_section_heatmap_averages_and_skipped(tmp_path: Path) -> None:
    import base64

    run = tmp_path / "run"
    _write(run / "ruler", ruler_json("smollm2-135m", BEFORE, skipped=("qa_1",)))
    doc = _render(tmp_path, run)
    p = parse(doc)
    (img,) = p.imgs  # drawn from the JSON: no ruler.png in the folder
    w, h = decode_png(img)
    assert w > 300 and h > 150
    (avg,) = [t for t in p.tables if t.texts() and t.texts()[0][0] == "length"]
    # per length: (100 + 50) / 2 = 75, (90 + 20) / 2 = 55
    assert avg.texts() == [["length", "1,024", "2,048"], ["RULER average", "75.00", "55.00"]]
    (per_task,) = [t for t in p.tables if t.texts() and t.texts()[0][0] == "task"
                   and t.texts()[0][1] == "1,024"]
    assert per_task.texts()[1:] == [["niah_single_1", "100.00", "90.00"],
                                    ["vt", "50.00", "20.00"]]
    text = "".join(p.text)
    assert "average over lengths: 65.00" in text
    assert "qa_1 skipped: needs --squad FILE" in text
    assert HOSTILE not in doc and "<script>" not in doc  # responses are escaped

    # the stage's own PNG is used when it is there
    _write(tmp_path / "with-png" / "ruler", ruler_json("m", BEFORE), png=True)
    stage_png = (tmp_path / "with-png" / "ruler" / "ruler.png").read_bytes()
    assert base64.b64encode(stage_png).decode() in _render(tmp_path, tmp_path / "with-png")


def test_ruler_comparison_across_runs(tmp_path: Path) -> None:
    a = _write(tmp_path / "base" / "ruler", ruler_json("base", BEFORE)).parent
    b = _write(tmp_path / "tuned" / "ruler", ruler_json("tuned", AFTER)).parent
    p = parse(_render(tmp_path, a, b))
    (t,) = [t for t in p.tables if t.heading == "RULER average"]
    header, first, second = t.texts()
    assert header == ["run", "model", "average", "vs first", "@1,024", "@2,048"]
    assert first == ["base/ruler", "base", "65.00", "baseline", "75.00", "55.00"]
    # after: (100 + 60) / 2 = 80, (100 + 40) / 2 = 70, average 75 -> +10 against the first
    assert second == ["tuned/ruler", "tuned", "75.00", "+10.00", "80.00", "70.00"]


def test_malformed_ruler_json_still_renders(tmp_path: Path) -> None:
    bad = ruler_json("m", BEFORE)
    bad["task_scores"] = {"niah_single_1": {"1024": "x", "2048": None}, "vt": 3,
                          "$\\undefinedcommand{x}$ \ud800": {"1024": 5}}
    bad["length_averages"] = {"1024": float("nan"), "oops": 1}
    bad["cells"] = [None, {"task": 1}]
    _write(tmp_path / "run" / "ruler", bad)
    p = parse(_render(tmp_path, tmp_path / "run"))
    assert len(p.imgs) == 1
