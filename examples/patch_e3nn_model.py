"""Patching existing models with EquiTriton spherical harmonics, two ways.

1. ``equitriton.patch``: route every e3nn ``SphericalHarmonics`` call in the process (any e3nn model,
   here a small hand-written equivariant layer) through EquiTriton -- globally or in a ``with`` block.
2. ``md_plugin.patch_model(model)``: replace the SH submodules inside one loaded NequIP/Allegro model
   (here the embedded tiny Cu model) in place, e.g. before wrapping it in an ASE calculator.

    python examples/patch_e3nn_model.py [--quick] [--device cpu|cuda|xpu|auto]
"""

from __future__ import annotations

import numpy as np
import torch
from _quick import parser
from ase.build import bulk
from e3nn import o3

import equitriton
import equitriton.patch as eqpatch  # importing it patches e3nn; unpatch() below restores e3nn for the reference
from md_plugin import EquiTritonCalculator, default_model_path, patch_model


class EdgeLayer(torch.nn.Module):
    """A tiny e3nn model: spherical harmonics of edge vectors mixed by a fully connected tensor product."""

    def __init__(self, lmax: int = 3) -> None:
        super().__init__()
        self.sh = o3.SphericalHarmonics(list(range(lmax + 1)), normalize=True, normalization="component")
        self.tp = o3.FullyConnectedTensorProduct(self.sh.irreps_out, self.sh.irreps_out, "4x0e + 4x1o + 2x2e")

    def forward(self, vec: torch.Tensor) -> torch.Tensor:
        y = self.sh(vec)
        return self.tp(y, y)


def e3nn_part(device: torch.device, n_edges: int) -> None:
    torch.manual_seed(0)
    layer = EdgeLayer().to(device=device, dtype=torch.float64)
    vec = torch.randn(n_edges, 3, dtype=torch.float64, device=device, requires_grad=True)

    eqpatch.unpatch()
    ref = layer(vec)
    (ref_grad,) = torch.autograd.grad(ref.square().sum(), vec)
    with eqpatch.patched():  # e3nn SphericalHarmonics.forward now runs EquiTriton
        assert eqpatch.is_patched()
        out = layer(vec)
        (grad,) = torch.autograd.grad(out.square().sum(), vec)
    assert not eqpatch.is_patched()
    d_out = (out - ref).abs().max().item()
    d_grad = (grad - ref_grad).abs().max().item()
    print(
        f"[equitriton.patch] e3nn layer on {n_edges} edges ({equitriton.backend_for(device)} backend): "
        f"max|out diff| = {d_out:.2e}, max|grad diff| = {d_grad:.2e}"
    )
    assert torch.allclose(out, ref, rtol=0, atol=1e-10) and torch.allclose(grad, ref_grad, rtol=0, atol=1e-10)


def nequip_part(device: str, size: int) -> None:
    from nequip.model.saved_models.load_utils import load_saved_model
    from nequip.utils.global_state import set_global_state

    # nequip's global state (float64 default dtype, TF32 off) must be set before using a model loaded by
    # hand; the calculator factories from_saved_model/from_compiled_model do this themselves
    set_global_state()
    model = load_saved_model(str(default_model_path()))  # a stock NequIP GraphModel (e3nn SH inside)
    model.eval()
    calc = EquiTritonCalculator.from_model(model, device=device, patch=False)  # same model object, unpatched
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(size)
    atoms.rattle(0.05, seed=3)
    atoms.calc = calc
    e_ref, f_ref = atoms.get_potential_energy(), atoms.get_forces()
    print(f"[md_plugin.patch_model] before: SH backend = {calc.sh_backend}")

    replaced = patch_model(model)  # in place; returns what was replaced
    for item in replaced:
        print(f"    replaced {item}")
    atoms.calc.reset()
    e_new, f_new = atoms.get_potential_energy(), atoms.get_forces()
    print(
        f"[md_plugin.patch_model] after: SH backend = {calc.sh_backend}; {len(atoms)} atoms: "
        f"|dE| = {abs(e_new - e_ref):.2e} eV, max|dF| = {np.abs(f_new - f_ref).max():.2e} eV/Å"
    )
    assert replaced and calc.sh_backend.startswith("equitriton")
    assert abs(e_new - e_ref) < 1e-10 and np.abs(f_new - f_ref).max() < 1e-10
    assert patch_model(model) == [], "patching twice must be a no-op"


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    from md_plugin.device import resolve_device

    device = resolve_device(args.device)
    e3nn_part(device, 256 if args.quick else 100_000)
    nequip_part(str(device), 1 if args.quick else 3)


if __name__ == "__main__":
    main()
