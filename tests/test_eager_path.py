"""The eager path (ops.sh_eager, taken by the public API on plain tensors outside any tracing): it is taken where it
should be, gives the custom op's bits for Y and its first and second derivatives (CPU fallback here; the Triton
kernels under TRITON_INTERPRET=1 in a subprocess; CUDA in test_cuda.py), and everything traced, compiled or scripted
still records the custom op. On CPU, small calls at l_max 2-3 with grad differentiate the small body with torch's
autograd (fallback.small_autograd): the op's bits for Y, its derivatives to rounding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import equitriton
from equitriton import harmonics, ops

pytestmark = pytest.mark.skipif(ops.use_triton(torch.device("cpu")), reason="CPU runs the Triton interpreter here")
REPO = Path(__file__).resolve().parent.parent

LS = [0, 1, 2, 4, 1]  # l_max 4: the autograd.Function (l_max 2-3 at small N take fallback.small_autograd, below)


def _x(n=37, dtype=torch.float64, seed=0, grad=True, zero=True):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    if zero:
        x[0] = 0.0  # the clamped normalisation
    return x.to(dtype).requires_grad_(grad)


@pytest.fixture
def spy(monkeypatch):
    calls = []
    real = ops.sh_eager

    def counted(*args):
        calls.append(args[1:])
        return real(*args)

    monkeypatch.setattr(ops, "sh_eager", counted)
    return calls


@pytest.mark.parametrize("grad", [False, True])
def test_api_takes_the_eager_path(spy, grad):
    x = _x(grad=grad)
    y = equitriton.SphericalHarmonics(LS, True)(x)
    equitriton.spherical_harmonics(LS, x, False, "norm")
    assert len(spy) == 2
    if grad:
        assert type(y.grad_fn).__name__.startswith("_EagerForward")
    with torch.no_grad():
        assert equitriton.spherical_harmonics(2, x, True).grad_fn is None
    assert len(spy) == 3


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("normalization", ["integral", "component", "norm"])
def test_same_bits_as_the_custom_op(dtype, normalize, normalization):
    nid = harmonics.normalization_id(normalization)
    gen = torch.Generator().manual_seed(3)
    dim = sum(2 * l + 1 for l in LS)
    g = torch.randn(37, dim, generator=gen, dtype=torch.float64).to(dtype)
    outs = []
    for path in ("eager", "op"):
        x = _x(dtype=dtype)
        if path == "eager":
            y = equitriton.spherical_harmonics(LS, x, normalize, normalization)
            assert type(y.grad_fn).__name__ != "GeneratedBackwardFor_equitriton_sh_forward_defaultBackward"
        else:
            xf = x.float() if dtype == torch.float16 else x
            y = torch.ops.equitriton.sh_forward(xf, LS, normalize, nid).to(dtype)
        (gx,) = torch.autograd.grad(y, x, g, create_graph=True)
        (hx,) = torch.autograd.grad((gx * gx).sum(), x)
        outs.append((y.detach(), gx.detach(), hx))
    for a, b in zip(*outs):
        assert a.dtype == b.dtype == dtype
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)  # float16 overflows to the same inf/nan


def test_double_backward_bits_through_grad():
    """d/dgrad of the backward (the other double-backward output) through the eager path equals the op's."""
    gen = torch.Generator().manual_seed(4)
    dim = sum(2 * l + 1 for l in LS)
    res = []
    for fn in (ops.sh_eager, torch.ops.equitriton.sh_forward):
        x = _x()
        g = torch.randn(37, dim, generator=gen.manual_seed(4), dtype=torch.float64, requires_grad=True)
        (gx,) = torch.autograd.grad(fn(x, LS, True, 0), x, g, create_graph=True)
        res.append(torch.autograd.grad((gx**2).sum(), (x, g)))
    for a, b in zip(*res):
        assert torch.equal(a, b)


def test_gradcheck_and_gradgradcheck_on_the_eager_path(spy):
    x = _x(n=9, zero=False)
    f = equitriton.SphericalHarmonics([0, 1, 2, 4], True)
    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))
    x2 = _x(n=9, seed=1, zero=False)
    f2 = equitriton.SphericalHarmonics([3, 1], False, "component")
    assert torch.autograd.gradcheck(f2, (x2,))
    assert torch.autograd.gradgradcheck(f2, (x2,))
    assert spy


