"""data build end to end on a generated corpus (independent recounts, not the manifest)."""

from __future__ import annotations

import json

import pytest

from longctx.pack.build import run_build
from longctx.pack.buildplan import BuildConfig, BuildError
from longctx.pack.shards import PackedDataset
from longctx.pack.tok import resolve_spec
from longctx.stage import sha256_file

from .helpers import verify_against_tokenizer


def build(corpus, out, **kw):
    args = dict(inputs=[str(corpus)], out=str(out), tokens="100K", seq_len=1024,
                long_threshold=512, short_keep=0.1, seed=1)
    args.update(kw)
    return run_build(BuildConfig(**args), progress=False)


@pytest.fixture(scope="module")
def per_source(gen_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("ps")
    return out, build(gen_corpus, out)


def test_tokenizer_spec_matches_load_tokenizer(tok):
    spec = resolve_spec(None)
    fast = spec.load()
    assert fast.fingerprint == tok.fingerprint
    text = ["Héllo wörld, long context!\n  code();", "second"]
    assert [a.tolist() for a in fast.encode_documents(text)] == [
        b.tolist() for b in tok.encode_documents(text)]


def test_fast_encoding_equals_encode_documents(tok, slimpajama_jsonl):
    texts = [json.loads(x)["text"] for x in slimpajama_jsonl.read_text().splitlines()[::7]]
    assert [a.tolist() for a in tok.encode_documents(texts, fast=True)] == [
        b.tolist() for b in tok.encode_documents(texts)]


def test_per_source_shares_lengths_and_totals(per_source, gen_corpus, tok):
    out, m = per_source
    assert m["stage"] == "data.build" and m["status"] == "done"
    assert m["tokens_total"] == m["num_sequences"] * m["seq_len"] == 98 * 1024
    assert sum(s["rows"] for s in m["shards"]) == m["num_sequences"]
    assert len(PackedDataset(out)) == m["num_sequences"]
    for s in m["shards"]:
        assert sha256_file(out / s["path"]) == s["sha256"]
    # recount from the shards by re-tokenizing every packed document from the corpus
    rec = verify_against_tokenizer(out, gen_corpus, tok)
    assert sum(rec["tokens"].values()) == m["tokens_total"]
    for d, v in m["domains"].items():
        assert rec["tokens"][d] == v["tokens"] == v["target_tokens"]
        assert abs(rec["tokens"][d] / m["tokens_total"] - v["target_share"]) < 0.01
        lf = rec["long_tokens"][d] / rec["tokens"][d]
        assert lf == pytest.approx(v["long_token_fraction"])
        # the paper's rule: L / (L + p S), from the input statistics
        inp = m["input"][d]
        L = inp["long_tokens"]
        S = inp["tokens"] - L
        assert v["predicted_long_token_fraction"] == pytest.approx(L / (L + 0.1 * S), rel=1e-4)
        assert abs(lf - v["predicted_long_token_fraction"]) < 0.06, d
    # length upsampling raised the long share of the mostly-short domains
    for d in ("web", "qa"):
        assert m["domains"][d]["long_token_fraction"] > m["input"][d]["long_token_fraction"] + 0.2
    # the first row begins with the first document's BOS
    assert int(PackedDataset(out).input_ids(0)[0]) == tok.bos_id


def test_default_targets_are_input_token_shares(per_source):
    _, m = per_source
    total = sum(v["tokens"] for v in m["input"].values())
    for d, v in m["domains"].items():
        assert v["target_share"] == pytest.approx(m["input"][d]["tokens"] / total)


@pytest.mark.parametrize("workers", [2, 4])
def test_more_workers_give_identical_shards(gen_corpus, tmp_path, per_source, workers):
    _, m1 = per_source  # built with one worker
    m2 = build(gen_corpus, tmp_path / f"w{workers}", workers=workers)
    assert [s["sha256"] for s in m1["shards"]] == [s["sha256"] for s in m2["shards"]]
    assert m1["domains"] == m2["domains"] and m1["input"] == m2["input"]


def test_input_order_does_not_matter(gen_corpus, tmp_path):
    files = sorted(str(f) for f in gen_corpus.glob("*.jsonl"))
    a = build(gen_corpus, tmp_path / "a", inputs=files, tokens="20K")
    b = build(gen_corpus, tmp_path / "b", inputs=files[::-1], tokens="20K")
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]


