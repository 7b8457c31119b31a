"""First and second derivatives of the spherical harmonics (equitriton/ops.py autograd, CPU fallback path).

Issue 2, points 3 and 7: gradcheck/gradgradcheck in float64 with random upstream gradients, agreement with e3nn's
autograd, zero vectors and NaN rows, no shared autograd state (interleaved calls, threads), and a clear error for a
third derivative. The Triton kernels' derivatives are compared with this path in test_triton_interpreter.py.
"""

import threading

import pytest
import torch
from e3nn import o3
from torch.autograd import gradcheck, gradgradcheck

import equitriton

NORMALIZATIONS = ["integral", "component", "norm"]
F64 = torch.float64


def e3nn_sh(ls, x, normalize, normalization):
    """e3nn's own spherical harmonics; refuses to run while e3nn is patched (the reference would be ourselves)."""
    assert o3.SphericalHarmonics.forward.__module__ == "e3nn.o3._spherical_harmonics", "e3nn is patched"
    return o3.spherical_harmonics(ls, x, normalize, normalization)


def ours(ls, x, normalize, normalization):
    return equitriton.spherical_harmonics(ls, x, normalize, normalization)


def bound(impl, ls, normalize, normalization):
    """x -> impl(ls, x, normalize, normalization)."""
    return lambda x: impl(ls, x, normalize, normalization)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (b is the reference); the plain max |a - b| where b is exactly zero."""
    assert a.shape == b.shape and a.dtype == b.dtype
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    scale = b.abs().max()
    err = (a - b).abs().max()
    return (err if scale == 0 else err / scale).item()


def points(n: int, seed: int, rmin: float = 0.5, rmax: float = 1.5) -> torch.Tensor:
    """Random directions with norms uniform in [rmin, rmax] (kept away from 0 for finite differences)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(n, 3, generator=g, dtype=F64)
    u = u / u.norm(dim=-1, keepdim=True)
    r = rmin + (rmax - rmin) * torch.rand(n, 1, generator=g, dtype=F64)
    return u * r


def grads_up_to_second(fn, x, seed):
    """(y, dL/dx, d(dL/dx . w)/dx, d(dL/dx . w)/dg) for L = sum(g * fn(x)) with random g and w."""
    gen = torch.Generator().manual_seed(seed)
    x = x.detach().clone().requires_grad_(True)
    y = fn(x)
    g = torch.randn(y.shape, generator=gen, dtype=F64).requires_grad_(True)
    w = torch.randn(x.shape, generator=gen, dtype=F64)
    if not y.requires_grad:  # e3nn's l = 0 is a constant with no graph
        return y, torch.zeros_like(x), torch.zeros_like(x), torch.zeros_like(g)
    (gx,) = torch.autograd.grad(y, x, g, create_graph=True, materialize_grads=True)
    if not gx.requires_grad:  # e3nn's l <= 1 without normalize: a constant gradient with no graph
        return y.detach(), gx.detach(), torch.zeros_like(x), torch.zeros_like(g)
    gxx, gg = torch.autograd.grad(gx, (x, g), w, materialize_grads=True)
    return y.detach(), gx.detach(), gxx, gg


# ------------------------------------------------------------------------------------------- gradcheck, gradgradcheck
# every single l, each with one (normalize, normalization) pair so that all six pairs occur across the l's
SINGLE = [(l, l % 2 == 0, NORMALIZATIONS[l % 3]) for l in range(13)]
# mixed / repeated / unordered sets with all six (normalize, normalization) pairs; the full 0..12 set once
MIXED = [
    (ls, normalization, normalize)
    for ls in ([0, 1, 2, 3], [3, 1, 3, 0], [12, 0, 5], [2, 2, 2], [7, 4])
    for normalization in NORMALIZATIONS
    for normalize in (True, False)
] + [(list(range(13)), "component", True)]


