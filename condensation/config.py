"""The config: its typed schema, its validation, and which of its keys change a run's outcome.

The schema is a tree of dataclasses, one per config section (Hydra structured configs,
registered in Hydra's ConfigStore under ``schema/``): the top level :class:`Config`, ``train``
(:class:`Train`), ``reduce`` (:class:`Reduce`, :class:`Auto`), one ``model`` class per
architecture (:data:`MODELS`, chosen by ``model.arch``) and one ``data`` class per task
(:data:`DATA`, chosen by ``data.name``). A field's type says what kind of value it takes
(choices are enums: the registries' names, or fixed sets); its ``allowed`` text and ``check``
say which values; each section's ``cross_checks`` hold the rules that tie fields together.

:func:`validate_config` applies the schema to a plain dict (the resolved config that
``experiments/run.py`` and the tests hand to ``train_and_reduce``): an unknown key, a missing
one, a wrong type or a value out of range raises :class:`~condensation.errors.ConfigError` with
one line ``invalid config: <dotted.key>=<value>; allowed: <what>``. Types are strict (no
booleans for numbers, no numbers for strings) and nothing is converted: the dict is checked,
not changed, so the run directory's config.yaml is what was composed. On the command line,
:class:`ValidateBeforeRun` (a Hydra callback) applies it before Hydra creates the run directory.
"""
from __future__ import annotations

import copy
import importlib.util
import math
import re
import sys
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from enum import Enum, StrEnum
from typing import Any, ClassVar

from hydra.core.config_store import ConfigStore
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from condensation.activations import ACTIVATIONS
from condensation.allocate import ALLOCATIONS
from condensation.archs import ARCHITECTURES, architecture
from condensation.archs.mobilenetv2 import TORCHVISION_STAGES
from condensation.condense import check_threshold
from condensation.errors import ConfigError, fail
from condensation.reduction import MERGES, REDUCERS
from condensation.tasks import TASKS
from condensation.tasks.cifar10 import SOURCES
from condensation.train import OPTIMIZERS, SCHEDULES

# ---- choices ----------------------------------------------------------------------------------
# The registries' names, read when this module is imported (every plug-in module registers
# itself when its package is imported, which the imports above do).


def _names(name: str, values) -> type[StrEnum]:
    return StrEnum(name, {v: v for v in values})


Arch = _names("Arch", sorted(ARCHITECTURES))
Activation = _names("Activation", sorted(ACTIVATIONS))
TaskName = _names("TaskName", sorted(TASKS))
Method = _names("Method", sorted(REDUCERS))
Optimizer = _names("Optimizer", OPTIMIZERS)
Schedule = _names("Schedule", SCHEDULES)
Source = _names("Source", SOURCES)
Logger = _names("Logger", ("jsonl", "tensorboard"))  # tensorboard: also <run>/tensorboard
ToyFunction = _names("ToyFunction", ("sin", "abs", "mix"))  # condensation/tasks/toy.py
Mode = _names("Mode", ("manual", "auto", "target"))
Compensate = _names("Compensate", ("lstsq",))  # null: none
Repair = _names("Repair", ("bn",))  # null: none
Similarity = _names("Similarity", ("weights", "parts", "activations"))  # null: weights
ConstantUnits = _names("ConstantUnits", ("fold",))  # null: keep them
DeadInputs = _names("DeadInputs", ("zero",))  # null: keep them
Widths = _names("Widths", ALLOCATIONS)  # null: uniform
Merge = _names("Merge", MERGES)  # null: sum
ToleranceMode = _names("ToleranceMode", ("relative", "absolute"))
Sizes = _names("Sizes", ("all", "final"))


# ---- fields -----------------------------------------------------------------------------------

