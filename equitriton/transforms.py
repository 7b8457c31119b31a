"""torch.func transforms (vmap, grad, jacrev, jacfwd, hessian) over the spherical harmonics, as e3nn's ops allow.

The custom ops' own autograd (`torch.library` `register_autograd`) refuses functorch's grad transforms, and without
a batching rule `vmap` falls back to one call per batch element. So:
- every op gets a batching rule: the ops work row by row, so a vmapped call is one call on the batch dimension moved
  to the front (an unbatched operand broadcast to it);
- under a functorch transform, the API runs `sh_func`: autograd.Functions with `setup_context` (what functorch needs),
  `generate_vmap_rule` (their bodies are the ops, which batch), and `jvp` for forward mode, whose products come from
  the same two derivative ops: J t is the double backward's d(grad_y) with direction t, and the tangent of the
  backward J^T g is J^T t_g plus the double backward's d(x) with direction t_x (forward over forward: see
  _JacobianVector).
Not covered: a torch.func grad transform inside torch.compile (`torch.compile(torch.func.grad(f))`). Dynamo traces
the transform without functorch's interpreter stack, so the call reaches the op's registered autograd, which
refuses it; vmap alone compiles (the batching rules).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from . import ops  # noqa: F401  (registers torch.ops.equitriton.*)
from .kernels.launch import offsets

_OPS = torch.ops.equitriton


def active() -> bool:
    """Whether a functorch transform (vmap, grad, jvp...) is running around this call, outside torch.compile."""
    return not torch.compiler.is_compiling() and torch._C._functorch.peek_interpreter_stack() is not None


# ------------------------------------------------------------------------------------------------- batching rules
def _front(t: Tensor, bdim: Optional[int], size: int) -> Tensor:
    """t with its batch dimension first; an unbatched t broadcast to the batch (a stride-0 view: no copy)."""
    if bdim is None:
        return t.unsqueeze(0).expand(size, *t.shape)
    return t.movedim(bdim, 0)


def _vmap_forward(info, in_dims, x, ls, normalize, normalization):
    return _OPS.sh_forward(x.movedim(in_dims[0], 0), ls, normalize, normalization), 0


def _vmap_backward(info, in_dims, x, grad, ls, normalize, normalization):
    x, grad = (_front(t, d, info.batch_size) for t, d in zip((x, grad), in_dims[:2]))
    return _OPS.sh_backward(x, grad, ls, normalize, normalization), 0


def _vmap_double_backward(info, in_dims, x, grad, w, ls, normalize, normalization):
    x, grad, w = (_front(t, d, info.batch_size) for t, d in zip((x, grad, w), in_dims[:3]))
    return _OPS.sh_double_backward(x, grad, w, ls, normalize, normalization), (0, 0)


torch.library.register_vmap("equitriton::sh_forward", _vmap_forward)
torch.library.register_vmap("equitriton::sh_backward", _vmap_backward)
torch.library.register_vmap("equitriton::sh_double_backward", _vmap_double_backward)


# -------------------------------------------------------------------------------- autograd under functorch transforms
class _Spec:
    """(ls, normalize, normalization) as one argument: functorch's pytree would flatten a list argument into its
    items and then fail to match the Function's outputs to its inputs. `dim`: the row width of Y."""

    __slots__ = ("args", "dim")

    def __init__(self, ls: List[int], normalize: bool, normalization: int) -> None:
        self.args = (ls, normalize, normalization)
        self.dim = offsets(ls)[1]


class _Forward(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, spec: _Spec) -> Tensor:
        return _OPS.sh_forward(x, *spec.args)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, ctx.spec = inputs
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)  # jvp reads it too

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return _Backward.apply(x, grad, ctx.spec), None

    @staticmethod
    def jvp(ctx, tx, _):
        (x,) = ctx.saved_tensors
        return _JacobianVector.apply(x, tx, ctx.spec)


class _JacobianVector(torch.autograd.Function):
    """J(x) t, the forward's tangent: the double backward's d(grad_y) with direction t (which does not depend on
    grad_y, zero here). Differentiable once more in either mode, so that every second derivative (jacfwd or jacrev
    of jacfwd) exists: d/dt is J (and J^T), d/dx <g, J t> is the double backward's d(x), and d/dx (J t) s is
    _second_directional."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, t: Tensor, spec: _Spec) -> Tensor:
        return _OPS.sh_double_backward(x, x.new_zeros(x.shape[:-1] + (spec.dim,)), t, *spec.args)[0]

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, t, ctx.spec = inputs
        ctx.save_for_backward(x, t)
        ctx.save_for_forward(x, t)

    @staticmethod
    def backward(ctx, g):
        x, t = ctx.saved_tensors
        return _DoubleBackward.apply(x, g, t, ctx.spec)[1], _Backward.apply(x, g, ctx.spec), None

    @staticmethod
    def jvp(ctx, tx, tt, _):
        x, t = ctx.saved_tensors
        out = x.new_zeros(x.shape[:-1] + (ctx.spec.dim,))
        if tt is not None:
            out = out + _JacobianVector.apply(x, tt, ctx.spec)
        if tx is not None:
            out = out + _second_directional(x, t, tx, ctx.spec)
        return out


def _second_directional(x: Tensor, a: Tensor, b: Tensor, spec: _Spec) -> Tensor:
    """D^2 Y(x)[a, b], every column k: b . (Hessian of Y_k) a, where (Hessian of Y_k) a is the double backward's d(x)
    with grad_y the k-th unit row. One call on DIM copies of the rows (forward mode over forward mode only)."""
    dim = spec.dim
    rows = x.reshape(-1, 3)
    n = rows.shape[0]
    unit = torch.eye(dim, dtype=x.dtype, device=x.device)[:, None, :].expand(dim, n, dim)
    hess_a = _DoubleBackward.apply(rows.expand(dim, n, 3), unit, a.reshape(-1, 3).expand(dim, n, 3), spec)[1]
    return torch.einsum("kni,ni->nk", hess_a, b.reshape(-1, 3)).reshape(x.shape[:-1] + (dim,))


class _Backward(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, grad: Tensor, spec: _Spec) -> Tensor:
        return _OPS.sh_backward(x, grad, *spec.args)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, grad, ctx.spec = inputs
        ctx.save_for_backward(x, grad)
        ctx.save_for_forward(x, grad)

    @staticmethod
    def backward(ctx, w):
        x, grad = ctx.saved_tensors
        gg, gx = _DoubleBackward.apply(x, grad, w, ctx.spec)
        return gx, gg, None

    @staticmethod
    def jvp(ctx, tx, tgrad, _):
        x, grad = ctx.saved_tensors
        out = torch.zeros_like(x)
        if tgrad is not None:  # J^T t_g
            out = out + _Backward.apply(x, tgrad, ctx.spec)
        if tx is not None:  # (d/dx J^T g) t_x: the double backward's d(x) with direction t_x
            out = out + _DoubleBackward.apply(x, grad, tx, ctx.spec)[1]
        return out


class _DoubleBackward(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, grad: Tensor, w: Tensor, spec: _Spec) -> Tuple[Tensor, Tensor]:
        return _OPS.sh_double_backward(x, grad, w, *spec.args)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, *grads):
        ops._no_third_derivative(ctx, *grads)

    @staticmethod
    def jvp(ctx, *tangents):
        ops._no_third_derivative(ctx, *tangents)


def sh_func(x: Tensor, ls: List[int], normalize: bool, normalization: int) -> Tensor:
    """torch.ops.equitriton.sh_forward(x, ls, normalize, normalization), differentiable under torch.func."""
    return _Forward.apply(x, _Spec(ls, normalize, normalization))
