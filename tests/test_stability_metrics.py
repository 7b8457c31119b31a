"""Unit tests of md_plugin.stability pieces that need no neural network: metrics on synthetic data,
threshold checks, system presets, velocity initialisation, and the NVE recorder driven by ASE's EMT."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from ase import units
from ase.calculators.emt import EMT
from ase.io import read, write

from md_plugin.stability import (
    build_report,
    build_system,
    check_thresholds,
    energy_drift_meV_per_atom_per_ps,
    energy_fluctuation_meV_per_atom,
    initialize_velocities,
    max_abs_energy_change_meV_per_atom,
    position_deviation_A,
    run_nve,
    run_nve_lockstep,
    run_study,
    temperature_stats_K,
    throughput,
)
from md_plugin.stability.report import compare_runs, git_revision
from md_plugin.stability.systems import parse_size

N = 32


def test_drift_is_the_linear_slope_per_atom_in_meV_per_ps() -> None:
    t_fs = np.arange(0.0, 1001.0, 2.0)  # 0 .. 1 ps
    slope_meV_per_atom_per_ps = 0.37
    # a zero-mean oscillation over whole periods does not bias the least-squares slope much; a pure line is exact
    e_eV = -3.5 * N + slope_meV_per_atom_per_ps * 1e-3 * N * (t_fs * 1e-3)
    assert energy_drift_meV_per_atom_per_ps(t_fs, e_eV, N) == pytest.approx(slope_meV_per_atom_per_ps, rel=1e-9)
    assert energy_drift_meV_per_atom_per_ps(t_fs, -e_eV, N) == pytest.approx(-slope_meV_per_atom_per_ps, rel=1e-9)


def test_fluctuation_is_rms_about_mean_and_max_dE_is_from_first_frame() -> None:
    t = np.linspace(0.0, 20 * np.pi, 20001)
    amp_meV = 0.8
    e_eV = 5.0 + amp_meV * 1e-3 * N * np.sin(t)
    # RMS of a sine over whole periods is amplitude / sqrt(2); the constant offset does not count
    assert energy_fluctuation_meV_per_atom(e_eV, N) == pytest.approx(amp_meV / math.sqrt(2), rel=1e-4)
    assert max_abs_energy_change_meV_per_atom(e_eV, N) == pytest.approx(amp_meV, rel=1e-6)


def test_temperature_stats_position_deviation_and_throughput() -> None:
    mean, std = temperature_stats_K(np.array([100.0, 200.0, 300.0]))
    assert mean == pytest.approx(200.0)
    assert std == pytest.approx(math.sqrt(20000.0 / 3.0))
    a = np.zeros((3, 4, 3))
    b = a.copy()
    b[1, 2] = [3e-9, 4e-9, 0.0]
    b[2, 0, 0] = -1e-3
    np.testing.assert_allclose(position_deviation_A(a, b), [0.0, 5e-9, 1e-3])
    with pytest.raises(ValueError):
        position_deviation_A(a, b[:, :3])
    # 1 step/s at 1 fs/step = 86400 fs/day = 0.0864 ns/day
    sps, nsd = throughput(10, 10.0, 1.0)
    assert (sps, nsd) == (pytest.approx(1.0), pytest.approx(0.0864))


def test_presets_and_files(tmp_path) -> None:
    atoms, spec = build_system("cu-fcc")
    assert len(atoms) == spec.n_atoms == 32 and all(atoms.pbc) and spec.formula == "Cu32"
    np.testing.assert_allclose(atoms.cell.lengths(), [7.22, 7.22, 7.22])
    assert len(build_system("cu", 3)[0]) == 108
    cluster, cspec = build_system("cu-cluster")
    assert len(cluster) == 55 and not any(cluster.pbc) and cspec.size == 3
    path = tmp_path / "cell.extxyz"
    write(path, build_system("cu-fcc", 1)[0])
    from_file, fspec = build_system(str(path), 2)
    assert len(from_file) == 32 and fspec.source == "file"
    with pytest.raises(FileNotFoundError):
        build_system(str(tmp_path / "missing.xyz"))
    # non-cubic repeats: "AxBxC" or a tuple
    big, bspec = build_system("cu-fcc", "7x6x6")
    assert len(big) == bspec.n_atoms == 1008 and bspec.size == (7, 6, 6) and bspec.to_dict()["size"] == [7, 6, 6]
    np.testing.assert_allclose(big.cell.lengths(), [7 * 3.61, 6 * 3.61, 6 * 3.61])
    assert len(build_system(str(path), (1, 2, 3))[0]) == 4 * 6


@pytest.mark.parametrize(
    ("given", "expected"),
    [(None, None), (3, 3), ("4", 4), ("2x2x2", 2), ("7x6x6", (7, 6, 6)), ("7*6*6", (7, 6, 6)), ((1, 2, 3), (1, 2, 3))],
)
def test_parse_size(given, expected) -> None:
    assert parse_size(given) == expected


@pytest.mark.parametrize("bad", ["", "2x2", "ax2x2", "0x1x1", (1, 2), (1, 0, 1), 2.5, True])
def test_parse_size_rejects(bad) -> None:
    with pytest.raises(ValueError):
        parse_size(bad)


def test_cluster_size_must_be_shells() -> None:
    with pytest.raises(ValueError, match="shells"):
        build_system("cu-cluster", "2x2x3")


def test_velocities_are_seeded_momentum_free_and_at_temperature() -> None:
    atoms = build_system("cu-fcc")[0]
    initialize_velocities(atoms, 300.0, seed=7)
    p7 = atoms.get_momenta()
    np.testing.assert_allclose(p7.sum(axis=0), 0.0, atol=1e-12)
    assert atoms.get_temperature() == pytest.approx(300.0, rel=1e-12)  # ASE: 3N degrees of freedom
    again = build_system("cu-fcc")[0]
    initialize_velocities(again, 300.0, seed=7)
    np.testing.assert_array_equal(again.get_momenta(), p7)
    other = build_system("cu-fcc")[0]
    initialize_velocities(other, 300.0, seed=8)
    assert not np.allclose(other.get_momenta(), p7)
    cluster = build_system("cu-cluster")[0]
    initialize_velocities(cluster, 300.0, seed=0)
    np.testing.assert_allclose(cluster.get_angular_momentum(), 0.0, atol=1e-10)


def test_run_nve_records_every_interval_and_writes_the_trajectory(tmp_path) -> None:
    atoms = build_system("cu-fcc")[0]
    initialize_velocities(atoms, 300.0, seed=0)
    start = atoms.get_positions().copy()
    res = run_nve(atoms, EMT, steps=25, timestep_fs=2.0, trajectory=tmp_path / "t.traj", record_interval=10)
    # energies at every step, positions/trajectory frames at 0, 10, 20 and the last step
    np.testing.assert_array_equal(res.step, np.arange(26))
    np.testing.assert_allclose(res.time_fs, 2.0 * np.arange(26))
    np.testing.assert_array_equal(res.frame_step, [0, 10, 20, 25])
    np.testing.assert_allclose(res.frame_time_fs, [0.0, 20.0, 40.0, 50.0])
    np.testing.assert_array_equal(atoms.get_positions(), start)  # the input is not integrated
    frames = read(tmp_path / "t.traj", ":")
    assert len(frames) == 4 and res.positions_A.shape == (4, len(atoms), 3)
    np.testing.assert_allclose([f.get_potential_energy() for f in frames], res.epot_eV[res.frame_step])
    np.testing.assert_allclose(frames[-1].get_positions(), res.positions_A[-1])
    np.testing.assert_allclose(res.temperature_K[res.frame_step], [f.get_temperature() for f in frames], rtol=1e-12)
    csv = np.loadtxt(res.write_energy_csv(tmp_path / "e.csv"), delimiter=",", skiprows=1)
    np.testing.assert_array_equal(csv[:, 0], res.step)
    np.testing.assert_array_equal(
        csv[:, 2:], np.column_stack([res.epot_eV, res.ekin_eV, res.etot_eV, res.temperature_K])
    )
    assert res.wall_s >= res.record_s > 0 and res.extra["calculator"] == "EMT"
    # velocity Verlet conserves EMT energy to well below 1 meV/atom over 50 fs at 2 fs steps
    assert np.ptp(res.etot_eV) / len(atoms) < 1e-3


def test_lockstep_runs_equal_lone_runs_and_alternate_abba() -> None:
    """run_nve_lockstep (what run_study uses) gives each run the trajectory it has alone, steps the runs in ABBA
    order (every run's step k before any run's step k + 1) and times each run's own steps."""
    atoms = build_system("cu-fcc", 1)[0]
    initialize_velocities(atoms, 300.0, seed=2)
    order: list[str] = []

    def tagged(name):
        class Tagged(EMT):
            def calculate(self, *args, **kwargs):
                order.append(name)
                super().calculate(*args, **kwargs)

        return Tagged

    both = run_nve_lockstep(atoms, {"a": tagged("a"), "b": tagged("b")}, 6, 1.0, warmup_steps=0)
    # set-up: one force call each (a, then b); then steps 1..6 in ABBA order, one force call per step
    assert order[:2] == ["a", "b"]
    assert order[2:] == ["b", "a", "a", "b", "b", "a", "a", "b", "b", "a", "a", "b"]
    alone = run_nve(atoms, EMT, 6, 1.0, label="a", warmup_steps=0)
    for res in both.values():
        np.testing.assert_array_equal(res.positions_A, alone.positions_A)
        np.testing.assert_array_equal(res.epot_eV, alone.epot_eV)
        assert res.wall_s >= res.record_s > 0
    with pytest.raises(ValueError, match="steps must be >= 1"):
        run_nve_lockstep(atoms, {"a": EMT}, 0, 1.0)


