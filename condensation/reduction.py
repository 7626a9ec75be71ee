"""Reduction methods, keyed by name so that one config line (``reduce=<name>``) switches them.

A reduction is a pipeline of stages, the same for every method: per unit group in order,
*select* (which units survive, and which merge into them) and *merge* or drop; *compensate*
(``reduce.compensate=lstsq``: the consumers refit by least squares on calibration data);
after all groups, *repair* (``reduce.repair=bn``: BatchNorm statistics re-estimated); then the
experiment *fine-tunes*. A method is its selection:

``condense`` merges the units whose input vectors are aligned at cosine >= a threshold (or, given
target widths, lowers the threshold per group until it reaches them); the baselines reduce a
network to given widths (``target``: the sizes a condensation run reached, or
``reduce.mode=target``'s), so that every method is compared at the same parameter budget:

- ``magnitude``: structured pruning, keep the units with the largest input-vector L2 norm
  (BatchNorm folded in); drop the rest, no merging;
- ``random``: keep a random subset of the units;
- ``importance``: keep the units of largest output energy x outgoing squared norm on the
  calibration data (dead units score 0);
- ``fold``: model folding's selection (Wang et al., ICLR 2025), k-means of each group's unit
  vectors into its target size, each cluster merged into its centroid (``reduce.merge``);
- ``merge_standard_init``: condensation of a network trained from standard initialization
  (``reduce.gamma``, 0.5), each group merged down to its target size (the threshold is lowered
  per group until it is reached);
- ``none``: no reduction, the yardstick: the original itself fine-tuned as every reduced network
  is (the same rounds, epochs and distillation);
- ``scratch``: a network of the target widths, freshly initialized (and then trained from
  scratch by the experiment loop for the epochs of training plus fine-tuning);
- ``scratch_finetune``: the same, trained for the epochs of the fine-tuning only.

A method is its ``reduce`` — ``(network, variables, *, threshold, target, activation,
input_shape, rng, stages)`` to a smaller ``(network, variables)`` — and three hooks that the
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
import numpy as np

from condensation.allocate import target_sizes, uniform_widths
from condensation.calibrate import consumer_inputs
from condensation.compensate import (
    RIDGE,
    activation_vectors,
    constant_units,
    fold_constants,
    importance,
    refit_consumers,
    repair_batchnorm,
)
from condensation.condense import (
    assign_groups,
    check_spec,
    check_threshold,
    drop_units,
    group_size,
    input_vectors,
    is_homogeneous,
    merge_group,
    num_groups,
    producer_vectors,
    set_paths,
)
from condensation.coupling import UnitGroup, get
from condensation.network import (
    Network,
    check_shapes,
    widths_of,
)
from condensation.saved import load_network
from condensation.train import OptimConfig

Variables = dict[str, Any]


@dataclass(frozen=True)
class Target:
    """One accepted round of the condensation run a baseline is compared with."""

    round: int
    threshold: float | None  # None: a round of reduce.mode=target
    widths: tuple[int, ...]


@dataclass(frozen=True)
class Setup:
    """What the hooks may read: the run's config, the task's judgement and the condensation run
    a baseline matches (``targets_dir`` and its accepted rounds, else None and ())."""

    cfg: dict[str, Any]
    higher_is_better: bool
    targets_dir: Path | None = None
    targets: tuple[Target, ...] = ()
    net: Network | None = None               # the original network (its widths)
    input_shape: tuple[int, ...] | None = None

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
    threshold: float | None           # None: reduce to ``target`` (no cosine threshold)
    target: tuple[int, ...] | None = None
    # reduce.widths=importance or reconstruction: the widths are allocated for this fraction of
    # the original's parameters when the round starts (they need the original's variables and data)
    fraction: float | None = None


@dataclass(frozen=True)
class Schedule:
    """The rounds of a reduction: ``rounds[r]`` (or ``next_round(r)`` for an open-ended
    automatic schedule) and the acceptance of a round's validation metric."""

    next_round: Callable[[int], Round | None]
    accepts: Callable[[float, float], bool] = lambda val, original_val: True


