"""CPU spherical harmonics, side by side: equitriton's torch fallback vs e3nn (eager, as models call it).

Both as modules built once (`SphericalHarmonics(range(l_max + 1), normalize=True)`), integral normalization; for each
(dtype, l_max, N) and direction the two are timed alternately in the same loop, so a load change on a shared machine
hits both. `fwd` is Y = sh(x); `fwd+bwd` is Y = sh(x) then autograd.grad(Y, x, G) for a fixed random G.

    python benchmarks/cpu_fallback.py --out docs/data/cpu_fallback.json            # full grid (minutes)
    python benchmarks/cpu_fallback.py --quick --out /tmp/cpu.json                   # a few points
    python benchmarks/report_cpu_fallback.py docs/data/cpu_fallback*.json > docs/cpu_fallback.md

The JSON holds every timing (best and median of the repetitions, ms) with the versions, date, CPU and thread count.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def cpu_info() -> dict:
    info = {"machine": platform.machine(), "logical_cpus": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        names = [ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")]
        info["model"] = names[0] if names else platform.processor()
    except OSError:
        info["model"] = platform.processor()
    try:
        info["affinity"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    return info


def git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


FIRST_CALL = """
import sys, time, torch
torch.set_num_threads(int(sys.argv[3]))
t0 = time.perf_counter()
if sys.argv[1] == "e3nn":
    from e3nn import o3
    m = o3.SphericalHarmonics(list(range(int(sys.argv[2]) + 1)), True)
else:
    import equitriton
    m = equitriton.SphericalHarmonics(list(range(int(sys.argv[2]) + 1)), True)
