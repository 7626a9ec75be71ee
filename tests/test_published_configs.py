"""A published result's command composes to exactly the config saved beside it (operational keys
and null reduce keys aside): a change of conf/ that would change what a published command runs
fails here, so a published run never silently changes meaning.

The commands are read from the RUN.md beside each result, as a reader would copy them.
"""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, compose_config

from condensation.config import OPERATIONAL_KEYS, outcome_config, validate_config

RESULTS = ROOT / "results"

# (saved config, the RUN.md holding its command, the args that pick the command there, the
# overrides the tool adds: compare.py appends seed=S to the overrides after its "--")
CASES = [
    ("combustion/config.yaml", "combustion/RUN.md", ["experiments.run"], []),
    ("cifar10/config.yaml", "cifar10/RUN.md", ["experiments.run"], []),
    ("cifar10/manual_deeper/config.yaml", "cifar10/manual_deeper/RUN.md", ["experiments.run"], []),
    ("cifar10/comparison/targets/seed1/config.yaml", "cifar10/comparison/RUN.md",
     ["experiments.run", "hydra.run.dir=runs/targets/seed1"], []),
    # seed 2's condensation run of the comparison, kept for its merge_standard_init baseline
    ("cifar10/comparison/targets/seed2/config.yaml", "cifar10/comparison/RUN.md",
     ["scripts/compare.py", "--seeds"], ["seed=2"]),
    *[(f"combustion/paper_10/{d}{m}/config.yaml", f"combustion/paper_10/{d}{m}/RUN.md",
       ["experiments.run"], []) for d in ("", "ft5/") for m in ("importance", "condense")],
    *[(f"combustion/paper_10/widths_importance/{m}/config.yaml",
       f"combustion/paper_10/widths_importance/{m}/RUN.md", ["experiments.run"], [])
      for m in ("importance", "condense")],
    *[(f"cifar10/size_115/{m}/config.yaml", f"cifar10/size_115/{m}/RUN.md", ["experiments.run"], [])
      for m in ("importance", "condense")],
    ("cifar10/converged/original/config.yaml", "cifar10/converged/original/RUN.md",
     ["experiments.run"], []),
    *[(f"cifar10/converged/{m}/config.yaml", f"cifar10/converged/{m}/RUN.md", ["experiments.run"], [])
      for m in ("importance", "condense")],
    ("cifar10/converged_bn01/original/config.yaml", "cifar10/converged_bn01/original/RUN.md",
     ["experiments.run"], []),
]


def commands(run_md: Path) -> list[list[str]]:
    """The commands in a RUN.md's code blocks (4-space indented lines starting with ``python``;
    continuation lines joined, ``# comments`` dropped), each split like a shell would."""
    out, current = [], ""
    for line in run_md.read_text().splitlines():
        if line.startswith("    ") and (current or line.strip().startswith("python")):
            current += " " + line.strip()
            if current.endswith("\\"):
                current = current[:-1]
                continue
            out.append(shlex.split(current, comments=True))
            current = ""
    return out


def overrides(argv: list[str]) -> list[str]:
    """A command's config overrides: after ``experiments.run``, or after compare.py's ``--``;
    ``hydra.*`` (where the run went, not what it is) and a shell's ``&`` left out."""
    start = argv.index("experiments.run") + 1 if "experiments.run" in argv else argv.index("--") + 1
    return [a for a in argv[start:] if not a.startswith("hydra.") and a != "&"]


def published_command(run_md: Path, pick: list[str]) -> list[str]:
    found = [c for c in commands(run_md) if all(p in c for p in pick)]
    assert found, f"no command with {pick} in {run_md}"
    return found[0]


def unflatten(flat: dict) -> dict:
    """runs.json keeps each config flat (``"train.lr": 0.1``); back to nested sections."""
    out: dict = {}
    for key, value in flat.items():
        *parents, last = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return out