# ---- hooks ------------------------------------------------------------------------------------

def _saved(folder: Path, source: Path) -> Start:
    _, variables, meta = load_network(folder)
    return Start(variables, meta.get("metrics", {}).get("epoch"), str(source))


def train_own(setup: Setup) -> Start | None:
    """Train the original, unless ``reduce.original`` names a saved network to start from."""
    folder = setup.cfg["reduce"].get("original")
    return None if folder is None else _saved(Path(folder), Path(folder))


def original_of_targets(setup: Setup) -> Start | None:
    """The condensation run's trained original (so a baseline reduces the very same network);
    without one (``reduce.mode=target``), as :func:`train_own`."""
    if setup.targets_dir is None:
        return train_own(setup)
    return _saved(setup.targets_dir / "networks" / "original", setup.targets_dir)


def threshold_schedule(setup: Setup) -> Schedule:
    """Manual: ``reduce.thresholds`` in turn, each accepted. Auto: from ``auto.start``,
    tau_next = 1 - (1 - tau) x factor down to ``min_threshold``, accepted while the validation
    metric stays within the tolerance of the original's."""
    rcfg = setup.cfg["reduce"]
    if rcfg["mode"] == "target":
        return fraction_schedule(setup)
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
    """The condensation run's accepted rounds, one per round, each accepted
    (``reduce.mode=target``: :func:`fraction_schedule`)."""
    if setup.cfg["reduce"]["mode"] == "target":
        return fraction_schedule(setup)
    ts = setup.targets
    return Schedule(lambda r: Round(ts[r].threshold, ts[r].widths) if r < len(ts) else None)


def fraction_schedule(setup: Setup) -> Schedule:
    """``reduce.mode=target``: ``reduce.target_rounds`` rounds down to ``reduce.target`` of the
    original's parameters, by equal factors (round r keeps target^((r+1)/R)), or one round per
    fraction of ``reduce.target_sizes``, each accepted;
    ``reduce.widths``: every group scaled by the same factor (``uniform``,
    :func:`uniform_widths`), or allocated from the original when the round starts, by
    importance (``importance``, :func:`condensation.allocate.importance_widths`) or by the
    compensated reconstruction error (``reconstruction``,
    :func:`condensation.allocate.reconstruction_widths`)."""
    rcfg = setup.cfg["reduce"]
    sizes = target_fractions(rcfg)
    if rcfg.get("sizes") == "final":  # a baseline at the last size only (the others: curve points)
        sizes = sizes[-1:]
    uniform = (rcfg.get("widths") or "uniform") == "uniform"

    def next_round(r: int) -> Round | None:
        if r >= len(sizes):
            return None
        fraction = sizes[r]
        if not uniform:
            return Round(None, None, fraction)
        return Round(None, uniform_widths(setup.net, fraction, setup.input_shape))

    return Schedule(next_round)


def target_fractions(rcfg: dict[str, Any]) -> list[float]:
    """``reduce.mode=target``: the fraction of the original's parameters each round keeps."""
    if rcfg.get("target_sizes"):
        return [float(f) for f in rcfg["target_sizes"]]
    target, rounds = float(rcfg["target"]), int(rcfg.get("target_rounds") or 1)
    return [target ** ((r + 1) / rounds) for r in range(rounds)]


def finetune_budget(setup: Setup, r: int) -> tuple[int, OptimConfig]:
    """``reduce.finetune_epochs`` at ``reduce.finetune_lr`` (else train.lr), no warm-up."""
    rcfg = setup.cfg["reduce"]
    lr = float(rcfg.get("finetune_lr") or setup.cfg["train"]["lr"])
    return int(rcfg["finetune_epochs"]), setup.optim(lr=lr, warmup_epochs=0.0)


