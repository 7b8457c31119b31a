"""The CPU side of the ops: the generated torch fallback (`generated/torch_fallback.py`) run where the Triton kernels
do not (`use_triton`), over row chunks on threads, its bodies bound once per l set and compiled by TorchScript; and
the small-row paths that torch's own autograd differentiates. `ops` dispatches here: the op bodies and the eager
path run the same code, so they give the same bits."""

from __future__ import annotations

import functools
import math
import os
from typing import List, Optional

import torch
from torch import Tensor
from torch.utils import _python_dispatch

from .generated import torch_fallback
from .kernels import launch


def use_triton(device: torch.device) -> bool:
    """True where the Triton kernels run for tensors on `device`; False where the torch fallback runs."""
    if device.type == "cpu":
        return os.environ.get("TRITON_INTERPRET", "0") == "1"
    return True


def _up(t: Tensor, f64: bool) -> Tensor:
    """`t` in the torch fallback's compute dtype: float64 where `f64` (launch.compute_f64: float32 runs in float64 above
    l_max 1, as the kernels do), else as it is."""
    return t.double() if f64 else t


# The torch fallback runs one torch op per polynomial term: its cost is a fixed ~0.5-1 us per op call plus the op's
# memory traffic, so it runs on row chunks whose temporaries stay in L2 (fewer rows at high l, where more values are
# live), written straight into the output. In eager mode the bodies run in the TorchScript interpreter (half the
# per-op overhead of Python; it releases the GIL), so the chunks are spread over torch.get_num_threads() threads;
# below 32768 rows, each op is too small for torch's own intra-op (OpenMP) threads, which would compete with ours.
# Rows per chunk by l_max, from the CPU-time scan in docs/cpu_fallback.md (16384 rows cost the same as 32768 there);
# at l_max <= 1 (the fill / multiply forward, the small backward: a few ops whatever N) no chunks: each op runs on the
# whole array, on torch's own OpenMP threads (2 threads, 100,000 rows: forward 0.39 ms against 0.48 ms in chunks).
_CPU_CHUNK = {
    "forward": (1 << 62,) * 2 + (16384,) * 8 + (8192,) * 3,
    "backward": (1 << 62,) * 2 + (16384,) * 3 + (8192,) * 8,
    "double_backward": (16384,) * 5 + (8192,) * 8,
}
# EQUITRITON_CPU_SCRIPT=0 runs the bodies as plain Python (as torch.compile / export trace them) instead.
_CPU_SCRIPT = os.environ.get("EQUITRITON_CPU_SCRIPT", "1") != "0"
# At l_max 1-3, calls of up to this many rows (by direction, l_max) run the generated stacked-monomial bodies
# (_forward_small, _backward_small: a few ops whatever the l set, a small matrix product) rather than one op per
# term: where op calls cost more than arithmetic (at l_max 1, at any row count). Beyond these the per-term bodies
# are faster (best-of timings of the TorchScript bodies, 1 thread; docs/cpu_fallback.md). The choice is made on the
# whole call's row count, so every chunk of one call runs the same body. EQUITRITON_CPU_SMALL=0 keeps one op per
# term everywhere. l_max <= 1 forward: the fill / multiply body _forward_l1 at any row count. l_max 2-3: the
# crossovers of the two bodies re-measured on 2026-11-30 (1 thread, float64, after the per-term bodies lost their
# constant multiplies (codegen/fold.py) and the small ones their repeated monomials): forward 1536 / 768 rows,
# backward 1792 / 1536 rows (l_max 2 / 3).
_CPU_SMALL = os.environ.get("EQUITRITON_CPU_SMALL", "1") != "0"
_CPU_SMALL_ROWS = {"forward": (1 << 62, 1 << 62, 1536, 768), "backward": (0, 1 << 62, 1792, 1536)}
# With grad, calls of up to this many rows (by l_max) take the forward as plain torch ops differentiated by torch's
# autograd (small_autograd, below) instead of the autograd.Function: forward + backward through the public API,
# 1 thread, float64, 2026-11-30: l_max 2 at 512 / 2048 / 3072 rows 214 / 302 / 366 us against 245 / 311 / 346 us
# through the Function; l_max 3 at 512 / 1024 / 1536 rows 296 / 355 / 407 us against 315 / 349 / 378 us.
_CPU_AUTOGRAD_ROWS = (0, 4096, 2048, 1024)
_POOL = None  # (pid, ThreadPoolExecutor), made on first use; a forked child makes its own


