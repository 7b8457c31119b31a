"""Compile Triton kernels ahead of use, in parallel processes, so that later runs find them in Triton's on-disk cache.

    python benchmarks/warm_kernels.py --preset cuda-tests        # what tests/test_cuda.py launches
    python benchmarks/warm_kernels.py --lsets "0-12;2" --dtypes float64 --workers 14

A kernel is compiled once per (l set, normalize, normalization, dtype, direction) (see equitriton/kernels/launch.py);
the l = 12 derivative kernels take minutes each to compile, one after the other in one process. Triton's cache
(``TRITON_CACHE_DIR``, default ~/.triton/cache) is shared by processes, so compiling every combination in a pool of
processes first turns the serial compile time of a test or benchmark run into roughly its longest single compile.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing as mp
import os
import sys
import time

from shbench.warm import env_overrides  # its folder is on sys.path, as the script's own

# What tests/test_cuda.py launches, as (l sets, dtypes, (normalize, normalization) pairs, directions); kept in step
# with it by hand: a miss only costs compile time in the test run. Normalization: 0 integral, 1 component, 2 norm.
ALL = list(range(13))
EVERY_PAIR = [(nz, nm) for nz in (True, False) for nm in (0, 1, 2)]
BOTH = ["float64", "float32"]
CUDA_TESTS = [
    ([ALL, [12, 5]], BOTH, [(True, 0), (False, 1)], "fbd"),
    ([[3, 1, 3, 0], [0], [7, 2, 11]], BOTH, EVERY_PAIR, "fbd"),
    ([ALL], ["float64"], EVERY_PAIR, "f"),
    ([ALL, [3, 1, 3, 0]], BOTH, [(True, 0)], "fbd"),
    ([ALL], ["float32"], [(True, 1)], "fb"),
    ([[0, 1, 2, 3, 4], [12], [5, 2, 5], [0, 1, 2, 5], [0, 2, 1, 3]], ["float64"], [(True, 1)], "fbd"),
    ([[2, 0]], ["float64"], [(True, 0)], "f"),
]
# test_derivative_bodies_match_cpu_fallback's forced bodies (load fences, grad_y tiles), set through EQUITRITON_* (a
# fifth element: the environments to compile under). Its float32 depth-1 ladder case compiles six kernels one after
# the other and was the one test cut by the device call's limit in three runs (docs/kernel_tuning.md item 14).
FORCED = [
    {"EQUITRITON_LOAD_FENCE": "1", "EQUITRITON_LADDER": "0"},
    {"EQUITRITON_LOAD_FENCE": "1", "EQUITRITON_LADDER": "1"},
    {"EQUITRITON_LOAD_FENCE": "2", "EQUITRITON_LADDER": "1"},
    {"EQUITRITON_LOAD_FENCE": "3", "EQUITRITON_LADDER": "1"},
    {"EQUITRITON_GY_TILE": "1", "EQUITRITON_LADDER": "0"},
    {"EQUITRITON_GY_TILE": "1", "EQUITRITON_LADDER": "1"},
]
CUDA_TESTS.append(([ALL, [12, 5], [2, 0, 9], [0, 1, 2, 3]], BOTH, [(True, 2)], "bd", FORCED))


def parse_lset(text: str) -> list[int]:
    """'0-12' -> [0..12]; '3,1,3,0' -> [3, 1, 3, 0]."""
    if "-" in text:
        lo, hi = (int(v) for v in text.split("-"))
        return list(range(lo, hi + 1))
    return [int(v) for v in text.split(",")]


def _compile_one(job: tuple) -> tuple[str, float, str]:
    ls, dtype_name, normalize, normalization, directions, device, env = job
    # forced launch choices for this job only: a pool process runs many jobs
    with env_overrides(dict(env)):
        return _compile(ls, dtype_name, normalize, normalization, directions, device, env)


def _compile(ls, dtype_name, normalize, normalization, directions, device, env) -> tuple[str, float, str]:
    import torch

    import equitriton  # noqa: F401  (registers torch.ops.equitriton)

    t0 = time.perf_counter()
    ls, dtype = list(ls), getattr(torch, dtype_name)
    dim = sum(2 * l + 1 for l in ls)
    x = torch.randn(64, 3, dtype=dtype, device=device)
    g = torch.randn(64, dim, dtype=dtype, device=device)
    ops = torch.ops.equitriton
    try:
        if "f" in directions:
            ops.sh_forward(x, ls, normalize, normalization)
        if "b" in directions:
            ops.sh_backward(x, g, ls, normalize, normalization)
        if "d" in directions:
            ops.sh_double_backward(x, g, x, ls, normalize, normalization)
        torch.cuda.synchronize() if device.startswith("cuda") else None
        status = "ok"
    except Exception as exc:  # recorded, not raised: one bad combination must not stop the others
        status = f"{type(exc).__name__}: {exc}"
    name = f"{ls} {dtype_name} normalize={normalize} norm={normalization} {directions}"
    name += "".join(f" {k.removeprefix('EQUITRITON_')}={v}" for k, v in env)
    return name, time.perf_counter() - t0, status


def jobs_of(groups: list, device: str) -> list[tuple]:
    """One job per (l set, dtype, normalize, normalization, forced environment) of the groups, the slowest (largest
    l, with derivatives) first, so that the pool's tail is short."""
    jobs = {
        (tuple(ls), dt, nz, nm, dirs, device, tuple(sorted(env.items())))
        for lsets, dtypes, pairs, dirs, *envs in groups
        for ls, dt, (nz, nm), env in itertools.product(lsets, dtypes, pairs, envs[0] if envs else [{}])
    }
    return sorted(jobs, key=lambda j: (-max(j[0]), -len(j[4]), j))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=["cuda-tests"], default=None)
    ap.add_argument("--lsets", default=None, help="';'-separated l sets, e.g. '0-12;3,1,3,0'")
    ap.add_argument("--dtypes", default="float64,float32")
    ap.add_argument("--normalizations", default="0,1,2", help="0 integral, 1 component, 2 norm")
    ap.add_argument("--normalize", default="1,0", help="1 = True, 0 = False")
    ap.add_argument("--directions", default="fbd", help="f forward, b backward, d double backward")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--workers", type=int, default=max(1, min(14, (os.cpu_count() or 2) - 2)))
    args = ap.parse_args(argv)
    if args.preset == "cuda-tests":
        groups = CUDA_TESTS
    elif args.lsets:
        pairs = [(v == "1", int(m)) for v in args.normalize.split(",") for m in args.normalizations.split(",")]
        groups = [([parse_lset(s) for s in args.lsets.split(";")], args.dtypes.split(","), pairs, args.directions)]
    else:
        ap.error("give --preset or --lsets")
    jobs = jobs_of(groups, args.device)
    t0 = time.perf_counter()
    failed = 0
    with mp.get_context("spawn").Pool(args.workers) as pool:
        for name, seconds, status in pool.imap_unordered(_compile_one, jobs):
            failed += status != "ok"
            print(f"{seconds:7.1f} s  {name}  {status}", flush=True)
    print(f"{len(jobs)} combinations, {failed} failed, {time.perf_counter() - t0:.0f} s with {args.workers} workers")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
