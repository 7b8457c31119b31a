"""The long NVE stability run of issue 5 on one GPU: >= 1,000 atoms, >= 10 ps, stock vs patched, NequIP and Allegro.

    bash benchmarks/md_stability_gpu.sh OUT_DIR            # on the GPU machine (installs the carried wheels first)
    python benchmarks/md_stability_gpu.py --out OUT_DIR    # the same, environment already set up
    python benchmarks/md_stability_gpu.py --quick --device cpu --out DIR   # smoke test of the script (CI)
    python benchmarks/md_stability_docs.py OUT_DIR/nequip OUT_DIR/allegro --dest docs/stability_h100 --section h100

Defaults: the shipped float64 models (``md_plugin/data/{nequip,allegro}_cu_emt.nequip.zip``), a 7x6x6 fcc Cu supercell
(1,008 atoms), 300 K, 2 fs x 5,000 steps = 10 ps, one position frame every 50 steps (energies every step), stock and
patched from identical initial conditions through ``md_plugin.stability.run_study`` -- the code behind
``equitriton-md nve --compare``. Each model's study is written to OUT_DIR/<model>/ (report.json, energy.png,
<run>.traj, <run>_energy.csv); OUT_DIR/plan.json records the calibration and the choices below.

Before the long runs, a calibration times ``--calibrate-steps`` velocity-Verlet steps of every (model, SH, calculator
path) on the same system: nequip's data path (host neighbour list) and, if vesin-torch works here, the on-device path
(``EquiTritonCalculator(fast_step=True)``). Per model the path with the lower stock + patched step time is used for
both of its runs (a fair comparison on the fastest correct path). From the timings it projects the wall time; if that
does not fit ``--budget-s`` (default 220 s for everything this process does), it stops before the long runs with exit
code 4 and the projection in plan.json, unless ``--over-budget run``. A ``stock_repeat`` control run (the stock model
again: how far two runs of the *same* model separate on this device) is added per model, in order, while the
projection still fits (``--control auto``; ``on``/``off`` to force).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

T_START = time.perf_counter()

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

EXIT_OVER_BUDGET = 4
#: calculator paths: nequip's data path, the on-device step, the on-device step through torch.compile
FAST_STEP: dict[str, bool | str] = {"default": False, "fast": True, "compile": "compile"}
PATH_DESCRIPTION = {
    "default": "nequip data path (host neighbour list)",
    "fast": "on-device (fast_step=True)",
    "compile": "on-device + torch.compile (fast_step='compile')",
}
#: per-run fixed cost on top of steps x step time (model load, first call, plot/report), s; replaced by measurements
DEFAULT_RUN_OVERHEAD_S = 5.0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/md_stability_gpu"), help="output directory")
    p.add_argument("--models", nargs="+", default=["nequip", "allegro"], choices=["nequip", "allegro"])
    p.add_argument("--device", default="cuda", help="cuda (default), xpu or cpu")
    p.add_argument("--size", default="7x6x6", help="fcc Cu repeats, N or AxBxC (default 7x6x6 = 1,008 atoms)")
    p.add_argument("--steps", type=int, default=5000, help="MD steps per run (default 5000)")
    p.add_argument("--timestep-fs", type=float, default=2.0, help="time step in fs (default 2.0)")
    p.add_argument("--temperature", type=float, default=300.0, help="initial temperature in K (default 300)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--record-interval", type=int, default=50, help="position/trajectory frame every N steps")
    p.add_argument("--calibrate-steps", type=int, default=30, help="timed steps per calibration case")
    p.add_argument(
        "--paths",
        nargs="+",
        default=["default", "fast"],
        choices=list(FAST_STEP),
        help="calculator paths to calibrate (default: default fast; 'compile' adds torch.compile, slow to start)",
    )
    p.add_argument("--control", choices=["auto", "on", "off"], default="auto", help="stock_repeat control runs")
    p.add_argument("--budget-s", type=float, default=220.0, help="wall-time budget of this process (s)")
    p.add_argument("--over-budget", choices=["abort", "run"], default="abort")
    p.add_argument("--quick", action="store_true", help="tiny smoke run: 32 atoms, 20 steps, 5 calibration steps")
    return p


def _elapsed() -> float:
    return time.perf_counter() - T_START


def _calibrate(model_path: str, patch: bool, path: str, device: str, atoms, timestep_fs: float, steps: int) -> dict:
    """Time ``steps`` velocity-Verlet steps (after a warm-up) of one model/SH/path; errors are recorded, not raised."""
    from ase import units
    from ase.md.verlet import VelocityVerlet

    from md_plugin.stability.calculators import model_factory

    out: dict = {"path": path, "patched": patch}
    t0 = time.perf_counter()
    try:
        calc = model_factory(model_path, patch=patch, device=device, fast_step=FAST_STEP[path])()
        work = atoms.copy()
        work.set_momenta(atoms.get_momenta())
        work.calc = calc
        work.get_forces()
        out["load_and_first_call_s"] = time.perf_counter() - t0
        dyn = VelocityVerlet(work, timestep=timestep_fs * units.fs)
        dyn.run(5)  # warm-up (allocator, kernel caches)
        t1 = time.perf_counter()
        dyn.run(steps)
        out["step_s"] = (time.perf_counter() - t1) / steps
        out["sh_backend"] = getattr(calc, "sh_backend", None)
    except Exception as exc:  # a path that does not work here is reported, and not used
        out["error"] = f"{type(exc).__name__}: {exc}"[:500]
    out["calibration_s"] = time.perf_counter() - t0
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.quick:
        args.size, args.steps, args.calibrate_steps, args.record_interval = "2", 20, 5, 5
    from md_plugin import default_model_path
    from md_plugin.stability import build_system, initialize_velocities, run_study
    from md_plugin.stability.calculators import model_factory, resolve_device
    from md_plugin.stability.report import device_description, git_revision

    device = resolve_device(args.device)
    atoms, spec = build_system("cu-fcc", args.size)
    start = atoms.copy()
    initialize_velocities(start, args.temperature, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    plan: dict = {
        "device": device,
        "device_name": device_description(device),
        "system": spec.to_dict(),
        "steps": args.steps,
        "timestep_fs": args.timestep_fs,
        "simulated_time_ps": args.steps * args.timestep_fs * 1e-3,
        "budget_s": args.budget_s,
        "argv": sys.argv[1:] if argv is None else list(argv),
        "calibration": {},
        "models": {},
    }
    print(f"{spec.n_atoms} atoms, {args.steps} x {args.timestep_fs} fs on {plan['device_name']}", flush=True)

    # --- calibration: per model, every (path, SH) -----------------------------------------------------------
    choices = {}
    for kind in args.models:
        model_path = str(default_model_path(kind))
        cases = []
        for path in args.paths:
            for patch in (False, True):
                case = _calibrate(model_path, patch, path, device, start, args.timestep_fs, args.calibrate_steps)
                cases.append(case)
                label = "patched" if patch else "stock"
                what = f"{case['step_s'] * 1e3:.2f} ms/step" if "step_s" in case else case["error"]
                print(f"  calibrate {kind:8s} {path:8s} {label:8s} {what}", flush=True)
        plan["calibration"][kind] = cases
        usable = {}
        for path in args.paths:
            pair = [c for c in cases if c["path"] == path and "step_s" in c]
            if len(pair) == 2:
                usable[path] = pair
        if not usable:
            print(f"no working calculator path for {kind}", file=sys.stderr)
            (args.out / "plan.json").write_text(json.dumps(plan, indent=2) + "\n")
            return 1
        best = min(usable, key=lambda p: sum(c["step_s"] for c in usable[p]))
        pair = usable[best]
        step_s = {("patched" if c["patched"] else "stock"): c["step_s"] for c in pair}
        overhead = max(DEFAULT_RUN_OVERHEAD_S, max(c["load_and_first_call_s"] for c in pair) + 1.0)
        choices[kind] = {"path": best, "step_s": step_s, "run_overhead_s": overhead}

    # --- plan: base runs, then controls while they fit --------------------------------------------------------
    def run_cost(kind: str, label: str) -> float:
        c = choices[kind]
        sh = "patched" if label == "patched" else "stock"
        return args.steps * c["step_s"][sh] * 1.05 + c["run_overhead_s"]

    labels = {kind: ["stock", "patched"] for kind in args.models}
    projected = _elapsed() + sum(run_cost(k, lab) for k in args.models for lab in labels[k])
    for kind in args.models:
        if args.control == "on" or (
            args.control == "auto" and projected + run_cost(kind, "stock_repeat") <= args.budget_s
        ):
            labels[kind].append("stock_repeat")
            projected += run_cost(kind, "stock_repeat")
    plan["projected_total_s"] = projected
    plan["models"] = {k: {**choices[k], "runs": labels[k]} for k in args.models}
    (args.out / "plan.json").write_text(json.dumps(plan, indent=2) + "\n")
    print(f"plan: {json.dumps(plan['models'])}\nprojected total {projected:.0f} s of {args.budget_s:.0f} s", flush=True)
    if projected > args.budget_s and args.over_budget == "abort":
        print(
            f"projected {projected:.0f} s exceeds --budget-s {args.budget_s:.0f}: not starting the long runs "
            "(plan.json has the step times; rerun with fewer --models, or --over-budget run)",
            file=sys.stderr,
        )
        return EXIT_OVER_BUDGET

    # --- the long runs ---------------------------------------------------------------------------------------------
    for kind in args.models:
        model_path = str(default_model_path(kind))
        path = choices[kind]["path"]
        factories = {
            label: model_factory(model_path, patch=(label == "patched"), device=device, fast_step=FAST_STEP[path])
            for label in labels[kind]
        }
        metadata = {
            "benchmark": "benchmarks/md_stability_gpu.py",
            "command": "python benchmarks/md_stability_gpu.py " + " ".join(plan["argv"]),
            "model": f"md_plugin/data/{Path(model_path).name}",
            "model_kind": kind,
            "model_is_default": kind == "nequip",
            "fast_step": FAST_STEP[path],
            "calculator_path": PATH_DESCRIPTION[path],
            "calibration_step_ms": {k: v * 1e3 for k, v in choices[kind]["step_s"].items()},
            "system": spec.to_dict(),
            "device": device,
            "device_name": plan["device_name"],
            "git_revision": git_revision(),
        }
        t0 = time.perf_counter()
        report, _ = run_study(
            atoms,
            factories,
            steps=args.steps,
            timestep_fs=args.timestep_fs,
            temperature_K=args.temperature,
            seed=args.seed,
            out_dir=args.out / kind,
            metadata=metadata,
            record_interval=args.record_interval,
            progress=False,
        )
        row = ", ".join(
            f"{lab}: drift {report[lab]['drift_meV_per_atom_per_ps']:+.3e} meV/atom/ps, "
            f"{report[lab]['steps_per_s']:.1f} steps/s"
            for lab in labels[kind]
        )
        print(f"{kind}: {time.perf_counter() - t0:.0f} s; {row}", flush=True)
        for lab, cmp in report.get("comparisons", {}).items():
            print(f"  {lab} vs stock: max deviation {cmp['max_position_deviation_A']:.3e} Å", flush=True)
    plan["total_s"] = _elapsed()
    (args.out / "plan.json").write_text(json.dumps(plan, indent=2) + "\n")
    print(f"done in {plan['total_s']:.0f} s; outputs in {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