def differences(composed: dict, saved: dict) -> dict[str, tuple]:
    """Outcome keys whose values differ, dotted: {key: (composed, saved)}."""
    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out
    a, b = flat(outcome_config(composed)), flat(outcome_config(saved))
    return {k: (a.get(k, "<absent>"), b.get(k, "<absent>")) for k in sorted(set(a) | set(b))
            if a.get(k, "<absent>") != b.get(k, "<absent>")}


@pytest.mark.parametrize("saved, run_md, pick, added", CASES, ids=[c[0] for c in CASES])
def test_published_command_composes_to_the_saved_config(saved, run_md, pick, added):
    argv = published_command(RESULTS / run_md, pick)
    cfg = compose_config([*overrides(argv), *added])
    saved_cfg = yaml.safe_load((RESULTS / saved).read_text())
    assert differences(cfg, saved_cfg) == {}, f"{shlex.join(argv)} no longer composes to {saved}"
    validate_config(cfg)
    validate_config(saved_cfg)  # the schema knows every key a published run was made with


def comparison_records() -> list:
    params = []
    for runs in sorted(RESULTS.rglob("runs.json")):
        records = [r for r in json.loads(runs.read_text())["runs"] if r.get("config")]
        for r in records:
            params.append(pytest.param(runs.parent, r, id=f"{runs.parent.relative_to(RESULTS)}:"
                                                         f"{r['method']}:seed{r['seed']}"))
    return params


@pytest.mark.parametrize("folder, record", comparison_records())
def test_comparison_runs_compose_to_their_recorded_configs(folder, record):
    """Each run of a comparison that kept its config: compare.py's overrides (RUN.md) with the
    run's seed and method (and the condensation run it matched, wherever it lived)."""
    argv = published_command(folder / "RUN.md", ["scripts/compare.py", "--seeds"])
    recorded = unflatten(record["config"])
    red = recorded["reduce"]
    extra = [f"seed={record['seed']}", f"reduce={record['method']}"]
    if record["method"] != "condense":
        extra.append(f"reduce.targets={red['targets']}")
    if red.get("sizes") not in (None, "all"):
        extra.append(f"reduce.sizes={red['sizes']}")
    cfg = compose_config([*overrides(argv), *extra])
    assert differences(cfg, recorded) == {}


def test_compare_names_every_method_even_where_it_is_not_the_default():
    """compare.py passes reduce=<method> for condensation too: +exp=combustion_paper_10's default
    selection is model folding, and its condensation runs must still be condensation."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import compare

    assert compose_config(["+exp=combustion_paper_10"])["reduce"]["method"] == "fold"
    for method in ("condense", "importance", "magnitude"):
        argv = compare.command(["+exp=combustion_paper_10"], Path("runs/x"), 0, method)
        cfg = compose_config(overrides(argv[1:]))
        assert cfg["reduce"]["method"] == method
        assert cfg["reduce"]["target"] == 0.1 and cfg["reduce"]["mode"] == "target"


def test_operational_keys_are_what_the_comparison_sets_aside():
    """What differences() ignores beyond null reduce keys: keys that change how a run is carried
    out (resuming, logging, checkpoint frequency, a diagnostic), never what it computes."""
    assert set(OPERATIONAL_KEYS) == {"fresh", "logger", "train.checkpoint_every",
                                     "train.checkpoint_every_steps", "train.track_groups_at"}


def test_the_command_reader_reads_continuations_and_comments(tmp_path):
    md = tmp_path / "RUN.md"
    md.write_text("text\n\n    python a.py --x 1 \\\n        -- +exp=e \"k=[1, 2]\"\n"
                  "    python -m experiments.run +exp=f hydra.run.dir=D  # a comment\n")
    assert commands(md) == [["python", "a.py", "--x", "1", "--", "+exp=e", "k=[1, 2]"],
                            ["python", "-m", "experiments.run", "+exp=f", "hydra.run.dir=D"]]
    assert [overrides(c) for c in commands(md)] == [["+exp=e", "k=[1, 2]"], ["+exp=f"]]
