"""The stability scripts under benchmarks/: the GPU run (in its --quick CPU mode, so it cannot rot) and the docs
generator (docs/stability.md's result sections must be exactly what the committed report.json files render to)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU_SCRIPT = ROOT / "benchmarks" / "md_stability_gpu.py"


def _load_docs_module():
    spec = importlib.util.spec_from_file_location("md_stability_docs", ROOT / "benchmarks" / "md_stability_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_gpu_script(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, str(GPU_SCRIPT), "--quick", "--device", "cpu", *args],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )


def test_docs_match_their_json() -> None:
    docs = _load_docs_module()
    current, fresh = docs.regenerate()
    assert current == fresh, "docs/stability.md is stale: run python benchmarks/md_stability_docs.py"
    # the CPU reference section is filled, from files that exist
    assert "<!-- stability:begin cpu dest=docs/stability_cpu -->" in current
    for kind in ("nequip", "allegro"):
        assert (ROOT / "docs" / "stability_cpu" / kind / "report.json").is_file()
        assert f"](stability_cpu/{kind}/energy.png)" in current


def test_gpu_script_quick_mode_and_docs_rendering(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _run_gpu_script("--out", str(out), "--paths", "default", "fast", "--control", "on")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    plan = json.loads((out / "plan.json").read_text())
    assert plan["system"]["n_atoms"] == 32 and set(plan["models"]) == {"nequip", "allegro"}
    for kind in ("nequip", "allegro"):
        cases = plan["calibration"][kind]
        expected = {(path, patched) for path in ("default", "fast") for patched in (False, True)}
        assert {(c["path"], c["patched"]) for c in cases} == expected
        default = [c for c in cases if c["path"] == "default"]
        assert all(c["step_s"] > 0 for c in default)
        # without vesin-torch the on-device path is reported as unavailable and not chosen
        fast = [c for c in cases if c["path"] == "fast"]
        if any("error" in c for c in fast):
            assert plan["models"][kind]["path"] == "default"
        report = json.loads((out / kind / "report.json").read_text())
        assert report["run_labels"] == ["stock", "patched", "stock_repeat"]
        assert report["metadata"]["model_kind"] == kind
        assert report["comparison"]["max_position_deviation_A"] < 1e-10
    # render those reports into a scratch doc, the way the H100 results go into docs/stability.md
    docs = _load_docs_module()
    dest = tmp_path / "docs" / "stability_gpu"
    docs.copy_results([out / "nequip", out / "allegro"], dest)
    assert (dest / "plan.json").is_file() and (dest / "nequip" / "energy.png").is_file()
    doc = tmp_path / "docs" / "stability.md"
    doc.write_text("# t\n")
    text = docs.render_section(dest, doc)
    assert text.index("NequIP") < text.index("Allegro")
    assert "| stock_repeat | e3nn |" in text and "](stability_gpu/nequip/energy.png)" in text


def test_gpu_script_stops_when_the_projection_exceeds_the_budget(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _run_gpu_script("--out", str(out), "--models", "nequip", "--paths", "default", "--budget-s", "1")
    assert proc.returncode == 4, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "exceeds --budget-s" in proc.stderr
    plan = json.loads((out / "plan.json").read_text())
    assert plan["projected_total_s"] > 1 and plan["models"]["nequip"]["runs"] == ["stock", "patched"]
    assert not (out / "nequip").exists()


@pytest.mark.parametrize("name", ["md_stability_gpu.sh"])
def test_shell_wrapper_parses(name: str) -> None:
    proc = subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / name)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
