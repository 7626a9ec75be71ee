"""Combustion figures: ignition (T versus time) and one-step parity."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from condensation.plots import save_figure, subplots

STYLE = {"original": ("tab:blue", "--"), "reduced": ("tab:red", ":")}


def plot_ignition(path: Path, ref, rollouts: dict[str, np.ndarray], dt: float, n: int = 4) -> None:
    """T(t) of Cantera and each network from ``n`` held-out initial conditions."""
    order = np.argsort(ref.tau)
    pick = order[np.linspace(0, len(order) - 1, min(n, len(order))).astype(int)]
    fig, axes = subplots(1, len(pick), figsize=(3.6 * len(pick), 3.2), squeeze=False)
    for ax, c in zip(axes[0], pick, strict=True):
        s = int(ref.steps[c])
        t = np.arange(s + 1) * dt * 1e3
        ax.plot(t, ref.T[c, :s + 1], "k-", lw=2.2, alpha=0.6, label="Cantera")
        for tag, T in rollouts.items():
            color, ls = STYLE.get(tag, ("tab:green", "-."))
            ax.plot(t, T[c, :s + 1], color=color, ls=ls, lw=1.6, label=f"{tag} network")
        ax.set_title(f"T0={ref.T0[c]:.0f} K, P={ref.P[c] / 101325:.2f} atm, phi={ref.phi[c]:.2f}",
                     fontsize=8)
        ax.set_xlabel("t [ms]")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("T [K]")
    axes[0, 0].legend(fontsize=7)
    save_figure(fig, path)


def plot_parity(path: Path, y_true: np.ndarray, preds: dict[str, np.ndarray], names) -> None:
    """Predicted versus true normalized one-step labels on held-out states, per network."""
    fig, axes = subplots(1, len(preds), figsize=(4.2 * len(preds), 4), squeeze=False)
    for ax, (tag, y) in zip(axes[0], preds.items(), strict=True):
        for j, name in enumerate(names):
            ax.scatter(y_true[:, j], y[:, j], s=2, alpha=0.4, label=name)
        lim = np.percentile(np.abs(y_true), 99.9)
        ax.plot([-lim, lim], [-lim, lim], "k-", lw=0.8)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_title(f"{tag} network: one-step labels (normalized)", fontsize=9)
        ax.set_xlabel("Cantera")
        ax.set_ylabel("network")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=6, markerscale=4, ncol=2)
    save_figure(fig, path)
