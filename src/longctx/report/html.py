"""One self-contained HTML page from collected stage outputs.

Self-contained means: inline CSS, every image a ``data:image/png;base64`` URI, no scripts and
no reference to anything outside the file, so the page opens offline and can be mailed or
archived as is. Every string that comes from a file (document text, model responses, domain
names, paths) goes through :func:`esc`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from longctx.intervals import paired_loss_difference
from longctx.plotting import eval_during_training_figure, png_bytes, ruler_figure
from longctx.report import plots
from longctx.report.collect import ReportError, RunOutputs, StageOutput, collect, eval_records
from longctx.report.markup import _num, esc, fmt, img, pct, signed, table

# A difference is highlighted only when its measured noise allows: the paired bootstrap
# interval over the documents both runs were scored on excludes zero. Without that
# measurement nothing is highlighted (the paper's own ±0.01 rule ignores noise).

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;
  color:#1d2330;background:#f6f7f9;line-height:1.45}
main{max-width:1100px;margin:0 auto;padding:1.5rem}
h1{margin:.2rem 0 .3rem}h2{border-bottom:2px solid #d8dce3;padding-bottom:.2rem;margin-top:2.2rem}
h3{margin:1.4rem 0 .4rem}
.meta{color:#5a6170;font-size:.9rem}
section.card{background:#fff;border:1px solid #e1e4ea;border-radius:8px;padding:1rem 1.2rem;
  margin:1rem 0}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.88rem}
th,td{border:1px solid #dde1e8;padding:.25rem .55rem;text-align:right;vertical-align:top}
th{background:#eef1f5}td.l,th.l{text-align:left}
td.better{background:#c9f2dc;font-weight:600}td.worse{background:#f9cfd6;font-weight:600}
td.na{color:#9aa1ad}tr.base td{background:#f3f5f8}
.rope{background:#fff4c2;font-weight:600}
img{max-width:100%;height:auto;display:block;margin:.5rem 0}
.warn{background:#fff1e6;border-left:4px solid #f08a24;padding:.4rem .8rem;margin:.5rem 0}
details{margin:.4rem 0}summary{cursor:pointer;color:#2c5fb5}
pre{white-space:pre-wrap;word-break:break-word;background:#f3f5f8;padding:.3rem .5rem;margin:0;
  font-size:.8rem;max-height:8rem;overflow:auto}
.kpi{display:inline-block;margin:.2rem 1.2rem .2rem 0}.kpi b{font-size:1.25rem}
"""


class _Page:
    """Collects sections and warnings while rendering."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.warnings: list[str] = []
        self.images = 0

    def add(self, s: str) -> None:
        self.parts.append(s)

    def png(self, out: StageOutput | None, draw: Callable[[], bytes], alt: str) -> str:
        """The stage's own PNG when it is a valid PNG, otherwise one drawn from the JSON."""
        data = None
        if out is not None and out.png is not None:
            try:
                data = out.png.read_bytes()
            except OSError as e:
                self.warnings.append(f"{out.png}: unreadable ({e}); redrawn from JSON")
            if data is not None and not data.startswith(plots.PNG_SIGNATURE):
                self.warnings.append(f"{out.png}: not a PNG; redrawn from JSON")
                data = None
        if data is None:
            data = draw()
        self.images += 1
        return img(data, alt)


# ---------------------------------------------------------------- sections of one run


def _stats_section(page: _Page, out: StageOutput) -> None:
    s = out.data
    doms = s.get("domains") or {}
    thr = s.get("long_threshold")
    page.add(f"<h3>Corpus statistics <span class=meta>({esc(out.label)})</span></h3>")
    page.add(
        f'<p class="meta">{fmt(s.get("total_tokens"))} tokens over {len(doms)} domains; '
        f"long = document of at least {fmt(thr)} tokens"
        f"{'; on a seeded sample of documents' if s.get('sampled') else ''}.</p>"
    )
    rows = []
    for name, d in doms.items():
        p = d.get("length_percentiles") or {}
        rows.append(
            [esc(name), fmt(d.get("docs")), fmt(d.get("tokens")), pct(d.get("token_share")),
             pct(d.get("long_token_fraction")), fmt(_num(d.get("chars_per_token")), 2),
             *(fmt(_num(p.get(k)), 0) for k in ("p50", "p90", "p99", "max"))]
        )
    page.add(table(["domain", "docs", "tokens", "token share", f"long-token fraction (≥{fmt(thr)})",
                    "chars/token", "p50 len", "p90 len", "p99 len", "max len"], rows))
    page.add(page.png(out, lambda: plots.stats_plot(s), f"corpus statistics {out.label}"))


