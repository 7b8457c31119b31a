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

import contextlib
import math
from typing import List

import torch
from torch import Tensor
from torch.library import triton_op, wrap_triton

from .fallback import cpu_backward, cpu_double_backward, cpu_forward, small_autograd, untraced, use_triton
from .generated import torch_fallback
from .kernels import launch

NORMALIZATION_IDS = {"integral": 0, "component": 1, "norm": 2}


# ------------------------------------------------------------------------------------------ CUDA / XPU (Triton kernels)
# The Triton bodies of the three ops, shared by the ops and by the eager path below. Real tensors outside any tracing
# launch through launch.run_cached, the lean launch on CUDA (the eager path says so with `fast=True`; the ops' bodies
# find it out in _launch); traced ones through wrap_triton, so that torch.compile / export capture the launch.
def _device_guard(t: Tensor, eager: bool = False):
    """The device of `t` made current where it is not (Triton launches on the current device); `eager`: the caller
    already knows the call is untraced (the eager path), so that is not checked again."""
    d = t.device
    if d.type == "cpu" or d.index is None or not (eager or untraced([t])):
        return contextlib.nullcontext()
    mod = torch.get_device_module(d.type)
    return contextlib.nullcontext() if mod.current_device() == d.index else mod.device(d.index)


def _launch(kernel, direction: str, cfg: dict, meta: dict, n, args: tuple, fast: bool) -> None:
    # The ops' bodies (fast=False) on real tensors outside any tracing or transform (a plain call of
    # torch.ops.equitriton.*, a TorchScript model's) launch as the eager path does: wrap_triton's kernel[grid] is only
    # needed where torch.compile / export / make_fx record the launch, and costs tens of microseconds a call.
    fast = fast or eager(args[0])
    g = launch.grid(n, cfg)
    with _device_guard(args[0], eager=fast):
        if fast:
            launch.run_cached(kernel, direction, cfg, meta, g, args)
        else:
            with launch.compiling(direction, cfg):
                wrap_triton(kernel)[g](*args, **meta)


