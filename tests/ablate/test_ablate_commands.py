"""`--print-commands`: each stage's YAML, read by that stage's own CLI loader, gives exactly the
config `longctx ablate` runs (so a later `longctx ablate` reuses what the jobs computed)."""

from __future__ import annotations

import shlex

from longctx.ablate.commands import stage_commands
from longctx.ablate.run import plan_units, trained_length
from longctx.config import _merge, build_config, load_yaml
from longctx.eval.loss import LossConfig
from longctx.eval.needle import NeedleConfig
from longctx.pack.buildplan import BuildConfig
from longctx.train.config import TrainConfig

from .ablate_helpers import cpu_config


def test_stage_yamls_rebuild_the_ablations_own_configs(tmp_path):
    cfg = cpu_config(tmp_path / "abl", tmp_path / "corpus")
    lines = stage_commands(cfg, nproc=2)
    units = plan_units(cfg)
    cmds = [shlex.split(ln) for ln in lines if not ln.startswith("#")]
    assert len(cmds) == 4 * len(units) + 1
    assert sum(c[:3] == ["longctx", "data", "build"] for c in cmds) == 6
    assert sum(c[:3] == ["torchrun", "--nproc-per-node", "2"] for c in cmds) == 6
    held = units[0].folder("data")
    for u in units:
        bc = cfg.build_config(u.arm, u.seed, u.folder("data"))
        assert build_config(BuildConfig, config_file=u.root / "build.yaml") == bc
        tc = cfg.train_config(u.arm, u.seed, u.folder("data"), u.folder("train"))
        from_yaml = TrainConfig()
        _merge(from_yaml, load_yaml(u.root / "train.yaml"))
        assert from_yaml == tc
        model = u.folder("train") / "final"
        lc = build_config(LossConfig, config_file=u.root / "loss.yaml", cli={"data": str(held)})
        assert lc == cfg.loss_config(model, held)
        nc = build_config(NeedleConfig, config_file=u.root / "needle.yaml")
        assert nc == cfg.needle_config(model, trained_length(tc, bc))
        assert ["longctx", "eval", "loss", "--config", str(u.root / "loss.yaml"), "--data",
                str(held), "--out", str(u.folder("loss"))] in cmds
    assert lines[-1].startswith("longctx ablate --out")


def test_cli_print_commands_is_stage_commands_of_the_yaml_and_set(tmp_path, capsys):
    """`longctx ablate -c YAML -o DIR --set ... --print-commands --nproc 2` prints what the
    ablation's own config gives; --config, -o, --set and --nproc keep their meaning."""
    from ..cli_helpers import run_main
    from .ablate_helpers import CPU_PRESET

    out, corpus = tmp_path / "abl", tmp_path / "corpus"
    code, printed, err = run_main(["ablate", "-c", str(CPU_PRESET), "-o", str(out), "--set",
                                   f"corpus.inputs={corpus}", "--set", "seeds=1",
                                   "--print-commands", "--nproc", "2"], capsys)
    assert code == 0, err
    expected = stage_commands(cpu_config(out, corpus, "seeds=1"), nproc=2)
    assert printed.splitlines() == expected
    assert any("--nproc-per-node 2" in line for line in expected)


def test_cli_dry_run_runs_nothing_and_nproc_below_1_is_a_usage_error(tmp_path, capsys):
    from ..cli_helpers import assert_one_line_error, run_main
    from .ablate_helpers import CPU_PRESET

    out = tmp_path / "abl"
    code, printed, err = run_main(["ablate", "--config", str(CPU_PRESET), "--out", str(out),
                                   "--dry-run"], capsys)
    assert code == 0, err
    assert printed.strip().splitlines()[-1] == "config OK: 3 arm(s) x 2 seed(s)"
    assert not out.exists()
    code, _, err = run_main(["ablate", "-c", str(CPU_PRESET), "--nproc", "0",
                             "--print-commands"], capsys)
    assert_one_line_error(code, err, "--nproc")
    code, _, err = run_main(["ablate", "--out", str(out)], capsys)
    assert_one_line_error(code, err, "--config")
