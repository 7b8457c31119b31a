"""torch.func over the spherical harmonics (equitriton/transforms.py): vmap in one op call, and grad, jacrev, jacfwd,
hessian and their vmaps equal to e3nn's, through our API and through e3nn once patched."""

from __future__ import annotations

import importlib

import pytest
import torch
from e3nn import o3

import equitriton
from equitriton import ops

F64 = torch.float64
CASES = [([0, 1, 2], True, "norm"), ([12, 5], True, "component"), ([3], False, "integral")]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()


def all_transforms(f, x):
    """Every transform of f: R^3 -> R^dim that the harmonics support, on rows of x (n, 3), on x's device (also
    test_cuda.py's). The scalar weighs the columns (with normalize, a sum of squares per degree is constant on the
    sphere: its Hessian would be 0)."""
    c = torch.linspace(-1.0, 2.0, f(x[0]).shape[-1], dtype=x.dtype, device=x.device)
    scalar = lambda v: (f(v) * c).sin().sum()  # noqa: E731
    return {
        "vmap": torch.func.vmap(f)(x),
        "jacrev": torch.func.jacrev(f)(x[0]),
        "jacfwd": torch.func.jacfwd(f)(x[0]),
        "hessian": torch.func.hessian(scalar)(x[0]),
        "jacrev of jacrev": torch.func.jacrev(torch.func.jacrev(scalar))(x[0]),
        "jacfwd of jacfwd": torch.func.jacfwd(torch.func.jacfwd(scalar))(x[0]),
        "jacrev of jacfwd": torch.func.jacrev(torch.func.jacfwd(scalar))(x[0]),
        "jacfwd of jacfwd, vector": torch.func.jacfwd(torch.func.jacfwd(f))(x[0]),
        "vmap of grad": torch.func.vmap(torch.func.grad(lambda v: f(v).sin().sum()))(x),
        "vmap of jacrev": torch.func.vmap(torch.func.jacrev(f))(x),
        "vmap of hessian": torch.func.vmap(torch.func.hessian(scalar))(x[:3]),
    }


@pytest.mark.parametrize("ls, normalize, normalization", CASES, ids=lambda v: str(v))
def test_torch_func_transforms_equal_e3nn(ls, normalize, normalization):
    x = torch.randn(5, 3, dtype=F64, generator=torch.Generator().manual_seed(3))
    ref = all_transforms(lambda v: o3.spherical_harmonics(ls, v, normalize, normalization), x)
    ours = all_transforms(lambda v: equitriton.spherical_harmonics(ls, v, normalize, normalization), x)
    patch = importlib.import_module("equitriton.patch")  # importing it patches the process: unpatched again below
    try:
        with patch.patched():
            patched = all_transforms(lambda v: o3.spherical_harmonics(ls, v, normalize, normalization), x)
    finally:
        patch.unpatch()
    for name in ref:
        assert ours[name].shape == ref[name].shape, name
        assert _rel(ours[name], ref[name]) < 1e-12, name
        assert torch.equal(patched[name], ours[name]), name


def test_vmap_is_one_op_call(monkeypatch):
    """A vmapped call runs the batching rule: one call of the body on the whole batch, not one per element."""
    calls = []
    body = ops._forward
    monkeypatch.setattr(ops, "_forward", lambda x, *a, **k: calls.append(tuple(x.shape)) or body(x, *a, **k))
    x = torch.randn(6, 4, 3, dtype=F64)
    y = torch.func.vmap(lambda v: equitriton.spherical_harmonics([0, 1, 2], v, True), in_dims=1)(x)
    assert calls == [(4, 6, 3)] and y.shape == (4, 6, 9)
    assert torch.equal(y, equitriton.spherical_harmonics([0, 1, 2], x.transpose(0, 1), True))


@pytest.mark.parametrize("outer", ["jacrev", "jacfwd"])
@pytest.mark.parametrize("inner", ["hessian", "jacfwd of jacfwd", "jacrev of jacrev"])
def test_third_derivatives_are_refused_by_name(outer, inner):
    x = torch.randn(3, dtype=F64)
    f = lambda v: equitriton.spherical_harmonics(2, v, True).sin().sum()  # noqa: E731
    second = {
        "hessian": torch.func.hessian(f),
        "jacfwd of jacfwd": torch.func.jacfwd(torch.func.jacfwd(f)),
        "jacrev of jacrev": torch.func.jacrev(torch.func.jacrev(f)),
    }[inner]
    with pytest.raises(RuntimeError, match="second order, not third"):
        getattr(torch.func, outer)(second)(x)


def test_vmap_compiles():
    """torch.compile over a vmapped call uses the batching rule (a grad transform inside torch.compile does not: see
    the module docstring of equitriton/transforms.py)."""
    x = torch.randn(10, 3, dtype=F64)
    f = lambda v: equitriton.spherical_harmonics([0, 1, 2], v, True)  # noqa: E731
    torch._dynamo.reset()
    assert torch.allclose(torch.compile(torch.func.vmap(f))(x), f(x), rtol=0, atol=1e-15)
