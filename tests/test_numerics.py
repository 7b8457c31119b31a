"""Forward numerics of the spherical harmonics (CPU path): against e3nn, and against references that do not use e3nn.

Issue 2, point 7. Metric: max abs error / max abs value of the reference, per call.
"""

import math
import sys
from pathlib import Path

import pytest
import torch
from e3nn import o3

import equitriton

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from shbench.reference import mp_real_sh  # noqa: E402  (the mpmath reference, shared with f32_accuracy.py)

LS = list(range(13))
NORMALIZATIONS = ["integral", "component", "norm"]


def e3nn_sh(l, x, normalize, normalization="integral"):
    """e3nn's own spherical harmonics; refuses to run while e3nn is patched (the comparison would be with ourselves)."""
    fwd = o3.SphericalHarmonics.forward
    assert fwd.__module__ == "e3nn.o3._spherical_harmonics", "e3nn is patched: reference would be equitriton itself"
    return o3.spherical_harmonics(l, x, normalize, normalization)


def rel_err(a, b):
    assert a.shape == b.shape and a.dtype == b.dtype
    scale = b.abs().max()
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    return ((a - b).abs().max() / scale).item()


def random_directions(n, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=dtype)


def special_directions(dtype=torch.float64):
    eye = torch.eye(3, dtype=dtype)
    d = [eye, -eye, torch.tensor([[1.0, 1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, -2.0, 3.0]], dtype=dtype)]
    # nearly on a pole / axis: tiny transverse components
    d.append(torch.tensor([[1e-9, 1.0, 0.0], [0.0, 1.0, 1e-12], [1e-7, -1.0, 1e-7], [1.0, 1e-10, -1e-10]], dtype=dtype))
    return torch.cat(d)


def norm_scaled_points(seed):
    """Random and special directions with norms spread log-uniformly over 1e-8..1e8, plus exact 1e-8 and 1e8."""
    u = torch.cat([random_directions(300, seed), special_directions()])
    u = u / u.norm(dim=-1, keepdim=True)
    g = torch.Generator().manual_seed(seed + 1)
    r = 10.0 ** (torch.rand(len(u), generator=g, dtype=torch.float64) * 16 - 8)
    pts = [u * r[:, None], u * 1e-8, u * 1e8]
    return torch.cat(pts)


SCALES = [1e-8, 1e-3, 1.0, 1e3, 1e8]


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
@pytest.mark.parametrize("l", LS)
def test_float64_matches_e3nn_normalized(l, normalization):
    x = norm_scaled_points(seed=100 + l)
    ours = equitriton.spherical_harmonics(l, x, True, normalization)
    ref = e3nn_sh(l, x, True, normalization)
    assert rel_err(ours, ref) <= 1e-12


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
@pytest.mark.parametrize("l", LS)
def test_float64_matches_e3nn_unnormalized(l, normalization):
    # normalize=False: Y is a homogeneous polynomial of degree l; compare one norm scale at a time so that the
    # max-abs metric is not dominated by the largest scale.
    u = torch.cat([random_directions(200, 200 + l), special_directions()])
    u = u / u.norm(dim=-1, keepdim=True)
    for s in SCALES:
        x = u * s
        ours = equitriton.spherical_harmonics(l, x, False, normalization)
        ref = e3nn_sh(l, x, False, normalization)
        assert rel_err(ours, ref) <= 1e-12, f"scale {s}"


def test_float64_all_l_at_once_matches_e3nn():
    x = norm_scaled_points(seed=7)
    for normalization in NORMALIZATIONS:
        ours = equitriton.spherical_harmonics(LS, x, True, normalization)
        ref = e3nn_sh(LS, x, True, normalization)
        assert ours.shape == (len(x), 169)
        assert rel_err(ours, ref) <= 1e-12


@pytest.mark.parametrize("l", LS)
def test_component_sum_rule_unit_vectors(l):
    """sum_m Y_lm^2 = 2l+1 on the unit sphere (component normalization) -- no e3nn involved.

    Checked relative to 2l+1 (|sum / (2l+1) - 1| <= 1e-13), for normalize=True on arbitrary vectors and
    normalize=False on unit vectors.
    """
    x = torch.cat([random_directions(2000, 300 + l), special_directions()])
    u = x / x.norm(dim=-1, keepdim=True)
    for inp, normalize in ((x * 3.7, True), (u, False)):
        y = equitriton.spherical_harmonics(l, inp, normalize, "component")
        s = (y * y).sum(-1)
        assert (s / (2 * l + 1) - 1).abs().max().item() <= 1e-13
    # the other normalizations: integral = component / sqrt(4 pi), norm = component / sqrt(2l+1)
    yi = equitriton.spherical_harmonics(l, u, False, "integral")
    yn = equitriton.spherical_harmonics(l, u, False, "norm")
    assert ((yi * yi).sum(-1) * 4 * math.pi / (2 * l + 1) - 1).abs().max().item() <= 1e-13
    assert ((yn * yn).sum(-1) - 1).abs().max().item() <= 1e-13


def _expm_antisymmetric(X: torch.Tensor, t: float) -> torch.Tensor:
    """exp(t X) for a real antisymmetric X through the eigendecomposition of the Hermitian iX (accurate to ~1e-15;
    torch.matrix_exp of a float64 generator drifts by ~1e-12 in the rotation angle)."""
    lam, U = torch.linalg.eigh(1j * X.to(torch.complex128))
    return (U @ torch.diag(torch.exp(-1j * lam * t)) @ U.conj().T).real


