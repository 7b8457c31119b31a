"""Stock vs EquiTriton-patched NVE from identical initial conditions, through the Python API.

The same as ``equitriton-md nve --compare``, written out: build a system, make one calculator factory
per run, run the study, read the report.

    python examples/stability_compare.py                        # 108-atom Cu, 2000 steps x 2 fs (4 ps)
    python examples/stability_compare.py --quick                # 32-atom Cu, 20 steps
    python examples/stability_compare.py --model my.nequip.zip --system my.extxyz --out runs/mine
"""

from __future__ import annotations

from pathlib import Path

from _quick import parser

from md_plugin import EquiTritonCalculator, default_model_path
from md_plugin.stability import build_system, run_study
from md_plugin.stability.calculators import resolve_device


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="a .nequip.zip package (default: the embedded Cu model)")
    p.add_argument("--system", default="cu-fcc", help="preset name or structure file (default: cu-fcc)")
    p.add_argument("--out", type=Path, default=Path("stability_compare_out"), help="output directory")
    args = p.parse_args()
    size, steps = (2, 20) if args.quick else (3, 2000)

    model = args.model or str(default_model_path())
    device = resolve_device(args.device)
    atoms, spec = build_system(args.system, size if args.system == "cu-fcc" else None)

    def stock():
        return EquiTritonCalculator.from_saved_model(model, device=device, patch=False)

    def patched():
        return EquiTritonCalculator.from_saved_model(model, device=device, patch=True)

    report, results = run_study(
        atoms,
        {"stock": stock, "patched": patched},
        steps=steps,
        timestep_fs=2.0,
        temperature_K=300.0,
        seed=0,
        out_dir=args.out,
        metadata={"model": model, "system": spec.to_dict(), "device": device},
    )
    print(f"{spec.name}: {spec.n_atoms} atoms, {steps} steps on {device}")
    for label in ("stock", "patched"):
        r = report[label]
        print(
            f"  {label:8s} drift {r['drift_meV_per_atom_per_ps']:+.3e} meV/atom/ps, "
            f"fluctuation {r['fluctuation_meV_per_atom']:.3e} meV/atom, T {r['temperature_mean_K']:.0f} K, "
            f"{r['steps_per_s']:.1f} steps/s ({r['sh_backend']})"
        )
    cmp = report["comparison"]
    print(f"  max |r_patched - r_stock| = {cmp['max_position_deviation_A']:.2e} Å")
    print(f"  wrote {args.out / 'report.json'}, {args.out / 'energy.png'}, stock.traj, patched.traj")
    assert cmp["max_position_deviation_A"] < 1e-6, "patched and stock trajectories diverged"


if __name__ == "__main__":
    main()
