"""Time EquiTriton vs e3nn spherical harmonics (forward, and forward + backward) on one device.

    python examples/kernel_benchmark.py                         # 1M edges, l <= 1..6, float64 and float32
    python examples/kernel_benchmark.py --quick                 # 4096 edges, l <= 2, float64
    python examples/kernel_benchmark.py --device cuda --json bench.json

On CPU EquiTriton runs its torch fallback, so CPU numbers say nothing about the Triton kernels.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import e3nn
import torch
from _quick import parser
from e3nn import o3

import equitriton


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "xpu":
        torch.xpu.synchronize(device)


def time_ms(fn, device: torch.device, repeats: int, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``repeats`` runs (after ``warmup`` runs)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def bench(lmax: int, n: int, dtype: torch.dtype, device: torch.device, repeats: int) -> dict:
    ls = list(range(lmax + 1))
    x = torch.randn(n, 3, dtype=dtype, device=device, generator=None)
    xg = x.clone().requires_grad_(True)
    funcs = {
        "e3nn": lambda v: o3.spherical_harmonics(ls, v, normalize=True, normalization="component"),
        "equitriton": lambda v: equitriton.spherical_harmonics(ls, v, normalize=True, normalization="component"),
    }
    row: dict = {"lmax": lmax, "n": n, "dtype": str(dtype).replace("torch.", "")}
    with torch.no_grad():
        diff = (funcs["equitriton"](x) - funcs["e3nn"](x)).abs().max().item()
    row["max_abs_diff"] = diff
    for name, f in funcs.items():
        row[f"{name}_fwd_ms"] = time_ms(lambda f=f: f(x), device, repeats)

        def fwd_bwd(f=f):
            (g,) = torch.autograd.grad(f(xg).sum(), xg)
            return g

        row[f"{name}_fwd_bwd_ms"] = time_ms(fwd_bwd, device, repeats)
    row["speedup_fwd"] = row["e3nn_fwd_ms"] / row["equitriton_fwd_ms"]
    row["speedup_fwd_bwd"] = row["e3nn_fwd_bwd_ms"] / row["equitriton_fwd_bwd_ms"]
    return row


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, default=None, help="also write the table as JSON here")
    args = p.parse_args()
    from md_plugin.device import resolve_device

    device = resolve_device(args.device)
    torch.manual_seed(0)
    if args.quick:
        n, lmaxes, dtypes, repeats = 4096, [2], [torch.float64], 3
    else:
        n, lmaxes, dtypes, repeats = 1_000_000, [1, 2, 3, 4, 6], [torch.float64, torch.float32], 20
    backend = equitriton.backend_for(device)
    print(f"device {device} (equitriton backend: {backend}), torch {torch.__version__}, e3nn {e3nn.__version__}")
    header = f"{'lmax':>4} {'dtype':>8} {'N':>8} {'e3nn fwd':>10} {'eqt fwd':>10} {'x':>6} "
    header += f"{'e3nn f+b':>10} {'eqt f+b':>10} {'x':>6} {'max|diff|':>10}"
    print(header + "   (times in ms, median)")
    rows = []
    for dtype in dtypes:
        for lmax in lmaxes:
            r = bench(lmax, n, dtype, device, repeats)
            rows.append(r)
            print(
                f"{r['lmax']:>4} {r['dtype']:>8} {r['n']:>8} {r['e3nn_fwd_ms']:>10.3f} {r['equitriton_fwd_ms']:>10.3f} "
                f"{r['speedup_fwd']:>6.2f} {r['e3nn_fwd_bwd_ms']:>10.3f} {r['equitriton_fwd_bwd_ms']:>10.3f} "
                f"{r['speedup_fwd_bwd']:>6.2f} {r['max_abs_diff']:>10.2e}"
            )
            tol = 1e-10 if dtype == torch.float64 else 1e-4
            assert r["max_abs_diff"] < tol, f"equitriton and e3nn disagree: {r['max_abs_diff']}"
    if args.json is not None:
        meta = {"device": str(device), "backend": backend, "torch": torch.__version__, "e3nn": e3nn.__version__}
        args.json.write_text(json.dumps({"metadata": meta, "rows": rows}, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
