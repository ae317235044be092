"""The ablation config: presets load, overrides merge into sections, and bad configs fail in
seconds with one line that names the key (exit code 2 from the CLI)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from longctx.ablate.config import AblationConfigError, load_ablation_config, parse_seeds
from longctx.config import ConfigError
from longctx.errors import LongctxError

from .ablate_helpers import CPU_PRESET, REPO


def _write(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load(CPU_PRESET.read_text())
    data["corpus"]["inputs"] = [str(tmp_path / "corpus")]
    edit(data)
    path = tmp_path / "ablate.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _load(tmp_path: Path, edit, *sets: str):
    return load_ablation_config(_write(tmp_path, edit), out=str(tmp_path / "out"),
                                overrides=list(sets))


BAD = {
    "unknown arm key": (lambda d: d["arms"]["per_source"].update(flavour="x"),
                        "arms.per_source.flavour"),
    "unknown strategy": (lambda d: d["arms"]["per_source"].update(strategy="best"),
                         "arms.per_source.strategy"),
    "unknown top-level key": (lambda d: d.update(epochs=3), "epochs"),
    "arm sets lr": (lambda d: d["arms"]["book_up"].update(lr=0.01), "arms.book_up.lr"),
    "arm sets steps": (lambda d: d["arms"]["book_up"].update(train={"steps": 9}),
                       "arms.book_up.steps"),
    "arm sets seq_len (ambiguous)": (lambda d: d["arms"]["original"].update(seq_len=256),
                                     "arms.original.seq_len"),
    "arm sets its own seed": (lambda d: d["arms"]["original"].update(build={"seed": 3}),
                              "arms.original.seed"),
    "differs names an unset key": (lambda d: d["arms"]["original"].update(differs=["lr"]),
                                   "arms.original.differs"),
    "upsample without factors": (lambda d: d["arms"]["book_up"].pop("upsample"),
                                 "arms.book_up.upsample"),
    "global with a mix": (lambda d: d["arms"].update(g={"strategy": "global",
                                                         "upsample": {"A": 2}}), "arms.g"),
    "shared strategy": (lambda d: d["build"].update(strategy="cut"), "build.strategy"),
    "shared unknown build key": (lambda d: d["build"].update(tokenz="1K"), "build.tokenz"),
    "shared bad type": (lambda d: d["train"].update(steps="many"), "train.steps"),
    "shared train out": (lambda d: d["train"].update(out="x"), "train.out"),
    "no held-out tokens": (lambda d: d["build"].pop("eval_tokens"), "build.eval_tokens"),
    "unknown loss key": (lambda d: d["eval"]["loss"].update(bucket=["0-8"]),
                         "eval.loss.bucket"),
    "bad loss bucket": (lambda d: d["eval"]["loss"].update(buckets=["8-0"]), "8-0"),
    "eval model": (lambda d: d["eval"]["needle"].update(model="m"), "eval.needle.model"),
    "no arms": (lambda d: d.update(arms={}), "arms"),
    "zero seeds": (lambda d: d.update(seeds=0), "seeds"),
    "bad arm name": (lambda d: d["arms"].update({"a/b": {"strategy": "original"}}), "arms.a/b"),
    "negative lr": (lambda d: d["train"].update(lr=-1.0), "lr"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_config_is_refused_naming_the_key(tmp_path, case):
    edit, key = BAD[case]
    t0 = time.perf_counter()
    with pytest.raises(LongctxError) as err:
        _load(tmp_path, edit)
    assert time.perf_counter() - t0 < 5
    msg = str(err.value)
    assert isinstance(err.value, ConfigError) and key in msg and "\n" not in msg, msg


@pytest.mark.parametrize("case", ["unknown arm key", "unknown strategy", "unknown top-level key",
                                  "arm sets lr"])
def test_cli_bad_config_one_line_exit_2(tmp_path, capsys, case):
    from longctx.cli import main

    edit, key = BAD[case]
    path = _write(tmp_path, edit)
    with pytest.raises(SystemExit) as exit_:
        main(["ablate", "--config", str(path), "--out", str(tmp_path / "o")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and key in err and "\n" not in err, err
    assert not (tmp_path / "o").exists()  # nothing was started


def test_cli_bad_config_fails_in_seconds_in_a_fresh_process(tmp_path):
    path = _write(tmp_path, BAD["arm sets lr"][0])
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "longctx", "ablate", "--config", str(path),
                           "--out", str(tmp_path / "o")], capture_output=True, text=True,
                          timeout=60)
    assert time.perf_counter() - t0 < 20  # import time included, on 2 shared cores
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "arms.book_up.lr" in lines[0] and "differs" in lines[0]


def test_declared_difference_is_accepted_and_applied_to_that_arm_only(tmp_path):
    cfg = _load(tmp_path, lambda d: d["arms"]["book_up"].update(lr=0.01, differs=["lr"]))
    arms = {a.name: a for a in cfg.arm_list()}
    assert arms["book_up"].differs == ["train.lr"]
    fast = cfg.train_config(arms["book_up"], 0, "d", "o")
    slow = cfg.train_config(arms["original"], 0, "d", "o")
    assert fast.lr == 0.01 and slow.lr == pytest.approx(1e-3)
    assert {k: v for k, v in vars(fast).items() if k != "lr"} == \
        {k: v for k, v in vars(slow).items() if k != "lr"}


def test_arms_differ_only_in_the_mixture_and_seeds_change_both_seeds(tmp_path):
    cfg = _load(tmp_path, lambda d: None)
    arms = cfg.arm_list()
    builds = [vars(cfg.build_config(a, s, "o")) for a in arms for s in cfg.seed_list()]
    mixture = {"strategy", "mix", "upsample", "short_keep", "seed"}
    for b in builds[1:]:
        assert {k for k in b if b[k] != builds[0][k]} <= mixture
    assert {b["seed"] for b in builds} == {0, 1}
    assert {b["eval_seed"] for b in builds} == {0}  # one held-out split for every repeat
    trains = [cfg.train_config(a, s, "d", "o") for a in arms for s in cfg.seed_list()]
    assert {t.seed for t in trains} == {0, 1} and len({t.lr for t in trains}) == 1


def test_set_overrides_merge_into_sections(tmp_path):
    cfg = _load(tmp_path, lambda d: None, "arms.book_up.upsample.StdlibPackages=5",
                "build.tokens=8K", "seeds=3", "eval.loss.max_rows=2")
    arms = {a.name: a for a in cfg.arm_list()}
    assert list(arms) == ["original", "per_source", "book_up"]  # the other arms are kept
    assert arms["book_up"].upsample == {"StdlibPackages": 5.0}
    assert cfg.build["tokens"] == "8K" and cfg.build["seq_len"] == 512
    assert cfg.seed_list() == [0, 1, 2]
    assert cfg.eval.loss["max_rows"] == 2 and cfg.eval.loss["buckets"] == ["0-128", "128-512"]


def test_seeds_count_or_list():
    assert parse_seeds(2) == [0, 1] and parse_seeds([5, 9]) == [5, 9]
    for bad in (0, -1, True, [], [1, 1], ["a"], "two"):
        with pytest.raises(AblationConfigError, match="seeds"):
            parse_seeds(bad)


def test_presets_load(tmp_path):
    from longctx.rope import paper_effective_base

    cpu = load_ablation_config(CPU_PRESET, out=str(tmp_path))
    assert len(cpu.arm_list()) == 3 and cpu.seed_list() == [0, 1] and cpu.model == "tiny"
    one = load_ablation_config(REPO / "configs" / "ablate-1gpu.yaml", out=str(tmp_path))
    assert one.model == "smollm2-135m" and one.build["seq_len"] == 32768
    assert one.train["rope_theta"] > 1e5 and one.build["eval_tokens"]
    paper = load_ablation_config(REPO / "configs" / "ablate-paper.yaml", out=str(tmp_path))
    arms = {a.name: a for a in paper.arm_list()}
    assert list(arms) == ["original", "per_source", "global", "code_up", "book_up", "arxiv_up"]
    assert arms["code_up"].upsample.keys() == {"RedPajamaGithub"}
    assert arms["book_up"].upsample.keys() == {"RedPajamaBook"}
    assert arms["arxiv_up"].upsample.keys() == {"RedPajamaArXiv"}
    assert paper.train["seq_len"] == paper.build["seq_len"] == 81920
    assert paper.train["rope_theta"] == pytest.approx(paper_effective_base(), abs=0.01)


def test_mixture_keys_inside_an_arms_build_section_need_no_differs(tmp_path):
    cfg = _load(tmp_path, lambda d: d["arms"]["per_source"].update(build={"short_keep": 0.5}))
    arm = {a.name: a for a in cfg.arm_list()}["per_source"]
    assert arm.short_keep == 0.5 and arm.differs == [] and arm.build == {}
    assert cfg.build_config(arm, 0, "o").short_keep == 0.5


def test_a_folder_in_use_by_another_run_is_refused(tmp_path, ablate_corpus):
    from longctx.ablate.run import run_ablation
    from longctx.stage import stage_output

    cfg = load_ablation_config(CPU_PRESET, out=str(tmp_path / "abl"),
                               overrides=[f"corpus.inputs={ablate_corpus}"])
    with stage_output(tmp_path / "abl", "ablate"):
        with pytest.raises(LongctxError, match="in use by another longctx run"):
            run_ablation(cfg, echo=lambda s: None)
    assert not (tmp_path / "abl" / "arms").exists()


def test_a_domain_the_corpus_lacks_fails_after_the_first_build(tmp_path, ablate_corpus):
    from longctx.ablate.run import AblationError, run_ablation

    cfg = load_ablation_config(CPU_PRESET, out=str(tmp_path / "abl"),
                               overrides=[f"corpus.inputs={ablate_corpus}",
                                          "arms.book_up.upsample={RedPajamaBook: 3}"])
    lines: list[str] = []
    with pytest.raises(AblationError, match=r"arms\.book_up\.upsample: domain\(s\) RedPajamaBook"):
        run_ablation(cfg, echo=lines.append)
    done = [ln for ln in lines if "finished" in ln]
    assert len(done) == 1 and done[0].startswith("ablate: original seed 0: build finished in")
