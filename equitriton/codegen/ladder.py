"""The derivative ladder: every first derivative of a degree-l harmonic is a fixed combination of degree l - 1 ones.

A partial derivative of a harmonic homogeneous polynomial of degree l is harmonic and homogeneous of degree l - 1,
so it lies in the span of the 2l - 1 harmonics of that degree:

    d/da Y_{l,m} = sum_m' D^l_a[m, m'] Y_{l-1,m'}        (a = e3nn's x, y, z)

With it the derivative kernels need only the *values* of the harmonics below l_max (no derivative of the
recurrences is traced): the backward is g . dY = sum_m' (D^T g)_m' Y_{l-1,m'}, and the double backward's Hessian
term applies the ladder twice, ending on the degree l - 2 values. Each row of D has at most two non-zero entries
(the derivative moves the azimuthal order m by at most one), so this costs a few multiply-adds per output column.

The coefficients are derived here, exactly: the traced recurrence of `harmonics.solid_harmonics` is evaluated over
the rationals without its output factors (the polynomials P_{l,m} = Y_{l,m} / K_{l,m}), each derivative is solved
for in the basis of the degree below, and the identity is checked on every monomial before it is used. The output
factors (which depend on the normalization) are put back as the ratio K_{l,m} / K_{l-1,m'}.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import sympy

from .harmonics import LMAX, output_factor, solid_harmonics
from .ir import Program

AXES = "xyz"


@dataclass(frozen=True)
class Rung:
    """One non-zero coefficient of D^l_a: d/da Y_{l,m} gets `value` times Y_{l-1,m_low}.

    `value` holds the exact coefficient per normalization (integral, component, norm); its sign is the same for all
    three (the factors are positive), so `negative` and the magnitudes are what the kernels emit."""

    m: int
    m_low: int
    value: tuple[sympy.Expr, sympy.Expr, sympy.Expr]

    @property
    def negative(self) -> bool:
        return bool(self.value[1] < 0)

    @property
    def magnitude(self) -> tuple[sympy.Expr, sympy.Expr, sympy.Expr]:
        return tuple(abs(v) for v in self.value)


@cache
def _polynomials() -> dict[tuple[int, int], sympy.Poly]:
    """P_{l,m} = Y_{l,m} without its output factor, as rational polynomials in e3nn's (x, y, z)."""
    prog = Program()
    x, y, z = (prog.input(n) for n in AXES)
    out = solid_harmonics(prog, x, y, z, LMAX)
    gens = sympy.symbols("x y z")
    one = sympy.Poly(1, *gens, domain="QQ")
    env: dict[str, sympy.Poly] = {}
    for s in prog.stmts:
        if s.op == "input":
            env[s.name] = sympy.Poly(gens[AXES.index(s.name)], *gens, domain="QQ")
        elif s.op == "const":
            c = s.args[0]
            # the output factors K_lm (per-normalization constants) are left out: P = Y / K
            env[s.name] = one if c.per_normalization is not None else one * sympy.Rational(c.value)
        elif s.op == "neg":
            env[s.name] = -env[s.args[0]]
        else:
            a, b = env[s.args[0]], env[s.args[1]]
            env[s.name] = a + b if s.op == "add" else (a - b if s.op == "sub" else a * b)
    return {lm: env[v.name] for lm, v in out.items()}


def _coefficients(poly: sympy.Poly, monomials: list[tuple[int, ...]]) -> list[sympy.Rational]:
    terms = dict(poly.terms())
    return [terms.get(mono, sympy.Integer(0)) for mono in monomials]


@cache
def rungs(l: int) -> dict[str, tuple[Rung, ...]]:
    """The non-zero entries of D^l_x, D^l_y, D^l_z (1 <= l <= LMAX), exact, checked on every monomial."""
    if not 1 <= l <= LMAX:
        raise ValueError(f"the ladder runs from l = 1 to {LMAX}, got {l}")
    P = _polynomials()
    low = [P[l - 1, m] for m in range(-(l - 1), l)]
    monomials = sorted({mono for p in low for mono, _ in p.terms()})
    basis = sympy.Matrix([_coefficients(p, monomials) for p in low]).T  # (monomials, 2l - 1), full column rank
    # a square invertible block of rows solves exactly; the full-size check below rejects anything else
    pivots = basis.T.rref()[1]
    square_inv = basis.extract(list(pivots), list(range(basis.shape[1]))).inv()
    gens = P[0, 0].gens
    out: dict[str, tuple[Rung, ...]] = {}
    for a, gen in zip(AXES, gens):
        entries = []
        for m in range(-l, l + 1):
            target = P[l, m].diff(gen)
            b = sympy.Matrix(_coefficients(target, monomials))
            d = square_inv * b.extract(list(pivots), [0])
            if basis * d != b:
                raise AssertionError(f"d/d{a} P_{l},{m} is not in the span of degree {l - 1}")
            for j, dm in enumerate(d):
                if dm == 0:
                    continue
                m_low = j - (l - 1)
                hi = output_factor(l, m).per_normalization
                lo = output_factor(l - 1, m_low).per_normalization
                entries.append(Rung(m, m_low, tuple(dm * h / q for h, q in zip(hi, lo))))
        out[a] = tuple(entries)
    return out


__all__ = ["AXES", "Rung", "rungs"]