t1 = time.perf_counter()
x = torch.randn(1000, 3, dtype=torch.float64, requires_grad=True)
y = m(x)
t2 = time.perf_counter()
(g,) = torch.autograd.grad(y, x, torch.ones_like(y), create_graph=True)
t3 = time.perf_counter()
g.sum().backward()
t4 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2, t4 - t3)
"""


def first_calls(lmax: int, threads: int) -> list[dict]:
    """Seconds for import + module, then the first forward, backward and double backward, in fresh processes."""
    out = []
    for impl in ("e3nn", "equitriton"):
        # run outside the checkout: `python -c` puts the working directory first on sys.path, which would shadow
        # the equitriton that PYTHONPATH names
        proc = subprocess.run(
            [sys.executable, "-c", FIRST_CALL, impl, str(lmax), str(threads)],
            capture_output=True,
            text=True,
            cwd=tempfile.gettempdir(),
        )
        if proc.returncode != 0:
            out.append({"impl": impl, "lmax": lmax, "error": proc.stderr[-2000:]})
            continue
        t = [float(v) for v in proc.stdout.split()[-4:]]
        names = ("import_s", "forward_s", "backward_s", "double_s")
        out.append({"impl": impl, "lmax": lmax, **dict(zip(names, t))})
    return out


def _run_chunked(fn, name: str, args: tuple, outs: tuple, rest: tuple, n: int, rows: int) -> None:
    with torch.jit.optimized_execution(False):
        for s in range(0, n, rows):
            e = s + rows
            out = (outs[0][s:e],) if name == "forward" else (outs[1][s:e],)
            if name == "double_backward":
                out = (outs[0][s:e], outs[1][s:e])
            fn(*[a[s:e] for a in args], *rest, out=out)


def chunk_scan(lmaxes: list[int], chunks: list[int], n: int = 131072) -> list[dict]:
    """CPU time per point of the fallback bodies (TorchScript, one thread) run over n rows in chunks of each size:
    what equitriton/fallback.py's _CPU_CHUNK table is chosen from. Process CPU time, so other load on the machine
    matters less than for wall-clock timings."""
    from equitriton.generated import torch_fallback as tf
    from equitriton.kernels import launch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = []
    try:
        for lmax in lmaxes:
            ls = list(range(lmax + 1))
            offs, dim = launch.offsets(ls)
            x = torch.randn(n, 3, dtype=torch.float64)
            g = torch.randn(n, dim, dtype=torch.float64)
            w = torch.randn(n, 3, dtype=torch.float64)
            outs = (torch.empty(n, dim, dtype=torch.float64), torch.empty(n, 3, dtype=torch.float64))
            rest = (ls, list(offs), dim, True, 0)
            for name, args in (("forward", (x,)), ("backward", (x, g)), ("double_backward", (x, g, w))):
                fn = tf.scripted(getattr(tf, name))
                for c in chunks:
                    _run_chunked(fn, name, args, outs, rest, n, c)
                    best = float("inf")
                    for _ in range(3):
                        t = time.process_time()
                        _run_chunked(fn, name, args, outs, rest, n, c)
                        best = min(best, time.process_time() - t)
                    out.append({"direction": name, "lmax": lmax, "chunk": c, "ns_per_point": 1e9 * best / n})
                    print(f"chunk scan {name} l_max={lmax} rows={c}: {1e9 * best / n:.0f} ns/point", flush=True)
    finally:
        torch.set_num_threads(threads)
    return out


def time_pair(fns: dict, reps: int, budget_s: float, min_s: float = 2.0, max_reps: int = 200) -> dict:
    """Alternate the callables at least `reps` times (fewer if that exceeds `budget_s` after 3), and on while
    under `min_s` in all (at most `max_reps`): best and median ms of each. Many repetitions of short calls make the
    best-of robust to other load on the machine."""
    for f in fns.values():  # warm-up: compilation, TorchScript's first runs; a third call where that is cheap
        f()
        t = time.perf_counter()
        f()
        if time.perf_counter() - t < 0.5:
            f()
    samples: dict = {k: [] for k in fns}
    start = time.perf_counter()
    i = 0
    while True:
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            samples[k].append(1e3 * (time.perf_counter() - t))
        i += 1
        elapsed = time.perf_counter() - start
        if i >= max_reps or (i >= reps and elapsed >= min_s) or (i >= 3 and elapsed > budget_s):
            break
    return {k: {"best_ms": min(v), "median_ms": statistics.median(v), "reps": len(v)} for k, v in samples.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--label", default="", help="a name for this run (e.g. 'before'), kept in the JSON")
    parser.add_argument("--lmax", type=int, nargs="+", default=list(range(1, 13)))
    parser.add_argument("--n", type=int, nargs="+", default=[1_000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--dtypes", nargs="+", default=["float64", "float32"], choices=sorted(DTYPES))
    parser.add_argument("--directions", nargs="+", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"])
    parser.add_argument("--reps", type=int, default=7, help="timed repetitions of each (at most)")
    parser.add_argument("--budget", type=float, default=20.0, help="seconds per point after 3 repetitions")
    parser.add_argument("--min-time", type=float, default=2.0, help="repeat short points for this many seconds")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument(
        "--max-outputs",
        type=float,
        default=5e7,
        help="skip points with N * (l_max + 1)^2 above this (e3nn's autograd graph holds ~100x the output at 1M)",
    )
    parser.add_argument("--chunk-scan", action="store_true", help="also scan rows per chunk (CPU time, 1 thread)")
    parser.add_argument("--note", default="", help="free text kept in the JSON and the report")
    parser.add_argument("--first-call-only", action="store_true", help="only the fresh-process first-call timings")
    parser.add_argument("--no-first-call", action="store_true", help="skip the fresh-process first-call timings")
    parser.add_argument("--quick", action="store_true", help="l_max 2, 6, 12 at N = 1000 and 100000")
    args = parser.parse_args(argv)
    if args.quick:
        args.lmax, args.n, args.reps = [2, 6, 12], [1_000, 100_000], 3
    if args.first_call_only:
        args.lmax = []
    if args.threads:
        torch.set_num_threads(args.threads)

    import e3nn
    from e3nn import o3

    import equitriton

    try:  # the CPU runner; in trees before 2026-12-04 it was part of ops.py
        from equitriton import fallback as cpu_side
    except ImportError:
        from equitriton import ops as cpu_side

    meta = {
        "label": args.label,
        "note": args.note,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "e3nn": e3nn.__version__,
        "equitriton": equitriton.__version__,
        "equitriton_path": str(Path(equitriton.__file__).resolve().parent),
        "git": git_commit(),
        "cpu": cpu_info(),
        "torch_threads": torch.get_num_threads(),
        "cpu_chunk": getattr(cpu_side, "_CPU_CHUNK", None),
        "float32_compute": "float64 (equitriton); float32 (e3nn)",
        "loadavg_start": load(),
        "max_outputs": args.max_outputs,
        "normalize": True,
        "normalization": "integral",
    }
    print(json.dumps(meta), flush=True)
    results = []
    gen = torch.Generator().manual_seed(0)
    for dtype_name in args.dtypes:
        dtype = DTYPES[dtype_name]
        for lmax in args.lmax:
            ls = list(range(lmax + 1))
            mods = {"e3nn": o3.SphericalHarmonics(ls, True), "equitriton": equitriton.SphericalHarmonics(ls, True)}
            for n in args.n:
                if n * (lmax + 1) ** 2 > args.max_outputs:
                    continue
                x = torch.randn(n, 3, dtype=dtype, generator=gen)
                g = torch.randn(n, (lmax + 1) ** 2, dtype=dtype, generator=gen)
                xg = x.clone().requires_grad_(True)
                for direction in args.directions:
                    if direction == "fwd":
                        fns = {k: (lambda m=m, x=x: m(x)) for k, m in mods.items()}
                    else:
                        fns = {k: (lambda m=m, xg=xg, g=g: torch.autograd.grad(m(xg), xg, g)) for k, m in mods.items()}
                    r = time_pair(fns, args.reps, args.budget, args.min_time)
                    for impl, v in r.items():
                        results.append(
                            {"impl": impl, "dtype": dtype_name, "lmax": lmax, "n": n, "direction": direction, **v}
                        )
                    print(
                        f"{dtype_name} l_max={lmax:2d} N={n:8d} {direction:8s} e3nn {r['e3nn']['best_ms']:9.2f} ms  "
                        f"equitriton {r['equitriton']['best_ms']:9.2f} ms  "
                        f"ratio {r['equitriton']['best_ms'] / r['e3nn']['best_ms']:.2f}",
                        flush=True,
                    )
    scan = chunk_scan([1, 2, 4, 6, 9, 12], [2048, 4096, 8192, 16384, 32768, 65536]) if args.chunk_scan else []
    first = [] if args.no_first_call else first_calls(12, torch.get_num_threads())
    for r in first:
        print("first call", r, flush=True)
    meta["loadavg_end"] = load()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    report = {"meta": meta, "results": results, "first_call": first, "chunk_scan": scan}
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