def _pool():
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        from concurrent.futures import ThreadPoolExecutor

        _POOL = (os.getpid(), ThreadPoolExecutor(max_workers=max(1, (os.cpu_count() or 2) - 1)))
    return _POOL[1]


def _impl(fn):
    """`fn` with its body in TorchScript (compiled once per process, 0.1-3 s on first use), or `fn` itself where
    that is switched off or cannot compile (plain Python gives the same numbers, slower)."""
    return torch_fallback.scripted(fn) if _CPU_SCRIPT else fn


_BOUND: dict = {}


def _bound(fn, rest, f64: bool, small: bool = False):
    """`impl(*tensors, out)`: what `_impl(fn)(*tensors, *rest, out=out)` runs (the same body, with the same
    coefficient table and offsets), with those arguments worked out once per l set rather than on every call; with
    `small` (l_max <= 3, float64 compute, forward and backward), the generated stacked-monomial bodies instead."""
    ls, offs, dim, normalize, normalization = rest
    key = (fn, tuple(ls), tuple(offs), normalize, normalization, f64, _CPU_SCRIPT, small)
    impl = _BOUND.get(key)
    if impl is None:
        body = torch_fallback._BODIES[fn]
        if _impl(fn) is not fn:
            body = torch_fallback._SCRIPTED[body]
        lmax = max(ls)
        k = torch_fallback._table(normalization, f64, lmax)
        at = torch_fallback._at(list(ls), list(offs))
        if small and lmax <= 1 and fn is torch_fallback.forward:
            # l_max <= 1 (at any row count: _CPU_SMALL_ROWS): one fill or one multiply per output block (generated
            # _forward_l1), about a third of the time of the stacked-monomial matrix product
            tf = torch_fallback
            c0, c1 = _l1_coefficients(normalization)
            l1_body = tf.script_body(tf._forward_l1) if _CPU_SCRIPT else tf._forward_l1
            impl = functools.partial(_call_forward_l1, l1_body, list(ls), list(offs), dim, c0, c1, normalize, k[0])
        elif (
            small
            and (f64 or lmax <= launch.NATIVE_F32_MAX_L)
            and 1 <= lmax <= torch_fallback._SMALL_LMAX
            and fn is not torch_fallback.double_backward
        ):
            # a few ops on stacked monomials instead of one per term (the generated _forward_small / _backward_small);
            # float32 evaluated natively (l_max <= 1) takes the coefficient matrices rounded to float32
            tf = torch_fallback
            c, b, e = (m if f64 else m.float() for m in tf._small_matrices(ls, offs, dim, normalization))
            term = _bound(fn, rest, f64, False)
            if fn is tf.forward:
                small_body = tf.script_body(tf._forward_small) if _CPU_SCRIPT else tf._forward_small
                impl = functools.partial(_call_small_forward, small_body, c, b, lmax, normalize, k[0], term)
            else:
                small_body = tf.script_body(tf._backward_small) if _CPU_SCRIPT else tf._backward_small
                impl = functools.partial(_call_small_backward, small_body, e, lmax, normalize, k[0], term)
        elif fn is torch_fallback.forward:
            impl = functools.partial(_call_forward, body, k, at, lmax, dim, normalize)
        elif fn is torch_fallback.backward:
            impl = functools.partial(_call_backward, body, k, at, lmax, normalize)
        else:
            impl = functools.partial(_call_double_backward, body, k, at, lmax, dim, normalize)
        _BOUND[key] = impl
    return impl


# The small bodies' matrix products spread a NaN or inf (an input's, or an overflow's) over the other values of its
# row (0 * nan, 0 * inf): the rows whose result is not finite take the per-term body's values instead, whose
# non-finite values are exactly where e3nn's are; every row's values depend on that row alone
# (tests/test_gradients.py). One reduction checks the whole result first.
def _l1_coefficients(normalization: int) -> tuple:
    """(c0, c1): Y_0 = c0 and Y_1 = c1 u, from the generated small tables (their only terms)."""
    small = torch_fallback._SMALL[normalization]
    return small[0][0][0][0][1], small[1][0][0][0][1]


