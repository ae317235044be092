"""The ablation config: one YAML for every arm, checked before anything runs.

An ablation is only a comparison when the arms differ in nothing but the mixture. So the
settings shared by all arms live in ``build:`` and ``train:``, an arm names only its
mixture (``strategy``, ``mix``, ``upsample``, ``short_keep``), and an arm that sets any other
build or train key must list it in ``differs:``, or the config is refused. Keys the ablation
sets itself (inputs, output folders, seeds, the model each evaluation reads) cannot be set
anywhere else. Every mistake is a :class:`AblationConfigError` that names the key.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from longctx.config import ConfigError, _merge, load_yaml, parse_count, parse_overrides
from longctx.errors import LongctxError
from longctx.eval.loss import LossConfig
from longctx.eval.needle import NeedleConfig
from longctx.mix.strategies import STRATEGIES
from longctx.pack.buildplan import BuildConfig
from longctx.train.config import TrainConfig

MIXTURE_KEYS = ("strategy", "mix", "upsample", "short_keep")
# keys the ablation fills in per arm and seed (or per evaluation)
BUILD_OWNED = ("inputs", "out", "tokenizer", "seed", "text_field", "domain_field", "force",
               "strategy", "mix", "upsample")
TRAIN_OWNED = ("data", "out", "model", "seed", "eval_data")
LOSS_OWNED = ("model", "data", "rope_theta")
NEEDLE_OWNED = ("model", "rope_theta", "trained_length")
HELDOUT_AUTO, HELDOUT_TRAIN_ROWS = "auto", "train_rows"
_ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class AblationConfigError(ConfigError):
    """A bad ablation config; the message names the key."""


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


BUILD_KEYS = _fields(BuildConfig) - set(BUILD_OWNED)
TRAIN_KEYS = _fields(TrainConfig) - set(TRAIN_OWNED)


@dataclass
class CorpusSpec:
    """Where the documents are and which fields hold text and domain."""

    inputs: list[str] = field(default_factory=list)
    text_field: str = "text"
    domain_field: str = "meta.redpajama_set_name"


@dataclass
class EvalSpec:
    """What every arm is measured on (the same for all arms).

    ``heldout``: ``auto`` = the held-out documents of the first arm's first build (needs
    ``build.eval_tokens``; every build excludes the same documents), ``train_rows`` = that
    build's training rows (marked as such everywhere), or a packed folder. ``loss`` and
    ``needle`` hold ``eval loss`` / ``eval needle`` keys; null skips that evaluation.
    ``base``: also evaluate the base model as shipped (not for ``model: tiny``).
    """

    heldout: str = HELDOUT_AUTO
    loss: dict[str, Any] | None = field(default_factory=dict)
    needle: dict[str, Any] | None = None
    base: bool = False


@dataclass
class Arm:
    """One mixture; ``build``/``train`` hold only the keys named in ``differs``."""

    name: str
    strategy: str
    mix: dict[str, float] = field(default_factory=dict)
    upsample: dict[str, float] = field(default_factory=dict)
    short_keep: float | None = None
    build: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    differs: list[str] = field(default_factory=list)

    def mixture(self) -> dict[str, Any]:
        out: dict[str, Any] = {"strategy": self.strategy}
        if self.mix:
            out["mix"] = dict(self.mix)
        if self.upsample:
            out["upsample"] = dict(self.upsample)
        if self.short_keep is not None:
            out["short_keep"] = self.short_keep
        return out


@dataclass
class AblationConfig:
    """``longctx ablate`` settings (see ``configs/ablate-*.yaml``)."""

    corpus: CorpusSpec = field(default_factory=CorpusSpec)
    tokenizer: str | None = None  # None: the model's folder, or the embedded SmolLM2 one
    model: str = "tiny"  # tiny | smollm2-135m | a local HF model folder
    out: str = ""
    build: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    arms: dict[str, Any] = field(default_factory=dict)
    seeds: Any = field(default_factory=lambda: [0, 1])  # a count N (seeds 0..N-1) or a list
    eval: EvalSpec = field(default_factory=EvalSpec)
    workers: int = 1  # data build worker processes (outputs do not depend on it)

    # ------------------------------------------------------------------ parsed views
    def arm_list(self) -> list[Arm]:
        return [parse_arm(name, raw) for name, raw in self.arms.items()]

    def seed_list(self) -> list[int]:
        return parse_seeds(self.seeds)

    def resolved_tokenizer(self) -> str | None:
        """The tokenizer every arm packs with: the model's own unless one is named."""
        if self.tokenizer:
            return self.tokenizer
        if self.model not in ("tiny", "smollm2-135m") and (Path(self.model) / "config.json").is_file():
            return self.model
        return None

    def record(self) -> dict[str, Any]:
        """The resolved config as recorded (no output folder or worker count: neither
        changes a result)."""
        d = dataclasses.asdict(self)
        d.pop("out")
        d.pop("workers")
        d["arms"] = {a.name: dataclasses.asdict(a) for a in self.arm_list()}
        d["seeds"] = self.seed_list()
        return d

    # ------------------------------------------------------------------ stage configs
    def build_config(self, arm: Arm, seed: int, out: str | Path) -> BuildConfig:
        values = {**self.build, **arm.build, **arm.mixture(), "seed": seed,
                  "inputs": list(self.corpus.inputs), "out": str(out),
                  "tokenizer": self.resolved_tokenizer(), "text_field": self.corpus.text_field,
                  "domain_field": self.corpus.domain_field, "workers": self.workers}
        cfg = _typed(BuildConfig, values, f"arms.{arm.name}.")
        try:
            cfg.validate()
        except LongctxError as e:
            raise AblationConfigError(f"build (arm {arm.name!r}): {e}") from None
        return cfg

    def train_config(self, arm: Arm, seed: int, data: str | Path, out: str | Path) -> TrainConfig:
        values = {**self.train, **arm.train, "seed": seed, "data": str(data), "out": str(out),
                  "model": self.model}
        return _typed(TrainConfig, values, f"arms.{arm.name}.")

    def loss_config(self, model: str | Path, data: str | Path) -> LossConfig:
        cfg = _typed(LossConfig, {**(self.eval.loss or {}), "model": str(model),
                                  "data": str(data)}, "eval.loss.")
        _checked("eval.loss", cfg)
        return cfg

    def needle_config(self, model: str | Path, trained_length: int | None) -> NeedleConfig:
        cfg = _typed(NeedleConfig, {**(self.eval.needle or {}), "model": str(model),
                                    "trained_length": trained_length}, "eval.needle.")
        _checked("eval.needle", cfg)
        return cfg

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Every check that needs no data: fails in well under a second."""
        if not self.corpus.inputs:
            raise AblationConfigError("corpus.inputs: give at least one corpus file, folder or glob")
        if not self.out:
            raise AblationConfigError("out: give --out DIR (or `out:` in the YAML)")
        if self.workers < 1:
            raise AblationConfigError(f"workers: must be >= 1, got {self.workers}")
        _check_section("build", self.build, BuildConfig, BUILD_OWNED,
                       "set per arm or by the ablation")
        _check_section("train", self.train, TrainConfig, TRAIN_OWNED, "set by the ablation")
        if self.build.get("tokens") is None:
            raise AblationConfigError("build.tokens: required (output tokens per arm, e.g. 100M)")
        parse_count(self.build["tokens"], name="build.tokens")
        if not self.arms:
            raise AblationConfigError("arms: give at least one arm, e.g. "
                                      "`arms: {original: {strategy: original}}`")
        arms = self.arm_list()
        seeds = self.seed_list()
        if self.model == "tiny" and self.eval.base:
            raise AblationConfigError("eval.base: model 'tiny' is random-initialised by "
                                      "training; there is no base model to evaluate")
        for arm in arms:  # every arm's stage configs must be valid with its own values
            self.build_config(arm, seeds[0], "<out>")
            tc = self.train_config(arm, seeds[0], "<data>", "<out>")
            try:
                tc._validate_values()
            except ConfigError as e:
                raise AblationConfigError(f"train (arm {arm.name!r}): {e}") from None
        self._validate_eval()

    def _validate_eval(self) -> None:
        ev = self.eval
        if ev.heldout == HELDOUT_AUTO:
            if "eval_tokens" not in BUILD_KEYS:
                raise AblationConfigError(
                    "eval.heldout: 'auto' needs held-out data (build.eval_tokens), which this "
                    "checkout's `data build` does not support; set eval.heldout: train_rows"
                )
            if not self.build.get("eval_tokens"):
                raise AblationConfigError(
                    "build.eval_tokens: required with eval.heldout 'auto' (held-out tokens per "
                    "domain, e.g. 64K); or set eval.heldout: train_rows to measure on training rows"
                )
        if ev.loss is None and ev.needle is None:
            raise AblationConfigError("eval: both loss and needle are null; nothing to compare")
        if ev.loss is not None:
            _check_section("eval.loss", ev.loss, LossConfig, LOSS_OWNED, "set by the ablation")
            self.loss_config("<model>", "<data>")
        if ev.needle is not None:
            _check_section("eval.needle", ev.needle, NeedleConfig, NEEDLE_OWNED,
                           "set by the ablation")
            self.needle_config("<model>", None)


# ---------------------------------------------------------------------- parsing helpers


def _typed(cls: type, values: dict[str, Any], prefix: str) -> Any:
    """``cls`` filled from ``values`` with the project's loader (type errors name the key)."""
    obj = cls()
    _merge(obj, values, prefix=prefix)
    return obj


