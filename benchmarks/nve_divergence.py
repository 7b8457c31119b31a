"""How fast do two NVE runs of the embedded model separate: is patched-vs-stock wider than stock-vs-stock?

    python benchmarks/nve_divergence.py --device cuda --out DIR [--steps 500]

The stability test (tests/test_stability_nve.py) asks patched and stock positions to agree within 1e-8 Å after 500
steps of the 32-atom cell at 1 fs. That bound assumes both runs are deterministic up to rounding. This script
measures, on one device, from the same start:

* force noise: the same stock model called twice on the same positions (run-to-run, from non-deterministic GPU
  reductions) and the patched model against the stock one on those positions (max |dF| / max |F|);
* trajectories: stock, a second stock run, and patched; the max over atoms of |r - r_stock| at every step for the
  second stock run and for the patched run, so the patched separation can be read against the control.

Writes DIR/nve_divergence.json and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from md_plugin.stability import build_system
from md_plugin.stability.calculators import model_factory
from md_plugin.stability.nve import initialize_velocities, run_nve


def force_noise(atoms, factories, repeats: int = 5) -> dict:
    """max |F_a - F_b| / max |F| on one rattled copy of `atoms` (the ideal lattice has zero forces): stock repeated
    (run-to-run) and patched vs stock."""
    atoms = atoms.copy()
    atoms.rattle(stdev=0.05, seed=1)
    forces = {}
    for label, factory in factories.items():
        calc = factory()
        runs = []
        for _ in range(repeats):
            a = atoms.copy()
            a.calc = calc
            runs.append(a.get_forces().copy())
        forces[label] = runs
    scale = float(np.abs(forces["stock"][0]).max())
    stock_rr = max(float(np.abs(f - forces["stock"][0]).max()) for f in forces["stock"][1:]) / scale
    patched = max(float(np.abs(f - forces["stock"][0]).max()) for f in forces["patched"]) / scale
    patched_rr = max(float(np.abs(f - forces["patched"][0]).max()) for f in forces["patched"][1:]) / scale
    return {"stock_run_to_run": stock_rr, "patched_run_to_run": patched_rr, "patched_vs_stock": patched}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--timestep-fs", type=float, default=1.0)
    ap.add_argument("--temperature", type=float, default=300.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--system", default="cu-fcc")
    ap.add_argument("--fast-step", action="store_true", help="the calculators' on-device path")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    atoms, _ = build_system(args.system)
    initialize_velocities(atoms, args.temperature, args.seed)
    fast = bool(args.fast_step)
    factories = {
        "stock": model_factory(None, patch=False, device=args.device, fast_step=fast),
        "patched": model_factory(None, patch=True, device=args.device, fast_step=fast),
    }
    t0 = time.perf_counter()
    noise = force_noise(atoms, factories)
    runs = {}
    for label, factory in (
        ("stock", factories["stock"]),
        ("stock_2", factories["stock"]),
        ("patched", factories["patched"]),
    ):
        runs[label] = run_nve(atoms, factory, args.steps, args.timestep_fs, label=label, progress=False)
    ref = runs["stock"].positions_A
    dev = {k: np.linalg.norm(runs[k].positions_A - ref, axis=2).max(axis=1) for k in ("stock_2", "patched")}
    checkpoints = [s for s in (0, 1, 10, 50, 100, 200, 300, 400, 500, 1000, 2000) if s <= args.steps]
    result = {
        "schema": "equitriton-md/nve_divergence/1",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device,
        "torch": torch.__version__,
        "case": vars(args) | {"out": str(args.out), "n_atoms": len(atoms)},
        "force_noise_rel": noise,
        "max_deviation_A": {k: float(v.max()) for k, v in dev.items()},
        "deviation_at_step_A": {k: {s: float(v[s]) for s in checkpoints} for k, v in dev.items()},
        "seconds": time.perf_counter() - t0,
    }
    (args.out / "nve_divergence.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("force_noise_rel", "max_deviation_A", "deviation_at_step_A")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