def spec(default: Any = MISSING, *, allowed: str | None = None,
         check: Callable[[Any], bool] | None = None, factory: Any = MISSING,
         select: Callable[[Any, str], type] | None = None) -> Any:
    """A schema field: ``allowed`` describes its values in messages (default: from its type),
    ``check(value) -> bool`` bounds them (not called for null), ``select(value, key)`` picks the
    dataclass of a section that differs per architecture or task. No default: required."""
    return field(default=default, default_factory=factory,
                 metadata={"allowed": allowed, "check": check, "select": select})


def integer(default: Any = MISSING, *, at_least: int) -> Any:
    return spec(default, allowed=f"an integer >= {at_least}", check=lambda v: v >= at_least)


def number(default: Any = MISSING, *, allowed: str, check: Callable[[float], bool]) -> Any:
    return spec(default, allowed=allowed, check=check)


def positive(default: Any = MISSING) -> Any:
    return number(default, allowed="a number > 0", check=lambda v: v > 0)


def non_negative(default: Any = MISSING) -> Any:
    return number(default, allowed="a number >= 0", check=lambda v: v >= 0)


def _is_threshold(v: float) -> bool:
    try:
        check_threshold(v)
    except (TypeError, ValueError):
        return False
    return True


def threshold(default: Any = MISSING, *, allowed: str = "a cosine threshold in (0, 1]") -> Any:
    return spec(default, allowed=allowed, check=_is_threshold)


def interval(default: tuple[float, float], *, low: float = 0.0) -> Any:
    return spec(default, allowed=f"a list [min, max] of numbers with {low:g} < min <= max",
                check=lambda v: low < v[0] <= v[1])


class Section:
    """A config section. ``KEY`` is its dotted place in the config (for messages);
    ``__post_init__`` (also run by ``OmegaConf.to_object``) checks every field's range, then
    ``cross_checks``."""

    KEY: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in fields(self):
            check, value = f.metadata.get("check"), getattr(self, f.name)
            if check is not None and value is not None and not check(value):
                fail(_join(self.KEY, f.name), _plain(value), f.metadata["allowed"])
        self.cross_checks()

    def cross_checks(self) -> None:
        """Rules between fields (none by default)."""


# ---- model: one class per architecture (condensation/archs/<arch>.py build() and spec()) ------