def _all_finite(r: Tensor) -> bool:
    return math.isfinite(r.sum().item())  # one reduction and a host float: cheaper than isfinite() + bool() on a tensor


def _keep_finite(r, term, *args):
    if _all_finite(r):
        return r
    ok = torch.isfinite(r).all(1, keepdim=True)
    return r.copy_(torch.where(ok, r, term(*args, None)))


def _call_forward_l1(body, ls, offs, dim, c0, c1, normalize, eps, xyz, out):
    return body(xyz, ls, offs, dim, c0, c1, normalize, eps, out)


def _call_small_forward(body, c, b, lmax, normalize, eps, term, xyz, out):
    return _keep_finite(body(xyz, c, b, lmax, normalize, eps, out), term, xyz)


def _call_small_backward(body, e, lmax, normalize, eps, term, xyz, grad, out):
    return _keep_finite(body(xyz, grad, e, lmax, normalize, eps, out), term, xyz, grad)


def _call_forward(body, k, at, lmax, dim, normalize, xyz, out):
    return body(xyz, k, at, lmax, dim, normalize, out)


def _call_backward(body, k, at, lmax, normalize, xyz, grad, out):
    return body(xyz, grad, k, at, lmax, normalize, out)


def _call_double_backward(body, k, at, lmax, dim, normalize, xyz, grad, w, out):
    return body(xyz, grad, w, k, at, lmax, dim, normalize, out)


# torch.set_num_threads sets OpenMP's (and MKL's) thread count of the calling thread only when ATen runs on OpenMP
# (the CPU wheels): then the chunk threads can run their ops serially without touching other threads' settings.
_OPENMP = "parallel backend: OpenMP" in torch.__config__.parallel_info()


def _chunks(fn, tensors, outs, bounds, f64: bool, grad_mode: bool, inference: bool, serial: bool = False) -> None:
    # the thread-local modes of the calling thread, and no JIT re-optimisation (it takes seconds, for nothing here)
    threads = torch.get_num_threads() if serial else 0
    if serial:
        # the chunks are the parallelism: an op of over 32768 elements (a chunk's transposing copies) would start
        # an OpenMP team of its own in every chunk thread, more threads than cores
        torch.set_num_threads(1)
    try:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad_mode), torch.jit.optimized_execution(False):
            for s, e in bounds:
                # x in the compute dtype; the bodies convert grad and w as they transpose them
                fn(_up(tensors[0][s:e], f64), *[t[s:e] for t in tensors[1:]], tuple(o[s:e] for o in outs))
    finally:
        if serial:
            torch.set_num_threads(threads)


_PLAIN = (Tensor, torch.nn.Parameter)


