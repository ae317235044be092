"""The build's steps run one at a time (scan_inputs, plan_selection, pack_selection), each
checked against its contract rather than against the finished manifest."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from longctx.mix.strategies import GLOBAL_GROUP
from longctx.pack.build import pack_selection, plan_selection
from longctx.pack.buildplan import BuildConfig, BuildError, open_work_dir, plan_scan
from longctx.pack.passes import scan_inputs
from longctx.pack.spill import SpillReader
from longctx.progress import progress_bar


def _plan(corpus, out, **kw):
    args = dict(inputs=[str(corpus)], out=str(out), tokens="60K", seq_len=1024,
                long_threshold=512, short_keep=0.1, seed=1)
    args.update(kw)
    plan = plan_scan(BuildConfig(**args))
    plan.out.mkdir(parents=True, exist_ok=True)
    open_work_dir(plan)
    return plan


def _scan(plan):
    with progress_bar(False) as bar:
        return scan_inputs(plan, bar)


@pytest.fixture(scope="module")
def stepped(gen_corpus_many, tmp_path_factory):
    """A per_source build of a small budget over 24 files, stopped after selection."""
    plan = _plan(gen_corpus_many, tmp_path_factory.mktemp("steps"))
    scan = _scan(plan)
    return plan, scan, plan_selection(plan, scan)


def test_scan_reads_files_in_the_plans_order_and_stops_when_covered(stepped):
    plan, scan, _ = stepped
    read = [s["index"] for s in scan.summaries]
    assert read == [t.index for t in plan.tasks[: len(read)]]
    # a 60K budget over a corpus many times larger: a subset, at least min_files files
    assert plan.cfg.min_files <= len(read) < len(plan.tasks)
    assert set(scan.stats.domains) == {"web", "code", "book", "qa"}
    # the pool holds every candidate of the files indexed, and only those
    assert sorted(set(scan.pool.cand["file"].tolist())) == sorted(read)
    assert len(scan.pool.cand) == sum(v["candidate_docs"] for s in scan.summaries
                                      for v in s["stats"].values())
    # the rounds tokenized part of them, enough for every budget
    assert 0 < scan.pool.tokenized.sum() < len(scan.pool.cand) and scan.pool.rounds >= 1


def test_scan_without_subset_reads_every_file(gen_corpus, tmp_path):
    plan = _plan(gen_corpus, tmp_path, subset=False)
    scan = _scan(plan)
    assert sorted(s["index"] for s in scan.summaries) == list(range(len(plan.tasks)))


def test_selection_fills_every_budget_exactly(stepped):
    plan, scan, chosen = stepped
    sel, el = chosen.sel, chosen.el
    assert sum(chosen.budgets.values()) == plan.total == int(sel.length.sum())
    weights = scan.stats.token_weights()
    assert chosen.vocab == sorted(weights)
    for d, share in chosen.shares.items():
        assert share == pytest.approx(weights[d] / sum(weights.values()))
    doms = el.domain[sel.doc]
    for i, d in enumerate(chosen.vocab):
        assert int(sel.length[doms == i].sum()) == chosen.budgets[d]
    # every piece lies inside its document
    assert np.all(sel.offset >= 0) and np.all(sel.length > 0)
    assert np.all(sel.offset + sel.length <= el.length[sel.doc])


def test_global_selection_has_one_budget(gen_corpus, tmp_path):
    plan = _plan(gen_corpus, tmp_path, strategy="global")
    chosen = plan_selection(plan, _scan(plan))
    assert chosen.budgets == {GLOBAL_GROUP: plan.total}
    assert int(chosen.sel.length.sum()) == plan.total


def test_selection_refuses_a_mix_domain_the_scan_never_saw(gen_corpus, tmp_path):
    plan = _plan(gen_corpus, tmp_path, mix={"web": 1.0, "novels": 1.0}, subset=False)
    with pytest.raises(BuildError, match="novels"):
        plan_selection(plan, _scan(plan))


def test_packed_rows_hold_exactly_the_selected_tokens(stepped):
    plan, scan, chosen = stepped
    sel, el = chosen.sel, chosen.el
    with progress_bar(False) as bar:
        shards = pack_selection(plan, scan, chosen, bar)
    assert sum(s["rows"] for s in shards) == plan.rows
    tables = [pa.ipc.open_stream(pa.memory_map(str(plan.out / s["path"]))).read_all()
              for s in shards]
    ids = np.concatenate([np.asarray(t.column("input_ids").to_pylist()).reshape(-1)
                          for t in tables])
    # the rows are the selected pieces' tokens, read from the spills, in packing order
    reader = SpillReader(plan.work, plan.tok.dtype, scan.pool.spilled)
    try:
        expected = np.concatenate([
            reader.read(int(el.file[i]), int(el.start[i]) + int(o), int(n))
            for i, o, n in zip(sel.doc, sel.offset, sel.length, strict=True)
        ])
    finally:
        reader.close()
    assert ids.shape == (plan.total,) and np.array_equal(ids, expected)
    per_domain = np.zeros(len(chosen.vocab), dtype=np.int64)
    for t in tables:
        for offs, doms in zip(t.column("doc_offsets").to_pylist(),
                              t.column("doc_domains").to_pylist(), strict=True):
            np.add.at(per_domain, doms, np.diff(offs))
    assert {d: int(per_domain[i]) for i, d in enumerate(chosen.vocab)} == chosen.budgets


def test_scan_and_selection_do_not_depend_on_worker_count(gen_corpus_many, tmp_path, stepped):
    plan1, scan1, chosen1 = stepped
    plan2 = _plan(gen_corpus_many, tmp_path, workers=2)
    scan2 = _scan(plan2)
    # what the output reads from the scan (files indexed, what was tokenized, the input
    # estimates) does not depend on which worker ran what
    assert [s["index"] for s in scan2.summaries] == [s["index"] for s in scan1.summaries]
    assert np.array_equal(scan2.pool.cand["length"], scan1.pool.cand["length"])
    assert scan2.pool.rounds == scan1.pool.rounds
    assert scan2.stats.estimate() == scan1.stats.estimate()
    chosen2 = plan_selection(plan2, scan2)
    assert chosen2.budgets == chosen1.budgets
    for k in ("doc", "offset", "length", "epoch"):
        assert np.array_equal(getattr(chosen2.sel, k), getattr(chosen1.sel, k))
