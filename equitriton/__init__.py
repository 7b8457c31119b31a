"""EquiTriton: float64-exact Triton spherical harmonics in e3nn's convention, with first and second derivatives.

    import equitriton
    y = equitriton.spherical_harmonics([0, 1, 2], x, normalize=True)   # x: (..., 3) -> (..., 9)
    import equitriton.patch                                             # every e3nn SH call now runs here

Layers, data flowing one way: `codegen/` (sympy derivation + code generator) -> `generated/` (Triton kernels and
torch fallback) -> `kernels/` (launch configuration) -> `ops` (torch.library custom ops + autograd) ->
`harmonics` (e3nn-compatible API; `transforms`: the ops under torch.func) -> `patch` (e3nn drop-in).
"""

from __future__ import annotations

import torch

from .harmonics import LMAX, SphericalHarmonics, spherical_harmonics
from .ops import use_triton

__version__ = "0.1.0"


def backend_for(device_or_tensor: torch.device | torch.Tensor | str) -> str:
    """'triton' where tensors on this device run the Triton kernels, 'torch' where they run the CPU fallback."""
    if isinstance(device_or_tensor, torch.Tensor):
        device = device_or_tensor.device
    else:
        device = torch.device(device_or_tensor)
    return "triton" if use_triton(device) else "torch"


__all__ = ["LMAX", "SphericalHarmonics", "spherical_harmonics", "backend_for", "__version__"]
