"""``data build --executor``: the build's tasks on datatrove's local executor give the same
bytes as the in-process pool; a failed task is one error line naming its file; the Slurm
executor is built with the settings given and would submit the job script they say (no
submission here); Ray only where it is installed."""

from __future__ import annotations

import pytest

from longctx.config import ConfigError
from longctx.pack.build import run_build
from longctx.pack.buildplan import BuildConfig
from longctx.pack.executors import ExecutorError, ExecutorSettings, RunTasks, make_executor
from longctx.pack.index import index_file

from .test_ranges_build import SPLIT, build, build_args, write_split_corpus

datatrove = pytest.importorskip("datatrove")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_split_corpus(tmp_path_factory.mktemp("exec_corpus"))


@pytest.fixture(scope="module")
def pooled(corpus, tmp_path_factory):
    return build(corpus, tmp_path_factory.mktemp("pool1"), split_bytes=SPLIT, workers=1)


def test_local_executor_is_byte_identical_to_the_pool(corpus, pooled, tmp_path):
    local = build(corpus, tmp_path / "local", split_bytes=SPLIT, executor="local",
                  executor_tasks=2, executor_workers=2)
    assert local["manifest"] == pooled["manifest"]
    assert local["shards"] == pooled["shards"] and local["heldout"] == pooled["heldout"]
    two = build(corpus, tmp_path / "pool2", split_bytes=SPLIT, workers=2)
    assert two == pooled
    assert not (tmp_path / "local" / ".work").exists()  # logs went with the work folder


def test_a_failed_task_is_one_error_naming_its_file(corpus, tmp_path):
    cfg = build_args(corpus, tmp_path / "x", split_bytes=0, strict=True, executor="local",
                     executor_tasks=1, executor_workers=1)
    with pytest.raises(ExecutorError) as e:
        run_build(cfg, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "did not finish on the local executor" in msg
    assert "malformed_json" in msg and f"logs: {tmp_path / 'x' / '.work' / 'logs'}" in msg
    assert "framed.jsonl.zst" in msg.split("first: ")[1]  # the first in reading order
    # nothing selected or packed from a partial scan
    assert not list((tmp_path / "x").glob("shard-*.arrow"))


def test_slurm_executor_settings_and_job_script(tmp_path):
    settings = ExecutorSettings(kind="slurm", logs=str(tmp_path / "logs"), tasks=8,
                                slurm_partition="cpu", slurm_time="2:00:00",
                                slurm_cpus_per_task=4, slurm_mem_per_cpu_gb=3,
                                slurm_env="source /shared/venv/bin/activate")
    step = RunTasks(index_file, list(range(20)), lambda t: None)
    ex = make_executor(settings, [step], str(tmp_path / "logs" / "index"), 20)
    assert type(ex).__name__ == "SlurmPipelineExecutor"
    assert (ex.tasks, ex.partition, ex.time, ex.cpus_per_task, ex.mem_per_cpu_gb) == (
        8, "cpu", "2:00:00", 4, 3)
    assert ex.skip_completed is False and ex.pipeline == [step] and not ex.qos
    script = ex.get_launch_file_contents(ex.get_sbatch_args(8), "launch_pickled_pipeline X")
    for line in ("#SBATCH --partition=cpu", "#SBATCH --time=2:00:00",
                 "#SBATCH --cpus-per-task=4", "#SBATCH --mem-per-cpu=3G",
                 "#SBATCH --array=0-7", "source /shared/venv/bin/activate"):
        assert line in script, line
    assert "--qos" not in script
    # a task list shorter than the tasks asked for gets one rank per task
    assert make_executor(settings, [step], str(tmp_path / "l2"), 3).tasks == 3


def test_executor_settings_are_checked_and_do_not_change_the_config_hash():
    base = BuildConfig(inputs=["x"], out="o", tokens="1K")
    with pytest.raises(ConfigError, match="slurm-partition"):
        BuildConfig(inputs=["x"], out="o", tokens="1K", executor="slurm").validate()
    with pytest.raises(ConfigError, match="executor: expected one of pool, local, slurm, ray"):
        BuildConfig(inputs=["x"], out="o", tokens="1K", executor="dask").validate()
    other = BuildConfig(inputs=["x"], out="o2", tokens="1K", executor="slurm",
                        slurm_partition="cpu", executor_tasks=64, split_bytes=1 << 20, workers=4)
    assert other.output_config() == base.output_config()


def test_missing_datatrove_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "datatrove.executor", None)  # import fails as if absent
    with pytest.raises(ExecutorError, match=r"needs datatrove: pip install 'longctx\[scale\]'"):
        make_executor(ExecutorSettings(kind="local", logs=str(tmp_path)), [], str(tmp_path), 1)


def test_ray_executor_is_byte_identical_to_the_pool(corpus, pooled, tmp_path):
    pytest.importorskip("ray")
    got = build(corpus, tmp_path / "ray", split_bytes=SPLIT, executor="ray", executor_tasks=2)
    assert got == pooled
