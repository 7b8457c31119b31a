#!/usr/bin/env bash
# Everything the GPU run (H100 or H200) of the SH and MD issues needs, in one device call (device tool: carry .whl and .peers):
#
#     bash benchmarks/gpu_all.sh "$OUT"
#
# 1. installs the carried wheels (.whl: ase/nequip/allegro/vesin/pytest; .peers/wheels: SH peers) into /tmp/site;
# 2. pre-compiles the kernels the CUDA tests use (benchmarks/warm_kernels.py, parallel) and runs the CUDA-marked
#    tests (pytest -m cuda, with pytest-xdist where installed) -> tests_cuda.txt;
# 3. times stock against patched models, interleaved (benchmarks/md_ab.py), in the compiled and the eager on-device MD
#    modes -> ab_MODE/;
# 4. runs the MD step benchmark (benchmarks/md_step.py) -> md/ (STAGE_MD_S=0 leaves it out; MD_ARGS2 runs it a second
#    time with those arguments -> md2/);
# 5. runs the SH benchmark (benchmarks/sh_bench.py) -> sh/; on a machine with two GPUs, on the second one, at the
#    same time as steps 2-4 on the first (GPU1_STAGE=md: steps 3-4 on the second GPU instead, no SH benchmark);
# 6. measures host time per call at N = 2^12 (benchmarks/launch_overhead.py) -> overhead/ (STAGE_OVERHEAD_S=0 leaves
#    it out) and, with SWEEP=dbl (or another tune_kernels.py sweep), runs that launch-config sweep -> tune/;
# SWEEP_FIRST=name runs that sweep before everything else and writes its best configs into the launch table;
# and packs everything into OUT/results.tgz (the device tool returns at most 8 files). Each stage has its own time
# limit, so a slow stage cannot starve the next one: STAGE_WARM_S, STAGE_TESTS_S, STAGE_NVE_S, STAGE_AB_S, STAGE_MD_S, STAGE_SH_S.
set -u
cd "$(dirname "$0")/.."
OUT="${1:-${OUT:-runs/gpu_all}}"
R=/tmp/gpu_all
rm -rf "$R" && mkdir -p "$R" "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
t0=$(date +%s)
# every stage's end also re-packs OUT/results.tgz, so a call cut by the device tool's limit still returns the stages
# that finished
stamp() {
  echo "[$(( $(date +%s) - t0 )) s] $*" | tee -a "$R/stages.txt"
  tar czf "$OUT/.results.$BASHPID.tgz" -C "$R" . 2>/dev/null && mv "$OUT/.results.$BASHPID.tgz" "$OUT/results.tgz"
}

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
# shellcheck disable=SC1091
. benchmarks/device_setup.sh .peers > "$R/device_setup.txt" 2>&1
export PYTHONPATH="/tmp/site:$PYTHONPATH"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, triton, e3nn; print('torch', torch.__version__, 'triton', triton.__version__, 'e3nn', e3nn.__version__)"
  python3 --version; date -u; } > "$R/machine.txt" 2>&1
stamp "setup done"

# Triton's coalesce pass makes the l = 0..12 derivative kernels take minutes each to compile; skipping it gives the
# same cubin (docs/compile_time.md). The CUDA tests below run with the switch on, so they also confirm it on the GPU.
export EQUITRITON_SKIP_COALESCE="${EQUITRITON_SKIP_COALESCE:-1}"
ngpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
# pytest-xdist (on the GPU image) spreads the tests' kernel compiles over the cores
xdist=$(python3 -c "import xdist" 2>/dev/null && echo "-n ${TEST_WORKERS:-8}")