def test_third_derivative_refused():
    x = _x(n=5)
    y = equitriton.spherical_harmonics(4, x, True)
    (g,) = torch.autograd.grad(y.pow(2).sum(), x, create_graph=True)
    (h,) = torch.autograd.grad(g.pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="second order"):
        torch.autograd.grad(h.sum(), x)


def test_second_derivative_same_with_and_without_create_graph():
    """Training on forces asks the double backward without create_graph: the body runs without a third Function,
    with the values the Function gives."""
    out = []
    for create in (False, True):
        x = _x(n=7, zero=False)
        y = equitriton.spherical_harmonics([0, 2, 4], x, True)
        (f,) = torch.autograd.grad(y, x, torch.ones_like(y), create_graph=True)
        (h,) = torch.autograd.grad((f * f).sum(), x, create_graph=create)
        assert h.requires_grad == create
        out.append(h.detach())
    assert torch.equal(out[0], out[1])


def test_batched_shapes_and_parameter():
    x = torch.nn.Parameter(torch.randn(2, 4, 3, dtype=torch.float64))
    assert ops.eager(x)
    y = equitriton.spherical_harmonics([1, 2], x, True)
    assert y.shape == (2, 4, 8)
    assert torch.equal(y, torch.ops.equitriton.sh_forward(x, [1, 2], True, 0))