def _checked(name: str, cfg: Any) -> None:
    try:
        cfg.validate()
    except LongctxError as e:
        raise AblationConfigError(f"{name}: {e}") from None


def _check_section(name: str, values: Any, cls: type, owned: tuple[str, ...], why: str) -> None:
    if not isinstance(values, dict):
        raise AblationConfigError(f"{name}: expected a mapping of keys, got {values!r}")
    for raw in values:
        key = str(raw).replace("-", "_")
        if key in owned:
            raise AblationConfigError(f"{name}.{key}: {why}; remove it from {name}")
    _typed(cls, values, f"{name}.")  # unknown keys and wrong types fail here, naming the key


def parse_seeds(value: Any) -> list[int]:
    """``2`` -> [0, 1]; ``[3, 7]`` -> [3, 7]. Each seed is one repeat of every arm."""
    if isinstance(value, bool):
        raise AblationConfigError(f"seeds: expected a count or a list of ints, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise AblationConfigError(f"seeds: need at least 1 repeat, got {value}")
        return list(range(value))
    if not isinstance(value, (list, tuple)) or not value:
        raise AblationConfigError(f"seeds: expected a count or a non-empty list, got {value!r}")
    seeds = []
    for s in value:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise AblationConfigError(f"seeds: each seed must be an int >= 0, got {s!r}")
        seeds.append(s)
    if len(set(seeds)) != len(seeds):
        raise AblationConfigError(f"seeds: repeated seed in {seeds}")
    return seeds


def _resolve_key(arm: str, key: str) -> str:
    """A flat arm key (``lr``) or a dotted one (``train.lr``) -> ``section.key``."""
    key = key.replace("-", "_")
    section, _, sub = key.rpartition(".")
    owned = {"build": BUILD_OWNED, "train": TRAIN_OWNED}.get(section, BUILD_OWNED + TRAIN_OWNED)
    if sub in owned and section in ("", "build", "train"):
        raise AblationConfigError(f"arms.{arm}.{sub}: set by the ablation (seeds repeat every "
                                  "arm; inputs, folders and the model are shared)")
    if section:
        keys = {"build": BUILD_KEYS, "train": TRAIN_KEYS}.get(section)
        if keys is None or sub not in keys:
            raise AblationConfigError(f"unknown arm key 'arms.{arm}.{key}' "
                                      "(expected build.KEY or train.KEY)")
        return key
    in_build, in_train = key in BUILD_KEYS, key in TRAIN_KEYS
    if in_build and in_train:
        raise AblationConfigError(f"arms.{arm}.{key}: ambiguous (a build and a train key); "
                                  f"write build.{key} or train.{key}")
    if in_build or in_train:
        return f"{'build' if in_build else 'train'}.{key}"
    known = ", ".join([*MIXTURE_KEYS, "differs", "build", "train", "<any build/train key>"])
    raise AblationConfigError(f"unknown arm key 'arms.{arm}.{key}' (known: {known})")


def parse_arm(name: str, raw: Any) -> Arm:
    """One arm from its YAML mapping; refuses non-mixture differences it does not declare."""
    name = str(name)
    if not _ARM_NAME.match(name):
        raise AblationConfigError(f"arms.{name}: arm names are folder names "
                                  "(letters, digits, _ . -)")
    if raw is None or isinstance(raw, str):  # `original: original` is shorthand
        raw = {"strategy": raw or name}
    if not isinstance(raw, dict):
        raise AblationConfigError(f"arms.{name}: expected a mapping, got {raw!r}")
    arm = Arm(name=name, strategy="")
    overrides: dict[str, Any] = {}
    declared: list[str] = []
    items = []  # flat (key, value); the mixture may also be written inside `build:`
    for raw_key, value in raw.items():
        key = str(raw_key).replace("-", "_")
        if key == "build" and isinstance(value, dict):
            items += [(str(k), v) if str(k) in MIXTURE_KEYS else (f"build.{k}", v)
                      for k, v in value.items()]
        elif key == "train" and isinstance(value, dict):
            items += [(f"train.{k}", v) for k, v in value.items()]
        else:
            items.append((key, value))
    for key, value in items:
        if key == "strategy":
            arm.strategy = str(value)
        elif key in ("mix", "upsample"):
            setattr(arm, key, _weights(f"arms.{name}.{key}", value))
        elif key == "short_keep":
            arm.short_keep = _typed(BuildConfig, {"short_keep": value}, f"arms.{name}.").short_keep
        elif key == "differs":
            keys = [value] if isinstance(value, str) else value
            if not isinstance(keys, list):
                raise AblationConfigError(f"arms.{name}.differs: expected a list of keys")
            declared = [_resolve_key(name, str(k)) for k in keys]
        else:
            overrides[_resolve_key(name, key)] = value
    if not arm.strategy:
        raise AblationConfigError(f"arms.{name}.strategy: required ({', '.join(STRATEGIES)})")
    if arm.strategy not in STRATEGIES:
        raise AblationConfigError(f"arms.{name}.strategy: unknown strategy {arm.strategy!r} "
                                  f"(expected one of {', '.join(STRATEGIES)})")
    if arm.strategy == "upsample" and not arm.upsample:
        raise AblationConfigError(f"arms.{name}.upsample: strategy 'upsample' needs domain "
                                  "factors, e.g. {RedPajamaBook: 3}")
    if arm.strategy == "global" and (arm.mix or arm.upsample):
        raise AblationConfigError(f"arms.{name}: strategy 'global' ignores domains; "
                                  "remove mix/upsample")
    for key in overrides:
        if key not in declared:
            short = key.split(".", 1)[1]
            raise AblationConfigError(
                f"arms.{name}.{short}: arms may differ only in the mixture "
                f"({', '.join(MIXTURE_KEYS)}); move it to the shared `{key.split('.')[0]}:` "
                f"section, or compare it on purpose with `differs: [{short}]`"
            )
    for key in declared:
        if key not in overrides:
            raise AblationConfigError(f"arms.{name}.differs: lists {key!r}, which the arm "
                                      "does not set")
    for key, value in overrides.items():
        section, sub = key.split(".", 1)
        getattr(arm, section)[sub] = value
    arm.differs = declared
    return arm


def _weights(key: str, value: Any) -> dict[str, float]:
    from longctx.config import parse_weights

    return parse_weights(value, name=key)


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def load_ablation_config(path: str | Path | None, *, out: str | None = None,
                         overrides: list[str] | tuple[str, ...] = ()) -> AblationConfig:
    """YAML, then ``--out``, then dotted ``--set`` overrides merged *into* the YAML's
    sections (``--set arms.book_up.upsample.RedPajamaBook=5`` keeps the other arms)."""
    raw = load_yaml(path) if path else {}
    if out:
        raw["out"] = out
    raw = _deep_merge(raw, parse_overrides(overrides))
    cfg = AblationConfig()
    _merge(cfg, raw)
    cfg.validate()
    return cfg


__all__ = ["AblationConfig", "AblationConfigError", "Arm", "load_ablation_config", "parse_arm"]
