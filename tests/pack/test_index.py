"""Pass 1 (index one file): candidates, held-out documents and the tokenized sample, checked
against an independent recomputation of the draws and the rules."""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from longctx.data.readers import DataError
from longctx.mix.heldout import heldout_draw
from longctx.mix.sampling import doc_draws
from longctx.pack import index as ix
from longctx.pack.index import IndexTask, index_file, index_paths, load_index, load_index_done
from longctx.pack.tok import resolve_spec

THRESHOLD = 64
KEEP = 0.3
HELD = 0.1


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = random.Random(3)
    path = tmp_path_factory.mktemp("index") / "part.jsonl"
    lines = []
    for i in range(900):
        domain = ("web", "code", "book")[i % 3]
        n = rng.randint(5, 60) if domain != "book" else rng.randint(2000, 6000)
        text = " ".join(rng.choice(("alpha", "beta", "gamma", "déjà", "x")) for _ in range(n))
        lines.append(json.dumps({"text": text, "meta": {"redpajama_set_name": domain}}))
    lines.insert(10, '{"text": "broken')  # line 11: malformed
    path.write_text("\n".join(lines) + "\n")
    return path


def _task(path, work, **kw):
    args = dict(index=3, path=str(path), rel="part.jsonl", work_dir=str(work), index_hash="h1",
                tokenizer=resolve_spec(None), text_field="text",
                domain_field="meta.redpajama_set_name", seed=5, long_threshold=THRESHOLD,
                keep=KEEP, strict=False, heldout=HELD, heldout_seed=2)
    args.update(kw)
    return IndexTask(**args)


def _docs(path):
    out = []
    for line, raw in enumerate(path.read_text().splitlines(), start=1):
        try:
            rec = json.loads(raw)
        except ValueError:
            continue
        out.append((line, rec["text"], rec["meta"]["redpajama_set_name"]))
    return out


def test_index_matches_the_rules(corpus, tmp_path):
    task = _task(corpus, tmp_path)
    summary = index_file(task)
    arrays = load_index(tmp_path, 3)
    doms = summary["domains"]
    specials = task.tokenizer.specials_per_doc
    exp_cand, exp_held = [], []
    stats = {d: Counter() for d in ("web", "code", "book")}
    for line, text, dom in _docs(corpus):
        nbytes = len(text.encode())
        hu, hprio = heldout_draw(2, text)
        if hu < HELD:
            exp_held.append((line, dom, nbytes, hprio))
            stats[dom]["heldout_docs"] += 1
            continue
        stats[dom]["docs"] += 1
        stats[dom]["bytes"] += nbytes
        u, prio = doc_draws(5, f"part.jsonl:{line}")
        kept = u < KEEP
        if nbytes + specials + 1 < THRESHOLD and not kept:
            stats[dom]["untok_docs"] += 1
            continue
        exp_cand.append((line, dom, nbytes, prio, kept))
    got_cand = list(zip(arrays["line"].tolist(), [doms[c] for c in arrays["domain"]],
                        arrays["nbytes"].tolist(), arrays["priority"].tolist(),
                        arrays["kept"].tolist(), strict=True))
    assert got_cand == exp_cand
    got_held = list(zip(arrays["held_line"].tolist(), [doms[c] for c in arrays["held_domain"]],
                        arrays["held_nbytes"].tolist(), arrays["held_priority"].tolist(),
                        strict=True))
    assert got_held == exp_held and exp_held
    assert arrays["priority"].dtype == np.uint64 and arrays["kept"].dtype == bool
    # the text spill holds every candidate's and held-out document's text at its offset
    blob = index_paths(tmp_path, 3)[1].read_bytes()
    texts = {line: text for line, text, _ in _docs(corpus)}
    for pre in ("", "held_"):
        for line, at, n in zip(arrays[pre + "line"], arrays[pre + "start"],
                               arrays[pre + "nbytes"], strict=True):
            assert blob[at : at + n].decode() == texts[int(line)]
    assert len(blob) == int(arrays["nbytes"].sum() + arrays["held_nbytes"].sum())
    assert summary["skipped"] == {"malformed_json": 1}
    for d, c in stats.items():
        st = summary["stats"][d]
        for k in ("docs", "bytes", "untok_docs", "heldout_docs"):
            assert st[k] == c[k], (d, k)
        assert st["candidate_docs"] == sum(1 for x in exp_cand if x[1] == d)
        assert st["kept_docs"] == sum(1 for x in exp_cand if x[1] == d and x[4])
        assert st["docs"] == st["candidate_docs"] + st["untok_docs"]
    assert stats["web"]["untok_docs"] > 0  # the rule rejected some short web documents


def test_sample_is_the_lowest_draws_topped_up_per_domain(corpus, tmp_path, tok):
    summary = index_file(_task(corpus, tmp_path))
    by_dom: dict[str, list] = {}
    for line, text, dom in _docs(corpus):
        if heldout_draw(2, text)[0] < HELD:
            continue
        u, _ = doc_draws(5, f"part.jsonl:{line}")
        by_dom.setdefault(dom, []).append((u, line, text[: ix.SAMPLE_CHARS]))
    for dom, docs in by_dom.items():
        docs.sort()
        chosen = [t for u, _, t in docs if u < ix.SAMPLE_RATE]
        nbytes = sum(len(t.encode()) for t in chosen)
        for u, _, t in docs:
            if u < ix.SAMPLE_RATE:
                continue
            if len(chosen) >= ix.TOPUP_DOCS or nbytes >= ix.TOPUP_BYTES:
                break
            chosen.append(t)
            nbytes += len(t.encode())
        st = summary["stats"][dom]
        assert st["sample_docs"] == len(chosen) > 0, dom
        assert st["sample_bytes"] == nbytes
        assert st["sample_tokens"] == sum(len(ids) for ids in tok.encode_documents(chosen))
    # long documents are cut, so a domain of huge documents stays cheap to sample
    book = summary["stats"]["book"]
    assert book["sample_bytes"] < ix.TOPUP_BYTES + ix.SAMPLE_CHARS * 2


def test_finished_index_is_found_and_other_settings_are_not(corpus, tmp_path):
    task = _task(corpus, tmp_path)
    first = index_file(task)
    paths = index_paths(tmp_path, 3)
    assert [p.name for p in paths] == ["0000003.index.npz", "0000003.index.text",
                                       "0000003.index.done"]
    assert load_index_done(task) == first
    assert load_index_done(replace(task, index_hash="h2")) is None
    paths[0].unlink()
    assert load_index_done(task) is None  # a marker without its arrays is not finished
    assert not list(tmp_path.glob("*.tmp*"))


def test_no_heldout_split_and_keep_one(corpus, tmp_path):
    s = index_file(_task(corpus, tmp_path, heldout=0.0, keep=1.0))
    a = load_index(tmp_path, 3)
    assert len(a["held_line"]) == 0
    docs = sum(v["docs"] for v in s["stats"].values())
    assert len(a["line"]) == docs == 900 and a["kept"].all()  # keep 1: every document


def test_strict_raises_on_the_bad_line(corpus, tmp_path):
    with pytest.raises(DataError, match=r"part\.jsonl:11: malformed_json"):
        index_file(_task(corpus, tmp_path, strict=True))
