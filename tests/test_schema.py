"""The config schema (condensation/config.py) knows every key: for every leaf of every composed
experiment, a value of the wrong type, out of range or an unknown choice is refused with one
line naming that key; so are unknown and missing keys. The command line refuses them with exit
status 2 before anything is written; the schema agrees with the code that reads the config."""
from __future__ import annotations

import copy
import dataclasses
import inspect
import subprocess
import typing
from enum import Enum
from typing import Any

import pytest
import yaml
from conftest import CONF, PYTHON, ROOT, compose_config
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from condensation.archs import ARCHITECTURES
from condensation.combustion.data import CombustionDataConfig
from condensation.config import (
    DATA,
    MODELS,
    CombustionData,
    Config,
    Reduce,
    Rollout,
    Train,
    leaves,
    validate_config,
)
from condensation.errors import ConfigError
from condensation.tasks import TASKS
from condensation.tasks.combustion.task import ROLLOUT_DEFAULTS
from condensation.train import OptimConfig

EXPERIMENTS = sorted(p.stem for p in CONF.glob("exp/*.yaml"))
# every experiment as users run it, and as the tests run it (with its debug preset)
CONFIGS = {**{name: [f"+exp={name}"] for name in EXPERIMENTS},
           **{f"{p.stem} (debug)": [f"+exp={p.stem}", f"+debug={p.stem}"]
              for p in sorted(CONF.glob("debug/*.yaml")) if p.stem in EXPERIMENTS}}
UNBOUNDED = {"reduce.auto.tolerance"}  # numbers every value of which means something


@pytest.fixture(scope="module")
def composed() -> dict[str, dict]:
    return {name: compose_config(overrides) for name, overrides in CONFIGS.items()}


# ---- the schema's view of a leaf ---------------------------------------------------------------

def schema_field(cfg: dict, key: str) -> tuple[dataclasses.Field, Any]:
    """The dataclass field of a dotted key and its type (Optional unwrapped), following the
    per-architecture and per-task classes as validate_config does."""
    cls, node, f, tp = Config, cfg, None, None
    for part in key.split("."):
        f = {x.name: x for x in dataclasses.fields(cls)}[part]
        tp = unwrap(typing.get_type_hints(cls)[part])
        node = node[part]
        if f.metadata.get("select"):
            tp = f.metadata["select"](node, part)
        if dataclasses.is_dataclass(tp):
            cls = tp
    return f, tp


def unwrap(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) in (typing.Union, type(int | None)) else tp


def wrong_types(tp: Any) -> list:
    """Values of another type than ``tp`` (an enum: an unknown choice; a string: a list)."""
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and issubclass(tp, Enum):
        return ["no_such_choice", 3]
    if origin in (list, tuple):
        return ["not a list", [{"a": 1}]]
    return {bool: ["yes", 1], int: ["many", 2.5, True], float: ["abc", True, float("nan")],
            str: [["a", "list"], 5]}[tp]


def out_of_range(value: Any, tp: Any) -> Any:
    """The value with every number negative: outside every range of this schema."""
    if value is None:
        return -1 if tp is int else -1.0 if tp is float else [-1.0]
    if isinstance(value, list):
        return [out_of_range(v, tp) for v in value]
    return -1 if isinstance(value, int) else -1.0


def with_value(cfg: dict, key: str, value: Any) -> dict:
    cfg = copy.deepcopy(cfg)
    *parents, last = key.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    node[last] = value
    return cfg


def refused(cfg: dict, key: str) -> str:
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith((f"invalid config: {key}=", f"invalid config: {key} is missing")), message
    assert "; allowed: " in message, message
    return message


# ---- every leaf ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", CONFIGS)
def test_every_leaf_refuses_bad_values(composed, name):
    cfg = composed[name]
    validate_config(cfg)
    checked = 0
    for key, value in leaves(cfg):
        f, tp = schema_field(cfg, key)
        for bad in wrong_types(tp):
            refused(with_value(cfg, key, bad), key)
        if f.metadata.get("check") is not None:
            refused(with_value(cfg, key, out_of_range(value, tp)), key)
        else:
            assert not isinstance(value, int | float) or isinstance(value, bool) or key in UNBOUNDED, (
                f"{key}: a number without a range")
        checked += 1
    assert checked == len(leaves(cfg)) > 20


