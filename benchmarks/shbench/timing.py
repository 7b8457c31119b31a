"""Rotating input pools, the timed callables built on them, the timer, and the device-to-device copy bandwidth.

Every timed call takes the next entry of a pool of distinct input buffers whose total size exceeds the L2 cache, so
no call re-reads inputs that the previous one left in cache; on CUDA `triton.testing.do_bench` also zeroes a 256 MB
buffer before each call, so the output's lines are not in L2 either. Times are do_bench medians in milliseconds.
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

L2_FALLBACK = 50 * 2**20
MAX_GRAPHS = 256  # CUDA graphs captured per point for the graph variant (each holds its own input buffers)


def l2_bytes(device: torch.device) -> int:
    if device.type != "cuda":
        return L2_FALLBACK
    return int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0) or L2_FALLBACK)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def inputs_of(direction: str) -> tuple[str, ...]:
    """Which of x (n, 3), g (n, out_dim), w (n, 3) a direction reads."""
    if direction == "forward":
        return ("x",)
    return ("x", "g", "w") if direction in ("double_backward", "training") else ("x", "g")


def set_bytes(direction: str, n: int, out_dim: int, itemsize: int) -> int:
    """Bytes of one pool entry: the inputs a direction reads (inputs_of), n rows each."""
    widths = {"x": 3, "g": out_dim, "w": 3}
    return n * sum(widths[k] for k in inputs_of(direction)) * itemsize


def pool_size(set_bytes: int, l2: int, limit_bytes: int, cap: int | None = None) -> int:
    """Entries so the pool exceeds 1.25 x L2 (at least 2), within `limit_bytes` and `cap`."""
    p = max(2, math.ceil(1.25 * l2 / max(set_bytes, 1)))
    p = min(p, max(2, limit_bytes // max(set_bytes, 1)))
    return min(p, cap) if cap else p


@dataclass
class Pool:
    """P entries of inputs; x[i], g[i], w[i] are contiguous (n, .) views into one tensor each."""

    x: list[Tensor]
    g: list[Tensor | None]
    w: list[Tensor | None]
    nbytes: int

    @property
    def size(self) -> int:
        return len(self.x)


def make_pool(
    direction: str, n: int, out_dim: int, dtype: torch.dtype, device: torch.device, p: int, seed: int = 0
) -> Pool:
    """Random inputs: x and w standard normal, g standard normal (never all-ones)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    names = inputs_of(direction)

    def block(width):
        return torch.randn(p, n, width, dtype=dtype, device=device, generator=gen)

    x = block(3)
    g = block(out_dim) if "g" in names else None
    w = block(3) if "w" in names else None
    nbytes = sum(t.numel() * t.element_size() for t in (x, g, w) if t is not None)
    return Pool(
        x=list(x.unbind(0)),
        g=list(g.unbind(0)) if g is not None else [None] * p,
        w=list(w.unbind(0)) if w is not None else [None] * p,
        nbytes=nbytes,
    )


def calls(prepared, direction: str, pool: Pool, device: torch.device) -> tuple[Callable, Callable]:
    """(timed, first): `timed()` runs the next pool entry; `first()` runs entry 0 and returns its outputs as a tuple
    in the order of reference.reference()."""
    if direction == "forward_backward_graph":
        return _graph_calls(prepared, pool, device)
    fn = getattr(prepared, direction)
    if fn is None:
        raise ValueError(f"{direction} is not offered")
    if direction in ("forward_backward", "training"):
        pool.x = [x.detach().requires_grad_(True) for x in pool.x]
    if direction == "training":  # ddY is the gradient with respect to g
        pool.g = [g.detach().requires_grad_(True) for g in pool.g]
    args = [tuple(a for a in (pool.x[i], pool.g[i], pool.w[i]) if a is not None) for i in range(pool.size)]
    cycle = itertools.cycle(args)

    def timed():
        return fn(*next(cycle))

    def first():
        out = fn(*args[0])
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)

    return timed, first