def scratch_budget(setup: Setup, r: int) -> tuple[int, OptimConfig]:
    """The training schedule, for as many epochs as the reduced network of this size had: the
    original's training plus the fine-tuning of every round up to this one."""
    return _scratch_epochs(setup, r) + int(setup.cfg["train"]["epochs"]), setup.optim()


def scratch_finetune_budget(setup: Setup, r: int) -> tuple[int, OptimConfig]:
    """The training schedule, for as many epochs as the reduced network's fine-tuning only."""
    return _scratch_epochs(setup, r), setup.optim()


def _scratch_epochs(setup: Setup, r: int) -> int:
    rcfg = setup.cfg["reduce"]
    if rcfg["mode"] != "target":
        rounds = setup.targets[r].round + 1
    else:  # reduce.sizes=final: one network, as long as the last round's was in all
        rounds = len(target_fractions(rcfg)) if rcfg.get("sizes") == "final" else r + 1
    return rounds * int(rcfg["finetune_epochs"])


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


def _checked(net: Network, variables: Variables, input_shape) -> tuple[Network, Variables]:
    new = net.with_widths(widths_of(net, variables))
    check_shapes(new, variables, input_shape)
    return new, variables


# ---- the pipeline: select (and merge) per group, compensate per group, repair at the end -------

@dataclass(frozen=True)
class Stages:
    """The stages after selection, as configured (``reduce.compensate``, ``reduce.repair``),
    and their data: calibration inputs [N, ...] (a seeded subset of the training inputs) and
    the training augmentation (for the BatchNorm statistics)."""

    compensate: bool = False
    repair: bool = False
    calib: np.ndarray | None = None
    augment: Callable | None = None
    fold_constant: bool = False       # remove units constant on the calibration data first
    zero_dead_inputs: bool = False    # zero the kernel entries no calibration input reaches first
    similarity: str = "weights"       # condense, fold: weights | parts | activations
    merge: str = "sum"                # condense, fold: sum (the paper) | centroid (model folding)
    ridge: float = RIDGE              # compensation's ridge, relative to the mean diagonal

    def __post_init__(self):
        if (self.compensate or self.repair or self.fold_constant or self.zero_dead_inputs) \
                and self.calib is None:
            raise ValueError("compensation, repair, folding and zeroing dead inputs need "
                             "calibration data (Stages.calib)")
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"similarity {self.similarity!r}; allowed: {', '.join(SIMILARITIES)}")
        if self.merge not in MERGES:
            raise ValueError(f"merge {self.merge!r}; allowed: {', '.join(MERGES)}")

    @property
    def needs_data(self) -> bool:
        return self.compensate or self.fold_constant or self.similarity == "activations"


SIMILARITIES = ("weights", "parts", "activations")
MERGES = ("sum", "centroid")


def unit_vectors(variables: Variables, group: UnitGroup, inputs, similarity: str) -> jax.Array:
    """[n, d]: what condensation compares. ``weights``: the input vectors (the paper);
    ``parts``: the same with each producer's part scaled to unit norm per unit (so that, in
    MobileNetV2, the expansion kernel counts as much as the depthwise filter);
    ``activations``: the units' activations on the calibration data."""
    if similarity == "activations":
        return jnp.asarray(activation_vectors(inputs, group))
    if similarity == "parts":
        parts = [producer_vectors(variables, p) for p in group.producers]
        return jnp.concatenate([v / jnp.maximum(jnp.linalg.norm(v, axis=1, keepdims=True), 1e-30)
                                for v in parts], axis=1)
    return input_vectors(variables, group)


# choose(i, group, variables, inputs) -> None (the group stays) or (survivors [k], reduced variables)
Chooser = Callable[[int, UnitGroup, Variables, Any], "tuple[np.ndarray, Variables] | None"]