def test_not_eager_where_traced_or_transformed(monkeypatch):
    x = _x(n=4, grad=False)
    assert ops.eager(x)
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        assert not ops.eager(mode.from_tensor(x))

    class PassThrough(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    with PassThrough():
        assert not ops.eager(x)
    seen = []
    torch.func.vmap(lambda v: seen.append(ops.eager(v)) or v)(x)
    assert seen == [False]


def _graph_ops(gm) -> str:
    return "\n".join(str(n.target) for n in gm.graph.nodes)


def test_compile_still_records_the_custom_op(spy):
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(_graph_ops(gm))
        return gm.forward

    torch._dynamo.reset()
    m = equitriton.SphericalHarmonics([0, 1, 2], True)
    x = _x(n=6)
    y = torch.compile(m, backend=backend, fullgraph=True)(x)
    assert graphs and "equitriton.sh_forward" in graphs[0]
    assert not spy
    assert torch.equal(y, m(x))


def test_export_trace_and_script_record_the_custom_op(spy):
    m = equitriton.SphericalHarmonics([0, 1, 2], True)
    x = _x(n=6, grad=False)
    ep = torch.export.export(m, (x,))
    assert "equitriton.sh_forward" in _graph_ops(ep.graph_module)
    assert not spy
    traced = torch.jit.trace(m, (x,), check_trace=False)  # the check reruns m in eager mode
    assert "equitriton::sh_forward" in str(traced.graph)
    scripted = torch.jit.script(m)
    assert "equitriton::sh_forward" in str(scripted.inlined_graph) and "sh_eager" not in str(scripted.inlined_graph)
    assert not spy
    assert torch.equal(ep.module()(x), m(x)) and torch.equal(traced(x), m(x)) and torch.equal(scripted(x), m(x))


_INTERPRETED = r"""
import json, torch
from equitriton import ops
assert ops.use_triton(torch.device("cpu")) and ops.eager(torch.zeros(1, 3))
ls, res = [0, 1, 2, 3, 1], {}
gen = torch.Generator().manual_seed(5)
for dtype in (torch.float64, torch.float32):
    g = torch.randn(37, 19, generator=gen, dtype=torch.float64).to(dtype)
    outs = []
    for fn in (ops.sh_eager, torch.ops.equitriton.sh_forward):
        x = torch.randn(37, 3, generator=gen.manual_seed(6), dtype=torch.float64)[:, [2, 0, 1]].to(dtype)
        x.requires_grad_(True)
        gy = g.clone().requires_grad_(True)
        y = fn(x, ls, True, 1)
        (gx,) = torch.autograd.grad(y, x, gy, create_graph=True)
        hx, hg = torch.autograd.grad((gx * gx).sum(), (x, gy))
        outs.append((type(y.grad_fn).__name__, y, gx, hx, hg))
    res[str(dtype)] = dict(
        names=[outs[0][0], outs[1][0]],
        equal=[bool(torch.equal(a, b)) for a, b in zip(outs[0][1:], outs[1][1:])],
    )
print("JSON" + json.dumps(res))
"""


def test_interpreted_eager_path_same_bits_as_the_op():
    """Under TRITON_INTERPRET=1 the eager path launches the Triton kernels itself (ops._launch with fast=True:
    launch.run_cached, which has no compiled kernel to keep there) and gives the op's bits in all three directions."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", _INTERPRETED], env=env, capture_output=True, text=True, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("JSON")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    for dtype, r in json.loads(lines[-1][4:]).items():
        assert r["names"][0].startswith("_EagerForward") and "equitriton_sh_forward" in r["names"][1], (dtype, r)
        assert r["equal"] == [True] * 4, (dtype, r)


def test_op_bodies_launch_like_the_eager_path_unless_traced(monkeypatch):
    """The ops' Triton bodies (fast=False) on real tensors outside any tracing launch through launch.run_cached, as
    the eager path does (a plain torch.ops.equitriton call, a TorchScript model's); on fake tensors (torch.compile,
    export) through wrap_triton, which records the launch. Recorders stand in for both: no kernel runs."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from equitriton.kernels import launch

    calls = []
    monkeypatch.setattr(launch, "run_cached", lambda kernel, direction, *rest: calls.append(("cached", direction)))

    class _Recorder:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            return lambda *args, **meta: calls.append(("wrapped", self.kernel.__name__))

    monkeypatch.setattr(ops, "wrap_triton", _Recorder)
    x = torch.randn(8, 3, dtype=torch.float64)
    g = torch.randn(8, 9, dtype=torch.float64)
    ops._triton_forward(x, [0, 1, 2], True, 1)
    ops._triton_backward(x, g, [0, 1, 2], True, 1)
    ops._triton_double_backward(x, g, x, [0, 1, 2], True, 1)
    assert calls == [("cached", "forward"), ("cached", "backward"), ("cached", "double_backward")]
    calls.clear()
    with FakeTensorMode() as mode:
        ops._triton_forward(mode.from_tensor(x), [0, 1, 2], True, 1)
    assert calls == [("wrapped", "sh_forward_kernel")]


def test_first_derivative_without_create_graph_same_bits():
    """Forces in MD take dE/dx without create_graph: the eager backward then runs its body directly (no second
    autograd.Function); the result is the op's, and it carries no graph."""
    dim = sum(2 * l + 1 for l in LS)
    g = torch.randn(37, dim, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    res = []
    for fn in (ops.sh_eager, torch.ops.equitriton.sh_forward):
        x = _x()
        (gx,) = torch.autograd.grad(fn(x, LS, True, 2), x, g)
        assert not gx.requires_grad
        res.append(gx)
    assert torch.equal(res[0], res[1])


# ------------------------------------------------------------------------------ small CPU calls: torch's autograd
def _small_path(y) -> bool:
    name = type(y.grad_fn).__name__
    return y.grad_fn is not None and not name.startswith("_EagerForward") and "equitriton_sh_forward" not in name


def test_small_autograd_taken_where_it_should_be():
    assert _small_path(equitriton.spherical_harmonics([0, 1, 2], _x(zero=False), True))
    assert _small_path(equitriton.spherical_harmonics([3, 1], _x(dtype=torch.float32), False))
    assert _small_path(equitriton.SphericalHarmonics("0e + 1o + 2e", True)(_x(n=2048, zero=False)))
    assert _small_path(equitriton.spherical_harmonics([0, 3], _x(n=1024, zero=False), True))
    # with normalize, a zero row (sqrt's derivative at 0) takes the Function
    assert not _small_path(equitriton.spherical_harmonics([0, 1, 2], _x(), True))
    assert _small_path(equitriton.spherical_harmonics([0, 1], _x(n=37, zero=False), True))
    # l_max 1: a zero row (the norm's second derivative is 0 / 0 there) or no normalize (Y linear) take the Function
    assert not _small_path(equitriton.spherical_harmonics([0, 1], _x(n=37), True))
    assert not _small_path(equitriton.spherical_harmonics([0, 1], _x(n=37, zero=False), False))
    assert _small_path(equitriton.spherical_harmonics([1], _x(n=4096, dtype=torch.float32, zero=False), True))
    for ls, n in (([0, 1, 2], 2049), ([0, 1, 2, 3], 1025), ([0, 1], 4097), ([4], 37), ([0], 37)):  # rows / l_max
        assert type(equitriton.spherical_harmonics(ls, _x(n=n), True).grad_fn).__name__.startswith("_EagerForward")
    assert equitriton.spherical_harmonics([0, 1, 2], _x(grad=False), True).grad_fn is None
    empty = torch.zeros(2, 0, 3, dtype=torch.float64, requires_grad=True)
    assert equitriton.spherical_harmonics([0, 1, 2], empty, True).shape == (2, 0, 9)


@pytest.mark.parametrize("ls", [[2, 0, 3, 1], [1, 0, 1]])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("normalization", ["integral", "component", "norm"])
def test_small_autograd_matches_the_op(ls, dtype, normalize, normalization):
    """Y bit for bit; dY/dx (a zero vector included, without normalize) and both second derivatives to rounding
    (l_max 2-3: the stacked monomials; l_max 1: fallback._l1_autograd)."""
    nid = harmonics.normalization_id(normalization)
    gen = torch.Generator().manual_seed(9)
    g = torch.randn(41, sum(2 * l + 1 for l in ls), generator=gen, dtype=torch.float64).to(dtype)
    outs = []
    for path in ("eager", "op"):
        x = _x(n=41, dtype=dtype, seed=2, zero=not normalize)  # (normalize: a zero row takes the Function)
        gy = g.clone().requires_grad_(True)
        fn = equitriton.spherical_harmonics if path == "eager" else torch.ops.equitriton.sh_forward
        y = fn(ls, x, normalize, normalization) if path == "eager" else fn(x, ls, normalize, nid)
        assert _small_path(y) == (path == "eager" and (normalize or max(ls) > 1))
        (gx,) = torch.autograd.grad(y, x, gy, create_graph=True)
        hx, hg = torch.autograd.grad((gx * gx).sum(), (x, gy))
        outs.append((y.detach(), gx.detach(), hx, hg))
    (y1, g1, h1, k1), (y2, g2, h2, k2) = outs
    assert torch.equal(y1, y2)
    tol = 1e-13 if dtype == torch.float64 else 1e-6
    for a, b in ((g1, g2), (h1, h2), (k1, k2)):
        assert torch.isfinite(a).all()
        assert (a - b).abs().max().item() <= tol * max(b.abs().max().item(), 1.0)  # (zero for a linear Y)


@pytest.mark.parametrize("ls", [[0, 1, 2, 3], [0, 1]])
def test_small_autograd_gradchecks_and_higher_orders(ls):
    x = _x(n=7, zero=False)
    f = equitriton.SphericalHarmonics(ls, True, "norm")
    assert _small_path(f(x))
    assert torch.autograd.gradcheck(f, (x,)) and torch.autograd.gradgradcheck(f, (x,))
    # torch's autograd differentiates to any order here (the Function refuses a third derivative)
    y = f(x)
    (g,) = torch.autograd.grad(y.pow(2).sum(), x, create_graph=True)
    (h,) = torch.autograd.grad(g.pow(2).sum(), x, create_graph=True)
    (t,) = torch.autograd.grad(h.sum(), x)
    assert torch.isfinite(t).all()


def test_small_autograd_leaves_non_finite_rows_to_the_function():
    """A matrix product would spread a NaN or inf over its row's other values: such calls take the Function, whose
    values are e3nn's (NaN only where the row is NaN), and the other rows are untouched."""
    x = _x(n=9, zero=False).detach()
    x[4, 1] = float("nan")
    x[6] = torch.tensor([1e200, 0.0, 1.0], dtype=torch.float64)  # overflows without normalize
    x.requires_grad_(True)
    y = equitriton.spherical_harmonics([0, 1, 2], x, False)
    assert not _small_path(y)
    ref = torch.ops.equitriton.sh_forward(x, [0, 1, 2], False, 0)
    torch.testing.assert_close(y, ref, rtol=0, atol=0, equal_nan=True)
    ok = [i for i in range(9) if i not in (4, 6)]
    assert torch.isfinite(y[ok]).all()
