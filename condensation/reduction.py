"""Reduction methods, keyed by name so that one config line (``reduce=<name>``) switches them.

``condense`` merges the units whose input vectors are aligned at cosine >= a threshold; the
baselines reduce a network to given widths (``target``, the sizes a condensation run reached),
so that every method is compared at the same parameter budget:

- ``magnitude``: structured pruning, keep the units with the largest input-vector L2 norm
  (BatchNorm folded in); drop the rest, no merging;
- ``random``: keep a random subset of the units;
- ``merge_standard_init``: condensation of a network trained from standard initialization
  (``reduce.gamma``, 0.5), each group merged down to its target size (the threshold is lowered
  per group until it is reached);
- ``scratch``: a network of the target widths, freshly initialized (and then trained from
  scratch by the experiment loop for the epochs of training plus fine-tuning).

A method is its ``reduce`` — ``(network, variables, *, threshold, target, activation,
input_shape, rng)`` to a smaller ``(network, variables)`` — and three hooks that the
experiment calls, never flags it reads:

- ``start(setup)``: where the method starts — ``None`` to train its own original, or the trained
  original of another run (:class:`Start`);
- ``schedule(setup)``: the rounds — the threshold (and target widths) of round r, and whether a
  round's result is accepted;
- ``budget(setup, r)``: how many epochs round r trains its reduced network, with which optimizer.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from condensation.condense import (
    assign_groups,
    drop_units,
    group_size,
    input_vectors,
    is_homogeneous,
    merge_group,
    num_groups,
)
from condensation.network import (
    Network,
    abstract_variables,
    check_shapes,
    reduce_network,
    widths_of,
)
from condensation.saved import load_network
from condensation.train import OptimConfig

Variables = dict[str, Any]


@dataclass(frozen=True)
class Target:
    """One accepted round of the condensation run a baseline is compared with."""

    round: int
    threshold: float
    widths: tuple[int, ...]


@dataclass(frozen=True)
class Setup:
    """What the hooks may read: the run's config, the task's judgement and the condensation run
    a baseline matches (``targets_dir`` and its accepted rounds, else None and ())."""

    cfg: dict[str, Any]
    higher_is_better: bool
    targets_dir: Path | None = None
    targets: tuple[Target, ...] = ()

    def optim(self, **overrides) -> OptimConfig:
        fields = OptimConfig.__dataclass_fields__
        return replace(OptimConfig(**{k: v for k, v in self.cfg["train"].items() if k in fields}),
                       **overrides)


@dataclass(frozen=True)
class Start:
    """A trained original that a method starts from instead of training its own."""

    variables: Variables
    epoch: int | None
    source: str


@dataclass(frozen=True)
class Round:
    threshold: float
    target: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Schedule:
    """The rounds of a reduction: ``rounds[r]`` (or ``next_round(r)`` for an open-ended
    automatic schedule) and the acceptance of a round's validation metric."""

    next_round: Callable[[int], Round | None]
    accepts: Callable[[float, float], bool] = lambda val, original_val: True


# ---- hooks ------------------------------------------------------------------------------------

def train_own(setup: Setup) -> Start | None:
    return None


def original_of_targets(setup: Setup) -> Start:
    """The condensation run's trained original (so a baseline reduces the very same network)."""
    _, variables, meta = load_network(setup.targets_dir / "networks" / "original")
    return Start(variables, meta.get("metrics", {}).get("epoch"), str(setup.targets_dir))


def threshold_schedule(setup: Setup) -> Schedule:
    """Manual: ``reduce.thresholds`` in turn, each accepted. Auto: from ``auto.start``,
    tau_next = 1 - (1 - tau) x factor down to ``min_threshold``, accepted while the validation
    metric stays within the tolerance of the original's."""
    rcfg = setup.cfg["reduce"]
    if rcfg["mode"] == "manual":
        ts = [float(t) for t in rcfg["thresholds"]]
        return Schedule(lambda r: Round(ts[r]) if r < len(ts) else None)
    auto = rcfg["auto"]

    def next_round(r: int) -> Round | None:
        if r >= int(auto["max_rounds"]):
            return None
        t = 1.0 - (1.0 - float(auto["start"])) * float(auto["factor"]) ** r
        return Round(round(t, 6)) if t >= float(auto["min_threshold"]) else None

    return Schedule(next_round, tolerance(auto, setup.higher_is_better))


def tolerance(auto: dict[str, Any], higher_is_better: bool) -> Callable[[float, float], bool]:
    tol = float(auto["tolerance"])
    relative = auto.get("tolerance_mode", "relative") == "relative"

    def accepts(val: float, original: float) -> bool:
        if higher_is_better:
            return val >= (original * (1 - tol) if relative else original - tol)
        return val <= (original * (1 + tol) if relative else original + tol)

    return accepts


def target_schedule(setup: Setup) -> Schedule:
    """The condensation run's accepted rounds, one per round, each accepted."""
    ts = setup.targets
    return Schedule(lambda r: Round(ts[r].threshold, ts[r].widths) if r < len(ts) else None)


