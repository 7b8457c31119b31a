"""The real spherical harmonics, derived from the standard recurrences, in e3nn's convention.

Standard real solid harmonics with polar axis Z and azimuth in the (X, Y) plane, without the
Condon-Shortley phase::

    R_l^m = K_lm * Q_l^|m|(Z, r^2) * (C_m if m > 0, 1 if m = 0, S_|m| if m < 0)
    C_m + i S_m = (X + i Y)^m          (C_m = X C_{m-1} - Y S_{m-1}, S_m = X S_{m-1} + Y C_{m-1})
    Q_m^m = (2m-1)!!,  Q_{m+1}^m = (2m+1) Z Q_m^m,
    Q_l^m = ((2l-1) Z Q_{l-1}^m - (l+m-1) r^2 Q_{l-2}^m) / (l-m)  (associated Legendre recurrence, kept homogeneous)
    K_lm  = sqrt((2l+1) (l-|m|)! / (l+|m|)!) * (sqrt(2) if m != 0)     ("component": sum_m R_lm^2 = 2l+1 on the sphere)

e3nn's convention, fixed by test against e3nn rather than copied: its input (x, y, z) maps to (X, Y, Z) = (z, x, y)
(its polar axis is y) and its row index for order m is l + m. Integral normalization divides by sqrt(4 pi), norm
normalization by sqrt(2l + 1).

Every polynomial is homogeneous of degree l, so `normalize=False` needs no special case.
"""

from __future__ import annotations

import sympy

from .ir import Const, Dual, Program, Sym, constant_like

LMAX = 12
NORMALIZATIONS = ("integral", "component", "norm")


def output_factor(l: int, m: int) -> Const:
    """K_lm times the normalization factor, for each normalization (integral, component, norm)."""
    am = abs(m)
    k = sympy.sqrt(sympy.Integer(2 * l + 1) * sympy.factorial(l - am) / sympy.factorial(l + am))
    if m != 0:
        k *= sympy.sqrt(2)
    return Const(per_normalization=(k / sympy.sqrt(4 * sympy.pi), k, k / sympy.sqrt(2 * l + 1)))


def double_factorial_odd(m: int) -> int:
    """(2m-1)!!, with (-1)!! = 1."""
    out = 1
    for k in range(1, 2 * m, 2):
        out *= k
    return out


def solid_harmonics(prog: Program, x, y, z, lmax: int, m_major: bool = False) -> dict[tuple[int, int], object]:
    """Trace R_l^m(x, y, z) for 0 <= l <= lmax into `prog`.

    `x, y, z` are `Sym`s or (nested) `Dual`s of `Sym`s in e3nn's axes. Returns {(l, m): value} with m in -l..l.
    Statements are recorded in order of increasing l, so a caller can guard each l behind `LMAX >= l`; with
    `m_major` they are recorded order by order (m outer, l inner): the l-recurrence of one m needs only its last
    two values alive, which keeps the derivative kernels' live state small (no register spills at high l).
    """
    X, Y, Z = z, x, y  # e3nn's polar axis is y

    def const(value) -> object:
        return constant_like(x, prog.const(Const(value=sympy.nsimplify(value))))

    r2 = X * X + Y * Y + Z * Z if lmax >= 2 else None
    C = {0: None, 1: X}
    S = {0: None, 1: Y}
    Q: dict[tuple[int, int], object] = {}
    out: dict[tuple[int, int], object] = {}

    def legendre(l: int, m: int) -> None:
        if l == m:
            Q[l, m] = None if m == 0 else const(double_factorial_odd(m))  # None = exact 1
        elif l == m + 1:
            Q[l, m] = Z if m == 0 else const(double_factorial_odd(m + 1)) * Z  # (2m+1) * (2m-1)!! = (2m+1)!!
        else:
            a = sympy.Rational(2 * l - 1, l - m)
            b = sympy.Rational(l + m - 1, l - m)
            Q[l, m] = const(a) * times(Z, Q[l - 1, m]) - const(b) * times(r2, Q[l - 2, m])

    def emit(l: int, m: int) -> None:
        f = constant_like(x, prog.const(output_factor(l, m)))
        am = abs(m)
        t = C[am] if m > 0 else (S[am] if m < 0 else None)
        out[l, m] = times(f, times(Q[l, am], t))

    def azimuthal(m: int) -> None:
        if m >= 2:
            C[m] = X * C[m - 1] - Y * S[m - 1]
            S[m] = X * S[m - 1] + Y * C[m - 1]

    if m_major:
        for m in range(lmax + 1):
            azimuthal(m)
            for l in range(m, lmax + 1):
                legendre(l, m)
                emit(l, m)
                if m:
                    emit(l, -m)
        return out
    for l in range(lmax + 1):
        azimuthal(l)
        for m in range(l + 1):
            legendre(l, m)
        for m in range(-l, l + 1):
            emit(l, m)
    return out


def times(a, b):
    """Product where `None` stands for an exact 1 (saves a multiply)."""
    if a is None:
        return b
    if b is None:
        return a
    return a * b


def make_inputs(prog: Program, order: int):
    """Inputs x, y, z as plain Syms (order 0), Duals over (x, y, z) (order 1), or Duals over (x, y, z) whose parts
    are Duals over the direction w (order 2; w = (wx, wy, wz) are extra inputs)."""
    xs = [prog.input(n) for n in ("x", "y", "z")]
    if order == 0:
        return xs
    one = prog.const(Const(value=sympy.Integer(1)))
    if order == 1:
        return [Dual(v, {d: (one if d == n else None) for d in "xyz"}) for v, n in zip(xs, "xyz")]
    ws = [prog.input(n) for n in ("wx", "wy", "wz")]
    inner = [Dual(v, {"w": w}) for v, w in zip(xs, ws)]
    one_d = Dual(one, {})
    return [Dual(v, {d: (one_d if d == n else None) for d in "xyz"}) for v, n in zip(inner, "xyz")]


__all__ = ["LMAX", "NORMALIZATIONS", "solid_harmonics", "make_inputs", "output_factor", "Sym"]
