"""Baselines (condensation.reduction): each reduces to the condensation run's sizes, by its own
rule; end to end they start from the right network and get the same fine-tuning budget."""
from __future__ import annotations

import csv
import json
import shutil
import sys
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, TINY_TOY, compose_config

from condensation import fit as fit_module
from condensation.condense import assign_groups, num_groups
from condensation.errors import ConfigError
from condensation.experiment import train_and_reduce
from condensation.network import Network, abstract_variables, count_params
from condensation.reduction import (
    REDUCERS,
    Setup,
    method,
    scratch_budget,
    scratch_finetune_budget,
    threshold_for,
)
from condensation.saved import load_network, save_network

MLP = Network("mlp", (6, 5), {"out_dim": 2, "activation": "gelu", "gamma": 0.5})
CNN = Network("cnn", (4, 6, 8), {"n_conv": 2, "num_classes": 3, "activation": "relu", "gamma": 0.5})


def init(net: Network, shape):
    return net.module().init(jax.random.key(0), jnp.ones((1, *shape)))


@pytest.mark.parametrize("name", ["magnitude", "random", "merge_standard_init", "scratch"])
@pytest.mark.parametrize("net, shape, target", [(MLP, (3,), (4, 2)), (CNN, (8, 8, 3), (3, 2, 5))])
def test_baseline_reaches_the_target_widths(name, net, shape, target):
    variables = init(net, shape)
    small, new = method(name).reduce(net, variables, target=target, threshold=0.9,
                                     activation=net.options["activation"], input_shape=shape,
                                     rng=jax.random.key(1))
    if name == "merge_standard_init":  # merging may overshoot: never larger than the target
        assert all(w <= t for w, t in zip(small.widths, target, strict=True))
    else:
        assert small.widths == target
        assert count_params(new) == count_params(abstract_variables(net.with_widths(target), shape))
    out = small.module().apply(new, jnp.ones((2, *shape)))
    assert out.shape == (2, net.options.get("out_dim", net.options.get("num_classes")))


def test_magnitude_keeps_the_largest_input_vectors_in_order():
    variables = jax.tree.map(np.array, init(MLP, (3,)))
    kernel = variables["params"]["Dense_0"]["kernel"]
    kernel *= np.array([1.0, 9.0, 0.1, 5.0, 0.2, 7.0])  # input-vector norms ordered by these
    variables["params"]["Dense_0"]["bias"][:] = 0.0
    small, new = method("magnitude").reduce(MLP, variables, target=(3, 5), threshold=0.9,
                                            activation="gelu", input_shape=(3,),
                                            rng=jax.random.key(0))
    np.testing.assert_array_equal(new["params"]["Dense_0"]["kernel"], kernel[:, [1, 3, 5]])
    # the next layer keeps the matching rows
    np.testing.assert_array_equal(new["params"]["Dense_1"]["kernel"],
                                  variables["params"]["Dense_1"]["kernel"][[1, 3, 5]])


def test_random_depends_on_the_rng():
    variables = init(MLP, (3,))
    kw = {"target": (3, 5), "threshold": 0.9, "activation": "gelu", "input_shape": (3,)}
    kept = {np.asarray(method("random").reduce(MLP, variables, rng=jax.random.key(i), **kw)[1]
                       ["params"]["Dense_0"]["kernel"]).tobytes() for i in range(5)}
    assert len(kept) > 1  # 20 possible subsets of 3 among 6


def test_threshold_for_merges_down_to_k():
    vectors = init(MLP, (3,))["params"]["Dense_0"]["kernel"].T
    for k in (1, 3, 6):
        t, assignment = threshold_for(vectors, k)
        groups = int(jnp.sum(assignment == jnp.arange(6)))
        assert groups <= k
        # the highest such threshold: a little higher leaves more than k groups
        if k < 6:
            assert num_groups(assign_groups(vectors, t + 1e-3)) > k


