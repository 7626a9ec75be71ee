"""Data-parallel training over two (forced) CPU devices follows the one-device trajectory."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json
import jax, jax.numpy as jnp, numpy as np
from condensation.archs.cnn import CNN
from condensation.train import OptimConfig, create_train_state, make_optimizer, train_epoch

rng = np.random.default_rng(0)
x = rng.normal(size=(64, 8, 8, 3)).astype(np.float32)
y = rng.integers(0, 3, 64)
module = CNN(conv_widths=(4, 6), dense_widths=(8,), num_classes=3, gamma=0.5)
variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))
tx = make_optimizer(OptimConfig(lr=1e-2), steps_per_epoch=4, epochs=3)
state = create_train_state(variables, tx, jax.random.PRNGKey(1))
losses = []
for epoch in range(3):
    state, m = train_epoch(state, (x, y), module=module, tx=tx, loss="cross_entropy",
                           batch_size=16, seed=0, epoch=epoch)
    losses.append(m["train_loss"])
kernel = np.asarray(state.params["Dense_1"]["kernel"])
print(json.dumps({"devices": jax.device_count(), "losses": losses, "kernel": kernel.tolist(),
                  "sharding": str(getattr(state.params["Dense_1"]["kernel"].sharding, "spec", "-"))}))
"""


def run(devices: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_two_devices_match_one_device():
    one, two = run(1), run(2)
    assert one["devices"] == 1 and two["devices"] == 2
    # BatchNorm statistics and the loss are means over the whole (sharded) batch, so the
    # trajectories agree up to the order of floating-point reductions.
    assert abs(one["losses"][-1] - one["losses"][0]) > 1e-3  # it trained
    for a, b in zip(one["losses"], two["losses"], strict=True):
        assert abs(a - b) < 1e-4 * max(1.0, abs(a))
    assert np.allclose(np.array(one["kernel"]), np.array(two["kernel"]), atol=1e-4)
    # parameters stay replicated: nothing in their sharding mentions the batch axis
    assert "batch" not in two["sharding"], two["sharding"]
