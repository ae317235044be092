"""Bad input, --strict, interruption and resume, export round trip, CLI, real RedPajama docs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from longctx.data.readers import DataError
from longctx.pack.build import run_build
from longctx.pack.buildplan import FAIL_HOOK_ENV, BuildConfig
from longctx.pack.export import run_export
from longctx.pack.shards import PackedDataset

from .helpers import verify_against_tokenizer


def _good(i, domain="web", words=40):
    return json.dumps({"text": f"doc {i} " + "word " * words * (1 + i % 5),
                       "meta": {"redpajama_set_name": domain}})


@pytest.fixture(scope="module")
def bad_corpus(tmp_path_factory):
    import zstandard

    folder = tmp_path_factory.mktemp("bad")
    lines = [
        _good(0).encode(),
        b'{"text": "unterminated',  # malformed_json (line 2)
        b"[1, 2, 3]",  # not_an_object
        json.dumps({"meta": {"redpajama_set_name": "web"}}).encode(),  # missing_text
        json.dumps({"text": 5, "meta": {"redpajama_set_name": "web"}}).encode(),  # non_string
        json.dumps({"text": "   ", "meta": {"redpajama_set_name": "web"}}).encode(),  # empty
        json.dumps({"text": "no domain here"}).encode(),  # missing_domain
        b'{"text": "bad \xff\xfe bytes", "meta": {"redpajama_set_name": "web"}}',  # invalid_utf8
        _good(1, "code").encode(),
        _good(2).encode(),
    ]
    (folder / "a_bad.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    import random

    rng = random.Random(0)  # varied text so the stream has several zstd blocks (128 KiB each)
    good = [json.dumps({"text": " ".join("".join(rng.choices("abcdefghij", k=6))
                                         for _ in range(500)),
                        "meta": {"redpajama_set_name": "code" if i % 2 else "web"}})
            for i in range(80)]
    blob = zstandard.ZstdCompressor().compress(("\n".join(good) + "\n").encode())
    (folder / "b_trunc.jsonl.zst").write_bytes(blob[: len(blob) * 2 // 3])  # cut mid-stream
    (folder / "c_ok.jsonl").write_text("\n".join(_good(i) for i in range(40, 50)) + "\n")
    return folder


def test_bad_input_is_skipped_counted_and_loses_no_good_doc(bad_corpus, tmp_path):
    m = run_build(BuildConfig(inputs=[str(bad_corpus)], out=str(tmp_path / "o"),
                              strategy="original", tokens="400K", seq_len=256,
                              long_threshold=64), progress=False)
    s = m["skipped"]
    for reason in ("malformed_json", "not_an_object", "missing_text", "non_string_text",
                   "empty_text", "missing_domain", "invalid_utf8", "truncated_file"):
        assert s.get(reason) == 1, (reason, s)
    # every good doc of the clean file and the readable part of the truncated file is packed
    data = PackedDataset(tmp_path / "o")
    seen = set()
    files = [f["path"] for f in m["files"]]
    import pyarrow as pa
    for entry in m["shards"]:
        t = pa.ipc.open_stream(pa.memory_map(str(tmp_path / "o" / entry["path"]))).read_all()
        for pf, pl in zip(t.column("piece_file").to_pylist(), t.column("piece_line").to_pylist(), strict=False):
            seen.update((files[f], ln) for f, ln in zip(pf, pl, strict=False))
    assert {("a_bad.jsonl", n) for n in (1, 9, 10)} <= seen
    assert {("c_ok.jsonl", n) for n in range(1, 11)} <= seen
    readable = {ln for f, ln in seen if f == "b_trunc.jsonl.zst"}
    docs_read = sum(v["docs"] for v in m["input"].values())
    assert docs_read == 3 + 10 + len(readable)
    assert readable == set(range(1, len(readable) + 1)) and len(readable) >= 10
    assert len(data) == m["num_sequences"]


def test_strict_stops_at_the_first_bad_record_naming_file_and_line(bad_corpus, tmp_path):
    with pytest.raises(DataError, match=r"a_bad\.jsonl:2: malformed_json"):
        run_build(BuildConfig(inputs=[str(bad_corpus / "a_bad.jsonl")], out=str(tmp_path / "o"),
                              tokens="4K", seq_len=256, long_threshold=64, strict=True),
                  progress=False)


def _cli(args, env_extra=None):
    env = dict(os.environ, HF_HUB_OFFLINE="1", **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "longctx", *args], capture_output=True,
                          text=True, env=env, timeout=300)


@pytest.mark.parametrize("hook,many", [("scan:2", False), ("pack:1", False), ("scan:7", True)])
def test_interrupted_build_rerun_equals_uninterrupted(gen_corpus, gen_corpus_many, tmp_path,
                                                      hook, many):
    corpus = gen_corpus_many if many else gen_corpus  # many files: domains freeze mid-scan
    args = ["data", "build", str(corpus), "--tokens", "40K", "--seq-len", "1024",
            "--long-threshold", "512", "--shard-rows", "8", "--workers", "2"]
    clean = _cli([*args, "--out", str(tmp_path / "clean")])
    assert clean.returncode == 0, clean.stderr
    crashed = _cli([*args, "--out", str(tmp_path / "x")], {FAIL_HOOK_ENV: hook})
    assert crashed.returncode != 0 and "simulated interruption" in crashed.stderr
    part = json.loads((tmp_path / "x" / "manifest.json").read_text())
    assert part["status"] == "running"
    with pytest.raises(Exception, match="did not finish"):
        PackedDataset(tmp_path / "x")
    rerun = _cli([*args, "--out", str(tmp_path / "x")])
    assert rerun.returncode == 0, rerun.stderr
    a = json.loads((tmp_path / "clean" / "manifest.json").read_text())
    b = json.loads((tmp_path / "x" / "manifest.json").read_text())
    assert len(a["shards"]) > 1
    assert a["shards"] == b["shards"]
    assert not (tmp_path / "x" / ".work").exists()


def test_export_paper_and_jsonl_round_trip(gen_corpus, tmp_path, tok):
    out = tmp_path / "p"
    m = run_build(BuildConfig(inputs=[str(gen_corpus)], out=str(out), tokens="12K",
                              seq_len=1024, long_threshold=512, shard_rows=5), progress=False)
    rec = verify_against_tokenizer(out, gen_corpus, tok)
    e = run_export(out, tmp_path / "paper", "paper")
    assert e["stage"] == "data.export" and e["num_sequences"] == m["num_sequences"]
    t = pq.read_table([str(tmp_path / "paper" / f["path"]) for f in e["files"]][0])
    tables = [pq.read_table(tmp_path / "paper" / f["path"]) for f in e["files"]]
    rows = [r for t in tables for r in t.to_pylist()]
    assert t.schema.field("labels").type == "int64"
    assert len(rows) == m["num_sequences"]
    data = PackedDataset(out)
    checked = 0
    for i, r in enumerate(rows):
        assert len(r["input_ids"]) == 1024
        assert r["labels"] == (rows[i + 1]["input_ids"][0] if i + 1 < len(rows) else -100)
        spans = r["source"]
        assert spans[0]["start"] == 0 and spans[-1]["end"] == 1024
        assert all(a["end"] == b["start"] for a, b in zip(spans, spans[1:], strict=False))
        assert [list(s) for s in spans][0] == ["source", "start", "end"]
        row = data.row(i)
        for k, s in enumerate(spans):
            if k == 0 and row.continues:
                continue
            ids = r["input_ids"][s["start"]:s["end"]]
            assert ids[0] == tok.bos_id
            text = tok.decode(ids[1:]).rstrip("\ufffd")
            originals = [v[2] for v in rec["docs"].values() if v[1] == s["source"]]
            assert any(o.startswith(text) for o in originals), text[:80]
            checked += 1
    assert checked > 10
    j = run_export(out, tmp_path / "jsonl", "jsonl")
    lines = [json.loads(x) for f in j["files"]
             for x in (tmp_path / "jsonl" / f["path"]).read_text().splitlines()]
    assert lines == rows


def test_cli_build_with_config_file_and_overrides(gen_corpus, tmp_path):
    from longctx.cli import main

    cfg = tmp_path / "b.yaml"
    cfg.write_text(yaml.safe_dump({"inputs": [str(gen_corpus)], "tokens": "8K", "seq_len": 512,
                                   "long_threshold": 256, "short_keep": 0.5}))
    main(["data", "build", "--config", str(cfg), "--out", str(tmp_path / "o"),
          "--seq-len", "1024", "--set", "short_keep=0.2", "--no-progress"])
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert m["seq_len"] == 1024  # the flag beats the file
    assert m["config"]["short_keep"] == 0.2  # --set beats both
    assert m["config"]["long_threshold"] == 256  # the file beats the default
    main(["data", "export", str(tmp_path / "o"), "--out", str(tmp_path / "e"), "--format", "jsonl"])
    assert (tmp_path / "e" / "manifest.json").is_file()
    with pytest.raises(SystemExit) as ex:
        main(["data", "build", str(gen_corpus), "--out", str(tmp_path / "z"), "--tokens", "8K",
              "--strategy", "nope"])
    assert ex.value.code == 2


def test_cli_help_lists_every_flag():
    r = _cli(["data", "build", "--help"])
    assert r.returncode == 0
    for flag in ("--out", "--tokenizer", "--strategy", "--tokens", "--seq-len", "--long-threshold",
                 "--short-keep", "--mix", "--upsample", "--text-field", "--domain-field", "--seed",
                 "--workers", "--strict", "--config", "--set"):
        assert flag in r.stdout, flag
    r = _cli(["data", "export", "--help"])
    assert r.returncode == 0 and "--format" in r.stdout and "paper" in r.stdout


def test_real_redpajama_per_source(slimpajama_jsonl, tmp_path, tok):
    """Real documents of all 7 domains. Each domain has few long docs here (C4: a dozen), so
    the realised long-token share scatters around the rule's expectation by a few points."""
    m = run_build(BuildConfig(inputs=[str(slimpajama_jsonl)], out=str(tmp_path / "rp"),
                              tokens="300K", seq_len=2048, long_threshold=1024), progress=False)
    assert len(m["domains"]) == 7 and not m["repeated"]
    assert m["tokens_total"] == m["num_sequences"] * 2048
    rec = verify_against_tokenizer(tmp_path / "rp", slimpajama_jsonl.parent, tok)
    for d, v in m["domains"].items():
        share = rec["tokens"][d] / m["tokens_total"]
        assert abs(share - v["target_share"]) < 0.01, d
        lf = rec["long_tokens"][d] / rec["tokens"][d]
        assert abs(lf - v["predicted_long_token_fraction"]) < 0.07, d
    for d in ("RedPajamaC4", "RedPajamaStackExchange"):  # mostly short docs: upsampled
        assert m["domains"][d]["long_token_fraction"] > m["input"][d]["long_token_fraction"] + 0.25
    # the token-weighted long share over all domains tracks the rule closely
    pred = sum(v["predicted_long_token_fraction"] * v["tokens"] for v in m["domains"].values())
    assert abs(m["long_token_fraction"] - pred / m["tokens_total"]) < 0.03
    assert np.isclose(sum(v["share"] for v in m["domains"].values()), 1.0)


