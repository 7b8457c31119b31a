"""PNG plot of NVE runs: total/potential/kinetic energy per atom vs time, and position deviation vs time."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .metrics import position_deviation_A
from .nve import NVEResult

_STYLE = {
    "stock": {"color": "tab:blue", "ls": "-"},
    "patched": {"color": "tab:orange", "ls": "--"},
    "stock_repeat": {"color": "tab:gray", "ls": ":"},
}


def plot_runs(results: Mapping[str, NVEResult], path: str | Path, title: str | None = None) -> Path:
    """Write a PNG with energies (meV/atom, relative to each run's t=0 value) vs time (ps) for every run,
    and, when ``stock`` and another run are present, each run's max-over-atoms position deviation from ``stock``
    (Å, log scale) at the recorded frames.

    Uses matplotlib's non-interactive Agg backend (works headless). Returns ``path``.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    compare = "stock" in results and len(results) > 1
    nrows = 4 if compare else 3
    fig, axes = plt.subplots(nrows, 1, figsize=(8, 2.4 * nrows), sharex=True, constrained_layout=True)
    panels = [
        ("etot", "total energy\nE - E(0) [meV/atom]"),
        ("epot", "potential energy\nE - E(0) [meV/atom]"),
        ("ekin", "kinetic energy\nE - E(0) [meV/atom]"),
    ]
    for ax, (kind, ylabel) in zip(axes, panels):
        for label, res in results.items():
            values = {"etot": res.etot_eV, "epot": res.epot_eV, "ekin": res.ekin_eV}[kind]
            style = _STYLE.get(label, {})
            ax.plot(res.time_fs * 1e-3, (values - values[0]) / res.n_atoms * 1e3, label=label, lw=1.0, **style)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize="small")
    if compare:
        stock = results["stock"]
        ax = axes[3]
        # zero deviations (bit-identical) cannot be shown on a log axis; draw them at a floor
        floor = 1e-18
        others = [label for label in results if label != "stock"]
        for i, label in enumerate(others):
            res = results[label]
            dev = position_deviation_A(stock.positions_A, res.positions_A)
            color = _STYLE.get(label, {}).get("color", "tab:green")
            ax.semilogy(res.frame_time_fs * 1e-3, np.maximum(dev, floor), color=color, lw=1.0, label=f"{label} - stock")
            if not np.any(dev > 0):
                ax.text(0.02, 0.85 - 0.12 * i, f"{label}: bit-identical (0 Å, drawn at 1e-18)", transform=ax.transAxes)
        ax.set_ylabel("max over atoms\n|r - r_stock| [Å]")
        ax.set_ylim(bottom=floor / 10)
        ax.grid(alpha=0.3, which="both")
        if len(results) > 2:
            ax.legend(loc="best", fontsize="small")
    axes[-1].set_xlabel("time [ps]")
    if title:
        fig.suptitle(title, fontsize="medium")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
