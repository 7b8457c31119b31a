"""PyTorch custom ops (`torch.library`) for the spherical harmonics, with autograd to second order.

Three ops, one kernel launch each, for any set of l:

- ``equitriton::sh_forward(x, ls, normalize, normalization) -> Y``
- ``equitriton::sh_backward(x, grad_y, ...) -> grad_x``                      (autograd: sh_double_backward)
- ``equitriton::sh_double_backward(x, grad_y, grad_grad_x, ...) -> (grad_grad_y, grad_x)``

`x` is (..., 3); `ls` is the list of l in output order (repeats allowed); `normalization` is 0 (integral),
1 (component) or 2 (norm). Tensors on CUDA/XPU (and CPU under ``TRITON_INTERPRET=1``) run the generated Triton
kernels; CPU tensors otherwise run the generated torch fallback. The ops hold no state: everything a backward
needs is saved on its own autograd context.
"""

from __future__ import annotations

import os
from typing import List

import torch
from torch import Tensor
from torch.library import triton_op, wrap_triton

from .generated import torch_fallback
from .kernels import launch

NORMALIZATION_IDS = {"integral": 0, "component": 1, "norm": 2}


def use_triton(device: torch.device) -> bool:
    """True where the Triton kernels run for tensors on `device`; False where the torch fallback runs."""
    if device.type == "cpu":
        return os.environ.get("TRITON_INTERPRET", "0") == "1"
    return True


def _up(t: Tensor) -> Tensor:
    """The torch fallback's compute dtype for `t` (float32 runs in float64, as the kernels do; see launch.py)."""
    return t.double() if launch.compute_f64(t.dtype) else t


# The torch fallback runs one elementwise op per polynomial term; in chunks of this many rows its temporaries stay
# in cache (1.5x faster than whole-array ops at l_max >= 6 on a 100k-point batch; slower below 4k rows).
_CPU_CHUNK = 4096


def _fallback(fn, n: int, *args):
    """Run a torch_fallback function on row chunks of its tensor arguments and concatenate each output."""
    tensors = [a for a in args if isinstance(a, Tensor)]
    rest = args[len(tensors) :]
    # traced (torch.compile / export: n may be symbolic): no chunking, so no guard on the number of rows
    if torch.compiler.is_compiling() or not isinstance(n, int) or n <= 2 * _CPU_CHUNK:
        return fn(*[_up(t) for t in tensors], *rest)
    parts = [fn(*[_up(t[s : s + _CPU_CHUNK]) for t in tensors], *rest) for s in range(0, n, _CPU_CHUNK)]
    if isinstance(parts[0], tuple):
        return tuple(torch.cat([p[i] for p in parts]) for i in range(len(parts[0])))
    return torch.cat(parts)


def _offsets(ls: List[int]) -> tuple[tuple[int, ...], int]:
    offs, o = [], 0
    for l in ls:
        offs.append(o)
        o += 2 * l + 1
    return tuple(offs), o


@triton_op("equitriton::sh_forward", mutates_args=())
def sh_forward(x: Tensor, ls: List[int], normalize: bool, normalization: int) -> Tensor:
    offs, dim = _offsets(ls)
    x2 = x.reshape(-1, 3)
    n = x2.shape[0]
    if not use_triton(x.device):
        out = _fallback(torch_fallback.forward, n, x2, list(ls), list(offs), dim, normalize, normalization)
        return out.to(x.dtype).reshape(x.shape[:-1] + (dim,))
    out = torch.empty((n, dim), dtype=x.dtype, device=x.device)
    if n > 0:
        cfg = launch.config("forward", max(ls), x.dtype)
        wrap_triton(launch.kernels.sh_forward_kernel)[launch.grid(n, cfg)](
            x2, out, n, x2.stride(0), x2.stride(1), **launch.meta(ls, offs, dim, normalize, normalization, x.dtype, cfg)
        )
    return out.reshape(x.shape[:-1] + (dim,))