def _triton_forward(x: Tensor, ls: List[int], normalize: bool, normalization: int, fast: bool = False) -> Tensor:
    # the row count picks the forward's launch (launch.parts_apply); symbolic under torch.compile's dynamic shapes
    cfg, meta, dim = launch.plan("forward", ls, normalize, normalization, x.dtype, rows=x.numel() // 3)
    flat = x.dim() == 2  # (N, 3) in, (N, dim) out: no reshapes (each costs ~1 us of an eager call's ~30)
    x2 = launch.rows_within_int32(x if flat else x.reshape(-1, 3), cfg)
    n = x2.shape[0]
    out = torch.empty((n, dim), dtype=x.dtype, device=x.device)
    if n > 0:
        args = (x2, out, n, x2.stride(0), x2.stride(1))
        _launch(launch.forward_kernel(meta), "forward", cfg, meta, n, args, fast)
    return out if flat else out.reshape(x.shape[:-1] + (dim,))


def _triton_backward(
    x: Tensor, grad: Tensor, ls: List[int], normalize: bool, normalization: int, fast: bool = False
) -> Tensor:
    cfg, meta, dim = launch.plan("backward", ls, normalize, normalization, x.dtype)
    flat = x.dim() == 2 and grad.dim() == 2
    x2 = launch.rows_within_int32(x if flat else x.reshape(-1, 3), cfg)
    g2 = (grad if flat else grad.reshape(-1, dim)).contiguous()
    n = x2.shape[0]
    gx = torch.empty((n, 3), dtype=x.dtype, device=x.device)
    if n > 0:
        args = (x2, g2, gx, n, x2.stride(0), x2.stride(1))
        _launch(launch.kernels.sh_backward_kernel, "backward", cfg, meta, n, args, fast)
    return gx if flat else gx.reshape(x.shape)


def _triton_double_backward(
    x: Tensor, grad: Tensor, w: Tensor, ls: List[int], normalize: bool, normalization: int, fast: bool = False
) -> tuple[Tensor, Tensor]:
    cfg, meta, dim = launch.plan("double_backward", ls, normalize, normalization, x.dtype)
    flat = x.dim() == 2 and grad.dim() == 2 and w.dim() == 2
    x2 = launch.rows_within_int32(x if flat else x.reshape(-1, 3), cfg)
    g2 = (grad if flat else grad.reshape(-1, dim)).contiguous()
    w2 = launch.rows_within_int32(w if flat else w.reshape(-1, 3), cfg)
    n = x2.shape[0]
    gg = torch.empty((n, dim), dtype=x.dtype, device=x.device)
    gx = torch.empty((n, 3), dtype=x.dtype, device=x.device)
    if n > 0:
        args = (x2, g2, w2, gg, gx, n, x2.stride(0), x2.stride(1), w2.stride(0), w2.stride(1))
        _launch(launch.kernels.sh_double_backward_kernel, "double_backward", cfg, meta, n, args, fast)
    return (gg, gx) if flat else (gg.reshape(grad.shape), gx.reshape(x.shape))


# ------------------------------------------------------------------------------------------------------------- the ops
# One body per direction for the ops and the eager path below: the torch fallback where Triton does not run, else the
# kernels, launched through wrap_triton (ops, `fast=False`) or launch.run_cached (eager path, `fast=True`).
def _forward(x: Tensor, ls: List[int], normalize: bool, normalization: int, fast: bool = False) -> Tensor:
    if not use_triton(x.device):
        return cpu_forward(x, ls, normalize, normalization)
    return _triton_forward(x, ls, normalize, normalization, fast)


def _backward(x: Tensor, grad: Tensor, ls: List[int], normalize: bool, normalization: int, fast: bool = False):
    if not use_triton(x.device):
        return cpu_backward(x, grad, ls, normalize, normalization)
    return _triton_backward(x, grad, ls, normalize, normalization, fast)


def _double_backward(x, grad, w, ls: List[int], normalize: bool, normalization: int, fast: bool = False):
    if not use_triton(x.device):
        return cpu_double_backward(x, grad, w, ls, normalize, normalization)
    return _triton_double_backward(x, grad, w, ls, normalize, normalization, fast)


@triton_op("equitriton::sh_forward", mutates_args=())
def sh_forward(x: Tensor, ls: List[int], normalize: bool, normalization: int) -> Tensor:
    return _forward(x, ls, normalize, normalization)


@triton_op("equitriton::sh_backward", mutates_args=())
def sh_backward(x: Tensor, grad: Tensor, ls: List[int], normalize: bool, normalization: int) -> Tensor:
    return _backward(x, grad, ls, normalize, normalization)


@triton_op("equitriton::sh_double_backward", mutates_args=())
def sh_double_backward(
    x: Tensor, grad: Tensor, w: Tensor, ls: List[int], normalize: bool, normalization: int
) -> tuple[Tensor, Tensor]:
    return _double_backward(x, grad, w, ls, normalize, normalization)


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


# ---------------------------------------------------------------------------------------------------- eager fast path
# On real tensors in plain eager mode, `sh_eager` runs the same bodies as the ops (`cpu_forward` / `_triton_forward`
# etc.) through a lean torch.autograd.Function, without the torch.library dispatch (autograd wrapper, redispatch,
# schema checks: ~30 us a call, more than the l = 1 CPU body on 1,000 rows or a GPU kernel on 1e4 edges); on CUDA
# the kernels are launched through launch.run_cached. Its backward is a second Function whose backward is the double
# backward, and that one refuses a third derivative, as the ops do. Everything traced, compiled, scripted or
# transformed (torch.compile, export, AOTI, TorchScript, jit.trace, functorch, dispatch and torch-function modes, fake
# or other tensor subclasses) keeps going through the ops (under torch.func, through transforms.sh_func).
def traced() -> bool:
    """Whether calls are being traced into a graph rather than computed: torch.compile, torch.export, jit.trace, or
    make_fx (nequip's compiled step and training; its proxy mode). Not other dispatch modes (an op logger, a FLOP
    counter): eager code under those keeps the eager path. The generated fallback's own test, so that both agree."""
    return torch_fallback._traced()


def eager(x: Tensor) -> bool:
    """Whether sh_eager may run for x: a plain tensor with data (not meta: the ops' fake kernels give its shapes),
    outside any tracing, compilation or transform."""
    return x.device.type != "meta" and untraced([x]) and torch._C._functorch.peek_interpreter_stack() is None


class _EagerForward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, ls, normalize, normalization):
        ctx.save_for_backward(x)
        ctx.args = (ls, normalize, normalization)
        return _forward(x, ls, normalize, normalization, fast=True)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: the backward must itself be differentiable
            return _EagerBackward.apply(x, grad, *ctx.args), None, None, None
        # forces in MD (no create_graph): the same body without a second Function's bookkeeping
        return _backward(x, grad, *ctx.args, fast=True), None, None, None