@dataclass(kw_only=True)
class MLP(Section):
    KEY: ClassVar[str] = "model"
    name: str = spec(allowed="a string (the run directory's model folder)")
    arch: Arch = spec()
    widths: list[int] = spec(allowed="a non-empty list of positive integers",
                             check=lambda v: len(v) > 0 and min(v) >= 1)
    activation: Activation = spec()
    gamma: float = positive(1.0)  # kernels ~ N(0, fan_in^(-2 gamma))

    def options(self) -> dict[str, Any]:
        """The builder's keyword arguments (everything but name, arch, widths, spec_options)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)
                if f.name not in ("name", "arch", "widths", "spec_options")}

    def cross_checks(self) -> None:
        """The architecture builds these widths (with these options) and its coupling spec."""
        arch = architecture(self.arch)
        options = self.options()
        spec_options = _plain(getattr(self, "spec_options", {}))
        try:
            output = {arch.output_arg: 1}  # the task sets it; the coupling does not depend on it
            arch.build(self.widths, **options, **output)
            arch.spec(self.widths, **options, **output, **spec_options)
        except (TypeError, ValueError) as e:
            fail("model.widths", self.widths, f"widths that fit {self.arch} ({e})")


@dataclass(kw_only=True)
class CNN(MLP):
    n_conv: int = integer(at_least=1)  # the first n_conv widths are conv channels
    pool: bool = spec(True)

    def cross_checks(self) -> None:
        if self.n_conv > len(self.widths):
            fail("model.n_conv", self.n_conv, f"an integer in 1..{len(self.widths)} (the conv "
                 "channels among model.widths; the rest are dense units)")
        super().cross_checks()


@dataclass(kw_only=True)
class TieStream(Section):
    KEY: ClassVar[str] = "model.spec_options"
    tie_stream: bool = spec(False)  # also merge the residual-stream channels


@dataclass(kw_only=True)
class TieStreamByDefault(TieStream):
    tie_stream: bool = spec(True)


@dataclass(kw_only=True)
class ResidualCNN(MLP):
    spec_options: TieStreamByDefault = spec(factory=TieStreamByDefault)


def _is_stages(v: list[list[int]]) -> bool:
    return len(v) > 0 and all(len(st) == 4 and min(st) >= 1 for st in v)


@dataclass(kw_only=True)
class MobileNetV2(MLP):
    stem_stride: int = spec(2, allowed="1 or 2", check=lambda v: v in (1, 2))
    strides: list[int] | None = spec(
        None, allowed="null or a list of strides (1 or 2), one per stage",
        check=lambda v: all(s in (1, 2) for s in v))
    stages: list[list[int]] = spec(
        factory=lambda: [list(st) for st in TORCHVISION_STAGES],
        allowed="a non-empty list of stages [t, c, n, s] (positive integers)", check=_is_stages)
    dropout: float = spec(0.0, allowed="a rate in [0, 1) before the classifier (torchvision: 0.2)",
                          check=lambda v: 0.0 <= v < 1.0)
    bn_scale: float = spec(1.0, allowed="a number > 0: every BatchNorm's initial scale (torchvision: 1)",
                           check=lambda v: v > 0)
    spec_options: TieStream = spec(factory=TieStream)

    def cross_checks(self) -> None:
        if self.strides is not None and len(self.strides) != len(self.stages):
            fail("model.strides", self.strides,
                 f"null or a list of {len(self.stages)} strides (1 or 2), one per stage")
        super().cross_checks()


MODELS: dict[str, type[MLP]] = {"mlp": MLP, "cnn": CNN, "residual_cnn": ResidualCNN,
                                "mobilenetv2": MobileNetV2}


# ---- data: one class per task (condensation/tasks/) -------------------------------------------

@dataclass(kw_only=True)
class ToyData(Section):
    KEY: ClassVar[str] = "data"
    name: TaskName = spec()
    function: ToyFunction = spec(ToyFunction.mix)
    n_train: int = integer(256, at_least=1)
    n_val: int = integer(256, at_least=1)
    n_test: int = integer(256, at_least=1)


@dataclass(kw_only=True)
class Cifar10Data(Section):
    KEY: ClassVar[str] = "data"
    name: TaskName = spec()
    source: Source = spec(Source.auto)
    npz_dir: str | None = spec(None)
    tfds_data_dir: str | None = spec(None)
    n_val: int = integer(5000, at_least=1)  # its upper bound depends on the data: the task checks it
    n_train: int | None = spec(None, allowed="null or an integer >= 1", check=lambda v: v >= 1)
    n_test: int | None = spec(None, allowed="null or an integer >= 1", check=lambda v: v >= 1)
    split_seed: int = integer(0, at_least=0)


@dataclass(kw_only=True)
class Rollout(Section):
    """condensation/tasks/combustion/task.py ROLLOUT_DEFAULTS."""

    KEY: ClassVar[str] = "data.rollout"
    n_val: int = integer(10, at_least=1)
    n_test: int = integer(12, at_least=1)
    horizon_factor: float = positive(2.0)
    extra_steps: int = integer(300, at_least=0)
    max_steps: int = integer(12000, at_least=1)
    batch_size: int = integer(8192, at_least=1)


@dataclass(kw_only=True)
class CombustionData(Section):
    """condensation.combustion.data.CombustionDataConfig's fields, plus the cache and rollouts."""

    KEY: ClassVar[str] = "data"
    name: TaskName = spec()
    cache_dir: str = spec(".cache/condensation")
    rollout: Rollout = spec(factory=Rollout)
    mechanism: str = spec("h2o2.yaml")
    fuel: str = spec("H2:1")
    oxidizer: str = spec("O2:1, N2:3.76")
    T0_range: tuple[float, float] = interval((1000.0, 1400.0))
    P_range_atm: tuple[float, float] = interval((0.5, 2.0))
    phi_range: tuple[float, float] = interval((0.5, 2.0))
    dt: float = positive(1e-6)
    n_train_conditions: int = integer(200, at_least=1)
    n_val_conditions: int = integer(20, at_least=1)
    n_test_conditions: int = integer(40, at_least=1)
    t_max: float = positive(20e-3)
    eq_tol_K: float = positive(1.0)
    eq_hold_time: float = non_negative(50e-6)
    samples_per_trajectory: int = integer(200, at_least=1)
    n_perturb: int = integer(2, at_least=0)
    perturb_decades: tuple[float, float] = interval((0.03, 1.0))
    perturb_T: float = non_negative(0.02)
    rtol: float = positive(1e-8)
    atol: float = positive(1e-20)
    max_fail_fraction: float = number(0.01, allowed="a number in [0, 1]", check=lambda v: 0 <= v <= 1)
    seed: int = integer(0, at_least=0)
    workers: int = integer(2, at_least=1)


