"""Why could sh_bench's GPU time (CUPTI durations) exceed its wall-clock median (timing.bench_ms)?

At float32 l_max 8 forward, N = 2^22, every H200 run of 2026-12-03 read do_bench's median at 425 µs (78% of copy)
and the CUPTI sum at 456 µs (72%), although back-to-back calls on one stream cannot take less wall time than their
kernels. This times the same calls (sh_bench's pool of rotating inputs, the public API) four ways, in one process:

- `bench_ms`: triton.testing.do_bench median (sh_bench's "ours");
- `cupti_ms_x3`: timing.device_times' `cupti_ms`, the CUPTI durations of 10 back-to-back calls, mean (three
  repeats; the 2026-12-04 data file names it `device_ms_x3`, from before sh_bench's GPU time became the smaller of
  this and the CUDA events);
- `cupti_per_call_us`: the same CUPTI durations for 40 back-to-back calls, per call, in order (is the start slow?);
- `event_per_call_us`: timing.event_times_ms, CUDA events between 40 back-to-back calls (no profiler).

    python benchmarks/device_time_probe.py --out OUTDIR [--points "forward:float32:8,forward:float64:8"]
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shbench.peers import load  # noqa: E402
from shbench.points import bytes_moved  # noqa: E402
from shbench.timing import (  # noqa: E402
    bench_ms,
    calls,
    copy_gbps,
    device_times,
    event_times_ms,
    make_pool,
    pool_size,
    set_bytes,
    sync,
)

DEFAULT = "forward:float32:8,forward:float32:6,forward:float32:10,forward:float64:8,backward:float32:12"


def cupti_per_call(fn, device, n_calls: int) -> list[float]:
    """GPU time of each of n_calls back-to-back calls in µs (CUPTI, events grouped per call by launch order)."""
    from torch.profiler import ProfilerActivity, profile

    def gpu_events(prof):
        ev = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        return sorted(ev, key=lambda e: e.time_range.start)

    fn()
    sync(device)
    with profile(activities=[ProfilerActivity.CUDA]) as one:
        fn()
        sync(device)
    per = len(gpu_events(one))
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(n_calls):
            fn()
        sync(device)
    ev = gpu_events(prof)
    if per == 0 or len(ev) != per * n_calls:
        raise RuntimeError(f"{len(ev)} GPU events for {n_calls} calls of {per} each")
    return [sum(e.time_range.elapsed_us() for e in ev[i * per : (i + 1) * per]) for i in range(n_calls)]


def probe(ours, direction: str, dtype: torch.dtype, lmax: int, n: int, device, copy: float) -> dict:
    ls = tuple(range(lmax + 1))
    prepared = ours.prepare(ls, dtype, device)
    dim = (lmax + 1) ** 2
    l2 = torch.cuda.get_device_properties(device).L2_cache_size
    entry = set_bytes(direction, n, dim, dtype.itemsize)
    pool = make_pool(direction, n, dim, dtype, device, pool_size(entry, l2, 8 * 2**30), seed=n)
    timed, _ = calls(prepared, direction, pool, device)
    moved = bytes_moved(direction, n, ls, str(dtype).split(".")[-1])
    bench = bench_ms(timed, device, 2.0, 10.0)
    dev = [device_times(timed, device)["cupti_ms"] for _ in range(3)]
    cupti = cupti_per_call(timed, device, 40)
    events = [1e3 * ms for ms in event_times_ms(timed, device, 40)]
    frac = lambda ms: moved / ms / 1e6 / copy  # noqa: E731
    return {
        "direction": direction,
        "dtype": str(dtype).split(".")[-1],
        "lmax": lmax,
        "n": n,
        "bytes": moved,
        "bench_ms": bench,
        "cupti_ms_x3": dev,
        "cupti_per_call_us": cupti,
        "event_per_call_us": events,
        "frac_copy": {
            "bench": frac(bench),
            "cupti_mean_of_3": frac(statistics.mean(dev)),
            "cupti_median": frac(statistics.median(cupti) / 1e3),
            "cupti_first_5_mean": frac(statistics.mean(cupti[:5]) / 1e3),
            "cupti_last_30_median": frac(statistics.median(cupti[10:]) / 1e3),
            "event_median": frac(statistics.median(events) / 1e3),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--points", default=DEFAULT, help="comma-separated direction:dtype:lmax")
    ap.add_argument("--n", type=int, default=2**22)
    args = ap.parse_args()
    device = torch.device("cuda")
    ours = load(["equitriton"], None, None)["equitriton"]
    copy = copy_gbps(device)
    rows = []
    for spec in args.points.split(","):
        direction, dt, lmax = spec.split(":")
        rows.append(probe(ours, direction, getattr(torch, dt), int(lmax), args.n, device, copy))
        f = rows[-1]["frac_copy"]
        print(spec, " ".join(f"{k} {100 * v:.1f}%" for k, v in f.items()), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "copy_GBps": copy,
        "rows": rows,
    }
    (args.out / "device_time_probe.json").write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