def reduce_groups(net: Network, variables: Variables, choose: Chooser, stages: Stages,
                  input_shape, needs_data: bool = False) -> tuple[Network, Variables]:
    """Reduce every group of ``net`` in order with ``choose``; after each group, refit its
    consumers (compensation) on the calibration data as the network was just before that
    group's reduction; at the end re-estimate the BatchNorm statistics (repair)."""
    for i, group in enumerate(net.spec()):
        inputs = None
        data = stages.needs_data or needs_data
        if data and stages.calib is None:
            raise ValueError("this selection needs calibration data (Stages.calib)")
        if data or stages.zero_dead_inputs:
            current = net.with_widths(widths_of(net, variables)).module()
        if stages.zero_dead_inputs:
            variables = zero_dead_inputs(current, variables, stages.calib, group)
        if data:
            inputs = consumer_inputs(current, variables, stages.calib, group.consumers)
        before, kept, view = variables, np.arange(group_size(variables, group)), inputs
        if stages.fold_constant:
            variables, kept, view = _fold_constant(variables, group, inputs)
        chosen = choose(i, group, variables, view)
        if chosen is None and len(kept) == group_size(before, group):
            continue
        keep, reduced = chosen if chosen is not None else (np.arange(len(kept)), variables)
        if stages.compensate:
            survivors = None
            if chosen is not None and stages.merge == "centroid":  # the survivors changed
                reduced, survivors = _survivors(net, reduced, group, stages)
            reduced = refit_consumers(before, reduced, group, inputs, kept[keep], ridge=stages.ridge,
                                      survivors=survivors)
        variables = reduced
    new_net, variables = _checked(net, variables, input_shape)
    if stages.repair:
        variables = repair_batchnorm(new_net.module(), variables, stages.calib, stages.augment)
    return new_net, jax.tree.map(jnp.asarray, variables)


def dead_inputs(module, variables: Variables, x: np.ndarray, groups, batch: int = 256
                ) -> dict[tuple, np.ndarray]:
    """For each producer kernel of ``groups``: a boolean mask over its entries (True: live),
    from one gradient of the outputs' energy on ``x[:batch]``. An entry is dead when its
    gradient is exactly 0 for every unit: it only ever multiplies zeros, such as the outer taps
    of a 3x3 depthwise filter applied to a 1x1 image, or the weights from an input channel that
    is 0 on every input. Kernels without a dead entry are left out."""
    def energy(p):
        return jnp.sum(jnp.square(module.apply({**variables, "params": p}, x[:batch])))

    grads = {"params": jax.jit(jax.grad(energy))(variables["params"])}
    masks = {}
    for group in groups:
        for p in group.producers:
            g = np.moveaxis(np.asarray(get(grads, p.kernel.path)), p.kernel.axis, 0)
            live = np.moveaxis(np.broadcast_to(np.any(g != 0, axis=0), g.shape), 0, p.kernel.axis)
            if not live.all():
                masks[p.kernel.path] = live
    return masks


def zero_dead_inputs(module, variables: Variables, x: np.ndarray, group: UnitGroup,
                     batch: int = 256) -> Variables:
    """The group's producer kernels with their dead entries (:func:`dead_inputs`) set to 0.
    Left in, they are noise in every comparison of the units' input vectors (condensation's
    similarity, magnitudes, k-means); removed, the outputs on such inputs stay the same."""
    masks = dead_inputs(module, variables, x, [group], batch)
    return set_paths(variables, {path: jnp.where(live, get(variables, path), 0)
                                 for path, live in masks.items()}) if masks else variables


def _survivors(net: Network, variables: Variables, group: UnitGroup, stages: Stages):
    """After a merge that changed the survivors: the variables (their BatchNorm statistics
    repaired first when ``stages.repair``, as they will be) and what the group's consumers read."""
    current = net.with_widths(widths_of(net, variables)).module()
    if stages.repair:
        variables = repair_batchnorm(current, variables, stages.calib, stages.augment)
    return variables, consumer_inputs(current, variables, stages.calib, group.consumers)