DATA: dict[str, type[Section]] = {"toy": ToyData, "cifar10": Cifar10Data,
                                  "combustion": CombustionData}


# ---- train and reduce -------------------------------------------------------------------------

@dataclass(kw_only=True)
class Train(Section):
    """condensation.train.OptimConfig's fields, plus the loop's."""

    KEY: ClassVar[str] = "train"
    epochs: int = integer(at_least=1)
    batch_size: int = integer(at_least=1)
    eval_batch_size: int = integer(4096, at_least=1)
    optimizer: Optimizer = spec(Optimizer.adam)
    lr: float = positive()
    schedule: Schedule = spec(Schedule.cosine)
    warmup_epochs: float = non_negative(0.0)
    end_lr_factor: float = non_negative(0.01)  # cosine: final lr / lr; step: factor per decay
    step_every_epochs: float = non_negative(0.0)
    weight_decay: float = non_negative(0.0)
    momentum: float = number(0.9, allowed="a number in [0, 1)", check=lambda v: 0 <= v < 1)
    grad_clip: float = number(0.0, allowed="a number >= 0 (0: off)", check=lambda v: v >= 0)
    select_every: int = integer(1, at_least=1)
    checkpoint_every: int = integer(1, at_least=1)
    checkpoint_every_steps: int = spec(0, allowed="an integer >= 0 (0: only at epoch ends)",
                                       check=lambda v: v >= 0)
    track_groups_at: float | None = threshold(
        None, allowed="a cosine threshold in (0, 1], or null (off)")


@dataclass(kw_only=True)
class Auto(Section):
    KEY: ClassVar[str] = "reduce.auto"
    start: float = threshold()
    factor: float = number(allowed="a number > 1 (1 - threshold grows by it each round)",
                           check=lambda v: v > 1)
    min_threshold: float = threshold()
    max_rounds: int = integer(at_least=1)
    tolerance: float = spec(allowed="a number (allowed worsening of the validation metric)")
    tolerance_mode: ToleranceMode = spec(ToleranceMode.relative)