@triton_op("equitriton::sh_backward", mutates_args=())
def sh_backward(x: Tensor, grad: Tensor, ls: List[int], normalize: bool, normalization: int) -> Tensor:
    offs, dim = _offsets(ls)
    x2 = x.reshape(-1, 3)
    g2 = grad.reshape(-1, dim).contiguous()
    n = x2.shape[0]
    if not use_triton(x.device):
        gx = _fallback(torch_fallback.backward, n, x2, g2, list(ls), list(offs), dim, normalize, normalization)
        return gx.to(x.dtype).reshape(x.shape)
    gx = torch.empty((n, 3), dtype=x.dtype, device=x.device)
    if n > 0:
        cfg = launch.config("backward", max(ls), x.dtype)
        wrap_triton(launch.kernels.sh_backward_kernel)[launch.grid(n, cfg)](
            x2,
            g2,
            gx,
            n,
            x2.stride(0),
            x2.stride(1),
            **launch.meta(ls, offs, dim, normalize, normalization, x.dtype, cfg),
        )
    return gx.reshape(x.shape)


@triton_op("equitriton::sh_double_backward", mutates_args=())
def sh_double_backward(
    x: Tensor, grad: Tensor, w: Tensor, ls: List[int], normalize: bool, normalization: int
) -> tuple[Tensor, Tensor]:
    offs, dim = _offsets(ls)
    x2 = x.reshape(-1, 3)
    g2 = grad.reshape(-1, dim).contiguous()
    w2 = w.reshape(-1, 3)
    n = x2.shape[0]
    if not use_triton(x.device):
        gg, gx = _fallback(
            torch_fallback.double_backward, n, x2, g2, w2, list(ls), list(offs), dim, normalize, normalization
        )
        return gg.to(x.dtype).reshape(grad.shape), gx.to(x.dtype).reshape(x.shape)
    gg = torch.empty((n, dim), dtype=x.dtype, device=x.device)
    gx = torch.empty((n, 3), dtype=x.dtype, device=x.device)
    if n > 0:
        cfg = launch.config("double_backward", max(ls), x.dtype)
        wrap_triton(launch.kernels.sh_double_backward_kernel)[launch.grid(n, cfg)](
            x2,
            g2,
            w2,
            gg,
            gx,
            n,
            x2.stride(0),
            x2.stride(1),
            w2.stride(0),
            w2.stride(1),
            **launch.meta(ls, offs, dim, normalize, normalization, x.dtype, cfg),
        )
    return gg.reshape(grad.shape), gx.reshape(x.shape)


# ------------------------------------------------------------------------------------------------------------ autograd
def _forward_setup(ctx, inputs, output):
    x, ls, normalize, normalization = inputs
    ctx.save_for_backward(x)
    ctx.args = (ls, normalize, normalization)


def _forward_backward(ctx, grad):
    (x,) = ctx.saved_tensors
    return torch.ops.equitriton.sh_backward(x, grad, *ctx.args), None, None, None


def _backward_setup(ctx, inputs, output):
    x, grad, ls, normalize, normalization = inputs
    ctx.save_for_backward(x, grad)
    ctx.args = (ls, normalize, normalization)


def _backward_backward(ctx, w):
    x, grad = ctx.saved_tensors
    gg, gx = torch.ops.equitriton.sh_double_backward(x, grad, w, *ctx.args)
    return gx, gg, None, None, None


def _no_third_derivative(ctx, *grads):
    raise RuntimeError("equitriton spherical harmonics provide derivatives up to second order, not third")


def _double_setup(ctx, inputs, output):
    pass


sh_forward.register_autograd(_forward_backward, setup_context=_forward_setup)
sh_backward.register_autograd(_backward_backward, setup_context=_backward_setup)
sh_double_backward.register_autograd(_no_third_derivative, setup_context=_double_setup)