def _fold_constant(variables: Variables, group: UnitGroup, inputs):
    """Remove the group's constant units (their contribution folded into the consumers):
    the variables, the indices of the units left, and the calibration inputs restricted to them."""
    constant = constant_units(inputs, group)
    if constant.all():  # keep one unit: a layer needs a width
        constant[0] = False
    kept = np.nonzero(~constant)[0]
    if len(kept) == len(constant):
        return variables, kept, inputs
    variables = drop_units(fold_constants(variables, group, inputs, constant), group, kept)
    view = {p: (x[..., kept], reader) for p, (x, reader) in inputs.items()}
    return variables, kept, view


def _merge(variables: Variables, group: UnitGroup, assignment, activation: str, how: str = "sum"):
    """Merge by ``assignment`` (unit -> its representative) the ``how`` way (:data:`MERGES`):
    survivors and the merged network."""
    k = num_groups(assignment)
    if k == group_size(variables, group):
        return None
    keep = np.nonzero(np.asarray(assignment) == np.arange(len(assignment)))[0]
    return keep, merge_group(variables, jnp.asarray(assignment), group=group, n_groups=k,
                             homogeneous=is_homogeneous(activation, group),
                             centroid=how == "centroid")


def _condense(net, variables, *, threshold, target, activation, input_shape, stages=Stages(), **_):
    """Condensation: merge at cosine >= ``threshold``; with ``target`` widths, each group down
    to its target size (the threshold lowered per group until reached)."""
    if target is not None:
        return _condense_to(net, variables, target=target, activation=activation,
                            input_shape=input_shape, stages=stages)
    threshold = check_threshold(threshold)
    check_spec(variables, net.spec())

    def choose(i, group, variables, inputs):
        vectors = unit_vectors(variables, group, inputs, stages.similarity)
        return _merge(variables, group, assign_groups(vectors, threshold), activation, stages.merge)

    return reduce_groups(net, variables, choose, stages, input_shape)


def _condense_to(net, variables, *, target, activation, input_shape, stages=Stages(), **_):
    sizes = target_sizes(net, target, input_shape)

    def choose(i, group, variables, inputs):
        if sizes[group.name] >= group_size(variables, group):
            return None
        vectors = unit_vectors(variables, group, inputs, stages.similarity)
        _, assignment = threshold_for(vectors, sizes[group.name])
        return _merge(variables, group, assignment, activation, stages.merge)

    return reduce_groups(net, variables, choose, stages, input_shape)


def _fold(net, variables, *, target, activation, input_shape, rng, stages=Stages(), **_):
    """Model folding's selection (Wang et al., ICLR 2025): each group's unit vectors clustered by
    k-means into its target size; a cluster merges into its first unit (``reduce.merge``:
    ``centroid`` in conf/reduce/fold.yaml, as the paper)."""
    sizes = target_sizes(net, target, input_shape)

    def choose(i, group, variables, inputs):
        if sizes[group.name] >= group_size(variables, group):
            return None
        vectors = np.asarray(unit_vectors(variables, group, inputs, stages.similarity), np.float64)
        seed = np.asarray(jax.random.key_data(jax.random.fold_in(rng, i)))
        labels = kmeans(vectors, sizes[group.name], seed)
        return _merge(variables, group, representatives(labels), activation, stages.merge)

    return reduce_groups(net, variables, choose, stages, input_shape)


