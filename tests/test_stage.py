import os
from dataclasses import dataclass

import pytest

from longctx.stage import path_identity, run_hash, write_manifest


@dataclass
class Cfg:
    data: str = ""
    model: str = "smollm2-135m"
    steps: int = 3


def test_finished_stage_is_identified_by_its_manifest(tmp_path):
    d = tmp_path / "data"
    write_manifest(d, {"status": "done", "config_hash": "abc", "shards": [{"sha256": "s1"}]})
    first = path_identity(d)
    os.utime(d / "manifest.json", ns=(1, 1))  # touching files does not change a finished stage
    assert path_identity(d) == first
    write_manifest(d, {"status": "done", "config_hash": "abc", "shards": [{"sha256": "s2"}]})
    assert path_identity(d) != first  # rebuilt shards: a new identity


def test_plain_folder_identity_follows_its_files(tmp_path):
    m = tmp_path / "model"
    m.mkdir()
    (m / "config.json").write_text("{}")
    first = path_identity(m)
    assert path_identity(m) == first
    (m / "model.safetensors").write_bytes(b"x" * 10)
    assert path_identity(m) != first
    assert path_identity(tmp_path / "missing") is None
    assert path_identity("smollm2-135m") is None


def test_run_hash_covers_config_and_inputs(tmp_path):
    d = tmp_path / "data"
    write_manifest(d, {"status": "done", "config_hash": "abc", "shards": []})
    cfg = Cfg(data=str(d))
    h = run_hash(cfg)
    assert run_hash(Cfg(data=str(d))) == h
    assert run_hash(Cfg(data=str(d), steps=4)) != h
    write_manifest(d, {"status": "done", "config_hash": "xyz", "shards": []})
    assert run_hash(cfg) != h  # same path, rebuilt data: the run is not "done" any more


def test_json_writes_are_atomic_and_reads_take_only_objects(tmp_path):
    """A work marker's value JSON cannot hold raises before any file exists (default=None);
    a manifest's path is written as text; a file that is missing, torn or not an object
    reads as None (work not done)."""
    import numpy as np

    from longctx.stage import read_json_object, write_json_atomic

    with pytest.raises(TypeError):
        write_json_atomic(tmp_path / "marker.done", {"tokens": np.int64(3)}, default=None)
    assert list(tmp_path.iterdir()) == []
    write_json_atomic(tmp_path / "m.json", {"path": tmp_path})
    assert read_json_object(tmp_path / "m.json") == {"path": str(tmp_path)}
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "torn.json").write_text('{"a": ')
    for name in ("list.json", "torn.json", "missing.json"):
        assert read_json_object(tmp_path / name) is None