def test_sentencepiece_tokenizer_folder_works_in_workers(llama2_tokenizer_model, slimpajama_jsonl,
                                                         tmp_path):
    """A LLaMA-2 SentencePiece tokenizer (the paper's) has no tokenizer.json: it is converted
    once by transformers and the workers use the converted file; ids match transformers."""
    import shutil

    from longctx.data.tokenizer import load_tokenizer

    folder = tmp_path / "llama2"
    folder.mkdir()
    shutil.copy(llama2_tokenizer_model, folder / "tokenizer.model")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
         "unk_token": "<unk>"}))
    ref = load_tokenizer(str(folder))
    assert ref.encode_documents(["Hello world"])[0].tolist() == [1, 15043, 3186]
    m = run_build(BuildConfig(inputs=[str(slimpajama_jsonl)], out=str(tmp_path / "o"),
                              tokenizer=str(folder), tokens="64K", seq_len=4096,
                              long_threshold=4096), progress=False)
    assert m["tokenizer"]["sha256"] == ref.fingerprint and m["tokenizer"]["bos_id"] == 1
    assert not (tmp_path / "o" / ".tokenizer").exists()
    verify_against_tokenizer(tmp_path / "o", slimpajama_jsonl.parent, ref)


def test_parquet_input_builds_with_exact_budgets(gen_corpus, tmp_path, tok):
    import pyarrow as pa

    folder = tmp_path / "pq"
    folder.mkdir()
    for f in sorted(gen_corpus.glob("*.jsonl"))[:3]:
        recs = [json.loads(x) for x in f.read_text().splitlines()]
        pq.write_table(pa.Table.from_pylist(recs), folder / (f.stem + ".parquet"))
    m = run_build(BuildConfig(inputs=[str(folder)], out=str(tmp_path / "o"), tokens="20K",
                              seq_len=1024, long_threshold=512), progress=False)
    assert m["tokens_total"] == 20 * 1024 and not m["skipped"]
    for v in m["domains"].values():
        assert v["tokens"] == v["target_tokens"]
    assert m["files"][0]["path"].endswith(".parquet")


