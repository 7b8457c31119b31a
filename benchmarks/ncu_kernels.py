"""Hardware counters of chosen SH kernel configurations, for Nsight Compute (a profile, not a benchmark).

    ncu --profile-from-start off --clock-control none --section SpeedOfLight ... \\
        python benchmarks/ncu_kernels.py backward 10 float64 '{"BLOCK": 32, "num_warps": 1, "LADDER": true}' ...

Arguments come in fours: direction, l_max, dtype, launch config as JSON. Each kernel is compiled and run once
outside the profiled range, then run once inside it (cudaProfilerStart / Stop), at N = 2^22 points, so ncu reports
exactly one launch per configuration, in argument order.
"""

from __future__ import annotations

import json
import sys

import torch
from tune_kernels import N_BIG, kernel_call  # its folder is on sys.path, as the script's own

from equitriton.kernels import launch


def run(direction: str, lmax: int, dtype: torch.dtype, cfg: dict) -> None:
    ls = list(range(lmax + 1))
    _, dim = launch.offsets(ls)
    dev = torch.device("cuda")
    x = torch.randn(N_BIG, 3, dtype=dtype, device=dev)
    g = torch.randn(N_BIG, dim, dtype=dtype, device=dev)
    w = torch.randn(N_BIG, 3, dtype=dtype, device=dev)
    out = (torch.empty(N_BIG, dim, dtype=dtype, device=dev), torch.empty(N_BIG, 3, dtype=dtype, device=dev))
    call = kernel_call(direction, x, g, w, out, ls, cfg)
    with launch.compiling(direction, cfg):
        call()
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStart()
    call()
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStop()


def main(argv: list[str]) -> None:
    if len(argv) % 4:
        raise SystemExit("arguments come in fours: direction l_max dtype config-json")
    specs = [
        (argv[i], int(argv[i + 1]), getattr(torch, argv[i + 2]), json.loads(argv[i + 3]))
        for i in range(0, len(argv), 4)
    ]
    for direction, lmax, dtype, cfg in specs:
        print("profiling", direction, lmax, dtype, cfg, flush=True)
        run(direction, lmax, dtype, cfg)


if __name__ == "__main__":
    main(sys.argv[1:])