@dataclass(kw_only=True)
class Reduce(Section):
    KEY: ClassVar[str] = "reduce"
    method: Method = spec()
    # baselines: the condensation run directory whose sizes they match (checked before any work)
    targets: str | None = spec(None)
    mode: Mode = spec()
    thresholds: list[float] | None = spec(
        None, allowed="a list of cosine thresholds in (0, 1]",
        check=lambda v: all(_is_threshold(t) for t in v))
    finetune_epochs: int = integer(at_least=0)
    finetune_lr: float | None = spec(None, allowed="null (train.lr) or a number > 0",
                                     check=lambda v: v > 0)
    auto: Auto | None = spec(None)
    # the baselines' sizes: every accepted round of the condensation run in targets (mode=target:
    # every round's fraction), or only its last
    sizes: Sizes | None = spec(
        None, allowed="all, final (the sizes a baseline reduces to: every accepted round of the "
        "condensation run in reduce.targets, or with reduce.mode=target every round's fraction; "
        "or only the last)")
    # mode=target: reach this fraction of the original's parameters in target_rounds rounds
    target: float | None = spec(None, allowed="null or a fraction of the parameters in (0, 1)",
                                check=lambda v: 0 < v < 1)
    target_rounds: int | None = spec(None, allowed="null (1) or an integer >= 1", check=lambda v: v >= 1)
    # mode=target, instead of target and target_rounds: the fraction each round reaches
    target_sizes: list[float] | None = spec(
        None, allowed="null or a list of decreasing fractions of the parameters in (0, 1), one per "
        "round", check=lambda v: len(v) >= 1 and all(0 < x < 1 for x in v)
        and all(a > b for a, b in zip(v, v[1:], strict=False)))
    # mode=target: every width scaled alike, or allocated per layer from the original (its
    # importance, or its consumers' reconstruction error after a least-squares refit)
    widths: Widths | None = spec(None)
    # merging selections (condense, fold): the survivor's input vector, or the group's mean
    merge: Merge | None = spec(None)
    # what condensation compares, and whether units constant on the calibration data go first
    similarity: Similarity | None = spec(None)
    constant_units: ConstantUnits | None = spec(None)
    # zero: before each group's selection, its kernels' entries that receive no data on the
    # calibration inputs are set to 0 (every method then compares and keeps what the data reach)
    dead_inputs: DeadInputs | None = spec(None)
    # the stages after selection (null: off) and their calibration data
    compensate: Compensate | None = spec(None)
    ridge: float | None = spec(None, allowed="null (1e-5) or a number > 0: compensation's ridge, "
                               "relative to the mean diagonal of its normal equations",
                               check=lambda v: v > 0)
    repair: Repair | None = spec(None)
    calibration: int | None = spec(None, allowed="null (2048) or an integer >= 1 (training inputs "
                                   "used by compensation, repair and importance)",
                                   check=lambda v: v >= 1)
    # a saved network (folder with network.json and variables.npz) to reduce instead of training
    original: str | None = spec(None)
    # fine-tuning distilled from the original: the weight of the distance to its outputs
    distill: float | None = spec(None, allowed="null (off) or a weight in (0, 1]",
                                 check=lambda v: 0 < v <= 1)
    distill_temperature: float | None = spec(None, allowed="null (4) or a number > 0",
                                             check=lambda v: v > 0)

    def cross_checks(self) -> None:
        if self.mode == Mode.target and self.target is None and self.target_sizes is None:
            fail("reduce.target", None, "a fraction of the parameters in (0, 1) (reduce.mode=target; "
                 "or reduce.target_sizes, one per round)")
        if self.target_sizes is not None and (self.target is not None or self.target_rounds is not None):
            fail("reduce.target_sizes", self.target_sizes, "null when reduce.target or "
                 "reduce.target_rounds is set (give the rounds' sizes one way)")
        if self.target_sizes is not None and self.mode != Mode.target:
            fail("reduce.target_sizes", self.target_sizes, "null unless reduce.mode=target")
        if self.widths is not None and self.mode != Mode.target:
            fail("reduce.widths", self.widths, "null unless reduce.mode=target (it allocates "
                 "the widths of a target size)")
        if self.mode == Mode.manual and self.thresholds is None:
            fail("reduce.thresholds", None, "a list of cosine thresholds in (0, 1] (reduce.mode=manual)")
        if self.mode == Mode.auto and self.auto is None:
            fail("reduce.auto", None, f"a mapping with the keys {_keys(Auto)} (reduce.mode=auto)")


# ---- the whole config -------------------------------------------------------------------------