def so3_generators_f64(l):
    """e3nn's generators (its basis convention), built in complex128: e3nn uses the default dtype."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return o3.so3_generators(l)
    finally:
        torch.set_default_dtype(old)


def wigner_d(irreps, a, b, c, k):
    """Block-diagonal Wigner D of `irreps` for e3nn's angles (Y-X-Y Euler, as o3.angles_to_matrix) and parity k."""
    blocks = []
    for mul, ir in irreps:
        X = so3_generators_f64(ir.l)
        d = (
            _expm_antisymmetric(X[1], float(a))
            @ _expm_antisymmetric(X[0], float(b))
            @ _expm_antisymmetric(X[1], float(c))
        )
        blocks += [d * ir.p**k] * mul
    return torch.block_diag(*blocks)


@pytest.mark.parametrize("l", LS)
def test_equivariance_wigner_d(l):
    """Y(R x) = D(R) Y(x) with e3nn's Wigner D; the check does not use e3nn's spherical harmonics."""
    torch.manual_seed(400 + l)
    x = random_directions(64, 500 + l)
    # vector input (1o): output irrep l has parity (-1)^l; include improper rotations (parity acts too)
    for det in (1.0, -1.0):
        for _ in range(3):
            # from angles, not D_from_matrix: recovering angles from a matrix (acos near the poles) loses ~1e-7
            a, b, c = o3.rand_angles(dtype=torch.float64)
            R = o3.angles_to_matrix(a, b, c) * det
            D = wigner_d(o3.Irreps([(1, (l, (-1) ** l))]), a, b, c, int(det < 0))
            for normalize in (True, False):
                lhs = equitriton.spherical_harmonics(l, x @ R.T, normalize, "integral")
                rhs = equitriton.spherical_harmonics(l, x, normalize, "integral") @ D.T
                assert rel_err(lhs, rhs) <= 1e-12


def test_equivariance_mixed_l_set():
    ls = [2, 0, 1, 2, 12, 5]
    x = random_directions(50, 9)
    a, b, c = o3.rand_angles(dtype=torch.float64)
    R = o3.angles_to_matrix(a, b, c)
    D = wigner_d(o3.Irreps([(1, (l, (-1) ** l)) for l in ls]), a, b, c, 0)
    lhs = equitriton.spherical_harmonics(ls, x @ R.T, True, "component")
    rhs = equitriton.spherical_harmonics(ls, x, True, "component") @ D.T
    assert rel_err(lhs, rhs) <= 1e-12


# --------------------------------------------------------------------------------- high-precision reference (mpmath)
@pytest.mark.parametrize("l", LS)
def test_high_precision_reference(l):
    pts = torch.cat(
        [random_directions(4, 600 + l), torch.tensor([[0.3, -0.2, 0.9], [2.0, 1e-3, -5.0]], dtype=torch.float64)]
    )
    ref = torch.tensor([mp_real_sh(l, *map(float, p)) for p in pts], dtype=torch.float64)
    ours = equitriton.spherical_harmonics(l, pts, True, "integral")
    assert rel_err(ours, ref) <= 1e-13 * max(1, l)
    # and the other normalizations, from the same reference
    comp = equitriton.spherical_harmonics(l, pts, True, "component")
    assert rel_err(comp, ref * math.sqrt(4 * math.pi)) <= 1e-13 * max(1, l)
    nrm = equitriton.spherical_harmonics(l, pts, True, "norm")
    assert rel_err(nrm, ref * math.sqrt(4 * math.pi / (2 * l + 1))) <= 1e-13 * max(1, l)


def test_high_precision_reference_unnormalized():
    """normalize=False: r^l times the unit-sphere value."""
    pts = random_directions(3, 700) * torch.tensor([[1e-3], [1.0], [1e4]], dtype=torch.float64)
    for l in (0, 1, 5, 12):
        r = pts.norm(dim=-1, keepdim=True)
        ref = torch.tensor([mp_real_sh(l, *map(float, p)) for p in pts], dtype=torch.float64) * r**l
        ours = equitriton.spherical_harmonics(l, pts, False, "integral")
        for i in range(len(pts)):
            assert rel_err(ours[i], ref[i]) <= 1e-12


# --------------------------------------------------------------------------------------------------------- float32
def f32_errors(l, normalize, normalization, n=100_000, seed=0):
    x = random_directions(n, 800 + l + seed)
    if not normalize:
        x = x / x.norm(dim=-1, keepdim=True)
    x32 = x.float()
    x64 = x32.double()  # identical inputs for both precisions
    ref = e3nn_sh(l, x64, normalize, normalization)
    ours64 = equitriton.spherical_harmonics(l, x64, normalize, normalization)
    assert rel_err(ours64, ref) <= 1e-12
    ours = equitriton.spherical_harmonics(l, x32, normalize, normalization)
    theirs = e3nn_sh(l, x32, normalize, normalization)
    assert ours.dtype == torch.float32
    return rel_err(ours.double(), ref), rel_err(theirs.double(), ref)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("l", LS)
def test_float32_no_worse_than_e3nn(l, normalize):
    """float32 error vs the float64 result no worse than e3nn's own float32 error, at every l.

    Both are measured on the same 1e5 float32 inputs. Allowance: a factor 1.5 (the max over 1e5 points of a
    rounding error fluctuates by tens of percent between two correctly rounded implementations) plus an absolute
    floor of 2 float32 ulps of the max value (2 * 2**-23 ~ 2.4e-7, the unavoidable rounding of the stored result).
    """
    for normalization in ("integral", "component"):
        ours, theirs = f32_errors(l, normalize, normalization)
        assert ours <= 1.5 * theirs + 2 * 2.0**-23, f"{normalization}: ours {ours:.2e} vs e3nn {theirs:.2e}"
