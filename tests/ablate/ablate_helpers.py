"""Helpers shared by the ablation tests (a module of its own: importing from a conftest can
pick another folder's conftest in a full run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CPU_PRESET = REPO / "configs" / "ablate-cpu.yaml"


def cpu_config(out: Path, corpus: Path, *extra: str) -> Any:
    """The CPU preset on ``corpus`` into ``out`` (plus any ``--set`` overrides)."""
    from longctx.ablate.config import load_ablation_config

    return load_ablation_config(CPU_PRESET, out=str(out),
                                overrides=[f"corpus.inputs={corpus}", *extra])


def without_timings(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "timings"}
