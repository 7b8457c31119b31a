"""The EquiTriton ASE calculator on the embedded tiny Cu NequIP model.

Computes energy, forces and stress of an fcc Cu cell with the patched (EquiTriton) model and with the
stock e3nn model, shows they agree, then runs a short NVE trajectory with the patched one.

    python examples/calculator_default_model.py            # 108 atoms, 200 MD steps
    python examples/calculator_default_model.py --quick    # 32 atoms, 10 MD steps
"""

from __future__ import annotations

import time

import numpy as np
from _quick import parser
from ase import units
from ase.build import bulk
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.md.verlet import VelocityVerlet

from md_plugin import EquiTritonCalculator, default_model_path


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    size, steps = (2, 10) if args.quick else (3, 200)
    model = default_model_path()
    print(f"model: {model}")

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(size)
    atoms.rattle(stdev=0.05, seed=1)  # off the perfect lattice so that forces are not all zero

    patched = EquiTritonCalculator.from_saved_model(model, device=args.device)  # patch=True is the default
    stock = EquiTritonCalculator.from_saved_model(model, device=args.device, patch=False)
    print(f"device: {patched.device}; SH backend patched: {patched.sh_backend}, stock: {stock.sh_backend}")

    results = {}
    for name, calc in (("patched", patched), ("stock", stock)):
        a = atoms.copy()
        a.calc = calc
        results[name] = (a.get_potential_energy(), a.get_forces(), a.get_stress())
        print(f"{name:8s} E = {results[name][0]:.10f} eV  max|F| = {np.abs(results[name][1]).max():.6f} eV/Å")
    d_e = abs(results["patched"][0] - results["stock"][0])
    d_f = np.abs(results["patched"][1] - results["stock"][1]).max()
    d_s = np.abs(results["patched"][2] - results["stock"][2]).max()
    print(f"|dE| = {d_e:.3e} eV, max|dF| = {d_f:.3e} eV/Å, max|dstress| = {d_s:.3e} eV/Å^3")
    assert d_e < 1e-8 and d_f < 1e-8 and d_s < 1e-8, "patched and stock models disagree"

    atoms.calc = patched
    thermalize_momenta(atoms, 300.0, rng=np.random.default_rng(0))
    Stationary(atoms)
    dyn = VelocityVerlet(atoms, timestep=2.0 * units.fs)
    e0 = atoms.get_total_energy()
    t0 = time.perf_counter()
    dyn.run(steps)
    dt = time.perf_counter() - t0
    e1 = atoms.get_total_energy()
    print(
        f"NVE {steps} steps x 2 fs, {len(atoms)} atoms: {steps / dt:.1f} steps/s, "
        f"E_tot change {(e1 - e0) / len(atoms) * 1e3:+.4f} meV/atom, T = {atoms.get_temperature():.1f} K"
    )


if __name__ == "__main__":
    main()