@pytest.mark.parametrize("l,normalize,normalization", SINGLE)
def test_gradcheck_gradgradcheck_single_l(l, normalize, normalization):
    x = points(4, seed=l).requires_grad_(True)
    gen = torch.Generator().manual_seed(100 + l)
    grad_out = torch.randn(4, 2 * l + 1, generator=gen, dtype=F64)

    def f(x):
        return ours(l, x, normalize, normalization)

    # fast mode: v^T J u with random u, v (never all-ones); gradgradcheck with a random upstream gradient
    assert gradcheck(f, (x,), fast_mode=True)
    assert gradgradcheck(f, (x,), (grad_out,), fast_mode=True)


@pytest.mark.parametrize(
    "ls,normalization,normalize", MIXED, ids=[f"{ls}-{n}-{z}".replace(" ", "") for ls, n, z in MIXED]
)
def test_gradcheck_gradgradcheck_mixed_sets(ls, normalization, normalize):
    x = points(3, seed=len(ls)).requires_grad_(True)
    gen = torch.Generator().manual_seed(7)
    grad_out = torch.randn(3, sum(2 * l + 1 for l in ls), generator=gen, dtype=F64)

    def f(x):
        return ours(ls, x, normalize, normalization)

    assert gradcheck(f, (x,), fast_mode=True)
    assert gradgradcheck(f, (x,), (grad_out,), fast_mode=True)


def test_gradcheck_full_jacobian_low_l():
    """Slow mode once: every column of the Jacobian (and of the second-order one), not a random projection."""
    x = points(2, seed=3).requires_grad_(True)
    gen = torch.Generator().manual_seed(11)
    grad_out = torch.randn(2, 16, generator=gen, dtype=F64)

    def f(x):
        return ours([3, 0, 2, 1], x, True, "integral")

    assert gradcheck(f, (x,))
    assert gradgradcheck(f, (x,), (grad_out,))


def test_gradgradcheck_wrt_upstream_gradient():
    """The double backward's grad w.r.t. the upstream gradient (sh_double_backward's first output)."""
    x = points(3, seed=5).requires_grad_(True)
    gen = torch.Generator().manual_seed(12)
    g = torch.randn(3, 9 + 11, generator=gen, dtype=F64).requires_grad_(True)

    def vjp(x, g):
        return torch.autograd.grad(ours([4, 5], x, True, "norm"), x, g, create_graph=True)[0]

    assert gradcheck(vjp, (x, g), fast_mode=True)


