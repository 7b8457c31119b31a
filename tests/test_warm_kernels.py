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
