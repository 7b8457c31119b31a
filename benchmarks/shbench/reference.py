"""Float64 reference values for the correctness check that precedes every timing.

The reference is e3nn in float64, evaluated in the convention of the implementation under test (each implementation
gives its own `reference(x)`: e3nn with the matching normalisation, axis order and output columns). Derivatives of the
reference come from autograd, so one forward definition serves all directions. `mp_real_sh` is an independent
high-precision (mpmath) evaluation, for the tests and for arbitrating where e3nn and ours disagree.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

CHECK_ROWS = 2048  # rows checked at each end of the timed call's output


def check_rows(n: int, device: torch.device) -> Tensor:
    """Indices of the rows compared: the first and last CHECK_ROWS (the tail is where indexing bugs show)."""
    if n <= 2 * CHECK_ROWS:
        return torch.arange(n, device=device)
    return torch.cat([torch.arange(CHECK_ROWS, device=device), torch.arange(n - CHECK_ROWS, n, device=device)])


def reference(
    direction: str, ref: Callable[[Tensor], Tensor], x: Tensor, g: Tensor | None = None, w: Tensor | None = None
) -> tuple[Tensor, ...]:
    """Outputs of `direction` in float64, in the order the timed callable returns them.

    x (n, 3); g (n, dim) the upstream gradient; w (n, 3) the double-backward's upstream gradient of dx.
    forward -> (Y,); backward, forward_backward -> (dx,); forward_backward_graph -> (Y, dx);
    double_backward, training -> (ddY, dx) like `sh_double_backward`: the gradients of <dx(x, g), w> w.r.t. g and x.
    """
    x = x.detach().double().requires_grad_(direction != "forward")
    with torch.enable_grad():
        y = ref(x)
        if direction == "forward":
            return (y.detach(),)
        g = g.detach().double()
        if direction in ("backward", "forward_backward"):
            return (torch.autograd.grad(y, x, g)[0],)
        if direction == "forward_backward_graph":
            return (y.detach(), torch.autograd.grad(y, x, g)[0])
        if direction in ("double_backward", "training"):
            g.requires_grad_(True)
            (dx,) = torch.autograd.grad(y, x, g, create_graph=True)
            rx, rg = torch.autograd.grad(dx, (x, g), w.detach().double())
            return (rg, rx)
    raise ValueError(f"unknown direction {direction!r}")


def rel_err(outs: tuple[Tensor, ...], refs: tuple[Tensor, ...]) -> float:
    """max |out - ref| / max |ref| over all outputs (inf if any output is not finite or shapes differ)."""
    worst = 0.0
    for a, b in zip(outs, refs, strict=True):
        if a.shape != b.shape:
            return float("inf")
        a = a.detach().double()
        if not bool(torch.isfinite(a).all()):
            return float("inf")
        scale = max(b.abs().max().item(), 1e-300)
        worst = max(worst, (a - b).abs().max().item() / scale)
    return worst


def mp_real_sh(l: int, x: float, y: float, z: float) -> list[float]:
    """Standard real SH (integral normalization, no Condon-Shortley phase) at the exact float64 input, 40 digits.

    Built from mpmath's complex Y_l^m (which carries the Condon-Shortley phase (-1)^m), with e3nn's axes:
    input (x, y, z) -> (X, Y, Z) = (z, x, y), row l + m.
    """
    import mpmath  # sympy's dependency: only the callers of this need it

    with mpmath.workdps(40):
        X, Y, Z = mpmath.mpf(z), mpmath.mpf(x), mpmath.mpf(y)
        r = mpmath.sqrt(X * X + Y * Y + Z * Z)
        theta = mpmath.acos(Z / r)
        phi = mpmath.atan2(Y, X)
        out = []
        for m in range(-l, l + 1):
            if m == 0:
                v = mpmath.re(mpmath.spherharm(l, 0, theta, phi))
            elif m > 0:
                v = mpmath.sqrt(2) * (-1) ** m * mpmath.re(mpmath.spherharm(l, m, theta, phi))
            else:
                v = mpmath.sqrt(2) * (-1) ** m * mpmath.im(mpmath.spherharm(l, -m, theta, phi))
            out.append(float(v))
        return out
