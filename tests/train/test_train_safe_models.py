"""Model folders from others load safely: no code from the folder ever runs, transformers is
never asked (so it never prompts on stdin, even with "y" waiting there), and weights are read
only from safetensors (a pickled pytorch_model.bin is refused with one line)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from longctx.models import ModelError, load_causal_lm

REPO = Path(__file__).resolve().parents[2]
CODE = "open({marker!r}, 'w').write('ran')\n"


def _tokenizer_files(folder: Path) -> None:
    from longctx.data.tokenizer import load_tokenizer

    src = load_tokenizer(None).source_dir
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (src / name).is_file():
            shutil.copy2(src / name, folder / name)


def _tiny_llama_config() -> dict:
    from transformers import LlamaConfig

    cfg = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64,
                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                      max_position_embeddings=256, tie_word_embeddings=True)
    return cfg.to_dict()


def remote_code_folder(root: Path, marker: Path) -> Path:
    """An unknown architecture whose config points (auto_map) at Python files in the folder."""
    folder = root / "remote"
    folder.mkdir(parents=True)
    config = {"model_type": "evil_arch", "architectures": ["EvilForCausalLM"],
              "auto_map": {"AutoConfig": "configuration_evil.EvilConfig",
                           "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}}
    (folder / "config.json").write_text(json.dumps(config))
    for name in ("configuration_evil.py", "modeling_evil.py"):
        (folder / name).write_text(CODE.format(marker=str(marker)))
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(folder / "model.safetensors"))
    _tokenizer_files(folder)
    return folder


def pickled_weights_folder(root: Path, marker: Path) -> Path:
    """A built-in architecture whose only weights are a pickle that runs code when loaded."""

    class Evil:
        def __reduce__(self):
            return (exec, (CODE.format(marker=str(marker)),))

    folder = root / "pickled"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(_tiny_llama_config()))
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Evil()))
    _tokenizer_files(folder)
    return folder


def test_unknown_architecture_is_one_line_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    folder = remote_code_folder(tmp_path, marker)
    with pytest.raises(ModelError) as e:
        load_causal_lm(folder)
    assert str(e.value) == (f"model {folder}: architecture 'evil_arch' is not built into "
                            f"transformers; longctx never runs code from model folders")
    assert not marker.exists()


def test_pickled_weights_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    folder = pickled_weights_folder(tmp_path, marker)
    with pytest.raises(ModelError, match=r"pytorch_model.bin, a pickle format.*only safetensors"):
        load_causal_lm(folder)
    assert not marker.exists()
    # the payload is live: unpickling it would have run the code
    pickle.loads((folder / "pytorch_model.bin").read_bytes())
    assert marker.exists()


def test_builtin_architecture_with_auto_map_loads_without_its_code(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    marker = tmp_path / "pwned"
    folder = tmp_path / "llama"
    LlamaForCausalLM(LlamaConfig(**{k: v for k, v in _tiny_llama_config().items()
                                    if k not in ("model_type", "architectures")})
                     ).save_pretrained(str(folder))
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_evil.py").write_text(CODE.format(marker=str(marker)))
    model, _, _ = load_causal_lm(folder)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert not marker.exists()


def _cli(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "longctx", *args], input="y\ny\ny\n", capture_output=True,
        text=True, cwd=REPO, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
    )


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["remote", "pickled"])
def test_cli_train_and_eval_refuse_with_stdin_attached(packed_dir, tmp_path, kind):
    marker = tmp_path / "pwned"
    make = remote_code_folder if kind == "remote" else pickled_weights_folder
    folder = make(tmp_path / "models", marker)
    expected = ("architecture 'evil_arch' is not built into transformers; longctx never runs "
                "code from model folders" if kind == "remote" else "a pickle format")
    runs = {
        "train": ["train", "--data", str(packed_dir), "--model", str(folder),
                  "--out", str(tmp_path / "t"), "--steps", "1", "--seq-len", "64"],
        "eval": ["eval", "needle", "--model", str(folder), "--out", str(tmp_path / "e"),
                 "--lengths", "256", "--depths", "50"],
    }
    for what, args in runs.items():
        res = _cli(args)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2, (what, res.stdout[-1000:], res.stderr[-2000:])
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], (
            what, res.stderr[-2000:])
        assert f"model {folder}" in lines[0]
        assert not marker.exists(), what
    assert not (tmp_path / "t").exists()