def finetune_budget(setup: Setup, r: int) -> tuple[int, OptimConfig]:
    """``reduce.finetune_epochs`` at ``reduce.finetune_lr`` (else train.lr), no warm-up."""
    rcfg = setup.cfg["reduce"]
    lr = float(rcfg.get("finetune_lr") or setup.cfg["train"]["lr"])
    return int(rcfg["finetune_epochs"]), setup.optim(lr=lr, warmup_epochs=0.0)


def scratch_budget(setup: Setup, r: int) -> tuple[int, OptimConfig]:
    """The training schedule, for as many epochs as the condensation run's network of this
    size had: its training plus the fine-tuning of every round up to this one."""
    epochs = int(setup.cfg["train"]["epochs"])
    epochs += (setup.targets[r].round + 1) * int(setup.cfg["reduce"]["finetune_epochs"])
    return epochs, setup.optim()


@dataclass(frozen=True)
class Method:
    reduce: Callable[..., tuple[Network, Variables]]
    start: Callable[[Setup], Start | None] = train_own
    schedule: Callable[[Setup], Schedule] = threshold_schedule
    budget: Callable[[Setup, int], tuple[int, OptimConfig]] = finetune_budget
    # reduces to the widths of the condensation run in reduce.targets (read before any work)
    needs_targets: bool = False
    # model keys the method sets itself, allowed to differ from the condensation run's
    own_model_keys: tuple[str, ...] = ()


def target_sizes(net: Network, target: tuple[int, ...], input_shape) -> dict[str, int]:
    """Units per coupled group of ``net`` at widths ``target``."""
    small = net.with_widths(target)
    shapes = abstract_variables(small, input_shape)
    return {g.name: group_size(shapes, g) for g in small.spec()}


def _checked(net: Network, variables: Variables, input_shape) -> tuple[Network, Variables]:
    new = net.with_widths(widths_of(net, variables))
    check_shapes(new, variables, input_shape)
    return new, variables


def _condense(net, variables, *, threshold, activation, input_shape, **_):
    return reduce_network(net, variables, threshold=threshold, activation=activation,
                          input_shape=input_shape)


def _drop(score: Callable[[int, jax.Array], jax.Array]):
    """A pruning method: in each group keep the ``target`` units of highest ``score``."""

    def reduce(net, variables, *, target, input_shape, **_):
        sizes = target_sizes(net, target, input_shape)
        for i, group in enumerate(net.spec()):
            n, k = group_size(variables, group), sizes[group.name]
            if k > n:
                raise ValueError(f"group {group.name} has {n} units, cannot grow to {k}")
            if k < n:
                s = score(i, input_vectors(variables, group))
                keep = jnp.sort(jnp.argsort(-s)[:k])  # keep the survivors' order
                variables = drop_units(variables, group, keep)
        return _checked(net, variables, input_shape)

    return reduce


def _magnitude(net, variables, **kw):
    return _drop(lambda i, v: jnp.linalg.norm(v, axis=1))(net, variables, **kw)


def _random(net, variables, *, rng, **kw):
    return _drop(lambda i, v: jax.random.uniform(jax.random.fold_in(rng, i), (v.shape[0],)))(
        net, variables, **kw)


def threshold_for(vectors: jax.Array, k: int, iters: int = 30) -> tuple[float, jax.Array]:
    """The highest cosine threshold whose greedy grouping leaves at most ``k`` groups (bisection
    over [-1, 1]); returns it with its assignment."""
    lo, hi = -1.0, 1.0  # at -1 everything joins the first unit: one group
    best = assign_groups(vectors, lo)
    for _ in range(iters):
        mid = (lo + hi) / 2
        a = assign_groups(vectors, mid)
        if num_groups(a) <= k:
            lo, best = mid, a
        else:
            hi = mid
    return lo, best


def _condense_to(net, variables, *, target, activation, input_shape, **_):
    sizes = target_sizes(net, target, input_shape)
    for group in net.spec():
        n, k = group_size(variables, group), sizes[group.name]
        if k < n:
            _, assignment = threshold_for(input_vectors(variables, group), k)
            variables = merge_group(variables, assignment, group=group,
                                    n_groups=num_groups(assignment),
                                    homogeneous=is_homogeneous(activation, group))
    return _checked(net, variables, input_shape)


def _scratch(net, variables, *, target, input_shape, rng, **_):
    small = net.with_widths(target)
    fresh = small.module().init(rng, jnp.zeros((1, *input_shape), jnp.float32))
    return small, jax.tree.map(jnp.asarray, fresh)


_BASELINE = {"schedule": target_schedule, "needs_targets": True}
REDUCERS: dict[str, Method] = {
    "condense": Method(_condense),
    "magnitude": Method(_magnitude, start=original_of_targets, **_BASELINE),
    "random": Method(_random, start=original_of_targets, **_BASELINE),
    "merge_standard_init": Method(_condense_to, own_model_keys=("gamma",), **_BASELINE),
    "scratch": Method(_scratch, start=original_of_targets, budget=scratch_budget, **_BASELINE),
}


def method(name: str) -> Method:
    try:
        return REDUCERS[name]
    except KeyError:
        raise ValueError(
            f"reduce.method={name!r}; allowed: {', '.join(sorted(REDUCERS))}"
        ) from None