def _build_section(page: _Page, out: StageOutput) -> None:
    m = out.data
    tok = m.get("tokenizer") or {}
    page.add(f"<h3>Mixture before / after <span class=meta>({esc(out.label)})</span></h3>")
    page.add(
        '<p class="meta">'
        f"strategy <b>{esc(m.get('strategy'))}</b>, seq_len {fmt(m.get('seq_len'))}, "
        f"{fmt(m.get('num_sequences'))} rows, {fmt(m.get('tokens_total'))} tokens, "
        f"tokenizer {esc(tok.get('name'))} (sha256 {esc(str(tok.get('sha256', ''))[:12])}…)</p>"
    )
    rows = []
    for r in plots.mixture_rows(m):
        rows.append(
            [esc(r["domain"]), fmt(r["input_docs"]),
             fmt(r["input_tokens"]) + (" (est.)" if r["estimated"] else ""),
             pct(r["input_share"]), pct(r["input_long"]), pct(r["target_share"]),
             fmt(r["output_tokens"]), pct(r["output_share"]), pct(r["output_long"])]
        )
    page.add(table(["domain", "input docs", "input tokens", "input share", "input long-token frac",
                    "target share", "output tokens", "output share", "output long-token frac"],
                   rows))
    skipped = m.get("skipped") or {}
    if skipped:
        page.add('<p class="meta">skipped input records: '
                 + ", ".join(f"{esc(k)}: {fmt(v)}" for k, v in skipped.items()) + "</p>")
    page.add(page.png(None, lambda: plots.mixture_plot(m), f"mixture {out.label}"))


