"""Spherical-harmonics benchmark (issue 3): ours vs peers, forward / backward / forward+backward / double backward.

    . benchmarks/device_setup.sh && python benchmarks/sh_bench.py --out OUT --peers-dir .peers   # full, ~8 min (H100)
    python benchmarks/sh_bench.py --out OUT --quick                                              # subset, ~1 min

Writes OUT/sh_bench.json (raw: device, driver, versions, date, every point; rewritten as points land, so a run cut
short keeps what it measured), OUT/summary.md (tables, targets) and OUT/child_logs/ (each child's stderr).
Each implementation runs in its own child process, so a peer that crashes or breaks its CUDA context costs only its
point in flight (recorded as an error with the child's error text) and its other points at that N.
`python benchmarks/report_sh.py --json OUT/sh_bench.json` builds docs/performance.md and its plots from the JSON.
Needs a CUDA GPU; `--allow-cpu` runs the pipeline on CPU as a smoke test (numbers meaningless).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [p for p in (str(REPO), str(Path(__file__).resolve().parent)) if p not in sys.path]

from shbench import points as P  # noqa: E402

# The whole default run, Triton compiles included, ends within DEADLINE_S + --grace-s (+ the summary): ~470 s.
DEADLINE_S = 420.0
COMPILE_S = 240.0


def _ints(text: str) -> list[int]:
    """'2^12,4096' -> [4096, 4096]."""
    out = []
    for v in text.split(","):
        base, _, exp = v.strip().partition("^")
        out.append(int(base) ** int(exp) if exp else int(base))
    return out


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="output folder (sh_bench.json, summary.md)")
    ap.add_argument("--quick", action="store_true", help="l<=2 and l<=4, N = 2^12 and 2^22: under a minute")
    ap.add_argument("--peers-dir", type=Path, default=None, help="holds equitriton_orig/ (get_peers.py)")
    ap.add_argument("--impls", default=",".join(P.IMPL_ORDER), help="comma-separated: " + ",".join(P.IMPL_ORDER))
    ap.add_argument("--lsets", default=None, help="';'-separated l sets, e.g. '2;6;[0,2,10]' (default: all 11)")
    ap.add_argument("--ns", type=_ints, default=None, help="comma-separated N, e.g. '2^12,2^22' (default 2^10..2^24)")
    ap.add_argument("--dtypes", default=",".join(P.DTYPES))
    ap.add_argument("--directions", default=",".join(P.DIRECTIONS))
    ap.add_argument(
        "--deadline-s",
        type=float,
        default=None,
        help=f"no point starts after this (default {DEADLINE_S:.0f}; quick 60)",
    )
    ap.add_argument("--grace-s", type=float, default=40.0, help="after the deadline: children still busy are killed")
    ap.add_argument(
        "--compile-budget-s", type=float, default=None, help=f"compile workers stop (default {COMPILE_S:.0f}; quick 25)"
    )
    ap.add_argument("--workers", type=int, default=None, help="compile worker processes (default: cores - 4, <= 12)")
    ap.add_argument("--point-timeout-s", type=float, default=150.0, help="a child silent this long is killed")
    ap.add_argument("--max-call-ms", type=float, default=250.0, help="skip points predicted slower per call")
    ap.add_argument("--warmup-ms", type=float, default=2.0)
    ap.add_argument("--rep-ms", type=float, default=10.0)
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every point this many times, round after round (within a round the implementations of a "
        "point run one after another), and record the median round (results.merge_rounds): for host-bound points, "
        "whose time drifts with the host over seconds",
    )
    ap.add_argument("--allow-cpu", action="store_true", help="smoke-run the pipeline on CPU (no meaningful numbers)")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error(f"--rounds must be at least 1, got {args.rounds}")
    return args


def plan(args) -> list[P.Point]:
    lsets = [P.parse_lset(s) for s in args.lsets.split(";")] if args.lsets else None
    lsets = lsets or (P.QUICK_LSETS if args.quick else P.LSETS)
    ns = args.ns or (P.QUICK_NS if args.quick else P.NS)
    impls = [i for i in args.impls.split(",") if i]
    unknown = set(impls) - set(P.IMPL_ORDER)
    if unknown:
        raise SystemExit(f"--impls: unknown {sorted(unknown)}; known: {list(P.IMPL_ORDER)}")
    return P.grid(impls, lsets, args.dtypes.split(","), ns, args.directions.split(","))


class _Interrupted(Exception):
    pass


def _on_term(signum, frame):
    raise _Interrupted(f"signal {signum}")


def main(argv=None) -> int:
    t_start = time.monotonic()
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        print(
            "sh_bench: no CUDA GPU here (torch.cuda.is_available() is False). It times CUDA kernels: run it on the "
            "GPU machine, or pass --allow-cpu to smoke-test the pipeline on CPU (numbers are meaningless).",
            file=sys.stderr,
        )
        return 2
    from shbench import peers, report, results, timing
    from shbench.isolate import nvrtc12_shim
    from shbench.runner import Budget, Children, Runner, compile_jobs
    from shbench.warm import WarmPool

    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    quick = args.quick
    deadline_s = args.deadline_s or (60.0 if quick else DEADLINE_S)
    compile_s = args.compile_budget_s or (25.0 if quick else COMPILE_S)
    # leave cores for the timing child and the children's imports: a starved launch thread inflates small-N times
    default_workers = max(1, min(12, (os.cpu_count() or 4) - 4)) if device.type == "cuda" else 0
    workers = args.workers if args.workers is not None else default_workers
    pts = plan(args)
    args.out.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(tempfile.mkdtemp(prefix="sh_bench_"))
    peers_dir = args.peers_dir.resolve() if args.peers_dir else None
    impls = peers.load({p.impl for p in pts}, peers_dir, cache_dir)
    budget = Budget(
        deadline=t_start + deadline_s,
        hard_end=t_start + deadline_s + args.grace_s,
        compile_deadline=t_start + compile_s,
        compile_s=compile_s,
        max_call_ms=args.max_call_ms,
        point_timeout_s=args.point_timeout_s,
    )
    extra_env, shim_note = {}, None
    if "sphericart" in impls and device.type == "cuda":
        env, shim_note = nvrtc12_shim(cache_dir / "sphericart_libs")
        extra_env["sphericart"] = env
    meta = _meta(args, device, impls, deadline_s, compile_s, workers, peers_dir, results, shim_note)
    writer = results.Writer(args.out / "sh_bench.json", meta)
    writer.flush(force=True)
    signal.signal(signal.SIGTERM, _on_term)
    warm = WarmPool(compile_jobs(pts, impls), workers, list(impls), peers_dir, cache_dir)
    meta["interrupted"] = None
    children = None
    try:
        warm.start()
        print(f"sh_bench: {len(pts)} points, {len(warm.jobs)} compile jobs on {workers} workers", flush=True)
        meta["copy_gbps"] = _copy_gbps(device, timing)
        print(f"sh_bench: device-to-device copy {meta['copy_gbps']:.0f} GB/s", flush=True)
        cfg = {
            "peers_dir": str(peers_dir) if peers_dir else None,
            "cache_dir": str(cache_dir),
            "device": str(device),
            "limits": {"max_call_ms": args.max_call_ms, "warmup_ms": args.warmup_ms, "rep_ms": args.rep_ms},
            "copy_gbps": meta["copy_gbps"],
            "l2": timing.l2_bytes(device),
        }
        children = Children(cfg, args.out / "child_logs", extra_env)
        runner = Runner(impls, meta["impls"], children, device, writer, warm, budget)
        for r in range(args.rounds):
            if args.rounds > 1:
                print(f"sh_bench: round {r + 1} of {args.rounds}", flush=True)
            runner.run(pts)
        meta["launches"] = runner.count_launches(sorted({p.ls for p in pts}))
        writer.doc["finished"] = True
    except (_Interrupted, KeyboardInterrupt) as e:
        meta["interrupted"] = str(e) or "KeyboardInterrupt"
    finally:
        if children is not None:
            children.close_all(graceful=meta["interrupted"] is None)
        if not warm.finished:
            warm.stop("the run ended before the job finished")
        meta["warm"] = warm.summary()
        meta["elapsed_s"] = round(time.monotonic() - t_start, 1)
        writer.flush(force=True)
    return _finish(writer.doc, args.out, results, report)


def _copy_gbps(device, timing) -> float:
    """Device-to-device copy bandwidth, measured here in the parent (a plain copy cannot break the context); its
    2 x 2 GiB are given back at once, the children need the memory."""
    if device.type != "cuda":
        return 1.0
    import torch

    gbps = timing.copy_gbps(device)
    torch.cuda.empty_cache()
    return gbps


def _meta(args, device, impls, deadline_s, compile_s, workers, peers_dir, results, shim_note) -> dict:
    from shbench.runner import TOL, tolerance

    from equitriton.kernels import launch

    return {
        "date_utc": results.now_utc(),
        "command": results.command_line(),
        "quick": args.quick,
        "device": results.device_info(device),
        "versions": results.versions(),
        "git": results.git_state(REPO),
        "copy_gbps": None,
        "timing": {
            "method": "triton.testing.do_bench median (CUDA events; L2 flushed by a 256 MB memset before each call)"
            if device.type == "cuda"
            else "CPU smoke mode: wall-clock median (meaningless)",
            "warmup_ms": args.warmup_ms,
            "rep_ms": args.rep_ms,
            "rotation": "each call takes the next entry of a pool of distinct input buffers (x, dY, w) whose total "
            "exceeds 1.25 x L2 (at least 2 entries; the CUDA-graph variant at most 256 graphs)",
            "check": "before timing, the timed call's output (first and last 2048 rows of pool entry 0) is compared "
            "with e3nn in float64 in the implementation's convention; max|out-ref|/max|ref| must be <= "
            + ", ".join(f"{v:.0e} ({'ours' if k[0] else 'peers'}, {k[1]})" for k, v in TOL.items())
            + ", else the point is 'wrong' and not timed"
            + (
                f" (this run: ours float32 {tolerance(True, 'float32'):.0e}, native float32 arithmetic)"
                if launch.FLOAT32_COMPUTE == "float32"
                else ""
            ),
            "float32_compute": launch.FLOAT32_COMPUTE,
            "rounds": args.rounds,
            "isolation": "each implementation is measured in its own child process; a child that dies, hangs or "
            "breaks its CUDA context costs the point in flight (status 'error', the child's error text as reason) "
            "and that implementation's other points at that N; a fresh child measures the rest",
            "budgets": f"deadline {deadline_s:.0f} s (+{args.grace_s:.0f} s for the points in flight), compile "
            f"phase {compile_s:.0f} s with {workers} workers, --max-call-ms {args.max_call_ms:.0f}, "
            f"--point-timeout-s {args.point_timeout_s:.0f}",
        },
        "bytes_model": P.BYTES_MODEL,
        "impls": {
            n: {
                "label": i.label,
                "convention": i.convention,
                "notes": i.notes,
                "setup": shim_note if n == "sphericart" else None,
                "available": None,  # filled from the child's answer when it starts
                "version": None,
                "reason": "not started (no point of it was planned or the run ended first)",
            }
            for n, i in impls.items()
        },
        "peers_manifest": _manifest(peers_dir),
        "launches": [],
    }


def _finish(doc: dict, out: Path, results, report) -> int:
    problems = results.validate(doc)
    summary = report.summary_markdown(doc)
    (out / "summary.md").write_text(summary)
    print(summary)
    print(f"sh_bench: wrote {out / 'sh_bench.json'} and summary.md in {doc['meta']['elapsed_s']} s", flush=True)
    if problems:
        print("sh_bench: schema problems: " + "; ".join(problems[:10]), file=sys.stderr)
        return 1
    return 0


def _manifest(peers_dir: Path | None) -> dict | None:
    """`MANIFEST.json` written by benchmarks/get_peers.py (what was carried and why), if present."""
    if peers_dir is None or not (peers_dir / "MANIFEST.json").exists():
        return None
    return json.loads((peers_dir / "MANIFEST.json").read_text())


if __name__ == "__main__":
    sys.exit(main())
