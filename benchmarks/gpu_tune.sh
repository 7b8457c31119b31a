#!/usr/bin/env bash
# Kernel launch-config sweep on a CUDA machine: compile every configuration in parallel (fills Triton's disk
# cache), then check and time them in one process. Usage: OUT=dir bash benchmarks/gpu_tune.sh
set -u
OUT=${OUT:-out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
shards=${SHARDS:-14}
t0=$(date +%s)
for i in $(seq 0 $((shards - 1))); do
  timeout "${COMPILE_TIMEOUT:-200}" python benchmarks/tune_kernels.py --phase compile --sweep "${SWEEP:-all}" --shard "$i/$shards" > "${TMPDIR:-/tmp}/tune_$$_compile_$i.log" 2>&1 &
done
wait
echo "compile phase: $(( $(date +%s) - t0 )) s"
grep -h "compile failed" "${TMPDIR:-/tmp}"/tune_$$_compile_*.log | head -20
python benchmarks/tune_kernels.py --phase time --sweep "${SWEEP:-all}" --out "$OUT" ${TABLE:+--write-table $TABLE} ${MIN_GAIN:+--min-gain $MIN_GAIN} 2>&1 | grep -v "^{" | tee "$OUT/tune_summary.txt"