# -------------------------------------------------------------------------------------------------- against e3nn
def e3nn_points(seed: int) -> torch.Tensor:
    """Random directions with norms spread over 0.1..10, plus axes and near-pole directions."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(64, 3, generator=g, dtype=F64)
    u = u / u.norm(dim=-1, keepdim=True) * 10.0 ** (2 * torch.rand(64, 1, generator=g, dtype=F64) - 1)
    special = torch.tensor(
        [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, -1, 0], [1e-9, 1, 0], [0.3, -0.4, 1.2], [-2, 1e-7, 1e-7]], dtype=F64
    )
    return torch.cat([u, special])


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("l", range(13))
def test_first_and_second_derivatives_match_e3nn(l, normalize):
    x = e3nn_points(seed=l)
    if not normalize:
        x = x / x.norm(dim=-1, keepdim=True) * 1.3  # homogeneous degree l: one scale keeps the max-abs metric fair
    for normalization in NORMALIZATIONS:
        a = grads_up_to_second(bound(ours, l, normalize, normalization), x, seed=l)
        b = grads_up_to_second(bound(e3nn_sh, l, normalize, normalization), x, seed=l)
        for name, u, v in zip(("forward", "backward", "double backward (x)", "double backward (grad_y)"), a, b):
            assert rel_err(u, v) <= 1e-12, f"{name}, {normalization}"


def test_mixed_set_derivatives_match_e3nn():
    ls = [5, 0, 2, 2, 12, 1]
    x = e3nn_points(seed=99)
    for normalize in (True, False):
        a = grads_up_to_second(bound(ours, ls, normalize, "component"), x, seed=1)
        b = grads_up_to_second(bound(e3nn_sh, ls, normalize, "component"), x, seed=1)
        for u, v in zip(a, b):
            assert rel_err(u, v) <= 1e-12


# ---------------------------------------------------------------------------------------------------------- float32
def second_order(fn, x, g, w):
    """(dL/dx, d(dL/dx . w)/dx, d(dL/dx . w)/dg) for L = sum(g * fn(x)), through autograd."""
    x, g = x.detach().clone().requires_grad_(True), g.detach().clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(fn(x), x, g, create_graph=True)
    gxx, gg = torch.autograd.grad(gx, (x, g), w, materialize_grads=True)
    return gx.detach(), gxx, gg


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("l", [2, 4, 7, 12])
def test_float32_derivatives_no_worse_than_e3nn(l, normalize):
    """Float32 first and second derivatives: the error against float64 on the same float32 inputs (x, upstream g,
    w) no worse than e3nn's own float32 error, with the allowance of the values' test (tests/test_numerics.py:
    1.5x, plus 2 float32 ulps of the largest value)."""
    gen = torch.Generator().manual_seed(900 + l)
    x = points(20_000, seed=900 + l).float()
    if not normalize:
        x = x / x.norm(dim=-1, keepdim=True) * 1.3
    g = torch.randn(x.shape[0], 2 * l + 1, generator=gen, dtype=F64).float()
    w = torch.randn(x.shape, generator=gen, dtype=F64).float()
    ref = second_order(bound(e3nn_sh, l, normalize, "component"), x.double(), g.double(), w.double())
    mine = second_order(bound(ours, l, normalize, "component"), x, g, w)
    theirs = second_order(bound(e3nn_sh, l, normalize, "component"), x, g, w)
    for name, r, a, b in zip(("backward", "double backward (x)", "double backward (grad_y)"), ref, mine, theirs):
        assert a.dtype == torch.float32
        err_ours, err_e3nn = rel_err(a.double(), r), rel_err(b.double(), r)
        assert err_ours <= 1.5 * err_e3nn + 2 * 2.0**-23, f"{name}: ours {err_ours:.2e} vs e3nn {err_e3nn:.2e}"


# ------------------------------------------------------------------------------------------------ special inputs
@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_zero_vector_normalized_matches_e3nn(normalization):
    """x = 0 with normalize=True: Y_0 only, as e3nn, and finite first and second derivatives.

    Below eps = 1e-12 torch.nn.functional.normalize (which e3nn calls) is x / eps, so the reference for every
    derivative at x = 0 is e3nn's polynomial at x / eps without normalization. (e3nn itself returns the same values and
    first derivatives, but NaN second derivatives: torch's norm has a NaN double backward at 0.)
    """
    ls = list(range(13))
    zero = torch.zeros(2, 3, dtype=F64)
    a = grads_up_to_second(bound(ours, ls, True, normalization), zero, seed=4)
    y = a[0]
    assert torch.equal(y[:, 1:], torch.zeros_like(y[:, 1:])), "zero vector: only Y_0 is non-zero"
    e3nn_y, e3nn_gx, _, _ = grads_up_to_second(bound(e3nn_sh, ls, True, normalization), zero, seed=4)
    assert torch.equal(y, e3nn_y)
    assert rel_err(a[1], e3nn_gx) <= 1e-12
    ref = grads_up_to_second(lambda x: e3nn_sh(ls, x / 1e-12, False, normalization), zero, seed=4)
    for name, u, v in zip(("forward", "backward", "double backward (x)", "double backward (grad_y)"), a, ref):
        assert torch.isfinite(u).all(), name
        assert rel_err(u, v) <= 1e-12, name
    # rows next to a zero row are unaffected by it
    x = torch.cat([zero, points(3, seed=2)])
    mixed = grads_up_to_second(bound(ours, ls, True, normalization), x, seed=4)
    alone = grads_up_to_second(bound(ours, ls, True, normalization), x[2:], seed=4)
    assert rel_err(mixed[0][2:], alone[0]) == 0.0


@pytest.mark.parametrize("n", [7, 2 * 4096 + 11])  # the second size runs the CPU fallback in row chunks
def test_nan_row_stays_in_its_row(n):
    ls = [0, 1, 2] if n > 100 else [0, 1, 2, 7, 12]
    x = points(n, seed=6)
    bad = n // 2 + 1
    x_nan = x.clone()
    x_nan[bad, 1] = float("nan")
    keep = torch.ones(n, dtype=torch.bool)
    keep[bad] = False
    for normalize in (True, False):
        clean = grads_up_to_second(bound(ours, ls, normalize, "integral"), x, seed=8)
        dirty = grads_up_to_second(bound(ours, ls, normalize, "integral"), x_nan, seed=8)
        for name, c, d in zip(("forward", "backward", "double backward (x)", "double backward (grad_y)"), clean, dirty):
            assert torch.equal(d[keep], c[keep]), f"{name}: NaN leaked out of its row"
        # the NaN row's values are NaN exactly where e3nn's are (Y_0 is a constant; x and z terms stay finite)
        ref = e3nn_sh(ls, x_nan[bad : bad + 1], normalize, "integral")
        assert torch.equal(torch.isnan(dirty[0][bad : bad + 1]), torch.isnan(ref))
        assert torch.isnan(dirty[0][bad]).any() and torch.isnan(dirty[1][bad]).any()


# ------------------------------------------------------------------------------------------------- no shared state
def test_two_calls_different_l_sets_before_one_backward():
    """Two calls (different l sets, normalizations, inputs) in one graph; one backward, then one double backward."""
    x1 = points(5, seed=20)
    x2 = points(6, seed=21, rmin=0.1, rmax=3.0)
    gen = torch.Generator().manual_seed(22)
    w1 = torch.randn(5, 8, generator=gen, dtype=F64)
    w2 = torch.randn(6, 1 + 7 + 7 + 25, generator=gen, dtype=F64)
    v1, v2 = torch.randn(5, 3, generator=gen, dtype=F64), torch.randn(6, 3, generator=gen, dtype=F64)

    def run(fn):
        a = x1.clone().requires_grad_(True)
        b = x2.clone().requires_grad_(True)
        loss = (fn([1, 2], a, True, "norm") * w1).sum() + (fn([0, 3, 3, 12], b, False, "integral") * w2).sum()
        # same x through both l sets too
        loss = loss + (fn([4], a, False, "component") ** 2).sum()
        ga, gb = torch.autograd.grad(loss, (a, b), create_graph=True)
        gga, ggb = torch.autograd.grad((ga * v1).sum() + (gb * v2).sum(), (a, b))
        return ga.detach(), gb.detach(), gga, ggb

    for u, v in zip(run(ours), run(e3nn_sh)):
        assert rel_err(u, v) <= 1e-12


def test_threads_do_not_interfere():
    """Threads running different l sets / normalizations concurrently get the single-threaded results."""
    jobs = [
        ([0, 1, 2], True, "integral"),
        ([5, 3, 5], False, "norm"),
        ([12], True, "component"),
        ([2, 7], True, "norm"),
    ]
    xs = [points(64, seed=30 + i) for i in range(len(jobs))]

    def run(i):
        ls, normalize, normalization = jobs[i]
        return grads_up_to_second(bound(ours, ls, normalize, normalization), xs[i], seed=i)

    expected = [run(i) for i in range(len(jobs))]
    barrier = threading.Barrier(len(jobs))
    errors: list[str] = []

    def worker(i):
        barrier.wait()
        for _ in range(3):
            for u, v in zip(run(i), expected[i]):
                if not torch.equal(u, v):
                    errors.append(f"thread {i} ({jobs[i]}) got a different result")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_third_derivative_raises_clear_error():
    # l_max 4: the autograd.Function (small CPU calls at l_max 2-3 are differentiated by torch's autograd, to any
    # order: tests/test_eager_path.py)
    x = points(3, seed=40).requires_grad_(True)
    y = ours([1, 2, 4], x, True, "integral")
    (g,) = torch.autograd.grad(y, x, torch.randn_like(y), create_graph=True)
    (h,) = torch.autograd.grad(g, x, torch.randn_like(g), create_graph=True)
    assert h.requires_grad
    with pytest.raises(RuntimeError, match="second order"):
        torch.autograd.grad(h, x, torch.randn_like(h))
