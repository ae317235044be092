import os
from dataclasses import dataclass

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
