"""Stock vs patched model in one compiled mode, interleaved: is the patched step slower, and where does it lose time?

    python benchmarks/md_ab.py --out DIR [--mode ours-compile] [--model nequip] [--l-max 2] [--atoms 2048]
                               [--fuse-lmax K] [--also-fuse-lmax K ...] [--builds B] [--pin-cpu CORE] [--dump-code]

Until 2026-11-29 `md_step.py` timed the stock case, then the patched one, minutes apart, and a median gap between
them could be drift of the machine rather than the model; it now alternates single calls of the two. Here, for one
case, both calculators are built first and timed in longer alternating rounds (stock, patched, stock, ...), so drift
hits both alike; with --also-fuse-lmax, further patched variants (another fuse_lmax: op against fusion) join the
rotation (under ours-aoti each variant is its own nequip-compile artifact, its SH given fuse_lmax before the
modifier runs; with --builds B, each artifact is built B times, since two builds of one model differ in Inductor's
autotuned kernels and can differ in speed). The result is the median of the per-round medians and of the per-round
patched/stock ratios. A torch.profiler pass over each (md_step.profile_calls) records device busy time, device
operations per step and every device kernel's time, which say whether the patched graph launches more or slower
kernels; --dump-code keeps the kernels Inductor generated for each variant (DIR/code/), so that a kernel slower in
one variant can be read next to its counterpart. Writes DIR/md_ab.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import md_step as M  # noqa: E402

from md_plugin import patch_model  # noqa: E402
from md_plugin.device import resolve_device  # noqa: E402


@contextlib.contextmanager
def generated_code_to(dest: Optional[Path], variant: str, files: Dict[str, List[str]]):
    """Compiles inside this block write their kernels into a fresh Inductor cache directory; afterwards its Triton
    kernels, Inductor's wrappers and C++ sources are gathered into one flat file per kind under
    ``dest`` (the device tool does not return Inductor's deep trees), sorted by kernel name so that two variants
    diff kernel by kernel. ``files[variant]``: the files written. ``dest`` None: nothing changes."""
    if dest is None:
        yield
        return
    before = os.environ.get("TORCHINDUCTOR_CACHE_DIR")  # read by Inductor at each use
    cache = tempfile.mkdtemp(prefix=f"inductor_{variant.replace('#', '_')}_")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
        else:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = before
        dest.mkdir(parents=True, exist_ok=True)
        files[variant] = _gather_sources(Path(cache), dest, variant.replace("#", "_b"))


def _unhashed(name: str) -> str:
    """A cache file's name without Inductor's hash of its content and build paths ("c4b...x.kernel.cpp" ->
    ".kernel.cpp"), which differs between two builds of one graph."""
    return re.sub(r"^[a-z0-9]{20,}", "", name)


def _gather_sources(cache: Path, dest: Path, stem: str) -> List[str]:
    """Triton kernels (a file each) to <stem>.triton.py; Inductor's Python wrappers (the graph: kernel launches in
    order, and on CPU the C++ kernels as strings) to <stem>.wrapper.py; C++ kernels and AOTInductor wrappers to
    <stem>.cpp. Left out: the cache's other files (Inductor's ISA probes, build artifacts)."""
    groups = {".triton.py": [], ".wrapper.py": [], ".cpp": []}
    for path in (p for p in cache.rglob("*") if p.is_file() and p.suffix in (".py", ".cpp")):
        text = path.read_text(errors="replace")
        if path.suffix == ".py" and "@triton.jit" in text and "async_compile" not in text:
            name = re.search(r"def (triton_\w+)", text)
            groups[".triton.py"].append((name.group(1) if name else path.name, path, text))
        elif path.suffix == ".py" and "async_compile" in text:
            groups[".wrapper.py"].append((_unhashed(path.name), path, text))
        elif path.suffix == ".cpp" and ("cpp_fused" in text or "AOTInductorModel" in text):
            groups[".cpp"].append((_unhashed(path.name), path, text))
    written = []
    for suffix, sources in groups.items():
        if sources:  # by name without Inductor's content hash (".kernel.cpp", ".wrapper.cpp"), then by text
            sources.sort(key=lambda s: (s[0], s[2]))
            out = dest / (stem + suffix)
            out.write_text("".join(f"\n# ---- {name} ({p.relative_to(cache)})\n{text}" for name, p, text in sources))
            written.append(str(out))
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--mode", default="ours-compile", choices=["ours-fast", "ours-compile", "ours-graph", "ours-aoti"])
    ap.add_argument("--model", default="nequip", choices=["nequip", "allegro", "allegro-uncoupled"])
    ap.add_argument("--l-max", type=int, default=2)
    ap.add_argument("--atoms", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--calls", type=int, default=20, help="timed calls per round and model")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile-backend", default="inductor")
    ap.add_argument(
        "--fuse-lmax",
        type=int,
        default=None,
        help="the patched model's fuse_lmax (md_plugin.patch_model), e.g. 0 to time the custom op where the shipped "
        "policy traces fusable ops; default: the shipped policy",
    )
    ap.add_argument(
        "--also-fuse-lmax",
        type=int,
        action="append",
        default=[],
        metavar="K",
        help="also time a second patched model with fuse_lmax K (repeatable) in the same rounds: variant "
        "'patched_fuse<K>', so that op and fusion are compared in one process without a second compile of stock",
    )
    ap.add_argument(
        "--builds",
        type=int,
        default=1,
        help="ours-aoti: build each variant's artifact this many times (variants '<name>#<i>' for i >= 1), with "
        "Inductor's caches off so that each build compiles and autotunes afresh: the spread between builds of one "
        "model is the yardstick for a gap between stock and patched",
    )
    ap.add_argument(
        "--pin-cpu",
        type=int,
        default=None,
        metavar="CORE",
        help="after the builds, pin the timing thread to this CPU core: the step is host-bound, and a thread moving "
        "between cores spreads the round medians",
    )
    ap.add_argument(
        "--dump-code",
        action="store_true",
        help="write the code Inductor generates for each variant to OUT/code/: <variant>.triton.py (Triton kernels), "
        "<variant>.wrapper.py (Python wrappers), <variant>.cpp (C++ kernels, AOTInductor wrappers), one flat file "
        "per kind, to diff stock's against patched's",
    )
    args = ap.parse_args(argv)
    aoti = args.mode == "ours-aoti"
    if args.builds < 1 or (args.builds > 1 and not aoti):
        ap.error("--builds K > 1 is for --mode ours-aoti")
    if args.builds > 1:  # a second build would otherwise reuse the first one's compiled and autotuned kernels
        import torch._inductor.config as inductor_config

        with inductor_config.patch(force_disable_caches=True):
            return run(args, aoti)
    return run(args, aoti)


def run(args, aoti: bool) -> int:
    device = resolve_device(args.device)
    if args.fuse_lmax is not None and not aoti:  # set on the cached model make_calculator takes
        patch_model(M.cached_model(args.model, args.l_max, device, True), fuse_lmax=args.fuse_lmax)
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="md_ab_")
    atoms = M.fcc_cu(args.atoms, seed=0)
    pool = M.PositionPool(atoms, k=4)
    # (variant, patched, model, fuse_lmax): model None takes md_step's cached model; extra variants get their own
    # patched copy; ours-aoti builds an artifact per variant, with fuse_lmax set before nequip-compile's modifier
    variants = [("stock", False, None, None), ("patched", True, None, args.fuse_lmax if aoti else None)]
    for k in args.also_fuse_lmax:
        extra = None
        if not aoti:
            extra = M.build_model(args.model, args.l_max, device, patched=True)
            patch_model(extra, fuse_lmax=k)
        variants.append((f"patched_fuse{k}", True, extra, k if aoti else None))
    variants = [(v if b == 0 else f"{v}#{b}", *rest, b) for b in range(args.builds) for v, *rest in variants]
    calcs, setup_s, fuse, code_files = {}, {}, {}, {}
    for variant, patched, model, k, build in variants:
        build_dir = os.path.join(workdir, f"b{build}")  # each build its own artifact file
        os.makedirs(build_dir, exist_ok=True)
        with generated_code_to(args.out / "code" if args.dump_code else None, variant, code_files):
            calc, s = M.make_calculator(
                args.mode, (args.model, args.l_max, patched), device, args, build_dir, model=model, fuse_lmax=k
            )
        a = atoms.copy()
        a.calc = calc
        M.time_calls(a, pool, device, warmup=5, min_reps=1, max_reps=1, min_time_s=0.0)  # compile + first calls
        calcs[variant], setup_s[variant] = a, s
        fuse[variant] = calc.built_sh_fuse_lmax  # of the model timed (ours-aoti: the artifact's)
    names = [v for v, *_ in variants]
    affinity = os.sched_getaffinity(0)
    if args.pin_cpu is not None:  # only now: the builds compile in parallel
        os.sched_setaffinity(0, {args.pin_cpu})
    rounds = {v: [] for v in names}
    try:
        for r in range(args.rounds):
            shift = r % len(names)  # each variant takes each place in the order equally often
            for variant in names[shift:] + names[:shift]:
                times, _ = M.time_calls(calcs[variant], pool, device, 2, args.calls, args.calls, 0.0)
                rounds[variant].append(statistics.median(times) * 1e3)
    finally:
        os.sched_setaffinity(0, affinity)

    def over_stock(v):
        ratios = [p / s for p, s in zip(rounds[v], rounds["stock"])]
        return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}

    def pooled(v):  # all builds of a variant together
        return statistics.median(t for name in names if name.split("#")[0] == v for t in rounds[name])

    result = {
        "schema": "equitriton-md/md_ab/1",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "device": M.device_info(device),
        "versions": M.versions(),
        "case": {"mode": args.mode, "model": args.model, "l_max": args.l_max, "n_atoms": len(atoms)},
        "pinned_cpu": args.pin_cpu,
        "patched_fuse_lmax": fuse["patched"],
        "fuse_lmax": fuse,
        "setup_s": setup_s,
        "round_medians_ms": rounds,
        "median_ms": {k: statistics.median(v) for k, v in rounds.items()},
        "min_round_ms": {k: min(v) for k, v in rounds.items()},
        "patched_over_stock": over_stock("patched"),
        "over_stock": {v: over_stock(v) for v in names[1:]},
    }
    if args.builds > 1:  # medians over every round of every build of a variant, and their ratio to stock's
        bases = [v for v in names if "#" not in v]
        result["builds"] = args.builds
        result["pooled_median_ms"] = {v: pooled(v) for v in bases}
        result["pooled_over_stock"] = {v: pooled(v) / pooled("stock") for v in bases[1:]}
    if device.type != "cpu":
        # device busy time, device kernels and copies per step, top kernels (md_step.profile_calls)
        # (every device kernel, by its full name: Inductor's index ties it to its source in --dump-code's files)
        result["profile"] = {v: M.profile_calls(calcs[v].calc, calcs[v], pool, device, 10, None) for v in names}
    if args.dump_code:
        result["code_files"] = code_files
    (args.out / "md_ab.json").write_text(json.dumps(result, indent=1))
    print(
        json.dumps(
            {
                k: result[k]
                for k in ("case", "fuse_lmax", "median_ms", "min_round_ms", "over_stock", "pooled_over_stock")
                if k in result
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