sh_bench() {
  timeout "${STAGE_SH_S:-300}" python3 benchmarks/sh_bench.py --out "$R/sh" --peers-dir .peers ${SH_ARGS:-} \
    > "$R/sh_bench.log" 2>&1
  stamp "sh_bench rc=$?"
  if [ -n "${SWEEP:-}" ]; then
    OUT="$R/tune" COMPILE_TIMEOUT="${STAGE_TUNE_COMPILE_S:-120}" timeout "${STAGE_TUNE_S:-240}" \
      bash benchmarks/gpu_tune.sh > "$R/tune.log" 2>&1
    stamp "tune sweep $SWEEP rc=$?"
  fi
}
tests() {
  timeout "${STAGE_WARM_S:-120}" python3 benchmarks/warm_kernels.py --preset cuda-tests > "$R/warm.txt" 2>&1
  stamp "warm rc=$? $(tail -n 1 "$R/warm.txt")"
  # -v: each test's outcome is printed as it lands, so a stage cut by its time limit still names what failed
  timeout "${STAGE_TESTS_S:-240}" python3 -u -m pytest -v -m cuda -p no:cacheprovider -rfEs $xdist tests \
    > "$R/tests_cuda.txt" 2>&1
  stamp "tests rc=$? $(tail -n 1 "$R/tests_cuda.txt")"
  # the CUDA NVE case again, alone: under xdist it has failed on the H200 (docs/md_performance_notes.md), alone it
  # passed (STAGE_NVE_S=0 leaves it out)
  if [ "${STAGE_NVE_S:-90}" != 0 ]; then
    timeout "${STAGE_NVE_S:-90}" python3 -u -m pytest -q -m cuda -p no:cacheprovider -rs tests/test_stability_nve.py \
      > "$R/tests_nve_alone.txt" 2>&1
    stamp "nve tests alone rc=$? $(tail -n 1 "$R/tests_nve_alone.txt")"
  fi
}
md() {
  # stock vs patched, interleaved, in the compiled modes (benchmarks/md_ab.py)
  for mode in ${AB_MODES-ours-compile ours-fast ours-aoti}; do  # AB_MODES="" leaves the A/B out
    timeout "${STAGE_AB_S:-120}" python3 benchmarks/md_ab.py --out "$R/ab_$mode" --mode "$mode" > "$R/ab_$mode.log" 2>&1
    stamp "md_ab $mode rc=$?"
  done
  if [ "${STAGE_OVERHEAD_S:-90}" != 0 ]; then
    timeout "${STAGE_OVERHEAD_S:-90}" python3 benchmarks/launch_overhead.py --out "$R/overhead" > "$R/overhead.log" 2>&1
    stamp "launch_overhead rc=$?"
  fi
  if [ "${STAGE_MD_S:-150}" != 0 ]; then
    timeout "${STAGE_MD_S:-150}" python3 benchmarks/md_step.py --out "$R/md" ${MD_ARGS:-} > "$R/md_step.log" 2>&1
    stamp "md_step rc=$?"
  fi
  if [ -n "${MD_ARGS2:-}" ]; then  # a second MD step benchmark (other models or modes) -> md2/
    timeout "${STAGE_MD2_S:-150}" python3 benchmarks/md_step.py --out "$R/md2" $MD_ARGS2 > "$R/md_step2.log" 2>&1
    stamp "md_step (2) rc=$?"
  fi
}

if [ -n "${SWEEP_FIRST:-}" ]; then
  # SWEEP_FIRST=name: that launch-config sweep first, its best configs merged into the launch table, so that the
  # tests and the SH benchmark below run the new table (a copy of which comes back in tuned.json)
  OUT="$R/tune" SWEEP="$SWEEP_FIRST" TABLE=equitriton/kernels/tuned.json COMPILE_TIMEOUT="${STAGE_TUNE_COMPILE_S:-120}" \
    timeout "${STAGE_TUNE_S:-240}" bash benchmarks/gpu_tune.sh > "$R/tune.log" 2>&1
  cp equitriton/kernels/tuned.json "$R/"
  stamp "tune sweep $SWEEP_FIRST (table written) rc=$?"
fi
if [ "$ngpu" -ge 2 ] && [ "${GPU1_STAGE:-sh}" = md ]; then
  # two GPUs, GPU1_STAGE=md: the MD timings have GPU 1 to themselves while the tests run on GPU 0 (no SH benchmark)
  # the MD process gets its own cores (MD_CPUS), so that the tests' kernel compiles do not slow its host side
  stamp "$ngpu GPUs: MD on GPU 1 (cores ${MD_CPUS:-0-3}), tests on GPU 0 (cores ${TEST_CPUS:-4-$(( $(nproc) - 1 ))})"
  (export CUDA_VISIBLE_DEVICES=1; taskset -pc "${MD_CPUS:-0-3}" $BASHPID > /dev/null; md) &
  md_pid=$!
  (export CUDA_VISIBLE_DEVICES=0; taskset -pc "${TEST_CPUS:-4-$(( $(nproc) - 1 ))}" $BASHPID > /dev/null; tests)
  wait "$md_pid"
elif [ "$ngpu" -ge 2 ]; then
  # two GPUs: the SH benchmark has GPU 1 to itself while tests and MD run on GPU 0
  stamp "$ngpu GPUs: sh_bench on GPU 1, tests and MD on GPU 0"
  (export CUDA_VISIBLE_DEVICES=1; sh_bench) &
  sh_pid=$!
  (export CUDA_VISIBLE_DEVICES=0; tests; md)
  wait "$sh_pid"
else
  tests
  md
  sh_bench
fi

tar czf "$OUT/results.tgz" -C "$R" .
cp "$R/stages.txt" "$R/tests_cuda.txt" "$OUT/" 2>/dev/null
cat "$R/stages.txt"