def test_rerun_with_same_config_is_skipped(gen_corpus, tmp_path):
    m1 = build(gen_corpus, tmp_path / "a", tokens="20K")
    m2 = build(gen_corpus, tmp_path / "a", tokens="20K")
    assert m2.get("skipped_rerun") and m2["config_hash"] == m1["config_hash"]
    m3 = build(gen_corpus, tmp_path / "a", tokens="30K")
    assert not m3.get("skipped_rerun") and m3["tokens_total"] == 30 * 1024


def test_subset_of_files_covers_budgets(gen_corpus, tmp_path):
    m = build(gen_corpus, tmp_path / "s", tokens="10K", min_files=1)
    assert m["input_files"]["subset"] and m["input_files"]["read"] < 6
    assert not m["repeated"]
    for _d, v in m["domains"].items():
        assert v["tokens"] == v["target_tokens"]
        assert v["available_tokens"] >= 1.2 * v["target_tokens"]  # the margin
    # a budget near the corpus size makes the subset grow to all files, never less
    big = build(gen_corpus, tmp_path / "b", tokens="150K", min_files=1)
    assert big["input_files"]["read"] == 6


def test_repeats_are_recorded_and_strict_refuses(gen_corpus, tmp_path):
    m = build(gen_corpus, tmp_path / "r", tokens="400K")
    assert m["repeated"] and m["warnings"]
    d, info = next(iter(m["repeated"].items()))
    assert info["epochs"] >= 2 and m["domains"][d]["tokens"] == m["domains"][d]["target_tokens"]
    with pytest.raises(BuildError, match="strict"):
        build(gen_corpus, tmp_path / "r2", tokens="400K", strict=True)


def test_original_cut_global_upsample(gen_corpus, tmp_path, tok):
    orig = build(gen_corpus, tmp_path / "o", strategy="original", tokens="60K")
    for d, v in orig["domains"].items():
        assert v["predicted_long_token_fraction"] == pytest.approx(
            orig["input"][d]["long_token_fraction"])
    assert abs(orig["domains"]["web"]["long_token_fraction"]
               - orig["input"]["web"]["long_token_fraction"]) < 0.1

    cut = build(gen_corpus, tmp_path / "c", strategy="cut", tokens="60K")
    data = PackedDataset(tmp_path / "c")
    import numpy as np
    for i in range(len(data)):
        r = data.row(i)
        assert int(np.diff(r.doc_offsets).max()) <= 512
    assert cut["tokens_total"] == 59 * 1024

    glob_ = build(gen_corpus, tmp_path / "g", strategy="global", tokens="150K")
    assert all(v["target_tokens"] is None for v in glob_["domains"].values())
    assert sum(v["tokens"] for v in glob_["domains"].values()) == glob_["tokens_total"]
    # global shifts the mix away from mostly-short domains (many docs each: low variance)
    tot_in = sum(v["tokens"] for v in glob_["input"].values())
    for d in ("qa", "web"):
        in_share = glob_["input"][d]["tokens"] / tot_in
        assert glob_["domains"][d]["expected_share"] < in_share, d
    assert glob_["domains"]["qa"]["share"] < glob_["input"]["qa"]["tokens"] / tot_in - 0.03
    for d in ("qa", "web", "code"):  # many docs each: the realised share tracks (L + pS) / sum
        assert abs(glob_["domains"][d]["share"] - glob_["domains"][d]["expected_share"]) < 0.03
    long_doms = sum(glob_["domains"][d]["share"] for d in ("book", "code"))
    assert long_doms > sum(glob_["input"][d]["tokens"] for d in ("book", "code")) / tot_in

    up = build(gen_corpus, tmp_path / "u", strategy="upsample", upsample={"book": 3},
               tokens="60K")
    w = {d: v["tokens"] for d, v in up["input"].items()}
    w["book"] *= 3
    for d, v in up["domains"].items():
        assert abs(v["share"] - w[d] / sum(w.values())) < 0.01