def _graph_calls(prepared, pool: Pool, device: torch.device):
    """Forward op then backward op captured in one CUDA graph per pool entry; replays cycle over the graphs."""
    fwd, bwd = prepared.graph_ops
    outs, graphs = [], []
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):  # warm-up outside capture, as CUDA graphs require
        fwd(pool.x[0])
        bwd(pool.x[0], pool.g[0])
    torch.cuda.current_stream(device).wait_stream(side)
    mempool = None
    for i in range(pool.size):
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=mempool):
            y = fwd(pool.x[i])
            dx = bwd(pool.x[i], pool.g[i])
        mempool = graph.pool()
        graphs.append(graph)
        outs.append((y, dx))
    cycle = itertools.cycle(graphs)

    def timed():
        next(cycle).replay()

    def first():
        graphs[0].replay()
        sync(device)
        return tuple(t.clone() for t in outs[0])

    return timed, first


def probe_ms(fn: Callable, device: torch.device) -> float:
    """Wall time of one call in ms, synchronised: decides whether a point is affordable and how long to time it."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return (time.perf_counter() - t0) * 1e3


def bench_ms(fn: Callable, device: torch.device, warmup_ms: float, rep_ms: float) -> float:
    """Median time of one call of `fn` in ms: triton.testing.do_bench on CUDA; on CPU (smoke mode) a wall-clock
    median over enough calls to fill `rep_ms`."""
    if device.type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))
    t0 = time.perf_counter()
    fn()
    est = max(time.perf_counter() - t0, 1e-6) * 1e3
    times = []
    for _ in range(max(3, min(1000, int(rep_ms / est)))):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def event_times_ms(fn: Callable, device: torch.device, calls: int) -> list[float]:
    """Each of `calls` back-to-back calls of `fn` timed by CUDA events recorded between them, no profiler, in ms."""
    fn()
    sync(device)
    marks = [torch.cuda.Event(enable_timing=True) for _ in range(calls + 1)]
    marks[0].record()
    for mark in marks[1:]:
        fn()
        mark.record()
    sync(device)
    return [a.elapsed_time(b) for a, b in zip(marks, marks[1:])]


def device_times(fn: Callable, device: torch.device, calls: int = 10) -> dict[str, float]:
    """Two measures of one call's GPU time in ms, each an upper bound on it; host time enters neither while the GPU
    is the bottleneck, so these are the figures to hold against the copy bandwidth (bench_ms is what a caller waits
    for, host launch cost included). sh_bench's GPU time is the smaller (measure.Measurer).

    - `cupti_ms`: the summed durations of the kernels, memsets and copies of `calls` back-to-back calls, from
      torch.profiler (CUPTI), per call. Host gaps never enter, but the profiler can slow a kernel: the float32 l_max
      8 forward at N = 2^22 reads 456 µs under it and 427 µs by CUDA events, every call, on the H200
      (benchmarks/device_time_probe.py, docs/data/device_time_probe_h200_2026-12-04.json);
    - `event_ms` (CUDA): the median of event_times_ms. A gap between calls (a host-bound call) enters it.
    """
    from torch.profiler import ProfilerActivity, profile

    fn()
    sync(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        sync(device)
    gpu = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    times = {"cupti_ms": sum(e.time_range.elapsed_us() for e in gpu) / calls / 1e3}
    if device.type == "cuda":
        times["event_ms"] = statistics.median(event_times_ms(fn, device, calls))
    return times


def copy_gbps(device: torch.device, warmup_ms: float = 25, rep_ms: float = 100, nbytes: int = 2**31) -> float:
    """Device-to-device copy of `nbytes` (2 GiB): bytes read + written per second, in GB/s (1e9)."""
    src = torch.empty(nbytes // 8, dtype=torch.float64, device=device)
    dst = torch.empty_like(src)
    src.fill_(1.0)
    ms = bench_ms(lambda: dst.copy_(src), device, warmup_ms, rep_ms)
    return 2 * nbytes / ms / 1e6


def kernels_launched(fn: Callable, device: torch.device) -> list[str]:
    """Names of the GPU kernels (no memcpy/memset) one call of `fn` launches, from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    sync(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        sync(device)
    names = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    return [n for n in names if not n.lower().startswith(("memcpy", "memset"))]
