"""JSON report of NVE stability runs: per-run metrics, stock-vs-patched agreement, metadata, thresholds."""

from __future__ import annotations

import datetime as _dt
import json
import platform
from collections.abc import Mapping
from importlib import metadata as _md
from pathlib import Path

import numpy as np

from .metrics import position_deviation_A, run_metrics
from .nve import NVEResult

REPORT_VERSION = 2

#: distributions whose versions go into the report metadata
_VERSIONED = ("equitriton-md", "torch", "triton", "e3nn", "nequip", "nequip-allegro", "ase", "numpy", "vesin")

#: threshold name -> (report key checked, description with unit)
THRESHOLD_KEYS: dict[str, tuple[str, str]] = {
    "max_drift": ("drift_meV_per_atom_per_ps", "|energy drift| in meV/atom/ps"),
    "max_fluctuation": ("fluctuation_meV_per_atom", "RMS total-energy fluctuation in meV/atom"),
    "max_abs_dE": ("max_abs_dE_meV_per_atom", "max |E(t)-E(0)| in meV/atom"),
    "max_position_deviation": ("max_position_deviation_A", "max patched-vs-stock position deviation in Å"),
}


def collect_versions() -> dict[str, str | None]:
    """Versions of Python and the relevant installed distributions (``None`` where not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in _VERSIONED:
        try:
            out[dist] = _md.version(dist)
        except _md.PackageNotFoundError:
            out[dist] = None
    return out


def _torch_threads() -> int | None:
    try:
        import torch

        return int(torch.get_num_threads())
    except Exception:  # pragma: no cover - torch is a dependency; best effort only
        return None


def git_revision() -> str | None:
    """``git describe --always --dirty`` of the source tree this package runs from; outside a checkout (e.g. a copy
    on a GPU machine) the ``EQUITRITON_GIT_REVISION`` environment variable, else ``None``."""
    import os
    import subprocess

    root = Path(__file__).resolve().parents[2]
    if (root / ".git").exists():
        try:
            proc = subprocess.run(
                ["git", "describe", "--always", "--dirty", "--abbrev=12"],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=10,
            )
            if proc.returncode == 0 and proc.stdout.strip():
                return proc.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return os.environ.get("EQUITRITON_GIT_REVISION") or None


def device_description(device: str) -> str:
    """Human-readable name of ``device`` (GPU model for cuda/xpu, CPU model otherwise)."""
    try:
        import torch

        if device.startswith("cuda") and torch.cuda.is_available():
            return f"{device}: {torch.cuda.get_device_name(torch.device(device))}"
        if device.startswith("xpu") and hasattr(torch, "xpu") and torch.xpu.is_available():
            return f"{device}: {torch.xpu.get_device_name(torch.device(device))}"
    except Exception:  # pragma: no cover - best effort only
        pass
    return f"{device}: {platform.processor() or platform.machine()}"


def run_entry(result: NVEResult) -> dict:
    """Report entry of one run: all metrics of :func:`~.metrics.run_metrics` plus timing and file info."""
    entry = run_metrics(
        result.time_fs,
        result.epot_eV,
        result.ekin_eV,
        result.temperature_K,
        result.n_atoms,
        result.steps,
        result.md_s,
        result.timestep_fs,
    )
    entry.update(
        {
            "wall_s": result.wall_s,
            "md_s": result.md_s,
            "record_s": result.record_s,
            "n_energy_samples": int(result.step.size),
            "n_frames": int(result.frame_step.size),
            "record_interval": result.record_interval,
            "trajectory": Path(result.trajectory).name if result.trajectory else None,
        }
    )
    entry.update(result.extra)
    return entry


#: deviation levels (Å) whose first crossing time is reported by :func:`compare_runs`
DEVIATION_LEVELS_A = (1e-12, 1e-8, 1e-4, 1e-1)


def compare_runs(reference: NVEResult, other: NVEResult) -> dict:
    """Agreement of ``other`` with ``reference`` (same initial conditions and frames).

    Returns:
        ``max_position_deviation_A`` / ``final_position_deviation_A`` (max over atoms of |r_other - r_ref|, Å, over
        the recorded frames), ``max_abs_epot_difference_eV_per_atom`` (every step), and
        ``deviation_first_exceeds_ps``: for each level of :data:`DEVIATION_LEVELS_A`, the first frame time (ps)
        at which the deviation exceeds it (``None``: never). In chaotic MD two runs whose forces differ by
        rounding separate roughly exponentially; these times show how fast.
    """
    if not np.array_equal(reference.frame_step, other.frame_step):
        raise ValueError(f"runs {reference.label!r} and {other.label!r} recorded different frames")
    dev = position_deviation_A(reference.positions_A, other.positions_A)
    t_ps = reference.frame_time_fs * 1e-3
    first = {}
    for level in DEVIATION_LEVELS_A:
        above = np.nonzero(dev > level)[0]
        first[f"{level:g}"] = float(t_ps[above[0]]) if above.size else None
    return {
        "max_position_deviation_A": float(dev.max()),
        "final_position_deviation_A": float(dev[-1]),
        "max_abs_epot_difference_eV_per_atom": float(
            np.max(np.abs(reference.epot_eV - other.epot_eV)) / reference.n_atoms
        ),
        "deviation_first_exceeds_ps": first,
    }


def build_report(
    results: Mapping[str, NVEResult],
    metadata: Mapping[str, object],
    *,
    thresholds: Mapping[str, float | None] | None = None,
) -> dict:
    """Assemble the report dict.

    Args:
        results: runs by label (``"stock"``, ``"patched"``).
        metadata: free-form metadata (model, system, steps, dt, device, ...); versions and date are added.
        thresholds: optional limits by name (see :data:`THRESHOLD_KEYS`); ``None`` values are ignored.

    Returns:
        ``{"report_version", "metadata", "run_labels", <label>: metrics, ..., "comparisons"?, "comparison"?,
        "thresholds", "violations", "passed"}``, e.g. ``report["stock"]["drift_meV_per_atom_per_ps"]``.
        ``comparisons[label]`` compares every other run with ``stock`` (:func:`compare_runs` plus
        ``speedup_over_stock``); ``comparison`` is the ``patched`` one (with ``speedup_patched_over_stock``),
        and its ``max_position_deviation_A`` is copied into both run entries.
    """
    meta = dict(metadata)
    meta.setdefault("date_utc", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    meta.setdefault("versions", collect_versions())
    meta.setdefault("host", platform.node())
    meta.setdefault("torch_num_threads", _torch_threads())
    runs = {label: run_entry(res) for label, res in results.items()}
    report: dict = {"report_version": REPORT_VERSION, "metadata": meta, "run_labels": list(runs)}
    report.update(runs)
    if "stock" in results:
        others = [label for label in results if label != "stock"]
        if others:
            report["comparisons"] = {label: compare_runs(results["stock"], results[label]) for label in others}
            for label in others:
                report["comparisons"][label]["speedup_over_stock"] = (
                    runs[label]["steps_per_s"] / runs["stock"]["steps_per_s"]
                )
    if "stock" in results and "patched" in results:
        cmp = dict(report["comparisons"]["patched"])
        cmp["speedup_patched_over_stock"] = cmp.pop("speedup_over_stock")
        report["comparison"] = cmp
        for label in ("stock", "patched"):
            runs[label]["max_position_deviation_A"] = cmp["max_position_deviation_A"]
    active = {k: float(v) for k, v in (thresholds or {}).items() if v is not None}
    report["thresholds"] = active
    report["violations"] = check_thresholds(report, active)
    report["passed"] = not report["violations"]
    return report


def check_thresholds(report: Mapping, thresholds: Mapping[str, float]) -> list[str]:
    """Human-readable list of threshold violations (empty if all pass).

    Drift is compared by absolute value. ``max_position_deviation`` applies to the comparison and is
    reported as a violation if no comparison was run.
    """
    out: list[str] = []
    for name, limit in thresholds.items():
        if name not in THRESHOLD_KEYS:
            raise KeyError(f"unknown threshold {name!r}; known: {', '.join(THRESHOLD_KEYS)}")
        key, desc = THRESHOLD_KEYS[name]
        if name == "max_position_deviation":
            cmp = report.get("comparison")
            if cmp is None:
                out.append(f"{name}: needs --compare (stock and patched runs)")
            elif not cmp[key] <= limit:
                out.append(f"{name}: {desc} = {cmp[key]:.3e} > {limit:.3e}")
            continue
        for label in report["run_labels"]:
            value = abs(report[label][key])
            if not value <= limit:  # also catches NaN
                out.append(f"{name} [{label}]: {desc} = {value:.4g} > {limit:.4g}")
    return out


def _json_default(obj: object) -> object:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj)}")


def write_report(report: Mapping, path: str | Path) -> Path:
    """Write ``report`` as indented JSON to ``path`` and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    return path