def test_mix_override_and_unknown_domain(gen_corpus, tmp_path):
    m = build(gen_corpus, tmp_path / "m", tokens="30K", mix={"web": 1, "code": 1, "book": 2})
    assert m["domains"]["qa"]["tokens"] == 0
    assert abs(m["domains"]["book"]["share"] - 0.5) < 0.01
    with pytest.raises(BuildError, match="nosuch"):
        build(gen_corpus, tmp_path / "m2", tokens="30K", mix={"web": 1, "nosuch": 1})


def test_manifest_has_contract_keys(per_source):
    _, m = per_source
    for k in ("stage", "status", "format_version", "config", "config_hash", "seq_len",
              "num_sequences", "tokens_total", "domain_vocab", "domains", "input", "skipped",
              "shards", "tokenizer", "strategy", "seconds"):
        assert k in m, k
    for v in m["domains"].values():
        assert {"target_tokens", "tokens", "long_token_fraction"} <= set(v)
    for v in m["input"].values():
        assert {"docs", "tokens", "long_token_fraction", "estimated"} <= set(v)
    assert {"name", "sha256"} <= set(m["tokenizer"])
    assert {"path", "rows", "sha256"} <= set(m["shards"][0])
    json.dumps(m)  # JSON-serialisable


def test_subset_indexes_few_files_tokenizes_little_and_stays_deterministic(gen_corpus_many,
                                                                           tmp_path):
    """Pass 1 indexes a seeded subset of files, the rounds tokenize only what the cut-offs
    reach; which worker ran what must not matter."""
    m1 = build(gen_corpus_many, tmp_path / "w1", tokens="40K", workers=1)
    for w in (2, 4):
        mw = build(gen_corpus_many, tmp_path / f"w{w}", tokens="40K", workers=w)
        assert [s["sha256"] for s in m1["shards"]] == [s["sha256"] for s in mw["shards"]]
        assert m1["domains"] == mw["domains"] and m1["input"] == mw["input"]
        assert m1["rounds"] == mw["rounds"] >= 1
    files = m1["input_files"]
    assert files["subset"] and files["read"] < files["total"]
    assert not m1["repeated"]
    for v in m1["domains"].values():
        assert v["tokens"] == v["target_tokens"]
        assert v["available_tokens"] >= v["target_tokens"]
    tokenized = sum(v["tokenized_docs"] for v in m1["input"].values())
    assert tokenized < 0.5 * sum(v["docs"] for v in m1["input"].values())
    # every output token comes from a document pass 2 tokenized (nothing repeated here)
    encoded = sum(v["tokenized_tokens"] for v in m1["input"].values())
    assert m1["tokens_total"] <= encoded < sum(v["tokens"] for v in m1["input"].values())


def test_small_rounds_run_here_and_write_the_same(gen_corpus_many, tmp_path, monkeypatch):
    """A round with little text to tokenize runs in this process instead of starting
    workers; where it runs changes nothing it writes."""
    from longctx.pack import passes

    calls: list = []
    real = passes.run_ordered

    def spy(step, n_tasks, make_task, workers, *args, **kw):
        calls.append((step.__name__, workers))
        return real(step, n_tasks, make_task, workers, *args, **kw)

    monkeypatch.setattr(passes, "run_ordered", spy)
    built = []
    for limit, where in ((0, {2}), (1 << 40, {1})):
        monkeypatch.setattr(passes, "SMALL_ROUND_BYTES", limit)
        calls.clear()
        built.append(build(gen_corpus_many, tmp_path / f"o{limit}", tokens="40K", workers=2))
        rounds = [w for step, w in calls if step == "scan_file"]
        assert rounds and set(rounds) == where
        assert {w for step, w in calls if step == "index_file"} == {2}
    a, b = built
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
    assert a["input"] == b["input"] and a["domains"] == b["domains"]