def test_registry_names_match_the_config_group():
    from conftest import CONF
    assert set(REDUCERS) == {p.stem for p in (CONF / "reduce").glob("*.yaml")}


@pytest.fixture(scope="module")
def condensed(tmp_path_factory):
    """A tiny condensation run with two manual rounds (the sizes the baselines match)."""
    workdir = tmp_path_factory.mktemp("condense")
    cfg = compose_config([*TINY_TOY, "reduce.mode=manual", "reduce.thresholds=[0.999,0.99]"])
    return workdir, train_and_reduce(cfg, workdir)


def count_epochs(monkeypatch) -> list[tuple[int, int]]:
    calls = []
    real = fit_module.train_epoch

    def wrapped(state, data, **kwargs):
        calls.append((kwargs["epoch"], sum(np.size(p) for p in jax.tree.leaves(state.params))))
        return real(state, data, **kwargs)

    monkeypatch.setattr(fit_module, "train_epoch", wrapped)
    return calls


@pytest.mark.parametrize("name", ["magnitude", "random", "merge_standard_init", "scratch"])
def test_baseline_run_matches_the_condensation_sizes(condensed, tmp_path, monkeypatch, name):
    cond_dir, cond = condensed
    cfg = compose_config([*TINY_TOY, f"reduce={name}", f"reduce.targets={cond_dir}"])
    calls = count_epochs(monkeypatch)
    summary = train_and_reduce(cfg, tmp_path)
    ours = list(csv.DictReader((tmp_path / "curve.csv").open()))
    theirs = [r for r in csv.DictReader((cond_dir / "curve.csv").open()) if r["accepted"] == "True"]
    assert len(ours) == len(theirs) == 2
    for a, b in zip(ours, theirs, strict=True):
        if name == "merge_standard_init":
            assert int(a["params"]) <= int(b["params"])
        else:
            assert a["widths"] == b["widths"] and a["params"] == b["params"]
    ft, train_epochs = cfg["reduce"]["finetune_epochs"], cfg["train"]["epochs"]
    if name in ("magnitude", "random"):  # the condensation run's network, fine-tuned as long
        assert summary["original_metric"] == cond["original_metric"]
        assert len(calls) == 2 * ft
    elif name == "scratch":  # round r: train.epochs + (r + 1) * finetune_epochs from scratch
        assert summary["original_metric"] == cond["original_metric"]
        assert len(calls) == (train_epochs + ft) + (train_epochs + 2 * ft)
    else:  # its own original, from standard initialization
        assert cfg["model"]["gamma"] == 0.5
        assert summary["original_metric"] != cond["original_metric"]
        assert len(calls) == train_epochs + 2 * ft
    net, _, _ = load_network(tmp_path / "networks" / "reduced")
    assert list(net.widths) == summary["widths_after"]


def test_scratch_at_the_final_size_only(condensed, tmp_path, monkeypatch):
    """reduce.sizes=final: one network of the last accepted widths, trained as long as the
    condensed network of that round was (training plus every round's fine-tuning)."""
    cond_dir, _ = condensed
    cfg = compose_config([*TINY_TOY, "reduce=scratch", f"reduce.targets={cond_dir}",
                          "reduce.sizes=final"])
    calls = count_epochs(monkeypatch)
    summary = train_and_reduce(cfg, tmp_path)
    ours = list(csv.DictReader((tmp_path / "curve.csv").open()))
    last = [r for r in csv.DictReader((cond_dir / "curve.csv").open()) if r["accepted"] == "True"][-1]
    assert [(r["widths"], r["params"]) for r in ours] == [(last["widths"], last["params"])]
    assert summary["widths_after"] == [int(w) for w in last["widths"].split()]
    ft, train_epochs = cfg["reduce"]["finetune_epochs"], cfg["train"]["epochs"]
    assert len(calls) == train_epochs + (int(last["round"]) + 1) * ft


