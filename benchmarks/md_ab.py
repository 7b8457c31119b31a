"""Stock vs patched model in one compiled mode, interleaved: is the patched step slower, and where does it lose time?

    python benchmarks/md_ab.py --out DIR [--mode ours-compile] [--model nequip] [--l-max 2] [--atoms 2048]

Until 2026-11-29 `md_step.py` timed the stock case, then the patched one, minutes apart, and a median gap between
them could be drift of the machine rather than the model; it now alternates single calls of the two. Here, for one
case, both calculators are built first and timed in longer alternating rounds (stock, patched, stock, ...), so drift
hits both alike; the result is the median of the per-round medians and of the per-round patched/stock ratios. A
torch.profiler pass over each (md_step.profile_calls) records device busy time, device operations per step and the
top device kernels, which say whether the patched graph launches more or slower kernels. Writes DIR/md_ab.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import md_step as M  # noqa: E402

from md_plugin.device import resolve_device  # noqa: E402


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
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    if args.fuse_lmax is not None:  # set on the cached model make_calculator takes
        from md_plugin import patch_model

        patch_model(M.cached_model(args.model, args.l_max, device, True), fuse_lmax=args.fuse_lmax)
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="md_ab_")
    atoms = M.fcc_cu(args.atoms, seed=0)
    pool = M.PositionPool(atoms, k=4)
    calcs, setup_s = {}, {}
    for variant, patched in (("stock", False), ("patched", True)):
        calc, s = M.make_calculator(args.mode, (args.model, args.l_max, patched), device, args, workdir)
        a = atoms.copy()
        a.calc = calc
        M.time_calls(a, pool, device, warmup=5, min_reps=1, max_reps=1, min_time_s=0.0)  # compile + first calls
        calcs[variant], setup_s[variant] = a, s
    rounds = {"stock": [], "patched": []}
    for r in range(args.rounds):
        order = ("stock", "patched") if r % 2 == 0 else ("patched", "stock")
        for variant in order:
            times, _ = M.time_calls(calcs[variant], pool, device, 2, args.calls, args.calls, 0.0)
            rounds[variant].append(statistics.median(times) * 1e3)
    ratios = [p / s for p, s in zip(rounds["patched"], rounds["stock"])]
    result = {
        "schema": "equitriton-md/md_ab/1",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "device": M.device_info(device),
        "versions": M.versions(),
        "case": {"mode": args.mode, "model": args.model, "l_max": args.l_max, "n_atoms": len(atoms)},
        "patched_fuse_lmax": M._fuse_lmax(M.cached_model(args.model, args.l_max, device, True)),
        "setup_s": setup_s,
        "round_medians_ms": rounds,
        "median_ms": {k: statistics.median(v) for k, v in rounds.items()},
        "min_round_ms": {k: min(v) for k, v in rounds.items()},
        "patched_over_stock": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)},
    }
    if device.type != "cpu":
        # device busy time, device kernels and copies per step, top kernels (md_step.profile_calls)
        result["profile"] = {
            v: M.profile_calls(calcs[v].calc, calcs[v], pool, device, 10) for v in ("stock", "patched")
        }
    (args.out / "md_ab.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("case", "median_ms", "min_round_ms", "patched_over_stock")}, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
