"""Energy-conservation, agreement and throughput metrics of NVE runs.

All functions are pure NumPy on recorded arrays so that they can be recomputed from a
trajectory file independently of the MD driver. Units are given in each docstring.
"""

from __future__ import annotations

import numpy as np

#: seconds per day
_S_PER_DAY = 86400.0


def energy_drift_meV_per_atom_per_ps(time_fs: np.ndarray, etot_eV: np.ndarray, n_atoms: int) -> float:
    """Slope of a least-squares linear fit of total energy per atom against time, in meV/atom/ps.

    Args:
        time_fs: (F,) frame times in fs.
        etot_eV: (F,) total energies (whole system) in eV.
        n_atoms: number of atoms.
    """
    t_ps = np.asarray(time_fs, dtype=np.float64) * 1e-3
    e_meV = np.asarray(etot_eV, dtype=np.float64) / n_atoms * 1e3
    if t_ps.size < 2:
        return 0.0
    slope, _ = np.polyfit(t_ps, e_meV, 1)
    return float(slope)


def energy_fluctuation_meV_per_atom(etot_eV: np.ndarray, n_atoms: int) -> float:
    """RMS fluctuation of the total energy per atom about its mean (population std), in meV/atom."""
    e_meV = np.asarray(etot_eV, dtype=np.float64) / n_atoms * 1e3
    return float(np.sqrt(np.mean((e_meV - e_meV.mean()) ** 2)))


def max_abs_energy_change_meV_per_atom(etot_eV: np.ndarray, n_atoms: int) -> float:
    """max_t |E(t) - E(0)| of the total energy per atom, in meV/atom."""
    e = np.asarray(etot_eV, dtype=np.float64)
    return float(np.max(np.abs(e - e[0])) / n_atoms * 1e3)


def temperature_stats_K(temperature_K: np.ndarray) -> tuple[float, float]:
    """(mean, standard deviation) of the instantaneous temperature, in K."""
    t = np.asarray(temperature_K, dtype=np.float64)
    return float(t.mean()), float(t.std())


def position_deviation_A(positions_a_A: np.ndarray, positions_b_A: np.ndarray) -> np.ndarray:
    """Per-frame maximum over atoms of the distance |r_a - r_b| between two runs, in Å.

    Args:
        positions_a_A, positions_b_A: (F, N, 3) unwrapped positions in Å of the same frames.

    Returns:
        (F,) array of max-over-atoms deviations (Å).
    """
    a = np.asarray(positions_a_A, dtype=np.float64)
    b = np.asarray(positions_b_A, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"position arrays differ in shape: {a.shape} vs {b.shape}")
    return np.linalg.norm(a - b, axis=-1).max(axis=-1)


def throughput(steps: int, seconds: float, timestep_fs: float) -> tuple[float, float]:
    """(steps per second, simulated ns per day) for ``steps`` MD steps of ``timestep_fs`` fs taking ``seconds`` s."""
    if seconds <= 0:
        return float("inf"), float("inf")
    steps_per_s = steps / seconds
    ns_per_day = steps_per_s * timestep_fs * 1e-6 * _S_PER_DAY
    return float(steps_per_s), float(ns_per_day)


def run_metrics(
    time_fs: np.ndarray,
    epot_eV: np.ndarray,
    ekin_eV: np.ndarray,
    temperature_K: np.ndarray,
    n_atoms: int,
    steps: int,
    md_seconds: float,
    timestep_fs: float,
) -> dict[str, float]:
    """All per-run metrics as a dict with unit-suffixed keys (see the module functions for definitions)."""
    etot = np.asarray(epot_eV, dtype=np.float64) + np.asarray(ekin_eV, dtype=np.float64)
    t_mean, t_std = temperature_stats_K(temperature_K)
    steps_per_s, ns_per_day = throughput(steps, md_seconds, timestep_fs)
    return {
        "drift_meV_per_atom_per_ps": energy_drift_meV_per_atom_per_ps(time_fs, etot, n_atoms),
        "fluctuation_meV_per_atom": energy_fluctuation_meV_per_atom(etot, n_atoms),
        "max_abs_dE_meV_per_atom": max_abs_energy_change_meV_per_atom(etot, n_atoms),
        "temperature_mean_K": t_mean,
        "temperature_std_K": t_std,
        "temperature_min_K": float(np.min(temperature_K)),
        "temperature_max_K": float(np.max(temperature_K)),
        "epot_initial_eV_per_atom": float(epot_eV[0] / n_atoms),
        "etot_initial_eV_per_atom": float(etot[0] / n_atoms),
        "steps_per_s": steps_per_s,
        "ns_per_day": ns_per_day,
    }
