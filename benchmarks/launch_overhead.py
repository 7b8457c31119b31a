"""Host time per spherical-harmonics call at MD sizes (N = 2^12 edges), where launching costs more than the kernel.

For each l set and dtype, side by side in one process: e3nn eager; ours through the public API (the eager path,
ops.sh_eager, with the cached-kernel launch launch.run_cached and with it switched off); ours through the custom ops
(torch.ops.equitriton.*, the path torch.compile and TorchScript record); the bare Triton launch (kernel[grid]); and
the floor of any eager implementation, one elementwise torch op (x * 2) with and without autograd through it.
Two figures per call:

- `throughput_us`: R calls back to back, one synchronize at the end, wall time / R: the host cost per call whenever
  it exceeds the GPU's (at N = 2^12 the kernels take 4-15 us);
- `latency_us`: median over calls of (call + synchronize): what one call costs a caller that waits for it.

The force-training chain (forward, backward with create_graph, then the gradients of <dx, w> w.r.t. g and x, as
`sh_bench.py --directions training` times it) of every implementation of `shbench.peers` that is installed (ours, e3nn,
sphericart-torch with `. benchmarks/device_setup.sh` first): at N = 2^14 that chain is host-bound, and it is where
sh_bench has found ours slower than a peer.

Also a cProfile of the public forward + backward and of ours' training chain (top functions by own time), so the
remaining host time has names.

    python benchmarks/launch_overhead.py --out OUTDIR      # writes launch_overhead.json and launch_overhead.md
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import io
import json
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import equitriton  # noqa: E402
from equitriton.kernels import launch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shbench import isolate, peers  # noqa: E402

CASES = [([0, 1, 2], torch.float64), ([0, 1, 2], torch.float32), (list(range(7)), torch.float64)]


def _sync(device):
    torch.get_device_module(device.type).synchronize()


def _time(fn, device, reps: int) -> dict:
    for _ in range(10):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    _sync(device)
    throughput = (time.perf_counter() - t0) / reps * 1e6
    lat = []
    for _ in range(min(reps, 200)):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        lat.append((time.perf_counter() - t0) * 1e6)
    return {"throughput_us": round(throughput, 2), "latency_us": round(statistics.median(lat), 2)}


def _calls(ls, dtype, n, device):
    from e3nn import o3

    dim = sum(2 * l + 1 for l in ls)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=gen, dtype=dtype).to(device)
    g = torch.randn(n, dim, generator=gen, dtype=dtype).to(device)
    xg = x.clone().requires_grad_(True)
    e3 = o3.SphericalHarmonics(ls, True, "component").to(device)
    ours = equitriton.SphericalHarmonics(ls, True, "component")
    ops_ = torch.ops.equitriton

    def fb(f):
        return lambda: torch.autograd.grad(f(xg), xg, g)[0]

    cfg, meta, _ = launch.plan("forward", ls, True, 1, dtype)
    out = torch.empty(n, dim, dtype=dtype, device=device)
    grid = launch.grid(n, cfg)

    kernel = launch.forward_kernel(meta)

    def bare():
        kernel[grid](x, out, n, 3, 1, **meta)

    return {
        # the floor of any eager implementation: one elementwise torch op, and autograd through it
        "torch floor, one op (x * 2): forward": lambda: x * 2.0,
        "torch floor, one op (x * 2): forward + backward": lambda: torch.autograd.grad(xg * 2.0, xg, xg)[0],
        "e3nn eager: forward": lambda: e3(x),
        "e3nn eager: forward + backward": fb(e3),
        "ours, public API: forward": lambda: ours(x),
        "ours, public API: forward + backward": fb(ours),
        "ours, custom op: forward": lambda: ops_.sh_forward(x, ls, True, 1),
        "ours, custom op: forward + backward": fb(lambda v: ops_.sh_forward(v, ls, True, 1)),
        "bare Triton launch kernel[grid]: forward": bare,
    }


SKIPPED: dict = {}  # "label: training" -> why it could not run here


def _training_calls(ls, dtype, n, device) -> dict:
    """Each installed implementation's training chain (shbench.peers: the same callables sh_bench times); one that
    fails its first call is left out, with the reason in SKIPPED."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, generator=gen, dtype=dtype).to(device)
    calls = {}
    for impl in peers.load(["equitriton", "e3nn", "sphericart"], None, None).values():
        name = f"{impl.label}: training"
        if not impl.availability(device)["available"]:
            continue
        try:
            prep = impl.prepare(tuple(ls), dtype, device)
            if prep.training is None:
                continue
            g = torch.randn(n, prep.out_dim, generator=gen, dtype=dtype).to(device).requires_grad_(True)
            xl = x.clone().requires_grad_(True)
            calls[name] = lambda prep=prep, xl=xl, g=g: prep.training(xl, g, x)
            calls[name]()
        except Exception as e:
            calls.pop(name, None)
            SKIPPED[name] = f"{type(e).__name__}: {e}"[:300]
    return calls