def untraced(tensors) -> bool:
    """Whether these are real tensors outside any tracing, compilation, dispatch mode or torch-function mode."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():  # first: dynamo folds this to True and stops here
        return False
    if any(type(t) not in _PLAIN for t in tensors):
        return False  # FakeTensor, functional or other subclass
    return _python_dispatch._get_current_dispatch_mode() is None and not torch._C._is_torch_function_mode_enabled()


def _eager(n, tensors) -> bool:
    """Whether this call runs on real tensors outside any tracing (then chunks, threads and TorchScript may be used)."""
    return isinstance(n, int) and n != 0 and untraced(tensors)


def _fallback(fn, n: int, *args):
    """Run torch_fallback's forward, backward or double_backward over the rows of its tensor arguments (row chunks,
    in parallel): outputs in the compute dtype for one chunk, else in the input dtype."""
    tensors = [a for a in args if isinstance(a, Tensor)]
    rest = args[len(tensors) :]
    # traced (torch.compile / export: n may be symbolic; fake tensors, dispatch modes and jit tracing are per thread
    # and unseen by TorchScript): plain torch ops on the whole array, so no guard on the row count either
    lmax = max(rest[0])
    f64 = launch.compute_f64(tensors[0].dtype, lmax)
    if not _eager(n, tensors):
        return fn(*[_up(t, f64) for t in tensors], *rest)
    name = fn.__name__
    # whole chunks only: a thread is worth waking for a chunk's work, not for a part of one (on a busy machine the
    # wake-up alone can cost more than a small chunk)
    count = -(-n // _CPU_CHUNK[name][lmax])
    threads = torch.get_num_threads()
    if count > 1 and threads > 1:
        count = -(-count // threads) * threads  # the same number of (slightly smaller) chunks for each thread
    small = _CPU_SMALL and lmax < len(_CPU_SMALL_ROWS.get(name, ())) and n <= _CPU_SMALL_ROWS[name][lmax]
    impl = _bound(fn, rest, f64, small)
    if count == 1:
        # torch.jit.optimized_execution(False) without its generator-based context manager (~1 us of a call that
        # may take 15)
        optimize = torch._C._get_graph_executor_optimize()
        torch._C._set_graph_executor_optimize(False)
        try:
            return impl(_up(tensors[0], f64), *tensors[1:], None)
        finally:
            torch._C._set_graph_executor_optimize(optimize)
    step = -(-n // count)
    bounds = [(s, min(s + step, n)) for s in range(0, n, step)]
    dim = rest[2]
    widths = {"forward": (dim,), "backward": (3,), "double_backward": (dim, 3)}[name]
    outs = tuple(torch.empty((n, w), dtype=tensors[0].dtype) for w in widths)
    workers = min(threads, count)
    groups = [bounds[i::workers] for i in range(workers)]
    mode = (torch.is_grad_enabled(), torch.is_inference_mode_enabled())
    if workers > 1:
        tensors = [t.detach() for t in tensors]
    serial = workers > 1 and _OPENMP
    futures = [_pool().submit(_chunks, impl, tensors, outs, g, f64, *mode, serial) for g in groups[1:]]
    _chunks(impl, tensors, outs, groups[0], f64, *mode, serial)
    for f in futures:
        f.result()
    return outs if len(outs) > 1 else outs[0]


# ------------------------------------------------------------------------------------------------ CPU (torch fallback)
# The CPU bodies of the three ops, shared by the ops themselves and by ops' eager path (the same code, so the same
# bits).
def cpu_forward(x: Tensor, ls: List[int], normalize: bool, normalization: int) -> Tensor:
    offs, dim = launch.offsets(ls)
    flat = x.dim() == 2  # (N, 3) in, (N, dim) out: no reshapes (each costs ~1 us on a small call)
    x2 = x if flat else x.reshape(-1, 3)
    out = _fallback(torch_fallback.forward, x2.shape[0], x2, list(ls), list(offs), dim, normalize, normalization)
    if out.dtype != x.dtype:
        out = out.to(x.dtype)
    return out if flat else out.reshape(x.shape[:-1] + (dim,))


def cpu_backward(x: Tensor, grad: Tensor, ls: List[int], normalize: bool, normalization: int) -> Tensor:
    offs, dim = launch.offsets(ls)
    x2 = x.reshape(-1, 3)
    g2 = grad.reshape(-1, dim).contiguous()
    gx = _fallback(torch_fallback.backward, x2.shape[0], x2, g2, list(ls), list(offs), dim, normalize, normalization)
    return gx.to(x.dtype).reshape(x.shape)


def cpu_double_backward(
    x: Tensor, grad: Tensor, w: Tensor, ls: List[int], normalize: bool, normalization: int
) -> tuple[Tensor, Tensor]:
    offs, dim = launch.offsets(ls)
    x2 = x.reshape(-1, 3)
    g2 = grad.reshape(-1, dim).contiguous()
    w2 = w.reshape(-1, 3)
    gg, gx = _fallback(
        torch_fallback.double_backward, x2.shape[0], x2, g2, w2, list(ls), list(offs), dim, normalize, normalization
    )
    return gg.to(x.dtype).reshape(grad.shape), gx.to(x.dtype).reshape(x.shape)


# l_max 1 (l = 1 with or without l = 0), normalize=True, no zero or NaN row (_CPU_AUTOGRAD_ROWS): the
# _forward_l1 body's ops (normalize, one multiply per l = 1 block, one cat) as plain torch ops, differentiated by
# torch's autograd. Forward + backward through the public API, 1 thread, integral normalization: 49 / 86 us at
# 100 / 1,000 rows against 127 / 156 us through the Function and 82 / 125 us for e3nn; at 10,000 rows the Function
# is faster (391 against 462 us). Elementwise, so Y has the op's bits.
def _l1_autograd(x2: Tensor, ls: List[int], normalization: int) -> Optional[Tensor]:
    # |x| as _forward_l1 computes it (the op's bits). The norm's second derivative at 0 is 0 / 0, and masking it
    # (torch.where) costs more than this path saves: calls with a zero (or NaN) row take the Function.
    r = torch.linalg.vector_norm(x2, dim=1, keepdim=True)
    if not r.detach().min().item() > 0:
        return None
    return _l1_ops(x2, r, ls, normalization)


def _l1_ops(x2: Tensor, r: Tensor, ls: List[int], normalization: int) -> Tensor:
    """Y for l_max <= 1 with normalize, r = |x2| per row: _forward_l1's arithmetic (normalize, one multiply per
    l = 1 block) as plain torch ops, so Y run eagerly has the op's bits."""
    c0, c1 = _l1_coefficients(normalization)
    u = x2 / torch.clamp_min(r, torch_fallback._table(normalization, x2.dtype == torch.float64, 1)[0])
    return torch.cat([u * c1 if l == 1 else torch.full_like(r, c0) for l in ls], 1)