def test_thresholds_flag_violations_and_nan(tmp_path) -> None:
    atoms = build_system("cu-fcc")[0]
    report, results = run_study(
        atoms,
        {"stock": EMT, "patched": EMT},
        steps=20,
        timestep_fs=2.0,
        temperature_K=300.0,
        out_dir=tmp_path,
        thresholds={"max_drift": 1e-12, "max_position_deviation": 0.0, "max_fluctuation": None},
    )
    assert report["comparison"]["max_position_deviation_A"] == 0.0  # same calculator: bit-identical
    assert not report["passed"]
    assert [v.split(":")[0] for v in report["violations"]] == ["max_drift [stock]", "max_drift [patched]"]
    assert json.loads((tmp_path / "report.json").read_text())["violations"] == report["violations"]
    assert (tmp_path / "energy.png").stat().st_size > 10_000
    nan_report = {"run_labels": ["stock"], "stock": {"drift_meV_per_atom_per_ps": float("nan")}}
    assert check_thresholds(nan_report, {"max_drift": 1.0})
    assert check_thresholds(build_report({"stock": results["stock"]}, {}), {"max_position_deviation": 1.0})
    with pytest.raises(KeyError):
        check_thresholds(report, {"max_speed": 1.0})
    assert units.fs > 0


def test_compare_runs_reports_when_deviations_cross_levels() -> None:
    atoms = build_system("cu-fcc", 1)[0]
    initialize_velocities(atoms, 300.0, seed=1)
    ref = run_nve(atoms, EMT, steps=4, timestep_fs=1.0, label="stock", record_interval=2)
    other = run_nve(atoms, EMT, steps=4, timestep_fs=1.0, label="other", record_interval=2)
    # pretend the other run drifted away: 0, 1e-9, 0.5 Å at frames 0, 2, 4 (t = 0, 2, 4 fs)
    other.positions_A = ref.positions_A.copy()
    other.positions_A[1, 0, 0] += 1e-9
    other.positions_A[2, 3, 2] -= 0.5
    cmp = compare_runs(ref, other)
    assert cmp["max_position_deviation_A"] == pytest.approx(0.5) and cmp["final_position_deviation_A"] == 0.5
    assert cmp["deviation_first_exceeds_ps"] == {"1e-12": 0.002, "1e-08": 0.004, "0.0001": 0.004, "0.1": 0.004}
    assert cmp["max_abs_epot_difference_eV_per_atom"] == 0.0
    shorter = run_nve(atoms, EMT, steps=4, timestep_fs=1.0, record_interval=4)
    with pytest.raises(ValueError, match="different frames"):
        compare_runs(ref, shorter)


def test_git_revision_is_a_string_or_none(monkeypatch, tmp_path) -> None:
    rev = git_revision()
    assert rev is None or (isinstance(rev, str) and len(rev) >= 7)
    # outside a checkout the environment names the revision
    import md_plugin.stability.report as report_module

    fake = tmp_path / "a" / "b" / "report.py"
    monkeypatch.setattr(report_module, "__file__", str(fake))
    monkeypatch.setenv("EQUITRITON_GIT_REVISION", "abc1234def56")
    assert git_revision() == "abc1234def56"
    monkeypatch.delenv("EQUITRITON_GIT_REVISION")
    assert git_revision() is None
