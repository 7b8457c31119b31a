"""NVE energy-conservation tooling: stock vs patched (EquiTriton) runs of the same model.

Modules (one job each):

* :mod:`.systems` -- preset structures (fcc Cu supercell, Cu cluster) or any file ASE reads
* :mod:`.nve` -- velocity-Verlet NVE run recording energies/positions every frame
* :mod:`.metrics` -- drift, fluctuation, max |dE|, temperature, position deviation, throughput
* :mod:`.report` -- JSON report with metadata and threshold checks
* :mod:`.plot` -- energy / deviation PNG
* :mod:`.runner` -- one study: identical initial conditions for every run, writes all outputs
* :mod:`.calculators` -- calculator factories for the embedded / saved / compiled models
"""

from .metrics import (
    energy_drift_meV_per_atom_per_ps,
    energy_fluctuation_meV_per_atom,
    max_abs_energy_change_meV_per_atom,
    position_deviation_A,
    run_metrics,
    temperature_stats_K,
    throughput,
)
from .nve import NVEResult, initialize_velocities, instantaneous_temperature, run_nve, run_nve_lockstep
from .plot import plot_runs
from .report import THRESHOLD_KEYS, build_report, check_thresholds, write_report
from .runner import PLOT_NAME, REPORT_NAME, run_study
from .systems import PRESETS, SystemSpec, build_system

__all__ = [
    "PLOT_NAME",
    "PRESETS",
    "REPORT_NAME",
    "THRESHOLD_KEYS",
    "NVEResult",
    "SystemSpec",
    "build_report",
    "build_system",
    "check_thresholds",
    "energy_drift_meV_per_atom_per_ps",
    "energy_fluctuation_meV_per_atom",
    "initialize_velocities",
    "instantaneous_temperature",
    "max_abs_energy_change_meV_per_atom",
    "plot_runs",
    "position_deviation_A",
    "run_metrics",
    "run_nve",
    "run_nve_lockstep",
    "run_study",
    "temperature_stats_K",
    "throughput",
    "write_report",
]
