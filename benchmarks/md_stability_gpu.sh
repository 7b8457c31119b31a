#!/usr/bin/env bash
# The H100 NVE stability run of issue 5 (>= 1,000 atoms, >= 10 ps, stock vs patched, NequIP and Allegro), made to
# fit in about 4 minutes of device time. Run from the repository root on the GPU machine:
#
#     bash ../shared/device-wheels.sh vesin-torch pytest iniconfig pluggy pygments   # here, once: wheels -> .whl/
#     BUNDLE="$OUT" bash benchmarks/md_stability_gpu.sh /tmp/stab   # there (carry .whl); extra args go to the .py
#     python benchmarks/md_stability_docs.py B/nequip B/allegro --dest docs/stability_h100 --section h100  # here, B =
#                                                                 # the bundle as fetched (files_at)
#
# It installs the carried wheels (if ase/nequip are missing), makes the CUDA driver / NVRTC libraries findable under
# their unversioned names (vesin-torch's on-device neighbour list dlopen()s them), runs the cuda cases of
# tests/test_stability_nve.py (the device matrix, ~1 min; output in OUT/pytest_cuda.txt; RUN_TESTS=0 skips them),
# then benchmarks/md_stability_gpu.py, which calibrates, checks the projected time against STABILITY_BUDGET_S
# (default 220 s for calibration and the long runs together), and writes
# OUT/{nequip,allegro}/{report.json,energy.png,*.traj,*_energy.csv} and OUT/plan.json. With BUNDLE set, the files
# the docs need go there as at most 8 files (the device tool returns no more): BUNDLE/{nequip,allegro}/{report.json,
# energy.png}, BUNDLE/{plan.json,gpu.txt,pytest_cuda.txt} and BUNDLE/extras.tar.gz (the per-step energy CSVs, and
# the trajectories while the archive stays under 15 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/md_stability_gpu}"
shift || true
t0=$(date +%s)

site=/tmp/site
if ! python3 -c "import ase, nequip, allegro" 2>/dev/null; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "md_stability_gpu.sh: ase/nequip/allegro missing and no .whl/ (run ../shared/device-wheels.sh vesin-torch)" >&2
    exit 1
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# unversioned libcuda.so / libnvrtc.so for vesin-torch; a failure only means the on-device path is not calibrated
libs="$site/_cuda_libs"
mkdir -p "$libs"
python3 - "$libs" <<'PY' || echo "md_stability_gpu.sh: could not link CUDA libraries" >&2
import glob, os, subprocess, sys

out = sys.argv[1]
roots = ["/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib64"]
try:
    import nvidia

    roots += [d for p in nvidia.__path__ for d in glob.glob(os.path.join(p, "**", "lib"), recursive=True)]
except ImportError:
    pass
ldcache = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
for name in ("cuda", "nvrtc", "cudart"):
    link = os.path.join(out, f"lib{name}.so")
    found = [f for r in roots for f in sorted(glob.glob(os.path.join(r, f"lib{name}.so*")))]
    found += [ln.split("=>")[-1].strip() for ln in ldcache.splitlines() if ln.strip().startswith(f"lib{name}.so")]
    if found and not os.path.exists(link):
        os.symlink(found[0], link)
PY
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export MPLBACKEND=Agg

mkdir -p "$out"
echo "setup: $(( $(date +%s) - t0 )) s"
if [ "${RUN_TESTS:-1}" = 1 ] && python3 -c "import pytest" 2>/dev/null; then
  timeout 150 python3 -m pytest -q -rs -p no:cacheprovider tests/test_stability_nve.py -k cuda \
    > "$out/pytest_cuda.txt" 2>&1 || true
  tail -n 3 "$out/pytest_cuda.txt"
  echo "tests: $(( $(date +%s) - t0 )) s"
fi
status=0
python3 benchmarks/md_stability_gpu.py --out "$out" --budget-s "${STABILITY_BUDGET_S:-220}" "$@" || status=$?
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt" 2>&1 || true
if [ -n "${BUNDLE:-}" ]; then
  python3 - "$out" "$BUNDLE" <<'PY' || echo "md_stability_gpu.sh: bundling failed" >&2
import shutil, sys, tarfile
from pathlib import Path

out, bundle = Path(sys.argv[1]), Path(sys.argv[2])
bundle.mkdir(parents=True, exist_ok=True)
for name in ("plan.json", "gpu.txt", "pytest_cuda.txt"):
    if (out / name).is_file():
        shutil.copyfile(out / name, bundle / name)
extras, budget = [], 15 * 2**20
for study in sorted(p for p in out.iterdir() if (p / "report.json").is_file()):
    (bundle / study.name).mkdir(exist_ok=True)
    for name in ("report.json", "energy.png"):
        if (study / name).is_file():
            shutil.copyfile(study / name, bundle / study.name / name)
    extras += sorted(study.glob("*_energy.csv"))
extras += sorted(out.glob("*/*.traj"), key=lambda p: p.stat().st_size)
with tarfile.open(bundle / "extras.tar.gz", "w:gz") as tar:
    total = 0
    for path in extras:
        if path.suffix == ".traj" and total + path.stat().st_size > budget:
            continue
        total += path.stat().st_size
        tar.add(path, arcname=str(path.relative_to(out)))
print(f"bundle: {sorted(str(p.relative_to(bundle)) for p in bundle.rglob('*') if p.is_file())}")
PY
fi
echo "total: $(( $(date +%s) - t0 )) s (exit $status)"
exit $status