@pytest.mark.parametrize("name", CONFIGS)
def test_unknown_and_missing_keys_are_refused(composed, name):
    cfg = composed[name]
    sections = [""] + sorted({k.rpartition(".")[0] for k, _ in leaves(cfg)} - {""})
    for section in sections:
        key = f"{section}.bogus" if section else "bogus"
        message = refused(with_value(cfg, key, 1), key)
        assert "allowed: the keys of" in message, message
    for key, _ in leaves(cfg):
        f, _ = schema_field(cfg, key)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            broken = copy.deepcopy(cfg)
            *parents, last = key.split(".")
            node = broken
            for p in parents:
                node = node[p]
            del node[last]
            refused(broken, key)


def test_messages_name_key_value_and_what_is_allowed():
    cfg = compose_config(["+exp=toy"])
    cases = [
        ("train.optimizer", "adamx", "invalid config: train.optimizer='adamx'; allowed: adam, adamw, sgd"),
        ("model.widths", [4, 0], "invalid config: model.widths=[4, 0]; allowed: a non-empty list of "
                                 "positive integers"),
        ("reduce.auto.start", 1.5, "invalid config: reduce.auto.start=1.5; allowed: a cosine "
                                   "threshold in (0, 1]"),
        ("train.epochs", True, "invalid config: train.epochs=True; allowed: an integer >= 1"),
        ("data.name", "mnist", "invalid config: data.name='mnist'; allowed: cifar10, combustion, toy"),
        ("model.arch", "transformer", "invalid config: model.arch='transformer'; allowed: cnn, mlp, "
                                      "mobilenetv2, residual_cnn"),
    ]
    for key, value, message in cases:
        assert refused(with_value(cfg, key, value), key) == message
    message = refused(with_value(cfg, "train.bogus", 1), "train.bogus")
    assert message.startswith("invalid config: train.bogus=1; allowed: the keys of train: epochs, ")


def test_cross_field_rules():
    toy = compose_config(["+exp=toy"])
    manual = with_value(toy, "reduce.mode", "manual")
    validate_config(manual)
    refused(with_value(manual, "reduce.thresholds", None), "reduce.thresholds")
    refused(with_value(manual, "reduce.thresholds", 0.9), "reduce.thresholds")
    refused(with_value(toy, "reduce.auto", None), "reduce.auto")
    validate_config(with_value(manual, "reduce.auto", None))  # manual mode needs no auto section
    validate_config(with_value(toy, "reduce.auto.tolerance", -1.0))  # a stricter bound: allowed
    mobilenet = compose_config(["+exp=cifar10_mobilenetv2"])
    refused(with_value(mobilenet, "model.widths", [8] * 17), "model.widths")
    streams = with_value(mobilenet, "model.widths", [8] * 25)  # with the 7 stage stream widths ...
    refused(streams, "model.widths")
    validate_config(with_value(streams, "model.spec_options.tie_stream", True))  # ... which need it
    refused(with_value(mobilenet, "model.strides", [1, 2]), "model.strides")
    cnn = compose_config(["+exp=cifar10"])
    refused(with_value(cnn, "model.n_conv", 5), "model.n_conv")