# CPU, up to _CPU_AUTOGRAD_ROWS rows, l_max 2-3, with grad (an MD step's edges on a small system): the generated
# stacked-monomial forward (the small body, Y = b + M C), differentiated by torch's own autograd rather than through
# a Python autograd.Function whose backward calls the backward body: fewer ops and no Python in the backward (the
# 32-atom NequIP step on CPU went from 2-4% slower than stock to 1.0-1.3% faster, benchmarks/cpu_step_ab.py).
# Y has the custom op's bits; its derivatives agree with the op's to rounding, and, being torch's autograd, exist to
# any order (elsewhere a third derivative is refused). Calls with a zero row (with normalize) or a non-finite row
# go back to the Function (whose per-term body keeps NaN and inf where e3nn has them).
_SMALL_AUTOGRAD: dict = {}  # (ls, normalization) -> (C, b, DIM, eps)


def small_autograd(x: Tensor, ls: List[int], normalize: bool, normalization: int) -> Optional[Tensor]:
    lmax = max(ls)
    if x.device.type != "cpu" or use_triton(x.device) or not _CPU_SMALL or not 1 <= lmax <= torch_fallback._SMALL_LMAX:
        return None
    x2 = x.reshape(-1, 3)
    if not 0 < x2.shape[0] <= _CPU_AUTOGRAD_ROWS[lmax]:
        return None  # (no rows: the Function's empty result)
    if lmax == 1:
        # without normalize Y is linear in x: its second derivative is the op's zeros, where torch's autograd would
        # find x unused
        y = _l1_autograd(x2, ls, normalization) if normalize else None
        return None if y is None else y.reshape(x.shape[:-1] + (launch.offsets(ls)[1],))
    if not launch.compute_f64(x.dtype, lmax):
        return None
    key = (tuple(ls), normalization)
    found = _SMALL_AUTOGRAD.get(key)
    if found is None:
        offs, dim = launch.offsets(ls)
        c, b, _ = torch_fallback._small_matrices(list(ls), list(offs), dim, normalization)
        found = _SMALL_AUTOGRAD[key] = (c, b, dim, torch_fallback._table(normalization, True, lmax)[0])
    c, b, dim, eps = found
    u = x2.double()
    if normalize:
        # |x| as _direction computes it (so Y has the custom op's bits). sqrt's derivative at 0 is inf (and masking
        # it costs more ops than this path saves): calls with a zero row take the Function, as do calls with a
        # non-finite row; the others give unit directions, so Y is finite and needs no check
        x_, y_, z_ = u.unbind(1)
        r2 = x_ * x_ + y_ * y_ + z_ * z_
        lo, hi = torch.aminmax(r2.detach())
        if not (lo.item() > 0 and hi.item() < math.inf):
            return None
        u = u / torch.clamp_min(torch.sqrt(r2), eps).unsqueeze(1)
    y = torch.addmm(b, torch_fallback._monomials(u.t(), lmax).t(), c)
    if not normalize and not _all_finite(y.detach()):
        return None
    return y.to(x.dtype).reshape(x.shape[:-1] + (dim,))
