"""PNG plot of NVE runs: total/potential/kinetic energy per atom vs time, and position deviation vs time."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .metrics import position_deviation_A
from .nve import NVEResult

_STYLE = {"stock": {"color": "tab:blue", "ls": "-"}, "patched": {"color": "tab:orange", "ls": "--"}}


def plot_runs(results: Mapping[str, NVEResult], path: str | Path, title: str | None = None) -> Path:
    """Write a PNG with energies (meV/atom, relative to each run's t=0 value) vs time (ps) for every run,
    and, when both ``stock`` and ``patched`` are present, the max-over-atoms position deviation (Å, log scale).

    Uses matplotlib's non-interactive Agg backend (works headless). Returns ``path``.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    compare = "stock" in results and "patched" in results
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
        stock, patched = results["stock"], results["patched"]
        dev = position_deviation_A(stock.positions_A, patched.positions_A)
        ax = axes[3]
        # zero deviations (bit-identical) cannot be shown on a log axis; draw them at a floor
        floor = 1e-18
        ax.semilogy(stock.time_fs * 1e-3, np.maximum(dev, floor), color="tab:green", lw=1.0)
        if not np.any(dev > 0):
            ax.text(0.02, 0.85, "bit-identical (0 Å, drawn at 1e-18)", transform=ax.transAxes, fontsize="small")
        ax.set_ylabel("max |r_patched - r_stock|\n[Å]")
        ax.set_ylim(bottom=floor / 10)
        ax.grid(alpha=0.3, which="both")
    axes[-1].set_xlabel("time [ps]")
    if title:
        fig.suptitle(title, fontsize="medium")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