def test_tensorboard_needs_tensorboardx(monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboardX" else real(name, *a))
    with pytest.raises(ConfigError, match=r"logger='tensorboard' needs the tensorboardX package"):
        validate_config(compose_config(["+exp=toy", "logger=tensorboard"]))


def test_the_dict_is_checked_not_changed():
    cfg = compose_config(["+exp=cifar10_mobilenetv2"])
    before = copy.deepcopy(cfg)
    typed = validate_config(cfg)
    assert cfg == before
    assert typed.train.optimizer == "sgd" and typed.model.spec_options.tie_stream is False


# ---- the schema agrees with the code and the config groups ------------------------------------

def test_one_schema_per_architecture_and_per_task():
    assert set(MODELS) == set(ARCHITECTURES)
    assert set(DATA) == set(TASKS)


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_model_options_are_the_builders(arch):
    """Every model key but name, arch, widths is a keyword of the architecture's build() (or,
    under spec_options, of its spec())."""
    a = ARCHITECTURES[arch]
    names = {f.name for f in dataclasses.fields(MODELS[arch])} - {"name", "arch", "widths"}
    build = set(inspect.signature(a.build).parameters) - {a.output_arg}
    assert names - {"spec_options"} <= build
    assert build - {"widths"} <= names  # and every option of build() is known
    if "spec_options" in names:
        spec_cls = typing.get_type_hints(MODELS[arch])["spec_options"]
        assert {f.name for f in dataclasses.fields(spec_cls)} <= set(inspect.signature(a.spec).parameters)


def defaults(cls) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def test_combustion_data_is_the_data_generators_config():
    ours = defaults(CombustionData)
    theirs = {f.name: f.default for f in dataclasses.fields(CombustionDataConfig)}
    assert set(ours) == set(theirs) | {"cache_dir", "rollout"}  # and the required name
    assert {k: ours[k] for k in theirs} == theirs
    assert dataclasses.asdict(Rollout()) == ROLLOUT_DEFAULTS


def test_train_holds_the_optimizer_config():
    ours = defaults(Train)  # lr is required: fine-tuning reads train.lr
    theirs = {f.name: f.default for f in dataclasses.fields(OptimConfig)}
    assert set(theirs) <= {f.name for f in dataclasses.fields(Train)}
    assert {k: ours[k] for k in theirs if k != "lr"} == {k: v for k, v in theirs.items() if k != "lr"}


def test_reduce_keys_are_the_config_groups():
    keys = set()
    for path in (CONF / "reduce").glob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        keys |= set(data.get("reduce", data)) - {"defaults"}
    assert keys == {f.name for f in dataclasses.fields(Reduce)}


@pytest.mark.parametrize("group", ["model", "data", "reduce", "train"])
def test_every_option_of_every_group_validates(group):
    for path in sorted((CONF / group).glob("*.yaml")):
        overrides = [f"{group}={path.stem}"]
        if group == "reduce" and path.stem != "condense":
            overrides.append("reduce.targets=somewhere")
        validate_config(compose_config(overrides))


def test_schemas_are_hydra_structured_configs(composed):
    """Registered in the ConfigStore; OmegaConf merges every composed config into them and runs
    the same range checks (``__post_init__``) when it builds the objects."""
    repo = ConfigStore.instance().repo["schema"]
    assert {"config.yaml", "train.yaml", "reduce.yaml"} <= set(repo)
    assert set(repo["model"]) == {f"{a}.yaml" for a in MODELS}
    assert set(repo["data"]) == {f"{t}.yaml" for t in DATA}
    def typed(schema, cfg):
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), cfg))

    for cfg in composed.values():
        assert isinstance(typed(Config, cfg), Config)
        for section, cls in [("model", MODELS[cfg["model"]["arch"]]), ("data", DATA[cfg["data"]["name"]])]:
            assert isinstance(typed(cls, cfg[section]), cls)
    bad = OmegaConf.merge(OmegaConf.structured(Train), {**composed["toy"]["train"], "epochs": 0})
    with pytest.raises(ConfigError, match=r"train.epochs=0"):
        OmegaConf.to_object(bad)


# ---- the command line ---------------------------------------------------------------------------

def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "experiments.run", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("override, message", [
    ("train.optimizer=adamx", "error: invalid config: train.optimizer='adamx'; allowed: adam, adamw, sgd"),
    ("+train.bogus=1", "error: invalid config: train.bogus=1; allowed: the keys of train: "),
    ("reduce.targets=${nope}", "error: invalid config: reduce.targets='${nope}'; allowed: a value that "
                               "resolves (Interpolation key 'nope' not found)"),
], ids=["unknown choice", "unknown key", "unresolvable interpolation"])
def test_command_line_refuses_before_the_run_directory_exists(tmp_path, override, message):
    out = run("+exp=toy", override, f"hydra.run.dir={tmp_path / 'runs' / 'run'}")
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.startswith(message) and len(out.stderr.splitlines()) == 1, out.stderr
    assert list(tmp_path.iterdir()) == []  # neither the run directory nor its parents


def test_a_sweep_job_is_refused_and_leaves_no_directory(tmp_path):
    out = run("-m", "+exp=toy", "+debug=toy", "train.optimizer=adamx", f"hydra.sweep.dir={tmp_path}")
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.splitlines()[-1].startswith("error: invalid config: train.optimizer='adamx'")
    assert "Traceback" not in out.stderr, out.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["multirun.yaml"]  # Hydra's record of the sweep