class _EagerBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, grad, ls, normalize, normalization):
        ctx.save_for_backward(x, grad)
        ctx.args = (ls, normalize, normalization)
        return _backward(x, grad, ls, normalize, normalization, fast=True)

    @staticmethod
    def backward(ctx, w):
        x, grad = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: the result's own gradient (a third derivative) must be refused
            gg, gx = _EagerDoubleBackward.apply(x, grad, w, *ctx.args)
        else:  # training on forces: the body alone, without a third Function's bookkeeping
            gg, gx = _double_backward(x, grad, w, *ctx.args, fast=True)
        return gx, gg, None, None, None


class _EagerDoubleBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, grad, w, ls, normalize, normalization):
        return _double_backward(x, grad, w, ls, normalize, normalization, fast=True)

    @staticmethod
    def backward(ctx, *grads):
        _no_third_derivative(ctx, *grads)


def sh_eager(x: Tensor, ls: List[int], normalize: bool, normalization: int) -> Tensor:
    """torch.ops.equitriton.sh_forward(x, ls, normalize, normalization) for x where eager(x) holds: the same bits
    and derivatives, without the custom-op dispatch (on CPU at small row counts, l_max 2-3, with grad: the same
    polynomial differentiated by torch's autograd, `small_autograd`)."""
    if x.requires_grad and torch.is_grad_enabled():
        y = small_autograd(x, ls, normalize, normalization)
        if y is not None:
            return y
        return _EagerForward.apply(x, ls, normalize, normalization)
    return _forward(x, ls, normalize, normalization, fast=True)


def sh_fusable(x: Tensor, ls: List[int], normalize: bool, normalization: int) -> Tensor:
    """Y as plain torch ops, for torch.compile / torch.export / make_fx to trace where a model asks for fusion
    (`SphericalHarmonics.fuse_lmax`): Inductor fuses these elementwise ops into their neighbours, which a kernel of
    our own cannot be. At l_max 1 fusion is worth more than any kernel: the compiled NequIP l_max 1 step (CUDA
    graphs, 2,048 Cu atoms, H200) took 3.52 ms with the op against 3.34 ms with e3nn's ops; so is it at l_max 2 in
    Allegro, whose SH feed one elementwise product (docs/md_performance_notes.md). l_max <= 1 with normalize: e3nn's
    own ops (_l1_traced_as_e3nn); otherwise the generated torch fallback's polynomials (its traced form: columns and
    one stack). Y is the op's to an ulp or two (Inductor rounds its fused kernels as it likes); derivatives of any
    order are torch's autograd of these ops, as e3nn's are."""
    lmax = max(ls)
    if normalize and lmax <= 1:
        return _l1_traced_as_e3nn(x, ls, normalization)
    x2 = x.reshape(-1, 3)
    if launch.compute_f64(x.dtype, lmax):
        x2 = x2.to(torch.float64)
    offs, dim = launch.offsets(ls)
    y = torch_fallback.forward(x2, list(ls), list(offs), dim, normalize, normalization)
    return y.to(x.dtype).reshape(x.shape[:-1] + (y.shape[1],))


def _l1_traced_as_e3nn(x: Tensor, ls: List[int], normalization: int) -> Tensor:
    """Y for l_max <= 1 with normalize as the very aten ops e3nn's SphericalHarmonics traces to (normalize, one column
    per component, ones, a stack, e3nn's slicing and in-place rescaling), so that a graph patched at l_max 1 is the
    stock graph op for op (tests/test_ops_compile.py) and Inductor schedules it as it schedules stock's. l_max 1
    holds no polynomial to evaluate, and how the graph around it is fused decides the time: a traced form of our own
    (normalize, one (N, 3) multiply, a cat) had fewer ops, and yet one backward reduction of the Allegro l_max 1
    AOTInductor step took twice stock's time with it (H200, docs/md_performance_notes.md, seventeenth session)."""
    u = torch.nn.functional.normalize(x, dim=-1)
    ux, uy, uz = u[..., 0], u[..., 1], u[..., 2]
    one = torch.ones_like(ux)
    if max(ls) == 0:
        y = torch.stack([one], dim=-1)
    else:
        s3 = math.sqrt(3.0)
        y = torch.stack([one, s3 * ux, s3 * uy, s3 * uz], dim=-1)
    if ls != list(range(max(ls) + 1)):
        y = torch.cat([y[..., l * l : (l + 1) * (l + 1)] for l in ls], dim=-1)
    if normalization == 0:  # integral
        y.div_(math.sqrt(4 * math.pi))
    elif normalization == 2:  # norm
        y.div_(torch.cat([math.sqrt(2 * l + 1) * torch.ones(2 * l + 1, dtype=y.dtype, device=y.device) for l in ls]))
    return y