def _nvrtc12_restart() -> None:
    """sphericart-torch's CUDA library needs a file named libnvrtc.so.12 when it loads, which a CUDA-13 machine lacks
    (shbench.isolate.nvrtc12_shim, as sh_bench's sphericart child gets it); the loader reads LD_LIBRARY_PATH at
    process start, so on CUDA this process starts again, once, with the stand-in on it."""
    if os.environ.get("LAUNCH_OVERHEAD_NVRTC12") or not torch.cuda.is_available():
        return
    extra, _ = isolate.nvrtc12_shim(Path(tempfile.mkdtemp(prefix="nvrtc12_")))
    paths = [extra.get("LD_LIBRARY_PATH", ""), os.environ.get("LD_LIBRARY_PATH", "")]
    env = dict(os.environ, LAUNCH_OVERHEAD_NVRTC12="1", LD_LIBRARY_PATH=os.pathsep.join(p for p in paths if p))
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def _profile(fn, device, reps: int) -> str:
    """cProfile of reps calls of fn: the top 25 functions by own time."""
    fn()
    _sync(device)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(reps):
        fn()
    _sync(device)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(25)
    return buf.getvalue()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--reps", type=int, default=500)
    p.add_argument("--device", default="cuda")
    p.add_argument("--lmaxes", help="l sets 0..l_max to run instead of the default cases, e.g. '12:float64,2:float32'")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    if device.type == "cuda" and argv is None:
        _nvrtc12_restart()
    cases = CASES
    if a.lmaxes:
        cases = [(list(range(int(l) + 1)), getattr(torch, d)) for l, d in (c.split(":") for c in a.lmaxes.split(","))]
    rows = []
    ours_training = None  # the first case's, profiled below
    for ls, dtype in cases:
        training = _training_calls(ls, dtype, a.n, device)
        ours_training = ours_training or training[f"{peers.Ours.label}: training"]
        calls = {**_calls(ls, dtype, a.n, device), **training}
        for name, fn in calls.items():
            rows.append({"ls": ls, "dtype": str(dtype).split(".")[-1], "call": name, **_time(fn, device, a.reps)})
        # the eager path with the cached-kernel launch switched off: kernel[grid] on every call
        launch.FAST_LAUNCH, saved = False, launch.FAST_LAUNCH
        launch._COMPILED.clear()
        try:
            calls = _calls(ls, dtype, a.n, device)
            for name in ("ours, public API: forward", "ours, public API: forward + backward"):
                r = _time(calls[name], device, a.reps)
                rows.append({"ls": ls, "dtype": str(dtype).split(".")[-1], "call": name + " (no cached launch)", **r})
        finally:
            launch.FAST_LAUNCH = saved
    # where the remaining host time goes: cProfile of the public forward + backward (l <= 2 float64) and of ours'
    # training chain (the first case's l set and dtype)
    profiles = {
        "ours (public API) forward + backward, l<=2 float64": _profile(
            _calls([0, 1, 2], torch.float64, a.n, device)["ours, public API: forward + backward"], device, a.reps
        ),
        f"ours training chain, l<={max(cases[0][0])} {str(cases[0][1]).split('.')[-1]}": _profile(
            ours_training, device, a.reps
        ),
    }
    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "torch": torch.__version__,
        "triton": __import__("triton").__version__,
        "e3nn": __import__("e3nn").__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "n": a.n,
        "reps": a.reps,
        "fast_launch_env": os.environ.get("EQUITRITON_FAST_LAUNCH", "1"),
        "not_run": SKIPPED,
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "launch_overhead.json").write_text(json.dumps({"env": env, "rows": rows}, indent=1))
    lines = [
        f"Host time per call, N = {a.n}, {env['device']}, torch {env['torch']}, triton {env['triton']}, "
        f"{env['date']} (benchmarks/launch_overhead.py)",
        "",
        "| l set | dtype | call | back to back, µs/call | call + synchronize, µs (median) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        ls = f"l<={max(r['ls'])}"
        lines.append(f"| {ls} | {r['dtype']} | {r['call']} | {r['throughput_us']:.1f} | {r['latency_us']:.1f} |")
    lines += [f"- not run: {name}: {why}" for name, why in SKIPPED.items()]
    for what, text in profiles.items():
        lines += ["", f"cProfile, {what}, top 25 by own time:", "", "```"]
        lines += [ln.rstrip() for ln in text.splitlines() if ln.strip()][:45]
        lines.append("```")
    (out / "launch_overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