def _flatten(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(d, dict):
        items: list[tuple[str, Any]] = []
        for k, v in d.items():
            items += _flatten(v, f"{prefix}{k}.")
        return items
    return [(prefix[:-1], d)]


def rope_base(manifest: dict[str, Any]) -> Any:
    """The trained RoPE base: the first ``rope_theta`` found anywhere in the train manifest."""
    for key, value in _flatten(manifest):
        if key.split(".")[-1] == "rope_theta" and value is not None:
            return value
    return None


def _base(v: Any) -> str:
    x = _num(v)
    return esc(v) if x is None else (f"{int(x):,}" if x.is_integer() else f"{x:g}")


def _train_section(page: _Page, out: StageOutput) -> None:
    m = out.data
    metrics = out.metrics
    page.add(f"<h3>Continual pretraining <span class=meta>({esc(out.label)})</span></h3>")
    kpis = [("model", esc(m.get("model") or (m.get("config") or {}).get("model"))),
            ("RoPE base", _base(rope_base(m))), ("status", esc(m.get("status")))]
    losses = [v for v in (_num(r.get("loss")) for r in metrics) if v is not None]
    if losses:
        kpis += [("steps logged", fmt(len(metrics))), ("first loss", fmt(losses[0])),
                 ("last loss", fmt(losses[-1]))]
    tokens = metrics[-1].get("tokens") if metrics else None
    if tokens is not None:
        kpis.append(("tokens", fmt(tokens)))
    page.add("<p>" + "".join(f'<span class="kpi">{k}: <b>{v}</b></span>' for k, v in kpis)
             + "</p>")
    page.add(page.png(out if out.png else None,
                      lambda: plots.training_curve(metrics, f"training curve ({out.label})"),
                      f"training curve {out.label}"))
    _eval_during_training(page, out)
    cfg = m.get("config") if isinstance(m.get("config"), dict) else {}
    rows = []
    for key, value in _flatten(cfg):
        shown = esc(value if not isinstance(value, list) else ", ".join(map(str, value)))
        if "rope" in key.lower():
            rows.append([(esc(key), "rope"), (shown, "rope")])
        else:
            rows.append([esc(key), shown])
    for key in ("rope_parameters", "rope"):  # rope settings recorded outside config
        if key in m and key not in cfg:
            for k, v in _flatten(m[key], f"{key}."):
                rows.append([(esc(k), "rope"), (esc(v), "rope")])
    if rows:
        page.add("<details open><summary>training config</summary>"
                 + table(["key", "value"], rows, left=2) + "</details>")


def _eval_during_training(page: _Page, out: StageOutput) -> None:
    """``train --eval-every``: loss by position and needle score against steps and tokens."""
    evals = eval_records(out.metrics)
    if not evals:
        return
    page.add("<h4>Evaluation during training</h4>")
    page.add(page.png(None, lambda: png_bytes(eval_during_training_figure(
        evals, f"evaluation during training ({out.label})")),
        f"held-out loss by position and needle score against training steps ({out.label})"))
    buckets = list(dict.fromkeys(b for e in evals for b in e["loss_by_bucket"]))
    has_key = any(e["key_loss_by_bucket"] is not None for e in evals)
    head = ["step", "tokens", *map(esc, buckets), *(f"key {esc(b)}" for b in buckets if has_key),
            "needle", "eval s"]
    rows = [[fmt(e["step"]), fmt(e["tokens"]),
             *(fmt(e["loss_by_bucket"].get(b)) for b in buckets),
             *(fmt((e["key_loss_by_bucket"] or {}).get(b)) for b in buckets if has_key),
             fmt(e["needle"]), fmt(e["eval_s"])] for e in evals]
    page.add("<details><summary>evaluations (held-out loss by position bucket, needle grid "
             "average)</summary>" + table(head, rows) + "</details>")


def _needle_title(run: RunOutputs, out: StageOutput) -> str:
    return f"{out.data.get('model') or '?'} — {out.label}"


def needle_length_averages(needle: dict[str, Any]) -> dict[int, float]:
    """Mean headline score per context length over all depths."""
    by_len: dict[int, list[float]] = {}
    for c in needle.get("cells") or []:
        if not isinstance(c, dict):
            continue
        s, length = _num(c.get("score")), _num(c.get("length"))
        if s is not None and length is not None:
            by_len.setdefault(int(length), []).append(s)
    return {n: sum(v) / len(v) for n, v in by_len.items()}


def _needle_section(page: _Page, run: RunOutputs, out: StageOutput) -> None:
    n = out.data
    cells = [c for c in n.get("cells", []) if isinstance(c, dict)]
    page.add(f"<h3>Needle in a haystack <span class=meta>({esc(out.label)})</span></h3>")
    page.add(
        "<p>"
        f'<span class="kpi">model: <b>{esc(n.get("model"))}</b></span>'
        f'<span class="kpi">average ({esc(n.get("headline"))}): <b>{fmt(_num(n.get("average")), 3)}'
        "</b></span>"
        f'<span class="kpi">needle: <b>{esc(n.get("needle"))}</b></span>'
        f'<span class="kpi">trained length: <b>{fmt(n.get("trained_length"))}</b></span>'
        f'<span class="kpi">cells: <b>{len(cells)}</b></span></p>'
    )
    averages = n.get("averages") if isinstance(n.get("averages"), dict) else {}
    if averages:
        page.add('<p class="meta">averages by scorer: '
                 + ", ".join(f"{esc(k)} {fmt(_num(v), 3)}" for k, v in averages.items())
                 + "</p>")
    page.add(page.png(out, lambda: plots.needle_heatmap(n, _needle_title(run, out)),
                      f"needle heatmap {out.label}"))
    by_len = needle_length_averages(n)
    if by_len:
        lens = sorted(by_len)
        page.add(table(["length"] + [fmt(x) for x in lens],
                       [["average score"] + [fmt(by_len[x], 3) for x in lens]]))
    rows = []
    for c in cells:
        scores = c.get("scores") or {}
        rows.append([fmt(c.get("length")), fmt(c.get("depth")), fmt(_num(c.get("score")), 3),
                     esc(", ".join(f"{k}={fmt(_num(v), 3)}" for k, v in scores.items())),
                     f"<pre>{esc(c.get('response'))}</pre>", fmt(_num(c.get("seconds")), 1)])
    if rows:
        page.add("<details><summary>all cells and model responses</summary>"
                 + table(["length", "depth", "score", "all scores", "response", "s"], rows,
                         left=0) + "</details>")


def ruler_length_averages(ruler: dict[str, Any]) -> dict[int, float]:
    """RULER's per-length average over tasks (0..100) as ruler.json records it."""
    averages = ruler.get("length_averages")
    if not isinstance(averages, dict):
        return {}
    out = {}
    for n, v in averages.items():
        length, score = _num(n), _num(v)
        if length is not None and score is not None:
            out[int(length)] = score
    return out


def _joined(values: Any) -> str:
    return ", ".join(map(str, values)) if isinstance(values, list) else str(values)


RULER_CELLS_SHOWN = 200  # responses listed in the page (a full grid has thousands)


def _ruler_section(page: _Page, out: StageOutput) -> None:
    r = out.data
    cells = [c for c in r.get("cells") or [] if isinstance(c, dict)]
    tasks = [t for t in r.get("tasks") or [] if isinstance(t, str)]
    page.add(f"<h3>RULER <span class=meta>({esc(out.label)})</span></h3>")
    page.add(
        "<p>"
        f'<span class="kpi">model: <b>{esc(r.get("model"))}</b></span>'
        f'<span class="kpi">average over lengths: <b>{fmt(_num(r.get("average")), 2)}</b></span>'
        f'<span class="kpi">tasks: <b>{len(tasks)}</b></span>'
        f'<span class="kpi">samples per task and length: <b>{fmt(r.get("samples"))}</b></span>'
        f'<span class="kpi">trained length: <b>{fmt(r.get("trained_length"))}</b></span></p>'
        '<p class="meta">Scores on RULER\'s scale: 100 x the mean sample score of a task at a '
        "length; the average row is the mean over the tasks that ran.</p>"
    )
    for s in r.get("skipped") or []:
        if isinstance(s, dict):
            page.add(f'<p class="warn">{esc(s.get("reason") or s.get("task"))}</p>')
    title = f"{r.get('model') or '?'} — {out.label}"
    page.add(page.png(out, lambda: png_bytes(ruler_figure(r, title)), f"RULER heatmap {out.label}"))
    by_len = ruler_length_averages(r)
    if by_len:
        lens = sorted(by_len)
        page.add(table(["length"] + [fmt(x) for x in lens],
                       [["RULER average"] + [fmt(by_len[x], 2) for x in lens]]))
    scores = r.get("task_scores") if isinstance(r.get("task_scores"), dict) else {}
    if scores and by_len:
        lens = sorted(by_len)
        rows = [[esc(t)] + [fmt(_num((v or {}).get(str(n))), 2) for n in lens]
                for t, v in scores.items() if isinstance(v, dict)]
        page.add("<details><summary>score per task and length</summary>"
                 + table(["task"] + [fmt(n) for n in lens], rows) + "</details>")
    rows = [[esc(c.get("task")), fmt(c.get("length")), fmt(c.get("index")),
             fmt(_num(c.get("score")), 3), f"<pre>{esc(_joined(c.get('answers')))}</pre>",
             f"<pre>{esc(c.get('response'))}</pre>"] for c in cells[:RULER_CELLS_SHOWN]]
    if rows:
        shown = f"first {len(rows)} of {len(cells)}" if len(cells) > len(rows) else "all"
        page.add(f"<details><summary>{shown} cells and model responses</summary>"
                 + table(["task", "length", "sample", "score", "answers", "response"], rows,
                         left=1) + "</details>")


def _iv(iv: Any) -> str:
    if not isinstance(iv, list) or len(iv) != 2 or _num(iv[0]) is None or _num(iv[1]) is None:
        return ""
    return f' <span class="meta">[{_num(iv[0]):.3f}, {_num(iv[1]):.3f}]</span>'


def _loss_table(loss: dict[str, Any], counts: dict[str, Any], buckets: list[str]) -> str:
    """Domain x bucket table of mean losses with intervals and token counts, plus an
    overall row (plain loss and key-token loss share it)."""
    ivs = loss.get("interval95") if isinstance(loss.get("interval95"), dict) else {}
    rows = []
    for name, vals in (loss.get("domains") or {}).items():
        vals, n = vals or {}, counts.get(name) or {}
        iv = ivs.get(name) if isinstance(ivs.get(name), dict) else {}
        rows.append([esc(name)] + [
            fmt(_num(vals.get(b))) + _iv(iv.get(b))
            + (f' <span class="meta">({fmt(n[b])} tok)</span>' if isinstance(n.get(b), int) else "")
            for b in buckets])
    overall = loss.get("overall") or {}
    oiv = loss.get("overall_interval95") if isinstance(loss.get("overall_interval95"), dict) else {}
    if overall:
        rows.append(["<b>overall</b>"] + [fmt(_num(overall.get(b))) + _iv(oiv.get(b))
                                           for b in buckets])
    return table(["domain"] + [esc(b) for b in buckets], rows)


def _loss_section(page: _Page, out: StageOutput) -> None:
    loss = out.data
    buckets = list(loss.get("buckets") or [])
    page.add(f"<h3>Loss by domain and position <span class=meta>({esc(out.label)}, model "
             f"{esc(loss.get('model'))})</span></h3>")
    split = loss.get("split")
    if split == "heldout":
        page.add('<p class="meta">Measured on <b>held-out documents</b> (in no training row). '
                 "In brackets: 95% bootstrap interval over documents.</p>")
    else:
        page.add('<p class="warn">Measured on <b>training rows</b>: the model may have been '
                 "trained on these tokens, so this is fit, not generalisation.</p>")
    page.add(_loss_table(loss, (loss.get("tokens") or {}).get("domains") or {}, buckets))
    key = loss.get("key_tokens") if isinstance(loss.get("key_tokens"), dict) else None
    if key:
        page.add(f'<p class="meta">Key-token loss (LongPPL): loss on the targets whose loss '
                 f'drops when the long context is present, marked by {esc(key.get("marked_by"))}'
                 f'. {esc(key.get("rule"))}.</p>')
        page.add(_loss_table(key, (key.get("tokens") or {}).get("domains") or {}, buckets))
    positions = loss.get("positions") or {}
    if positions:
        keys = sorted(positions, key=lambda k: int(k) if str(k).isdigit() else 0)
        page.add(table(["Loss@"] + [esc(k) for k in keys],
                       [["loss"] + [fmt(_num(positions[k])) for k in keys]]))
    page.add(page.png(out, lambda: plots.loss_plot(loss, f"loss ({out.label})"),
                      f"loss {out.label}"))


def _bookqa_section(page: _Page, out: StageOutput) -> None:
    b = out.data
    page.add(f"<h3>BookQA <span class=meta>({esc(out.label)})</span></h3>")
    page.add(f'<p><span class="kpi">F1: <b>{fmt(_num(b.get("f1")), 3)}</b></span>'
             f'<span class="kpi">questions: <b>{fmt(b.get("n"))}</b></span></p>')
    items = [i for i in (b.get("items") or []) if isinstance(i, dict)][:50]
    if items:
        preferred = [k for k in ("id", "question", "answers", "response", "prediction", "f1")
                     if k in items[0]]
        keys = preferred or [k for k in items[0] if k != "context"][:6]
        rows = [[f"<pre>{esc(i.get(k))}</pre>" for k in keys] for i in items]
        page.add("<details><summary>items</summary>"
                 + table([esc(k) for k in keys], rows, left=len(keys)) + "</details>")


def harness_rows(h: dict[str, Any], names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """(task, metric, value, stderr, documents, shots) of every metric of ``names`` (default:
    the tasks the run asked for), in harness.json's order."""
    results = h.get("results") if isinstance(h.get("results"), dict) else {}
    wanted = names if names is not None else [t for t in _harness_tasks(h) if t in results]
    rows = []
    for name in wanted:
        r = results.get(name) if isinstance(results.get(name), dict) else {}
        docs = r.get("documents") if isinstance(r.get("documents"), dict) else {}
        metrics = r.get("metrics") if isinstance(r.get("metrics"), dict) else {}
        for key, m in metrics.items():
            m = m if isinstance(m, dict) else {}
            rows.append({"task": name, "metric": str(key).removesuffix(",none"),
                         "value": _num(m.get("value")), "stderr": _num(m.get("stderr")),
                         "documents": docs.get("effective"), "shots": r.get("num_fewshot")})
    return rows


def _harness_tasks(h: dict[str, Any]) -> list[str]:
    tasks = h.get("tasks")
    return [t for t in tasks if isinstance(t, str)] if isinstance(tasks, list) else []


def _harness_table(rows: list[dict[str, Any]]) -> str:
    return table(["task", "metric", "value", "± stderr", "documents", "shots"],
                 [[esc(r["task"]), esc(r["metric"]), fmt(r["value"]), fmt(r["stderr"]),
                   fmt(r["documents"]), fmt(r["shots"])] for r in rows], left=2)


def _harness_section(page: _Page, out: StageOutput) -> None:
    h = out.data
    results = h.get("results") if isinstance(h.get("results"), dict) else {}
    page.add(f"<h3>lm-evaluation-harness <span class=meta>({esc(out.label)})</span></h3>")
    page.add(f'<p><span class="kpi">model: <b>{esc(h.get("model"))}</b></span>'
             f'<span class="kpi">lm-eval: <b>{esc(h.get("lm_eval_version"))}</b></span>'
             f'<span class="kpi">tasks: <b>{esc(", ".join(_harness_tasks(h)))}'
             "</b></span></p>")
    if h.get("limited"):
        page.add(f'<p class="warn">{esc(h.get("note") or "run with --limit")}</p>')
    page.add(_harness_table(harness_rows(h)))
    rest = [n for n in results if n not in _harness_tasks(h)]
    if rest:
        page.add(f"<details><summary>{len(rest)} subtasks and subgroups</summary>"
                 + _harness_table(harness_rows(h, rest)) + "</details>")


def _model_key(data: dict[str, Any]) -> tuple[str, float | None]:
    """Which model an eval output scored: its folder's identity (or name) and RoPE base."""
    prov = data.get("provenance") if isinstance(data.get("provenance"), dict) else {}
    return (str(data.get("model_identity") or data.get("model")), _num(prov.get("rope_theta")))


def _harness_comparison(page: _Page, runs: list[RunOutputs],
                        harness: list[tuple[str, StageOutput]]) -> None:
    """The paper's Table 3 view: per evaluated model, its harness scores beside the needle and
    RULER averages of the same model (same folder identity and RoPE base) from any run."""
    latest: dict[str, dict[tuple[str, float | None], Any]] = {"needle": {}, "ruler": {}}
    for kind, found in latest.items():
        for run in runs:
            for o in run.of(kind):
                found[_model_key(o.data)] = _num(o.data.get("average"))
    columns: list[tuple[str, str]] = []
    per_run = []
    for _, o in harness:
        values = {(r["task"], r["metric"]): r["value"] for r in harness_rows(o.data)}
        columns += [c for c in values if c not in columns]
        per_run.append(values)
    page.add("<h3>Harness beside long-context scores (the paper's Table 3 view)</h3>"
             '<p class="meta">One row per harness output; needle and RULER: the average of the '
             "same model (folder identity and RoPE base) where the reports hold one. In parentheses: "
             "the difference to the first row. Runs with --limit are marked: their scores are not "
             "comparable.</p>")
    rows = []
    for i, ((name, o), values) in enumerate(zip(harness, per_run, strict=True)):
        key = _model_key(o.data)
        rope = "model's" if key[1] is None else _base(key[1])
        cells = [esc(name), esc(o.data.get("model")), rope,
                 fmt(latest["needle"].get(key), 3), fmt(latest["ruler"].get(key), 2)]
        for c in columns:
            v, first = values.get(c), per_run[0].get(c)
            diff = "" if i == 0 or v is None or first is None else (
                f' <span class="meta">({v - first:+.3f})</span>')
            cells.append(fmt(v) + diff)
        cells.append(f"limited to {fmt(o.data.get('limit'))}" if o.data.get("limited") else "")
        rows.append(cells)
    page.add(table(["run", "model", "RoPE base", "needle", "RULER"]
                   + [f"{esc(t)} {esc(m)}" for t, m in columns] + ["note"], rows, left=3))


# ---------------------------------------------------------------- comparisons across runs


def _labelled(runs: list[RunOutputs], kind: str) -> list[tuple[str, StageOutput]]:
    many = len(runs) > 1
    out = []
    for run in runs:
        for o in run.of(kind):
            label = o.label if o.label != "." else ""
            name = f"{run.name}/{label}" if many and label else (run.name if many else label or ".")
            out.append((name, o))
    return out


def loss_differences(
    base: dict[str, Any], other: dict[str, Any], buckets: Sequence[str], domains: Sequence[str]
) -> dict[str, dict[str, float | None]]:
    """other − base per domain and bucket (the paper's Table 5 "v.s." rows); None when missing."""
    diffs: dict[str, dict[str, float | None]] = {}
    for d in domains:
        bv = (base.get("domains") or {}).get(d) or {}
        ov = (other.get("domains") or {}).get(d) or {}
        diffs[d] = {}
        for b in buckets:
            x, y = _num(bv.get(b)), _num(ov.get(b))
            diffs[d][b] = None if x is None or y is None else y - x
    return diffs


def _diff_cell(d: float | None, paired: dict[str, Any] | None = None) -> tuple[str, str] | str:
    """A difference, highlighted only when its paired interval excludes zero."""
    if d is None:
        return ("–", "na")
    text = signed(d)
    if paired:
        lo, hi = paired["interval95"]
        text += f' <span class="meta">[{lo:+.3f}, {hi:+.3f}]</span>'
        if paired["beyond_noise"]:
            return (text, "worse" if d > 0 else "better")
    return text


def _comparison_section(page: _Page, runs: list[RunOutputs]) -> None:
    losses = _labelled(runs, "loss")
    needles = _labelled(runs, "needle")
    rulers = _labelled(runs, "ruler")
    harness = _labelled(runs, "harness")
    if len(losses) < 2 and len(needles) < 2 and len(rulers) < 2 and len(harness) < 2:
        return
    page.add("<h2>Comparison</h2><section class=card>")
    if len(harness) >= 2:
        _harness_comparison(page, runs, harness)
    if len(rulers) >= 2:
        _average_comparison(page, "RULER average", rulers, ruler_length_averages, 2)
    if len(needles) >= 2:
        _average_comparison(page, "Needle average", needles, needle_length_averages, 3)
    if len(losses) >= 2:
        base_name, base = losses[0]
        buckets = list(base.data.get("buckets") or [])
        for _, o in losses[1:]:
            buckets += [b for b in (o.data.get("buckets") or []) if b not in buckets]
        domains = list((base.data.get("domains") or {}).keys())
        for _, o in losses[1:]:
            domains += [d for d in (o.data.get("domains") or {}) if d not in domains]
        page.add(
            "<h3>Per-domain loss against the baseline (the paper's Table 5 view)</h3>"
            f'<p class="meta">First row: loss of the baseline <b>{esc(base_name)}</b>; other rows: '
            "that run's loss minus the baseline's, with the 95% paired bootstrap interval over "
            "the documents both were scored on. Only differences whose interval excludes zero "
            "are highlighted (green: lower loss, red: higher); the rest are within noise.</p>"
        )
        for b in buckets:
            rows = [[esc(base_name) + " (baseline)"]
                    + [fmt(_num(((base.data.get("domains") or {}).get(d) or {}).get(b)), 3)
                       for d in domains]]
            for name, o in losses[1:]:
                diffs = loss_differences(base.data, o.data, [b], domains)
                rows.append([f"v.s. {esc(name)}"] + [
                    _diff_cell(diffs[d][b], paired_loss_difference(base.data, o.data, b, d))
                    for d in domains])
            page.add(f"<h4>{esc(b)} tokens</h4>")
            page.add(table(["context " + esc(b)] + [esc(plots._short(d)) for d in domains], rows,
                           row_class=lambda r: "base" if r == 0 else ""))
        positions: list[str] = []
        for _, o in losses:
            positions += [p for p in (o.data.get("positions") or {}) if p not in positions]
        if positions:
            positions.sort(key=lambda k: int(k) if str(k).isdigit() else 0)
            rows = []
            for i, (name, o) in enumerate(losses):
                vals = [_num((o.data.get("positions") or {}).get(p)) for p in positions]
                if i == 0:
                    rows.append([esc(name) + " (baseline)"] + [fmt(v, 3) for v in vals])
                else:
                    bvals = [_num((base.data.get("positions") or {}).get(p)) for p in positions]
                    rows.append([f"v.s. {esc(name)}"] + [
                        _diff_cell(None if v is None or bv is None else v - bv)
                        for v, bv in zip(vals, bvals, strict=True)])
            page.add("<h4>Loss@position</h4>")
            page.add(table(["run"] + [f"@{esc(p)}" for p in positions], rows,
                           row_class=lambda r: "base" if r == 0 else ""))
    page.add("</section>")


def _average_comparison(page: _Page, title: str, outputs: list[tuple[str, StageOutput]],
                        per_length: Callable[[dict[str, Any]], dict[int, float]],
                        digits: int) -> None:
    """A retrieval score's average (with its interval when the output has one) and per-length
    averages of every run, and the average's difference to the first run (needle, RULER)."""
    page.add(f"<h3>{esc(title)}</h3>")
    base = _num(outputs[0][1].data.get("average"))
    per_len = [per_length(o.data) for _, o in outputs]
    lengths = sorted({n for d in per_len for n in d})
    rows = []
    for (name, o), by_len in zip(outputs, per_len, strict=True):
        avg = _num(o.data.get("average"))
        delta = None if avg is None or base is None else avg - base
        rows.append([esc(name), esc(o.data.get("model")),
                     fmt(avg, digits) + _iv(o.data.get("average_interval95")),
                     "baseline" if o is outputs[0][1] else signed(delta, digits)]
                    + [fmt(by_len.get(n), digits) for n in lengths])
    page.add(table(["run", "model", "average", "vs first"] + [f"@{fmt(n)}" for n in lengths],
                   rows, left=2))


# ---------------------------------------------------------------- the page


def _ablation_sections(page: _Page, runs: list[RunOutputs]) -> set[str]:
    """Render the section of every run dir holding an ``ablation.json``; returns their names."""
    from longctx.report.ablation import ablation_section, load_ablation

    names = set()
    for run in runs:
        ab, warning = load_ablation(run.root)
        if warning:
            page.warnings.append(warning)
        if ab is not None:
            section, images = ablation_section(ab)
            page.add(section)
            page.images += images
            names.add(run.name)
    return names


def _demo_headline(page: _Page, run: RunOutputs) -> None:
    """The demo's own statement of what it measured (``demo.json``), first on the page."""
    import json

    try:
        demo = json.loads((run.root / "demo.json").read_text(encoding="utf-8"))
        lines = [str(x) for x in demo["headline"]]
    except (OSError, ValueError, KeyError, TypeError):
        return
    page.add("<section class=card><h2>What this demo measured</h2><ul>"
             + "".join(f"<li>{esc(x)}</li>" for x in lines) + "</ul></section>")


def render_report(runs: list[RunOutputs], title: str = "longctx report") -> tuple[str, int]:
    """The full HTML page and the number of embedded images."""
    page = _Page()
    for run in runs:
        page.warnings += run.warnings
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page.add(f"<h1>{esc(title)}</h1>")
    page.add(f'<p class="meta">generated {now} from '
             + ", ".join(f"<code>{esc(r.root)}</code>" for r in runs) + "</p>")
    for run in runs:
        _demo_headline(page, run)
    ablations = _ablation_sections(page, runs)
    _comparison_section(page, [r for r in runs if r.name not in ablations])
    for run in runs:
        page.add(f"<h2>Run {esc(run.name)}</h2>")
        if run.name in ablations:  # its arms are in the ablation section, not repeated here
            page.add(f'<p class="meta">stage outputs of every arm and seed: '
                     f"<code>{esc(run.root)}/arms/</code></p>")
            continue
        sections: list[tuple[str, list[StageOutput]]] = [
            ("Data", run.of("stats") + run.of("build")),
            ("Training", run.of("train")),
            ("Needle in a haystack", run.of("needle")),
            ("RULER", run.of("ruler")),
            ("Loss", run.of("loss")),
            ("BookQA", run.of("bookqa")),
            ("Harness", run.of("harness")),
        ]
        for _, outs in sections:
            if not outs:
                continue
            page.add("<section class=card>")
            for out in outs:
                if out.kind == "stats":
                    _stats_section(page, out)
                elif out.kind == "build":
                    _build_section(page, out)
                elif out.kind == "train":
                    _train_section(page, out)
                elif out.kind == "needle":
                    _needle_section(page, run, out)
                elif out.kind == "ruler":
                    _ruler_section(page, out)
                elif out.kind == "loss":
                    _loss_section(page, out)
                elif out.kind == "bookqa":
                    _bookqa_section(page, out)
                elif out.kind == "harness":
                    _harness_section(page, out)
            page.add("</section>")
        if not run.outputs:
            page.add('<p class="warn">no stage outputs found in this directory</p>')
    body = "\n".join(page.parts)
    warn = "".join(f'<p class="warn">{esc(w)}</p>' for w in page.warnings)
    doc = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>"
        f"<body><main>{warn}{body}</main></body></html>\n"
    )
    return doc, page.images


def write_report(run_dirs: list[Path], out: Path, title: str = "longctx report") -> int:
    """Collect stage outputs under ``run_dirs`` and write one HTML page; returns image count."""
    runs = collect(list(run_dirs))
    doc, images = render_report(runs, title=title)
    if out.exists() and out.is_dir():
        raise ReportError(f"--out {out} is a directory; give a file name such as report.html")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(doc, encoding="utf-8")
    tmp.replace(out)
    return images