def _select(classes: dict[str, type], by: str, allowed: Callable[[], str]) -> Callable[[Any, str], type]:
    def select(value: Any, key: str) -> type:
        if not isinstance(value, Mapping):
            fail(key, value, f"a mapping whose {by} is one of {allowed()}")
        if value.get(by) not in classes:
            fail(f"{key}.{by}", value.get(by), allowed())
        return classes[value[by]]

    return select


@dataclass(kw_only=True)
class Config(Section):
    """The top level. ``model`` and ``data`` take the class of their architecture / task."""

    model: Any = spec(select=_select(MODELS, "arch", lambda: ", ".join(sorted(ARCHITECTURES))))
    data: Any = spec(select=_select(DATA, "name", lambda: ", ".join(sorted(TASKS))))
    train: Train = spec()
    reduce: Reduce = spec()
    seed: int = integer(at_least=0)
    name: str = spec(allowed="a string (the run directory's experiment folder)")
    fresh: bool = spec(False)
    logger: Logger = spec(Logger.jsonl)

    def cross_checks(self) -> None:
        if self.logger == Logger.tensorboard and importlib.util.find_spec("tensorboardX") is None:
            raise ConfigError("invalid config: logger='tensorboard' needs the tensorboardX package: "
                              "pip install -e '.[tensorboard]' (or logger=jsonl)")


# ---- validation -------------------------------------------------------------------------------

def validate_config(cfg: Mapping[str, Any]) -> Config:
    """Check a resolved config (plain dict) against the schema; returns it typed (the dict is
    not changed). Raises ConfigError on the first problem: one line naming key, value and what
    is allowed."""
    return _build(Config, cfg, "")


class _WrongType(Exception):
    pass


def _build(cls: type[Section], d: Any, key: str) -> Any:
    names = [f.name for f in fields(cls)]
    if not isinstance(d, Mapping):
        fail(key or "config", d, f"a mapping with the keys {', '.join(names)}")
    for k in d:
        if k not in names:
            fail(_join(key, k), d[k], f"the keys of {key or 'the config (top level)'}: {', '.join(names)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in fields(cls):
        dotted = _join(key, f.name)
        tp = hints[f.name]
        if f.name not in d:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ConfigError(f"invalid config: {dotted} is missing; allowed: {_allowed(f, tp)}")
            continue
        value = d[f.name]
        if f.metadata.get("select") is not None:
            tp = f.metadata["select"](value, dotted)
        try:
            kwargs[f.name] = _convert(tp, value, dotted)
        except _WrongType:
            fail(dotted, value, _allowed(f, tp))
    return cls(**kwargs)


def _convert(tp: Any, v: Any, key: str) -> Any:
    """``v`` checked against the type ``tp`` (strictly: a bool is no number, a number no
    string; floats finite); enum values become members, sections are built. Raises _WrongType."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, v, key)
    if tp is Any:
        return v
    if is_dataclass(tp):
        return _build(tp, v, key)
    if isinstance(tp, type) and issubclass(tp, Enum):
        try:
            return tp(v)
        except ValueError:
            raise _WrongType from None
    if origin in (list, tuple):  # list[X]; tuple[X, Y]: a list of that length in YAML
        if not isinstance(v, list | tuple):
            raise _WrongType
        item_types = args if origin is tuple else (args[0],) * len(v)
        if len(item_types) != len(v):
            raise _WrongType
        return [_convert(t, x, key) for t, x in zip(item_types, v, strict=True)]
    ok = {bool: lambda: isinstance(v, bool),
          int: lambda: isinstance(v, int) and not isinstance(v, bool),
          float: lambda: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
          str: lambda: isinstance(v, str)}[tp]()
    if not ok:
        raise _WrongType
    return v


def _allowed(f: Field, tp: Any) -> str:
    return f.metadata.get("allowed") or _describe(tp)


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in args if a is not type(None)]
        return f"null or {_describe(inner)}"
    if isinstance(tp, type) and issubclass(tp, Enum):
        return ", ".join(m.value for m in tp)
    if is_dataclass(tp):
        return f"a mapping with the keys {_keys(tp)}"
    if origin in (list, tuple):
        return "a list"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        tp, str(tp))


def _keys(cls: type) -> str:
    return ", ".join(f.name for f in fields(cls))


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _plain(value: Any) -> Any:
    """Enum members as their values, sections as dicts (for messages and builders)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Section):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def leaves(cfg: Mapping[str, Any], key: str = "") -> list[tuple[str, Any]]:
    """Every leaf of a config as (dotted key, value); lists are leaves."""
    out = []
    for k, v in cfg.items():
        if isinstance(v, Mapping):
            out += leaves(v, _join(key, k))
        else:
            out.append((_join(key, k), v))
    return out