def kmeans(x: np.ndarray, k: int, seed, iters: int = 100) -> np.ndarray:
    """[n] cluster labels of the rows of ``x`` by Lloyd's k-means from a k-means++ start; every
    one of the ``k`` clusters non-empty (an emptied one takes the point farthest from its centre)."""
    rng = np.random.default_rng(seed)
    n = len(x)
    centres = [x[rng.integers(n)]]
    d2 = np.sum((x - centres[0]) ** 2, axis=1)
    for _ in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1.0 / n)
        centres.append(x[rng.choice(n, p=p)])
        d2 = np.minimum(d2, np.sum((x - centres[-1]) ** 2, axis=1))
    c, labels = np.stack(centres), None
    for _ in range(iters):
        dist = np.sum(x * x, 1)[:, None] - 2 * x @ c.T + np.sum(c * c, 1)[None, :]
        new = np.argmin(dist, axis=1)
        for j in np.setdiff1d(np.arange(k), new):  # an empty cluster takes the worst-fit point
            worst = np.argmax(dist[np.arange(n), new] * (np.bincount(new, minlength=k)[new] > 1))
            new[worst] = j
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        c = np.stack([x[labels == j].mean(axis=0) for j in range(k)])
    return labels


def representatives(labels: np.ndarray) -> np.ndarray:
    """Cluster labels [n] -> assignment [n]: each unit's representative, the first unit of its
    cluster (what :func:`condensation.condense.merge_group` takes)."""
    first = {}
    for i, lab in enumerate(np.asarray(labels).tolist()):
        first.setdefault(lab, i)
    return np.asarray([first[lab] for lab in np.asarray(labels).tolist()])


def _drop(score: Callable[[int, UnitGroup, Variables, Any], Any], needs_data: bool = False):
    """A pruning method: in each group keep the ``target`` units of highest ``score``."""

    def reduce(net, variables, *, target, input_shape, stages=Stages(), **_):
        sizes = target_sizes(net, target, input_shape)

        def choose(i, group, variables, inputs):
            n, k = group_size(variables, group), sizes[group.name]
            if k >= n:  # already there (folding constant units may have gone further)
                return None
            s = jnp.asarray(score(i, group, variables, inputs))
            keep = np.sort(np.asarray(jnp.argsort(-s)[:k]))  # keep the survivors' order
            return keep, drop_units(variables, group, keep)

        return reduce_groups(net, variables, choose, stages, input_shape, needs_data)

    return reduce


def _magnitude(net, variables, **kw):
    return _drop(lambda i, g, v, _: jnp.linalg.norm(input_vectors(v, g), axis=1))(net, variables, **kw)


def _random(net, variables, *, rng, **kw):
    return _drop(lambda i, g, v, _: jax.random.uniform(jax.random.fold_in(rng, i),
                                                        (group_size(v, g),)))(net, variables, **kw)


def _importance(net, variables, **kw):
    return _drop(lambda i, g, v, inputs: importance(v, g, inputs), needs_data=True)(net, variables, **kw)


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


def _scratch(net, variables, *, target, input_shape, rng, **_):
    small = net.with_widths(target)
    fresh = small.module().init(rng, jnp.zeros((1, *input_shape), jnp.float32))
    return small, jax.tree.map(jnp.asarray, fresh)


def _none(net, variables, **_):
    return net, variables


_BASELINE = {"schedule": target_schedule, "needs_targets": True}
REDUCERS: dict[str, Method] = {
    "condense": Method(_condense),
    "magnitude": Method(_magnitude, start=original_of_targets, **_BASELINE),
    "random": Method(_random, start=original_of_targets, **_BASELINE),
    "importance": Method(_importance, start=original_of_targets, **_BASELINE),
    "fold": Method(_fold, start=original_of_targets, **_BASELINE),
    "merge_standard_init": Method(_condense_to, own_model_keys=("gamma",), **_BASELINE),
    "none": Method(_none, start=original_of_targets, **_BASELINE),
    "scratch": Method(_scratch, start=original_of_targets, budget=scratch_budget, **_BASELINE),
    "scratch_finetune": Method(_scratch, start=original_of_targets, budget=scratch_finetune_budget,
                               **_BASELINE),
}


def method(name: str) -> Method:
    try:
        return REDUCERS[name]
    except KeyError:
        raise ValueError(
            f"reduce.method={name!r}; allowed: {', '.join(sorted(REDUCERS))}"
        ) from None
