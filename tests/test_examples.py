"""Run every script in examples/ in its short (--quick) mode, in a subprocess, so that they cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

#: script -> (extra arguments, text that must appear on stdout)
CASES = {
    "calculator_default_model.py": ([], "NVE 10 steps"),
    "patch_e3nn_model.py": ([], "[md_plugin.patch_model] after: SH backend = equitriton"),
    "stability_compare.py": (["--out", "{tmp}"], "max |r_patched - r_stock|"),
    "kernel_benchmark.py": (["--json", "{tmp}/bench.json"], "max|diff|"),
}


def test_every_example_is_covered() -> None:
    scripts = {p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(CASES)


@pytest.mark.parametrize("script", sorted(CASES))
def test_example_runs_in_quick_mode(script: str, tmp_path: Path) -> None:
    extra, expected = CASES[script]
    args = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["MPLBACKEND"] = "Agg"
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--quick", "--device", "cpu", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert expected in proc.stdout, proc.stdout
    if script == "stability_compare.py":
        report = json.loads((tmp_path / "report.json").read_text())
        assert report["stock"]["sh_backend"] == "e3nn"
        assert report["patched"]["sh_backend"].startswith("equitriton")
        assert (tmp_path / "energy.png").is_file()
    if script == "kernel_benchmark.py":
        rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
        assert rows and all(r["max_abs_diff"] < 1e-10 for r in rows)


def test_quick_mode_also_comes_from_the_environment(tmp_path: Path) -> None:
    env = dict(os.environ, EQUITRITON_EXAMPLES_QUICK="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    code = "import sys; sys.path.insert(0, sys.argv[1]); import _quick; print(_quick.parser('x').parse_args([]).quick)"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(EXAMPLES)], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.stdout.strip() == "True", proc.stderr
