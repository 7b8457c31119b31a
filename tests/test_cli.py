"""``equitriton-md`` command line (md_plugin/cli.py): the contract of issue 5, files, report schema, exit codes.

Short runs only (a few MD steps on CPU); the 500-step energy-conservation study is tests/test_stability_nve.py.
Most tests call ``main(argv)`` in-process (fast, same code as the console script); one runs
``python -m md_plugin`` in a subprocess, one the installed ``equitriton-md`` script when it is on PATH.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.io import read, write

from md_plugin import default_model_path
from md_plugin.cli import EXIT_ERROR, EXIT_OK, EXIT_THRESHOLD, EXIT_USAGE, build_parser, main
from md_plugin.device import xpu_available
from md_plugin.stability import build_system

ROOT = Path(__file__).resolve().parents[1]

#: the minimum command-line contract of issue 5
CONTRACT_FLAGS = (
    "--model",
    "--system",
    "--steps",
    "--timestep-fs",
    "--temperature",
    "--device",
    "--compare",
    "--out",
    "--max-drift",
)

#: keys every run entry of report.json must carry (issue 5), plus the comparison key with --compare
RUN_KEYS = (
    "drift_meV_per_atom_per_ps",
    "fluctuation_meV_per_atom",
    "max_abs_dE_meV_per_atom",
    "temperature_mean_K",
    "steps_per_s",
    "ns_per_day",
)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Small systems run as fast on one thread, and one thread does not spin-wait on a busy shared CPU."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _env() -> dict:
    env = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _check_outputs(out: Path, labels: tuple[str, ...], steps: int, compare: bool) -> dict:
    report = json.loads((out / "report.json").read_text())
    assert report["run_labels"] == list(labels)
    for label in labels:
        entry = report[label]
        for key in RUN_KEYS:
            assert isinstance(entry[key], float) and np.isfinite(entry[key]), (label, key, entry.get(key))
        assert (entry["max_position_deviation_A"] >= 0.0) if compare else ("max_position_deviation_A" not in entry)
        frames = read(out / entry["trajectory"], ":")
        assert len(frames) == steps + 1 and len(frames[0]) == report["metadata"]["n_atoms"]
        log = np.loadtxt(out / entry["energy_log"], delimiter=",", skiprows=1)
        assert log.shape == (steps + 1, 6)
    assert (out / "energy.png").stat().st_size > 10_000
    assert ("comparison" in report) == compare
    return report


def test_help_shows_the_issue_contract() -> None:
    nve = build_parser()._subparsers._group_actions[0].choices["nve"]
    flags = {s for action in nve._actions for s in action.option_strings}
    assert set(CONTRACT_FLAGS) <= flags
    help_text = nve.format_help()
    for device in ("auto", "cuda", "xpu", "cpu"):
        assert device in help_text


def test_console_script_is_declared() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^\[project\.scripts\]\nequitriton-md = "md_plugin\.cli:main"$', text, re.M)


def test_python_m_md_plugin_compare_on_the_embedded_model(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "md_plugin", "nve", "--compare", "--steps", "5", "--device", "cpu", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(),
        cwd=tmp_path,
    )
    assert proc.returncode == EXIT_OK, proc.stdout + proc.stderr
    report = _check_outputs(out, ("stock", "patched"), steps=5, compare=True)
    meta = report["metadata"]
    assert meta["model_is_default"] and Path(meta["model"]) == default_model_path().resolve()
    assert meta["system"]["n_atoms"] == 32 and meta["device"] == "cpu" and meta["steps"] == 5
    assert report["stock"]["sh_backend"] == "e3nn"
    assert report["patched"]["sh_backend"].startswith("equitriton")
    assert report["comparison"]["max_position_deviation_A"] < 1e-10
    assert "max position deviation patched vs stock" in proc.stdout


def test_installed_console_script(tmp_path: Path) -> None:
    exe = shutil.which("equitriton-md") or shutil.which("equitriton-md", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("equitriton-md is not installed (pip install -e .); test_console_script_is_declared covers it")
    proc = subprocess.run([exe, "info"], capture_output=True, text=True, timeout=300, env=_env())
    assert proc.returncode == EXIT_OK, proc.stderr
    assert "embedded model" in proc.stdout


def test_max_drift_sets_the_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = ["nve", "--steps", "4", "--device", "cpu", "--no-plot", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "a"), "--max-drift", "1e-12"]) == EXIT_THRESHOLD
    err = capsys.readouterr().err
    assert "THRESHOLD EXCEEDED: max_drift [patched]" in err
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["passed"] is False and report["thresholds"] == {"max_drift": 1e-12}
    # the same run with a loose limit passes
    assert main([*base, "--out", str(tmp_path / "b"), "--max-drift", "1e3", "--max-fluctuation", "1e3"]) == EXIT_OK
    assert json.loads((tmp_path / "b" / "report.json").read_text())["passed"] is True
    # a position limit needs --compare
    assert main([*base, "--out", str(tmp_path / "c"), "--max-position-deviation", "1"]) == EXIT_THRESHOLD


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["nve", "--steps", "0"], EXIT_USAGE, "must be >= 1"),
        (["nve", "--timestep-fs", "-1"], EXIT_USAGE, "must be > 0"),
        (["nve", "--size", "2x2"], EXIT_USAGE, "AxBxC"),
        (["nve", "--device", "tpu9"], EXIT_ERROR, "unknown device"),
        (["nve", "--model", "missing.nequip.zip"], EXIT_ERROR, "model file not found"),
        (["nve", "--system", "missing.xyz"], EXIT_ERROR, "neither a preset"),
        (["nve", "--repeat-stock"], EXIT_ERROR, "--repeat-stock needs --compare"),
        (["nve", "--model", "x.nequip.pt2", "--compare"], EXIT_ERROR, "--stock-model"),
    ],
)
def test_bad_input_gives_a_clear_message_and_exit_code(argv, code, message, tmp_path, capsys) -> None:
    try:
        got = main([*argv, "--out", str(tmp_path)])
    except SystemExit as exc:  # argparse usage errors
        got = exc.code
    assert got == code
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available() or xpu_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("device", ["cuda", "xpu"])
def test_missing_gpu_is_an_error_not_a_crash(device: str, tmp_path: Path, capsys) -> None:
    assert main(["nve", "--device", device, "--out", str(tmp_path)]) == EXIT_ERROR
    assert f"device='{device}' requested" in capsys.readouterr().err


def test_user_model_package_and_structure_file(tmp_path: Path, capsys) -> None:
    """A user's own .nequip.zip (the shipped Allegro one, renamed) on a user's structure file (extended XYZ)."""
    model = tmp_path / "my_allegro.nequip.zip"
    shutil.copy(default_model_path("allegro"), model)
    structure = tmp_path / "cell.extxyz"
    write(structure, build_system("cu-fcc", 1)[0])
    out = tmp_path / "run"
    argv = ["nve", "--model", str(model), "--system", str(structure), "--size", "2x2x3", "--compare"]
    argv += ["--steps", "3", "--temperature", "200", "--timestep-fs", "1.5", "--device", "cpu", "--out", str(out)]
    assert main(argv) == EXIT_OK
    report = _check_outputs(out, ("stock", "patched"), steps=3, compare=True)
    meta = report["metadata"]
    assert meta["model"] == str(model.resolve()) and not meta["model_is_default"]
    assert meta["system"]["source"] == "file" and meta["system"]["n_atoms"] == 4 * 12
    assert meta["timestep_fs"] == 1.5 and meta["initial_temperature_K"] == 200.0
    assert "my_allegro.nequip.zip" in capsys.readouterr().out


def test_user_checkpoint(md_trained_nequip_run, tmp_path: Path) -> None:
    """A training checkpoint (.ckpt) works like a package: stock and patched runs agree."""
    ckpt, _ = md_trained_nequip_run
    out = tmp_path / "run"
    argv = ["nve", "--model", str(ckpt), "--compare", "--steps", "3", "--device", "cpu", "--no-plot", "--out", str(out)]
    assert main(argv) == EXIT_OK
    report = json.loads((out / "report.json").read_text())
    assert report["metadata"]["model"] == str(Path(ckpt).resolve())
    assert report["comparison"]["max_position_deviation_A"] < 1e-10


def test_cluster_preset_stock_only_with_progress_bar(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    argv = ["nve", "--system", "cu-cluster", "--size", "2", "--stock", "--steps", "3", "--device", "cpu"]
    assert main([*argv, "--progress", "--out", str(out)]) == EXIT_OK
    captured = capsys.readouterr()
    assert "NVE stock" in captured.err  # tqdm bar
    report = _check_outputs(out, ("stock",), steps=3, compare=False)
    assert report["metadata"]["system"]["n_atoms"] == 13 and report["metadata"]["system"]["pbc"] == [False] * 3


def test_repeat_stock_control_is_bit_identical_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["nve", "--compare", "--repeat-stock", "--steps", "3", "--device", "cpu", "--record-interval", "2"]
    assert main([*argv, "--out", str(out), "--quiet"]) == EXIT_OK
    report = json.loads((out / "report.json").read_text())
    assert report["run_labels"] == ["stock", "patched", "stock_repeat"]
    assert report["comparisons"]["stock_repeat"]["max_position_deviation_A"] == 0.0
    assert report["stock"]["n_frames"] == 3 and report["stock"]["n_energy_samples"] == 4  # frames 0, 2, 3
    assert len(read(out / "stock_repeat.traj", ":")) == 3


def test_fast_step_option(tmp_path: Path, capsys) -> None:
    nve = build_parser()._subparsers._group_actions[0].choices["nve"]
    assert nve.parse_args([]).fast_step is False
    assert nve.parse_args(["--fast-step"]).fast_step is True
    assert nve.parse_args(["--fast-step", "compile"]).fast_step == "compile"
    assert nve.parse_args(["--fast-step", "graph"]).fast_step == "graph"
    with pytest.raises(SystemExit):
        nve.parse_args(["--fast-step", "turbo"])
    if not torch.cuda.is_available():
        # CUDA graphs on a CPU model: a clear error naming the problem, no traceback
        argv = ["nve", "--fast-step", "graph", "--steps", "2", "--device", "cpu", "--no-plot", "--out", str(tmp_path)]
        code = main(argv)
        assert code == EXIT_ERROR and "CUDA graphs need a CUDA device" in capsys.readouterr().err
    out = tmp_path / "run"
    code = main(["nve", "--fast-step", "--compare", "--steps", "3", "--device", "cpu", "--no-plot", "--out", str(out)])
    try:
        import vesin_torch  # noqa: F401
    except ImportError:
        # the on-device path needs vesin-torch (not in the md extra): a clear error, not a traceback
        assert code == EXIT_ERROR and "vesin-torch" in capsys.readouterr().err
        return
    assert code == EXIT_OK
    report = json.loads((out / "report.json").read_text())
    assert report["metadata"]["fast_step"] is True
    assert report["comparison"]["max_position_deviation_A"] < 1e-10


def test_info(capsys) -> None:
    assert main(["info"]) == EXIT_OK
    text = capsys.readouterr().out
    assert "embedded model" in text and "torch" in text


@pytest.mark.slow
def test_compiled_model_against_its_stock_package(md_nequip_extension_env, tmp_path: Path) -> None:
    """A ``nequip-compile`` AOTInductor file with the EquiTriton modifier, stock = the package it came from."""
    compiled = tmp_path / "cu.nequip.pt2"
    cmd = ["nequip-compile", str(default_model_path()), str(compiled), "--mode", "aotinductor", "--device", "cpu"]
    cmd += ["--target", "ase", "--modifiers", "enable_EquiTritonSphericalHarmonics"]
    proc = subprocess.run(cmd, env=md_nequip_extension_env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        if "Constraints violated (num_edges)" in tail:
            pytest.xfail("AOTInductor export of the CPU fallback guards on the edge count (see test_md_compile.py)")
        pytest.fail(f"nequip-compile failed:\n{tail}")
    out = tmp_path / "run"
    argv = ["nve", "--model", str(compiled), "--stock-model", str(default_model_path()), "--compare"]
    argv += ["--steps", "3", "--device", "cpu", "--no-plot", "--out", str(out)]
    assert main(argv) == EXIT_OK
    report = json.loads((out / "report.json").read_text())
    assert report["patched"]["sh_backend"].startswith("equitriton")
    assert report["stock"]["sh_backend"] == "e3nn"
    assert report["comparison"]["max_position_deviation_A"] < 1e-8
