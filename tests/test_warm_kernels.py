"""benchmarks/warm_kernels.py: the parallel pre-compilation of Triton kernels, run through the interpreter on CPU, and
its cuda-tests preset kept in step with the l sets of tests/test_cuda.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import warm_kernels  # noqa: E402


def test_parse_lset():
    assert warm_kernels.parse_lset("0-3") == [0, 1, 2, 3]
    assert warm_kernels.parse_lset("3,1,3,0") == [3, 1, 3, 0]


def test_preset_covers_every_l_set_of_the_cuda_tests():
    sys.path.insert(0, str(ROOT / "tests"))
    import test_cuda

    tested = {tuple(ls) for ls in (test_cuda.ALL, [3, 1, 3, 0], [12, 5], [0], [7, 2, 11], [0, 1, 2, 3, 4], [12])}
    warmed = {tuple(ls) for lsets, *_ in warm_kernels.CUDA_TESTS for ls in lsets}
    assert tested <= warmed


def test_interpreter_run_compiles_and_reports(tmp_path):
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, str(ROOT / "benchmarks" / "warm_kernels.py"), "--lsets", "0-1;2", "--dtypes", "float64"]
    cmd += ["--normalize", "1", "--normalizations", "1", "--directions", "fb", "--device", "cpu", "--workers", "2"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "2 combinations, 0 failed" in out.stdout


def test_forced_environments_are_those_of_the_cuda_body_test_and_last_one_job(monkeypatch):
    """The preset's fenced jobs force what test_cuda's body test forces, and a job's EQUITRITON_* settings do not leak
    into the next job of the same pool process."""
    sys.path.insert(0, str(ROOT / "tests"))
    import test_cuda

    marks = test_cuda.test_derivative_bodies_match_cpu_fallback.pytestmark
    tested = next(m.args[1] for m in marks if m.name == "parametrize" and m.args[0] == "env")
    assert all(env in tested for env in warm_kernels.FORCED)
    jobs = warm_kernels.jobs_of(warm_kernels.CUDA_TESTS, "cuda")
    fenced = [j for j in jobs if j[6]]
    assert len(fenced) == 4 * 2 * len(warm_kernels.FORCED) and len(jobs) == len(set(jobs))
    assert max(jobs[0][0]) == 12  # the slowest compiles start first

    seen = []
    monkeypatch.setattr(warm_kernels, "_compile", lambda *a: seen.append(os.environ.get("EQUITRITON_LOAD_FENCE")))
    monkeypatch.delenv("EQUITRITON_LOAD_FENCE", raising=False)
    monkeypatch.setenv("EQUITRITON_LADDER", "0")
    warm_kernels._compile_one(
        ((1,), "float64", True, 1, "b", "cpu", (("EQUITRITON_LADDER", "1"), ("EQUITRITON_LOAD_FENCE", "2")))
    )
    warm_kernels._compile_one(((1,), "float64", True, 1, "b", "cpu", ()))
    assert seen == ["2", None]
    assert "EQUITRITON_LOAD_FENCE" not in os.environ and os.environ["EQUITRITON_LADDER"] == "0"
