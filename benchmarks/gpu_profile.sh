#!/usr/bin/env bash
# Nsight Compute counters of chosen kernel configurations (a profile, not a benchmark; benchmarks/ncu_kernels.py).
#   OUT=dir [NAME=backward] bash benchmarks/gpu_profile.sh [direction l_max dtype config-json]...
# Without arguments: the backward's traced duals against the ladder, where the ladder compiles to fewer instructions
# yet measured slower (docs/kernel_tuning.md item 13). Besides the sections, the L1 counters that tell a load's
# bank conflicts (wavefronts per request; docs/kernel_tuning.md item 15).
set -u
OUT=${OUT:-out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ $# -gt 0 ]; then
  specs=("$@")
else
  duals_f64='{"BLOCK": 32, "num_warps": 1, "WIDE_IO": false, "M_MAJOR": false}'
  duals_f32='{"BLOCK": 64, "num_warps": 2, "WIDE_IO": false, "M_MAJOR": true}'
  ladder='{"BLOCK": 32, "num_warps": 1, "WIDE_IO": false, "LADDER": true}'
  specs=(backward 6 float64 "$duals_f64" backward 6 float64 "$ladder"
         backward 10 float64 "$duals_f64" backward 10 float64 "$ladder"
         backward 12 float32 "$duals_f32" backward 12 float32 "$ladder")
fi
metrics=l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum,l1tex__data_pipe_lsu_wavefronts_mem_global_op_ld.sum
metrics+=,l1tex__data_bank_conflicts_pipe_lsu_mem_global_op_ld.sum,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum
metrics+=,dram__bytes_read.sum,dram__bytes_write.sum,gpu__time_duration.sum
python benchmarks/ncu_kernels.py "${specs[@]}" > /dev/null  # compile outside the profiler
ncu --profile-from-start off --clock-control none \
  --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats \
  --section WarpStateStats --section SchedulerStats --section ComputeWorkloadAnalysis --metrics "$metrics" \
  --csv --page details python benchmarks/ncu_kernels.py "${specs[@]}" > "$OUT/ncu_${NAME:-backward}.csv"
echo "ncu rc $?"