def test_bad_scratch_sizes_is_refused(condensed, tmp_path):
    cond_dir, _ = condensed
    cfg = compose_config([*TINY_TOY, "reduce=scratch", f"reduce.targets={cond_dir}",
                          "reduce.sizes=last"])
    with pytest.raises(ConfigError, match=r"reduce.sizes='last'; allowed: all, final"):
        train_and_reduce(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_baseline_without_a_condensation_run_is_refused(tmp_path):
    cfg = compose_config([*TINY_TOY, "reduce=magnitude", f"reduce.targets={tmp_path / 'none'}"])
    with pytest.raises(ConfigError, match=r"invalid config: reduce.targets=.*none.*finished "
                                          "condensation run"):
        train_and_reduce(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_baseline_of_another_seed_is_refused(condensed, tmp_path):
    cond_dir, _ = condensed
    cfg = compose_config([*TINY_TOY, "seed=1", "reduce=random", f"reduce.targets={cond_dir}"])
    with pytest.raises(ConfigError, match="differs in them"):
        train_and_reduce(cfg, tmp_path / "run")


def test_old_run_without_targets_key_resumes_unchanged(condensed, tmp_path, monkeypatch):
    """reduce.targets was added later with a null default: it is not a change of settings."""
    cond_dir, cond = condensed
    cfg = json.loads(json.dumps(compose_config(
        [*TINY_TOY, "reduce.mode=manual", "reduce.thresholds=[0.999,0.99]"])))
    cfg["reduce"].pop("targets")
    calls = count_epochs(monkeypatch)
    shutil.copytree(cond_dir, tmp_path / "run")
    summary = train_and_reduce(cfg, tmp_path / "run")
    assert calls == [] and summary["reduced_params"] == cond["reduced_params"]



def test_compare_script_tables_every_method(condensed, tmp_path):
    """scripts/compare.py's aggregation over a comparison folder (seed0 + its baselines)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import compare

    cond_dir, cond = condensed
    root = tmp_path / "cmp"
    shutil.copytree(cond_dir, root / "seed0")
    for name in ("magnitude", "random"):
        cfg = compose_config([*TINY_TOY, "reduce.mode=manual", "reduce.thresholds=[0.999,0.99]",
                              f"reduce={name}", f"reduce.targets={root / 'seed0'}"])
        train_and_reduce(cfg, compare.run_dir(root, 0, name))
    result = compare.write(root, tmp_path / "out")
    rows = {r["reduce.method"]: r for r in result["rows"]}
    assert set(rows) == {"condense", "magnitude", "random"}
    assert rows["condense"]["reduced_metric_after_finetune_mean"] == cond["reduced_metric_after_finetune"]
    assert rows["magnitude"]["size_ratio_mean"] == cond["size_ratio"]
    for f in ("comparison.csv", "comparison.md", "comparison.png", "curves.csv", "runs.json",
              "paired.csv", "paired.md"):
        assert (tmp_path / "out" / f).is_file(), f
    pairs = {r["method"]: r for r in csv.DictReader((tmp_path / "out" / "paired.csv").open())}
    diff = rows["random"]["reduced_metric_after_finetune_mean"] - cond["reduced_metric_after_finetune"]
    assert float(pairs["random"]["reduced_metric_after_finetune_diffs"]) == pytest.approx(diff, abs=1e-6)
    points = list(csv.DictReader((tmp_path / "out" / "curves.csv").open()))
    assert {(p["method"], p["round"], p["seed"]) for p in points} == {
        (m, r, "0") for m in ("condense", "magnitude", "random") for r in ("0", "1")}
    last = [p for p in points if p["method"] == "condense" and p["round"] == "1"][0]
    assert float(last["metric_after_finetune"]) == cond["reduced_metric_after_finetune"]
    assert "| magnitude |" in (tmp_path / "out" / "comparison.md").read_text()
    runs = json.loads((tmp_path / "out" / "runs.json").read_text())["runs"]
    assert len(runs) == 3
    for r in runs:
        assert r["commits"] and r["commits"][-1] == r["commit"], r

    # the records keep runs whose directories are gone (a comparison across sessions)
    written = {f: (tmp_path / "out" / f).read_text() for f in ("comparison.csv", "curves.csv")}
    shutil.rmtree(compare.run_dir(root, 0, "random"))
    compare.write(root, tmp_path / "out")
    shutil.rmtree(root)
    again = compare.write(root, tmp_path / "out")
    assert [r["reduce.method"] for r in again["rows"]] == ["condense", "magnitude", "random"]
    for f, text in written.items():
        assert (tmp_path / "out" / f).read_text() == text, f
    # ... and refuse a kept run of another config, or one without its record
    path = tmp_path / "out" / "runs.json"
    kept = json.loads(path.read_text())
    kept["runs"][1]["config"]["train.epochs"] += 1
    path.write_text(json.dumps(kept))
    with pytest.raises(compare.NoRunsError, match=r"differ in more than the method and seed: "
                                                  r"\['train.epochs'\]"):
        compare.write(root, tmp_path / "out")
    del kept["runs"][1]["summary"]
    path.write_text(json.dumps(kept))
    with pytest.raises(compare.NoRunsError, match="no record of them to table again: magnitude"):
        compare.write(root, tmp_path / "out")

    # a runs.json from before the records: scripts/recover_records.py rebuilds them from the
    # comparison's own tables, and refuses when they would not reproduce those tables
    import recover_records

    for r in kept["runs"]:
        for k in ("summary", "curve", "config"):
            r.pop(k, None)
    path.write_text(json.dumps(kept))
    assert recover_records.main([str(tmp_path / "out")]) == 0
    assert compare.write(root, tmp_path / "out")["rows"] == again["rows"]
    kept = json.loads(path.read_text())
    for r in kept["runs"]:
        r.pop("summary")
    path.write_text(json.dumps(kept))
    table = list(csv.DictReader((tmp_path / "out" / "comparison.csv").open()))
    table[1]["size_ratio_mean"] = str(float(table[1]["size_ratio_mean"]) + 0.01)
    with (tmp_path / "out" / "comparison.csv").open("w") as f:
        w = csv.DictWriter(f, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows(table)
    assert recover_records.main([str(tmp_path / "out")]) == 2
    assert "summary" not in json.loads(path.read_text())["runs"][0]  # nothing written


def test_diagnostics_script_makes_its_figures(condensed, tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    import diagnostics

    cond_dir, cond = condensed
    run = tmp_path / "seed0"
    shutil.copytree(cond_dir, run)
    cfg = compose_config([*TINY_TOY, "reduce.mode=manual", "reduce.thresholds=[0.999,0.99]",
                          "reduce=merge_standard_init", f"reduce.targets={run}"])
    train_and_reduce(cfg, run / "baselines" / "merge_standard_init")
    assert diagnostics.main([str(run), "--layer", "Dense_1", "--out", str(tmp_path / "out")]) == 0
    d = json.loads((tmp_path / "out" / "diagnostics.json").read_text())
    assert set(d["cosine"]) == {"small init.", "standard init."}
    small = d["cosine"]["small init."]
    assert small["trained"]["units"] == cond["widths_before"][1]
    assert small["reduced"]["units"] == cond["widths_after"][1]
    assert 1 <= small["trained"]["groups"] <= small["trained"]["units"]
    assert len(d["groups_vs_epoch"]["small init."]["fraction"]["Dense_1"]) == 1 + cfg["train"]["epochs"]
    for label, layers in d["trained_layers"].items():
        assert [v["units"] for v in layers.values()] == cond["widths_before"], label
        assert all(1 <= v["groups"] <= v["units"] for v in layers.values()), label
    assert d["trained_layers"]["small init."]["Dense_1"]["groups"] == small["trained"]["groups"]
    for f in ("cosine.png", "groups_vs_epoch.png"):
        assert (tmp_path / "out" / f).read_bytes()[:4] == b"\x89PNG"


def test_scratch_budget_in_target_mode():
    cfg = compose_config([*TINY_TOY, "reduce=scratch", "reduce.mode=target", "reduce.target=0.4"])
    ft, train = cfg["reduce"]["finetune_epochs"], cfg["train"]["epochs"]
    assert scratch_budget(Setup(cfg, True), 0)[0] == train + ft
    assert scratch_finetune_budget(Setup(cfg, True), 1)[0] == 2 * ft


def test_scratch_at_the_final_size_only_in_target_mode(tmp_path, monkeypatch):
    """reduce.sizes=final with reduce.mode=target: one network at the last round's fraction,
    trained as long as the reduced network of that round was (training plus every round's
    fine-tuning), not one network per round (which compare.py's --scratch-sizes final asks for)."""
    over = [*TINY_TOY, "reduce=scratch", "reduce.mode=target", "reduce.target=0.4",
            "reduce.target_rounds=2"]
    cfg = compose_config([*over, "reduce.sizes=final"])
    ft, train = cfg["reduce"]["finetune_epochs"], cfg["train"]["epochs"]
    assert scratch_budget(Setup(cfg, True), 0)[0] == train + 2 * ft
    assert scratch_finetune_budget(Setup(cfg, True), 0)[0] == 2 * ft
    calls = count_epochs(monkeypatch)
    summary = train_and_reduce(cfg, tmp_path / "final")
    rows = list(csv.DictReader((tmp_path / "final" / "curve.csv").open()))
    assert len(rows) == 1 and len(calls) == train + (train + 2 * ft)  # the original, then scratch
    assert {n for _, n in calls[train:]} == {summary["reduced_params"]}  # all at the final size
    every = train_and_reduce(compose_config(over), tmp_path / "all")
    assert summary["widths_after"] == every["widths_after"]
    assert len(list(csv.DictReader((tmp_path / "all" / "curve.csv").open()))) == 2


def test_target_sizes_give_each_rounds_fraction(tmp_path):
    """reduce.target_sizes: one round per fraction, each at most that fraction (its widths
    rounded down), fine-tuned between them; the pipeline records the list."""
    cfg = compose_config([*TINY_TOY, "reduce=importance", "reduce.mode=target",
                          "reduce.target_sizes=[0.7,0.4]", "reduce.calibration=64"])
    summary = train_and_reduce(cfg, tmp_path / "run")
    assert summary["rounds"] == 2 and summary["pipeline"]["target"] == [0.7, 0.4]
    with (tmp_path / "run" / "curve.csv").open() as f:
        ratios = [float(r["size_ratio"]) for r in csv.DictReader(f)]
    assert len(ratios) == 2 and 0.5 < ratios[0] <= 0.7 and 0.25 < ratios[1] <= 0.4


def test_target_mode_baseline_reduces_the_condensation_runs_original(tmp_path):
    """reduce.mode=target without reduce.original: a baseline given a finished condensation
    run (reduce.targets) reduces that run's trained network instead of training its own. The
    saved original is altered first, so a retrained one (equal on this machine) would differ."""
    sized = [*TINY_TOY, "reduce.mode=target", "reduce.target=0.5"]
    cond = tmp_path / "seed0"
    train_and_reduce(compose_config(sized), cond)
    net, variables, _ = load_network(cond / "networks" / "original")
    variables["params"]["Dense_0"]["kernel"] *= 1.5
    save_network(cond / "networks" / "original", net, variables)
    cfg = compose_config([*sized, "reduce=importance", f"reduce.targets={cond}"])
    train_and_reduce(cfg, cond / "baselines" / "importance")
    _, used, _ = load_network(cond / "baselines" / "importance" / "networks" / "original")
    np.testing.assert_array_equal(used["params"]["Dense_0"]["kernel"],
                                  variables["params"]["Dense_0"]["kernel"])


def test_a_published_original_is_reduced_by_a_later_run(condensed, tmp_path, monkeypatch):
    """publish.py --original-only: a run's trained original with its log up to the ``original``
    event and its provenance (a resumed run's wall time without the gap between its processes);
    a run given ``reduce.original`` = that network trains nothing and reduces it (how a network
    that takes a session to train is reduced in later sessions). A run whose original is not
    recorded yet is refused and nothing is written; so is a run that did not train its own."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import publish

    cond_dir, cond = condensed
    dest = tmp_path / "results" / "original"
    argv = ["--original-only", "--command", "python -m experiments.run +exp=toy"]
    assert publish.main([str(cond_dir), str(dest), *argv]) == 0
    record = json.loads((dest / "original.json").read_text())
    assert record["original"]["test"] == cond["original_metric"] and record["seed"] == cond["seed"]
    assert record["metric"] == "test_loss" and record["machine"] == cond["machine"]
    assert record["commits"] == [cond["commit"]] and 0 < record["wall_time_s"] < cond["wall_time_s"]
    events = [json.loads(line) for line in (dest / "metrics.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "original"
    assert events[-2]["epoch"] == compose_config(TINY_TOY)["train"]["epochs"]
    assert (dest / "training.png").read_bytes()[:4] == b"\x89PNG"
    assert "python -m experiments.run +exp=toy" in (dest / "RUN.md").read_text()

    red = compose_config([*TINY_TOY, "reduce=importance", "reduce.mode=target", "reduce.target=0.5",
                          f"reduce.original={dest / 'networks' / 'original'}"])
    calls = count_epochs(monkeypatch)
    summary = train_and_reduce(red, tmp_path / "run")
    assert summary["original_metric"] == cond["original_metric"]
    assert len(calls) == red["reduce"]["finetune_epochs"]  # fine-tuning only
    assert publish.main([str(tmp_path / "run"), str(tmp_path / "again"), *argv]) == 2

    resumed = tmp_path / "resumed"  # killed after epoch 2, resumed an hour later elsewhere
    shutil.copytree(cond_dir, resumed)
    log = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    cut = [i for i, e in enumerate(log) if e["event"] == "epoch"][1] + 1
    later = [{**e, "time": e["time"] + 3600} for e in log[cut:]]
    resume = {"time": later[0]["time"] - 1, "event": "resume", "commit": "c" * 40, "machine": "m"}
    (resumed / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in
                                                   [*log[:cut], resume, *later]))
    assert publish.main([str(resumed), str(dest), *argv]) == 0  # replaces the folder
    again = json.loads((dest / "original.json").read_text())
    assert again["commits"] == [cond["commit"], "c" * 40] and again["machine"] == "m"
    # the first process up to epoch 2, the second from its resume event: the hour is left out
    lost = log[cut]["time"] - log[cut - 1]["time"] - 1
    assert again["wall_time_s"] == pytest.approx(record["wall_time_s"] - lost, abs=0.11)

    young = tmp_path / "young"
    shutil.copytree(cond_dir, young)
    log = (young / "metrics.jsonl").read_text().splitlines()
    recorded = [json.loads(line)["event"] for line in log].index("original")
    (young / "metrics.jsonl").write_text("\n".join(log[:recorded]) + "\n")
    assert publish.main([str(young), str(tmp_path / "early"), *argv]) == 2
    assert not (tmp_path / "early").exists() and not list(tmp_path.glob(".early*"))


@pytest.mark.parametrize("overrides, message", [
    (["reduce.target_sizes=[0.4,0.7]"], "decreasing fractions"),
    (["reduce.target_sizes=[0.7,1.0]"], "decreasing fractions"),
    (["reduce.target_sizes=[0.7]", "reduce.target=0.4"], "give the rounds' sizes one way"),
    (["reduce.target_sizes=[0.7]", "reduce.mode=manual"], "unless reduce.mode=target"),
])
def test_bad_target_sizes_are_refused(overrides, message):
    from condensation.config import validate_config

    mode = [] if any(o.startswith("reduce.mode") for o in overrides) else ["reduce.mode=target"]
    with pytest.raises(ConfigError, match=message):
        validate_config(compose_config([*TINY_TOY, "reduce=importance", *mode, *overrides]))


def test_none_fine_tunes_the_original_as_the_reduced_networks_are(tmp_path):
    cfg = compose_config([*TINY_TOY, "reduce=none", "reduce.mode=target", "reduce.target=0.4"])
    summary = train_and_reduce(cfg, tmp_path / "run")
    assert summary["size_ratio"] == 1.0 and summary["rounds"] == 1
    _, variables, _ = load_network(tmp_path / "run" / "networks" / "reduced")
    _, original, _ = load_network(tmp_path / "run" / "networks" / "original")
    assert count_params(variables) == count_params(original)
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(variables),
                                                          jax.tree.leaves(original), strict=True))


def test_regime_script_counts_groups_and_dead_units(condensed, tmp_path):
    """The first hidden layer (input x in [-1, 1], so each unit's input vector is (w, b)) set by
    hand: units at angles 40 degrees apart (no two aligned at cos 0.95), unit 2 twice unit 1
    (aligned), unit 0 = (0, -1): ReLU(-1) = 0 on every input (dead, constant, its own group;
    not among the live units' groups)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import regime

    cond_dir, cond = condensed
    run = tmp_path / "seed0"
    shutil.copytree(cond_dir, run)
    net, variables, _ = load_network(run / "networks" / "original")
    angles = np.deg2rad([270, 0, 0, 40, 80, 120, 160, 200])
    scale = np.array([1, 1, 2, 1, 1, 1, 1, 1])
    d0 = variables["params"]["Dense_0"]
    d0["kernel"][0], d0["bias"][:] = scale * np.cos(angles), scale * np.sin(angles)
    save_network(run / "networks" / "original", net, variables)
    out = tmp_path / "out"
    regime.main([f"small={run}", "--reduced", f"small={run}", "--out", str(out)])
    d = json.loads((out / "regime.json").read_text())
    layers = d["results"]["small"]["layers"]
    assert [r["width"] for r in layers] == cond["widths_before"] and layers[0]["width"] == 8
    keys = ("groups_weights", "groups_parts", "dead", "constant", "live", "groups_weights_live",
            "groups_parts_live")
    assert {k: layers[0][k] for k in keys} == \
        {"groups_weights": 7, "groups_parts": 7, "dead": 1, "constant": 1, "live": 7,
         "groups_weights_live": 6, "groups_parts_live": 6}
    assert d["results"]["small"]["reduced"]["after_finetune"] == cond["reduced_metric_after_finetune"]
    assert (out / "regime.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit, match="no networks/original"):
        regime.main([f"x={tmp_path}", "--out", str(out)])


def test_compare_runs_only_the_listed_methods_condensation_first(tmp_path, monkeypatch):
    """compare.py runs each seed's listed methods, condensation first when listed, finished
    runs skipped; with condensation not listed, no condensation run (a later session adding the
    yardstick to a seed whose condensation run is kept only in runs.json)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import compare

    ran = []
    monkeypatch.setattr(compare.subprocess, "run", lambda cmd, cwd: (
        ran.append(next(a for a in cmd if a.startswith("reduce=")))
        or SimpleNamespace(returncode=0)))
    compare.run_all(["+exp=x"], tmp_path, [0], ["fold", "condense", "none"])
    assert ran == ["reduce=condense", "reduce=fold", "reduce=none"]
    ran.clear()
    done = compare.run_dir(tmp_path, 1, "fold")
    done.mkdir(parents=True)
    (done / "summary.json").write_text("{}")
    compare.run_all(["+exp=x"], tmp_path, [1], ["none", "fold"])
    assert ran == ["reduce=none"]