def resolved(config: DictConfig) -> dict[str, Any]:
    """A job's config (without the ``hydra`` node) resolved to a plain dict; an interpolation
    that cannot be resolved is a ConfigError."""
    cfg = config
    if "hydra" in config:
        cfg = copy.deepcopy(config)
        with read_write(cfg), open_dict(cfg):
            del cfg["hydra"]
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        key = getattr(e, "full_key", None)
        if not key:
            raise ConfigError(f"invalid config: {why}") from None
        value: Any = OmegaConf.to_container(cfg, resolve=False)  # the interpolation as written
        for part in re.findall(r"[^.\[\]]+", key):
            value = (value.get(part) if isinstance(value, dict)
                     else value[int(part)] if isinstance(value, list) and part.isdigit() else None)
        fail(key, value, f"a value that resolves ({why})")


class ValidateBeforeRun(Callback):
    """Hydra callback (conf/config.yaml ``hydra.callbacks``): validates a single run's config
    before Hydra creates its run directory, so that a refused command leaves nothing behind.
    Prints ``error: <message>`` and exits with status 2 (Hydra turns a callback's exceptions
    into warnings; a sweep's jobs are validated by experiments/run.py)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            validate_config(resolved(config))
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None


def register_schemas() -> None:
    """Store the schema in Hydra's ConfigStore: ``schema/config``, ``schema/train``,
    ``schema/reduce``, ``schema/model/<arch>``, ``schema/data/<task>``."""
    cs = ConfigStore.instance()
    cs.store(group="schema", name="config", node=Config)
    cs.store(group="schema", name="train", node=Train)
    cs.store(group="schema", name="reduce", node=Reduce)
    for arch, cls in MODELS.items():
        cs.store(group="schema/model", name=arch, node=cls)
    for task, cls in DATA.items():
        cs.store(group="schema/data", name=task, node=cls)


register_schemas()


# ---- outcome ----------------------------------------------------------------------------------

# Keys that change how a run is carried out, not its outcome: a run may resume under other values.
OPERATIONAL = {"fresh": None, "logger": None,
               "train": ("checkpoint_every", "checkpoint_every_steps", "track_groups_at")}
OPERATIONAL_KEYS = tuple(key if sub is None else f"{key}.{k}" for key, sub in OPERATIONAL.items()
                         for k in (sub or (None,)))  # dotted: "fresh", "train.checkpoint_every", ...


def outcome_config(cfg: dict[str, Any]) -> dict[str, Any]:
    out = dict(cfg)
    for key, sub in OPERATIONAL.items():
        if sub is None:
            out.pop(key, None)
        elif isinstance(out.get(key), dict):
            out[key] = {k: v for k, v in out[key].items() if k not in sub}
    if isinstance(out.get("reduce"), dict):
        out["reduce"] = reduce_outcome(out["reduce"])
    return out


def reduce_outcome(rcfg: dict[str, Any]) -> dict[str, Any]:
    """A reduce config without its null keys (a key added later with a null default, like
    ``targets``, leaves older runs as they were)."""
    return {k: v for k, v in rcfg.items() if v is not None}