def test_strict_error_from_a_worker_process(bad_corpus, tmp_path):
    with pytest.raises(DataError, match=r"a_bad\.jsonl:2: malformed_json"):
        run_build(BuildConfig(inputs=[str(bad_corpus / "a_bad.jsonl"),
                                      str(bad_corpus / "c_ok.jsonl")],
                              out=str(tmp_path / "o"), tokens="4K", seq_len=256,
                              long_threshold=64, strict=True, workers=2),
                  progress=False)


def test_build_killed_mid_scan_then_rerun_equals_uninterrupted(gen_corpus_many, tmp_path):
    """SIGKILL the whole process group (main, fork server, workers) while it scans."""
    import signal
    import time

    args = [sys.executable, "-m", "longctx", "data", "build", str(gen_corpus_many),
            "--tokens", "40K", "--seq-len", "1024", "--long-threshold", "512", "--workers", "2",
            "--min-files", "24"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", **{FAIL_HOOK_ENV: "slow:0.3"})
    proc = subprocess.Popen([*args, "--out", str(tmp_path / "x")], env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    work = tmp_path / "x" / ".work"
    deadline = time.time() + 120
    while len(list(work.glob("*.done"))) < 4 and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert 4 <= len(list(work.glob("*.done"))) < 24
    rerun = _cli([*args[3:], "--out", str(tmp_path / "x")])
    clean = _cli([*args[3:], "--out", str(tmp_path / "clean")])
    assert rerun.returncode == 0 and clean.returncode == 0, rerun.stderr + clean.stderr
    a = json.loads((tmp_path / "clean" / "manifest.json").read_text())
    b = json.loads((tmp_path / "x" / "manifest.json").read_text())
    assert a["shards"] == b["shards"] and a["domains"] == b["domains"]


def test_input_counts_agree_with_data_stats(slimpajama_jsonl, tmp_path):
    """`data build` input counts equal `data stats` when every document gets tokenized (a
    budget beyond the corpus), and are estimates, marked so, when the rounds tokenize only
    part of them: real for what was tokenized, the rest from bytes x the domain's tokens per
    byte. This file is small and heavy-tailed (100 GitHub files, a few of them most of its
    bytes), so a domain's estimate is within 25% here, the corpus total within 10%."""
    from longctx.cli import main

    main(["data", "stats", str(slimpajama_jsonl), "--out", str(tmp_path / "s"),
          "--long-threshold", "1024"])
    stats = json.loads((tmp_path / "s" / "stats.json").read_text())["domains"]
    exact = run_build(BuildConfig(inputs=[str(slimpajama_jsonl)], out=str(tmp_path / "o"),
                                  strategy="original", tokens="1M", seq_len=1024,
                                  long_threshold=1024, subset=False), progress=False)["input"]
    est = run_build(BuildConfig(inputs=[str(slimpajama_jsonl)], out=str(tmp_path / "p"),
                                tokens="100K", seq_len=1024, long_threshold=1024),
                    progress=False)["input"]
    assert set(stats) == set(exact) == set(est)
    for d, s in stats.items():
        assert exact[d]["docs"] == s["docs"] and exact[d]["tokens"] == s["tokens"], d
        assert exact[d]["long_token_fraction"] == pytest.approx(s["long_token_fraction"])
        assert not exact[d]["estimated"] and exact[d]["tokenized_docs"] == s["docs"]
        assert est[d]["docs"] == s["docs"]
        assert abs(est[d]["tokens"] / s["tokens"] - 1) < 0.25, d
        long = s["long_token_fraction"] * s["tokens"]
        assert abs(est[d]["long_tokens"] - long) <= 0.25 * long + 1, d
        assert est[d]["estimated"] == (est[d]["tokenized_docs"] < s["docs"])
    total = sum(s["tokens"] for s in stats.values())
    assert abs(sum(v["tokens"] for v in est.values()) / total - 1) < 0.1