def _pieces_by_doc(out):
    """{(file index, line): tokens packed} from the shards' provenance."""
    import pyarrow as pa

    man = json.loads((out / "manifest.json").read_text())
    got: dict = {}
    for s in man["shards"]:
        t = pa.ipc.open_stream(pa.memory_map(str(out / s["path"]))).read_all()
        for pf, pl, offs in zip(t.column("piece_file").to_pylist(),
                                t.column("piece_line").to_pylist(),
                                t.column("doc_offsets").to_pylist(), strict=True):
            for f, ln, a, b in zip(pf, pl, offs, offs[1:], strict=False):
                got[(f, ln)] = got.get((f, ln), 0) + b - a
    return got


@pytest.mark.parametrize("strategy,tokens", [("per_source", "30K"), ("global", "30K"),
                                             ("original", "100K")])
def test_selection_equals_tokenizing_every_document_then_selecting(gen_corpus_many, tmp_path,
                                                                    tok, strategy, tokens):
    """Lazy rounds tokenize a small part of the files read, yet choose exactly what
    tokenizing all of them and applying the rule would: per group, eligible documents (long,
    or kept by their draw) in priority order until the budget, the last one cut."""
    from longctx.data.token_bound import MAX_BYTES_PER_TOKEN, TokenBound
    from longctx.mix.sampling import doc_draws

    m = build(gen_corpus_many, tmp_path / "o", tokens=tokens, strategy=strategy, min_files=1)
    bound = TokenBound(tok.backend)
    keep = m["keep_probability"]
    files = [f["path"] for f in m["files"]]
    groups: dict = {}
    candidates: dict = {}  # group -> what the rounds tokenize: kept, or not provably short
    for fi, f in enumerate(m["files"]):
        if not f["read"]:
            continue
        for line, raw in enumerate((gen_corpus_many / f["path"]).read_text().splitlines(), 1):
            rec = json.loads(raw)
            u, prio = doc_draws(1, f"{files[fi]}:{line}")
            n = len(tok.encode_documents([rec["text"]])[0])
            domain = rec["meta"]["redpajama_set_name"]
            key = domain if strategy != "global" else "*"
            if n >= 512 or u < keep:
                groups.setdefault(key, []).append((prio, fi, line, n))
            raw = rec["text"].encode()
            # what the rounds must tokenize: kept, or not provably short by bytes or bound
            if u < keep or (len(raw) >= 512 - 2 and not (
                    len(raw) <= MAX_BYTES_PER_TOKEN * 512 and bound.upper([raw])[0] + 1 < 512)):
                candidates.setdefault(key, []).append((prio, fi, line, n, domain))
    expected: dict = {}
    last: dict = {}  # group -> selection order key of its last document chosen
    budgets = ({d: v["target_tokens"] for d, v in m["domains"].items()}
               if strategy != "global" else {"*": m["tokens_total"]})
    for key, docs in groups.items():
        left = budgets[key]
        for prio, fi, line, n in sorted(docs):
            if left <= 0:
                break
            expected[(fi, line)] = min(n, left)
            last[key] = (prio, fi, line)
            left -= n
    assert _pieces_by_doc(tmp_path / "o") == expected
    # the manifest's floor: every candidate up to the last document chosen, in selection order
    needed: dict = {}
    for key, docs in candidates.items():
        for prio, fi, line, n, domain in docs:
            if key in last and (prio, fi, line) <= last[key]:
                needed[domain] = needed.get(domain, 0) + n
    for d, v in m["input"].items():
        assert v["needed_tokens"] == needed.get(d, 0)
        assert m["domains"][d]["tokens"] <= v["needed_tokens"] <= v["tokenized_tokens"]
    tokenized = sum(v["tokenized_docs"] for v in m["input"].values())
    assert tokenized < 0.8 * sum(v["docs"] for v in m["input"].values())
    proven = sum(v["proven_short_docs"] for v in m["input"].values())
    assert (proven > 0) == (strategy != "original")  # original keeps every document
