"""Held-out evaluation split: no held-out document in any training row, whole documents."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from longctx.mix.heldout import PAD_DOMAIN, choose_heldout, heldout_draw, pack_heldout
from longctx.pack.build import run_build
from longctx.pack.buildplan import BuildConfig
from longctx.pack.shards import PackedDataset, ShardError


def _pieces(folder: Path) -> list[tuple[str, int, int]]:
    """(file id, line, domain code) of every piece in a packed folder, from provenance."""
    man = json.loads((folder / "manifest.json").read_text())
    files = [f["path"] for f in man["files"]] if "files" in man else None
    out = []
    for s in man["shards"]:
        t = pa.ipc.open_stream(pa.memory_map(str(folder / s["path"]))).read_all()
        for pf, pl, dd in zip(t.column("piece_file").to_pylist(), t.column("piece_line").to_pylist(),
                              t.column("doc_domains").to_pylist(), strict=True):
            for f, ln, d in zip(pf, pl, dd, strict=True):
                if d != PAD_DOMAIN:
                    out.append((files[f] if files else f, ln, d))
    return out


def _texts(base: Path) -> dict[tuple[str, int], str]:
    out = {}
    for p in sorted(base.glob("*.jsonl")):
        for i, line in enumerate(p.read_text().splitlines(), start=1):
            out[(p.name, i)] = json.loads(line)["text"]
    return out


def _build(corpus: Path, out: Path, **kw) -> dict:
    kw = {"eval_tokens": "6K", **kw}
    cfg = BuildConfig(inputs=[str(corpus)], out=str(out), tokens="40K", seq_len=1024,
                      long_threshold=512, eval_fraction=0.08, subset=False, **kw)
    return run_build(cfg, progress=False)


@pytest.fixture(scope="module")
def builds(gen_corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("heldout")
    runs = {
        "per_source": _build(gen_corpus, root / "ps", strategy="per_source"),
        "cut": _build(gen_corpus, root / "cut", strategy="cut"),
        "original_seed7": _build(gen_corpus, root / "orig", strategy="original", seed=7),
        "upsample": _build(gen_corpus, root / "up", strategy="upsample", upsample={"book": 3}),
    }
    return root, runs


def test_no_heldout_document_in_any_training_row(gen_corpus, builds):
    root, runs = builds
    texts = _texts(gen_corpus)
    folders = {"per_source": "ps", "cut": "cut", "original_seed7": "orig", "upsample": "up"}
    held_sets = []
    for name, sub in folders.items():
        man = runs[name]
        held_dir = root / sub / man["heldout"]["path"]
        train_files = [f["path"] for f in man["files"]]
        held_man = json.loads((held_dir / "manifest.json").read_text())
        assert held_man["stage"] == "data.heldout"
        held = {(train_files[f], ln) for f, ln, _ in _pieces_raw(held_dir)}
        assert held, name
        held_sets.append(held)
        train = {(f, ln) for f, ln, _ in _pieces(root / sub)}
        assert not held & train, name  # by document id
        held_text = {texts[k] for k in held}
        assert not held_text & {texts[k] for k in train}, name  # by content
    # held-out documents never train any arm: each arm's held-out set is outside every
    # other arm's training rows too
    for sub in folders.values():
        train = {(f, ln) for f, ln, _ in _pieces(root / sub)}
        for held in held_sets:
            assert not held & train


def _pieces_raw(folder: Path) -> list[tuple[int, int, int]]:
    man = json.loads((folder / "manifest.json").read_text())
    out = []
    for s in man["shards"]:
        t = pa.ipc.open_stream(pa.memory_map(str(folder / s["path"]))).read_all()
        for pf, pl, dd in zip(t.column("piece_file").to_pylist(), t.column("piece_line").to_pylist(),
                              t.column("doc_domains").to_pylist(), strict=True):
            out += [(f, ln, d) for f, ln, d in zip(pf, pl, dd, strict=True) if d != PAD_DOMAIN]
    return out


def test_heldout_rows_hold_whole_documents_from_their_start(gen_corpus, builds, tok):
    root, runs = builds
    man = runs["per_source"]
    held_dir = root / "ps" / "heldout"
    ds = PackedDataset(held_dir, stages=("data.heldout",))
    files = [f["path"] for f in man["files"]]
    texts = _texts(gen_corpus)
    t = pa.ipc.open_stream(pa.memory_map(str(held_dir / ds.manifest["shards"][0]["path"]))).read_all()
    seen = 0
    for i in range(len(ds)):
        row = ds.row(i)
        assert not row.continues
        pf = t.column("piece_file")[i].as_py()
        pl = t.column("piece_line")[i].as_py()
        for k in range(len(row.doc_domains)):
            a, b = int(row.doc_offsets[k]), int(row.doc_offsets[k + 1])
            if row.doc_domains[k] == PAD_DOMAIN:
                assert k == len(row.doc_domains) - 1  # padding only at the end
                continue
            ids = tok.encode_documents([texts[(files[pf[k]], pl[k])]])[0]
            assert np.array_equal(row.input_ids[a:b], ids[: b - a])  # from the first token
            seen += 1
    assert seen == man["heldout"]["documents"]
    per_domain = man["heldout"]["domains"]
    assert sum(v["tokens"] for v in per_domain.values()) == man["heldout"]["tokens"]


def test_heldout_split_is_the_same_for_every_strategy_and_seed(builds):
    _, runs = builds
    digests = {n: m["heldout"]["doc_ids_sha256"] for n, m in runs.items()}
    counts = {n: m["heldout"]["documents_held_out"] for n, m in runs.items()}
    # every build reads every file (subset=False), so the held-out rows are identical; with a
    # seeded file subset they come from the files read (the exclusion rule is the same)
    assert all(m["input_files"]["read"] == m["input_files"]["total"] for m in runs.values())
    assert len(set(digests.values())) == 1, digests
    assert len(set(counts.values())) == 1, counts


@pytest.mark.parametrize("eval_tokens", ["1K", "6K"])
def test_heldout_choice_equals_choosing_among_all_held_out_documents_tokenized(
        gen_corpus, tmp_path, tok, eval_tokens):
    """The rounds tokenize held-out documents only as far down their priority order as the
    choice can reach, yet choose what tokenizing all of them would."""
    import hashlib

    from longctx.mix.heldout import choose_heldout

    m = _build(gen_corpus, tmp_path / "o", eval_tokens=eval_tokens)
    texts = _texts(gen_corpus)
    held = [(k, t) for k, t in sorted(texts.items()) if heldout_draw(0, t)[0] < 0.08]
    domains = {k: json.loads((gen_corpus / k[0]).read_text().splitlines()[k[1] - 1])["meta"]
               ["redpajama_set_name"] for k, _ in held}
    names = sorted(set(domains.values()))
    picked = choose_heldout(
        np.asarray([names.index(domains[k]) for k, _ in held]),
        np.asarray([len(tok.encode_documents([t])[0]) for _, t in held]),
        np.asarray([heldout_draw(0, t)[1] for _, t in held], dtype=np.uint64),
        int(eval_tokens[:-1]) * 1000, 1024)
    ids = sorted(f"{held[i][0][0]}:{held[i][0][1]}" for i in picked)
    assert m["heldout"]["doc_ids_sha256"] == hashlib.sha256("\n".join(ids).encode()).hexdigest()
    assert m["heldout"]["documents_held_out"] == len(held)
    if eval_tokens == "1K":  # a small target: most held-out documents are never tokenized
        assert m["heldout"]["documents_tokenized"] < 0.5 * len(held)


def test_heldout_folder_cannot_be_trained_on(builds):
    root, _ = builds
    with pytest.raises(ShardError, match="data.heldout"):
        PackedDataset(root / "ps" / "heldout")


def test_duplicate_text_under_another_id_is_held_out_too(tmp_path):
    corpus = tmp_path / "c"
    corpus.mkdir()
    rng = np.random.default_rng(0)
    docs = [" ".join(f"w{int(x)}" for x in rng.integers(0, 500, 80)) for _ in range(300)]
    rows = docs + docs[:100]  # 100 duplicates under new ids
    with open(corpus / "a.jsonl", "w") as f:
        for t in rows:
            f.write(json.dumps({"text": t, "meta": {"redpajama_set_name": "web"}}) + "\n")
    man = run_build(BuildConfig(inputs=[str(corpus)], out=str(tmp_path / "o"), tokens="8K",
                                seq_len=512, long_threshold=64, strategy="original",
                                eval_tokens="100K", eval_fraction=0.2), progress=False)
    held = {ln for _, ln, _ in _pieces_raw(tmp_path / "o" / "heldout")}
    train = {ln for _, ln, _ in _pieces(tmp_path / "o")}
    held_text = {rows[ln - 1] for ln in held}
    assert not held_text & {rows[ln - 1] for ln in train}
    # every copy of a held-out text is held out
    for ln, t in enumerate(rows, start=1):
        if t in held_text:
            assert ln in held
    assert man["heldout"]["documents_held_out"] == len(held)


def test_no_eval_tokens_means_no_split_and_unchanged_output(gen_corpus, tmp_path):
    a = run_build(BuildConfig(inputs=[str(gen_corpus)], out=str(tmp_path / "a"), tokens="20K",
                              seq_len=1024, long_threshold=512), progress=False)
    assert "heldout" not in a and not (tmp_path / "a" / "heldout").exists()
    b = run_build(BuildConfig(inputs=[str(gen_corpus)], out=str(tmp_path / "b"), tokens="20K",
                              seq_len=1024, long_threshold=512, eval_fraction=0.3), progress=False)
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]


def test_choose_and_pack_heldout_rules():
    lengths = np.asarray([100, 700, 50, 300, 2000, 10, 1])
    domains = np.asarray([0, 0, 0, 1, 1, 1, 1])
    prio = np.asarray([5, 1, 3, 2, 9, 1, 4], dtype=np.uint64)
    # domain 0 in priority order: 700 (p1), 50 (p3), 100 (p5); budget 720 -> 700 and 50
    picked = choose_heldout(domains, lengths, prio, per_domain=720, seq_len=1024)
    assert sorted(picked[domains[picked] == 0].tolist()) == [1, 2]
    # domain 1 in priority order: 10, 300, 1, 2000: 311 tokens before the long one, so it is
    # taken (documents are taken while the tokens before them are below the budget)
    assert sorted(picked[domains[picked] == 1].tolist()) == [3, 4, 5, 6]
    rows = pack_heldout(lengths, prio, seq_len=1024)
    placed = sorted(i for r in rows for i in r.docs)
    assert placed == [0, 1, 2, 3, 4, 5]  # the 1-token document has nothing to score
    for r in rows:
        assert sum(r.lengths) + r.padding == 1024
    assert {4} in [set(r.docs) for r in rows]  # the long one alone, truncated to the row
    assert heldout_draw(0, "abc") == heldout_draw(0, "abc") != heldout_draw(1, "abc")
