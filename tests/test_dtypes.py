"""One dtype vocabulary: the resolver table and train's precision/export_dtype keys."""

from __future__ import annotations

import pytest
import torch

from longctx.config import ConfigError
from longctx.dtypes import (
    DTYPE_NAMES,
    EXPORT_DTYPES,
    PRECISIONS,
    DtypeError,
    normalize_dtype,
    resolve_dtype,
)
from longctx.train.config import TrainConfig

TABLE = [
    ("auto", "cpu", torch.float32), ("auto", "cuda", torch.bfloat16),
    ("fp32", "cpu", torch.float32), ("fp32", "cuda", torch.float32),
    ("bf16", "cpu", torch.bfloat16), ("bf16", "cuda", torch.bfloat16),
    ("fp16", "cpu", torch.float16), ("fp16", "cuda", torch.float16),
    ("float32", "cuda", torch.float32), ("bfloat16", "cpu", torch.bfloat16),
    ("float16", "cpu", torch.float16),
]


@pytest.mark.parametrize("name,device,want", TABLE)
def test_resolver_table(name, device, want):
    assert resolve_dtype(name, device) == want
    assert resolve_dtype(name, torch.device(device)) == want


def test_subsets_are_of_the_one_vocabulary():
    assert DTYPE_NAMES == ("auto", "fp32", "bf16", "fp16")
    assert set(PRECISIONS) <= set(DTYPE_NAMES) and set(EXPORT_DTYPES) <= set(DTYPE_NAMES)


def test_unknown_and_disallowed_names_are_refused():
    with pytest.raises(DtypeError, match=r"^dtype 'half': expected one of auto, fp32, bf16, fp16$"):
        resolve_dtype("half", "cpu")
    with pytest.raises(DtypeError, match=r"^export_dtype 'auto': expected one of fp32, bf16$"):
        normalize_dtype("auto", EXPORT_DTYPES, what="export_dtype")
    assert normalize_dtype("bfloat16", EXPORT_DTYPES) == "bf16"


def checked(**kw) -> TrainConfig:
    cfg = TrainConfig(data="d", out="o", steps=1, **kw)
    cfg._validate_values()
    return cfg


def test_export_dtype_default_and_old_spellings():
    assert checked().export_dtype == "fp32"
    assert checked(export_dtype="float32").export_dtype == "fp32"
    assert checked(export_dtype="bfloat16").export_dtype == "bf16"
    assert checked(export_dtype="bf16").export_dtype == "bf16"
    for bad in ("fp16", "auto", "float16", "int8"):
        with pytest.raises(ConfigError, match=rf"^config key 'export_dtype': must be one of "
                           rf"fp32, bf16 \(got '{bad}'\)$"):
            checked(export_dtype=bad)


def test_precision_uses_the_same_vocabulary():
    assert checked().precision == "auto"
    assert checked(precision="bfloat16").precision == "bf16"
    with pytest.raises(ConfigError, match=r"config key 'precision': must be one of auto, fp32, bf16"):
        checked(precision="fp16")
