"""One stability study: identical initial conditions, one NVE run per calculator, report + trajectories + plot."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ase import Atoms

from .nve import DEFAULT_WARMUP_STEPS, CalculatorFactory, NVEResult, initialize_velocities, run_nve_lockstep
from .plot import plot_runs
from .report import build_report, write_report

REPORT_NAME = "report.json"
PLOT_NAME = "energy.png"


def trajectory_name(label: str) -> str:
    """File name of a run's ASE trajectory in the output directory."""
    return f"{label}.traj"


def energy_log_name(label: str) -> str:
    """File name of a run's per-step energy CSV in the output directory."""
    return f"{label}_energy.csv"


def run_study(
    atoms: Atoms,
    factories: Mapping[str, CalculatorFactory],
    *,
    steps: int,
    timestep_fs: float,
    temperature_K: float,
    seed: int = 0,
    out_dir: str | Path | None = None,
    metadata: Mapping[str, object] | None = None,
    thresholds: Mapping[str, float | None] | None = None,
    record_interval: int = 1,
    progress: bool | None = None,
    plot: bool = True,
    warmup_steps: int = DEFAULT_WARMUP_STEPS,
) -> tuple[dict, dict[str, NVEResult]]:
    """Run NVE once per calculator factory from the same initial positions and velocities, all runs in lockstep
    (:func:`~.nve.run_nve_lockstep`), so that their speed ratio compares the calculators rather than the machine's
    drift between two runs.

    Args:
        atoms: starting structure (not modified).
        factories: run label -> calculator factory, e.g. ``{"stock": ..., "patched": ...}``.
        steps: number of MD steps per run.
        timestep_fs: time step in fs.
        temperature_K: initial Maxwell–Boltzmann temperature in K.
        seed: RNG seed of the initial velocities.
        out_dir: if given, writes ``<label>.traj`` (position frames) and ``<label>_energy.csv`` (every step) per
            run, ``report.json`` and ``energy.png`` there.
        metadata: extra metadata for the report (model, system, device, ...).
        thresholds: optional limits (see :data:`~.report.THRESHOLD_KEYS`).
        record_interval: keep positions / write trajectory frames every this many steps (energies: every step).
        progress: tqdm progress bar (``None``: automatic for long runs).
        plot: write ``energy.png`` (only with ``out_dir``).
        warmup_steps: untimed steps on a throw-away copy before each run (see :func:`~.nve.run_nve`).

    Returns:
        ``(report, results)``.
    """
    start = atoms.copy()
    start.calc = None
    initialize_velocities(start, temperature_K, seed)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    # all runs in lockstep (ABBA per step): their wall times meet the same machine, so the speed-up compares them
    results: dict[str, NVEResult] = run_nve_lockstep(
        start,
        dict(factories),
        steps,
        timestep_fs,
        trajectories={label: (out / trajectory_name(label)) if out is not None else None for label in factories},
        record_interval=record_interval,
        progress=progress,
        warmup_steps=warmup_steps,
    )
    if out is not None:
        for label in results:
            results[label].write_energy_csv(out / energy_log_name(label))
    meta = {
        "steps": int(steps),
        "timestep_fs": float(timestep_fs),
        "simulated_time_ps": steps * timestep_fs * 1e-3,
        "initial_temperature_K": float(temperature_K),
        "seed": int(seed),
        "n_atoms": len(atoms),
        "record_interval": int(record_interval),
        "warmup_steps": int(warmup_steps),
    }
    meta.update(metadata or {})
    report = build_report(results, meta, thresholds=thresholds)
    if out is not None:
        for label in results:
            report[label]["energy_log"] = energy_log_name(label)
        write_report(report, out / REPORT_NAME)
        if plot:
            system = meta.get("system")
            name = system.get("name", "") if isinstance(system, dict) else ""
            model = Path(str(meta["model"])).name if meta.get("model") else ""
            title = f"NVE {name} ({len(atoms)} atoms, dt={timestep_fs:g} fs)" + (f", {model}" if model else "")
            plot_runs(results, out / PLOT_NAME, title=title)
    return report, results
