"""The condensation phenomenon on a 1-D toy regression.

The same 1-50-50-1 tanh MLP is fit full batch to the toy function from small initialization
(gamma = 1: kernels ~ N(0, 1/fan_in^2)) and from standard initialization (gamma = 0.5). Trained
from small initialization, the second hidden layer's neurons condense onto a few directions:
at cosine 0.95 it has far fewer groups than the same network trained from standard
initialization, though both fit the data. (The first layer is not compared: with a 1-D input
and zero initial biases its input vectors are 2-D and aligned at initialization in both
regimes.)

Settings checked locally on seeds 0-7: second-layer groups 2-10 (small) against 15-48
(standard), the largest ratio 0.25.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import pytest

from condensation import condense
from condensation.archs.mlp import MLP
from condensation.tasks.toy import toy_task
from condensation.train import OptimConfig, create_train_state, make_optimizer, train_step

STEPS = 1000
THRESHOLD = 0.95
WIDTHS = (50, 50)
TX = make_optimizer(OptimConfig(optimizer="adam", lr=1e-3, schedule="constant"), 1, STEPS)


@functools.partial(jax.jit, static_argnames=("module",))
def fit(state, x, y, module):
    """STEPS full-batch steps of the library's train_step, as one compiled loop."""
    def body(_, s):
        return train_step(s, (x, y), module=module, tx=TX, loss="mse")[0]

    return jax.lax.fori_loop(0, STEPS, body, state)


def train_and_count(gamma: float, seed: int) -> tuple[list[int], float]:
    task = toy_task({"function": "mix", "n_train": 128}, seed, None)
    x, y = map(jnp.asarray, task.train)
    module = MLP(widths=WIDTHS, out_dim=1, activation="tanh", gamma=gamma)
    state = create_train_state(module.init(jax.random.key(seed), x[:1]), TX, jax.random.key(seed + 1))
    state = fit(state, x, y, module)
    mse = float(jnp.mean((module.apply({"params": state.params}, x) - y) ** 2))
    _, report = condense(state.params, threshold=THRESHOLD, activation="tanh")
    return report["widths_after"], mse


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_small_initialization_condenses(seed):
    small, small_mse = train_and_count(gamma=1.0, seed=seed)
    standard, standard_mse = train_and_count(gamma=0.5, seed=seed)
    # both fit the toy function (its variance is about 0.6)
    assert small_mse < 0.01 and standard_mse < 0.01, (small_mse, standard_mse)
    # the second hidden layer: a few directions against many
    assert small[1] <= standard[1] / 2, f"groups at cos {THRESHOLD}: small {small}, standard {standard}"
    assert small[1] <= WIDTHS[1] // 3, small
