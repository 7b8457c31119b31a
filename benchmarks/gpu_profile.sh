#!/usr/bin/env bash
# Nsight Compute counters of the backward kernel, traced duals against the ladder, where the ladder compiles to fewer
# instructions yet measured slower (docs/kernel_tuning.md item 11). Usage: OUT=dir bash benchmarks/gpu_profile.sh
set -u
OUT=${OUT:-out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
duals_f64='{"BLOCK": 32, "num_warps": 1, "WIDE_IO": false, "M_MAJOR": false}'
duals_f32='{"BLOCK": 64, "num_warps": 2, "WIDE_IO": false, "M_MAJOR": true}'
ladder='{"BLOCK": 32, "num_warps": 1, "WIDE_IO": false, "LADDER": true}'
specs=(backward 6 float64 "$duals_f64" backward 6 float64 "$ladder"
       backward 10 float64 "$duals_f64" backward 10 float64 "$ladder"
       backward 12 float32 "$duals_f32" backward 12 float32 "$ladder")
python benchmarks/ncu_kernels.py "${specs[@]}" > /dev/null  # compile outside the profiler
ncu --profile-from-start off --clock-control none \
  --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats \
  --section WarpStateStats --section SchedulerStats --section ComputeWorkloadAnalysis \
  --csv --page details python benchmarks/ncu_kernels.py "${specs[@]}" > "$OUT/ncu_backward.csv"
echo "ncu rc $?"
