"""The code generator (equitriton/codegen): committed output is current, and its math is right.

Issue 2, point 6. The generator traces the solid-harmonic recurrences (and their forward-mode derivatives) into a
straight-line program; both generated modules are rendered from it. Here the traced programs are evaluated
independently of the rendered code -- exactly in sympy for low l, at 50 digits in mpmath for every l -- and checked
against a closed form built from sympy's Legendre polynomials, the sum rule, harmonicity and exact derivatives.
"""

import functools
import math
import random
import struct

import mpmath
import numpy as np
import pytest
import sympy

from equitriton.codegen import __main__ as codegen_main
from equitriton.codegen import emit
from equitriton.codegen.harmonics import LMAX, output_factor
from equitriton.codegen.render import render_torch, render_triton

X_, Y_, Z_ = sympy.symbols("x y z", real=True)  # e3nn's input axes
W_ = sympy.symbols("wx wy wz", real=True)


# ------------------------------------------------------------------------------------------------ committed output
@pytest.mark.parametrize("name,render", [("triton_kernels.py", render_triton), ("torch_fallback.py", render_torch)])
def test_committed_generated_files_are_current(name, render):
    committed = (codegen_main.GENERATED / name).read_text()
    assert committed == render(), f"equitriton/generated/{name} is stale: run `python -m equitriton.codegen`"


# ------------------------------------------------------------------------------------------------ program evaluation
@functools.cache
def traced(order: int) -> emit.Traced:
    return emit.trace(order)


def evaluator(order: int, inputs: dict, const, normalization: int = 1):
    """A memoised evaluator of `traced(order)`'s statements: name -> value, with `const(exact sympy value)`."""
    stmts = {s.name: s for s in traced(order).prog.stmts}
    memo = dict(inputs)

    def ev(name):
        if name in memo:
            return memo[name]
        s = stmts[name]
        if s.op == "const":
            c = s.args[0]
            v = const(c.value if c.per_normalization is None else c.per_normalization[normalization])
        elif s.op == "neg":
            v = -ev(s.args[0])
        else:
            a, b = ev(s.args[0]), ev(s.args[1])
            v = a + b if s.op == "add" else a - b if s.op == "sub" else a * b
        memo[name] = v
        return v

    return ev


def part(ev, v, zero):
    return zero if v is None else ev(v.name)


def sympy_values(order: int, l: int, normalization: int = 1):
    """{m: parts} for one l: order 0 -> P; order 1 -> (P, dP/dx, dP/dy, dP/dz); order 2 -> (P, grad P . w, H w)."""
    inputs = {"x": X_, "y": Y_, "z": Z_, "wx": W_[0], "wy": W_[1], "wz": W_[2]}
    ev = evaluator(order, inputs, lambda c: c, normalization)
    z = sympy.Integer(0)
    out = {}
    for m in range(-l, l + 1):
        v = traced(order).out[l, m]
        if order == 0:
            out[m] = part(ev, v, z)
        elif order == 1:
            out[m] = (part(ev, v.val, z), *[part(ev, v.tan.get(a), z) for a in "xyz"])
        else:
            hs = [z if v.tan.get(a) is None else part(ev, v.tan[a].tan.get("w"), z) for a in "xyz"]
            out[m] = (part(ev, v.val.val, z), part(ev, v.val.tan.get("w"), z), *hs)
    return out


# ------------------------------------------------------------------------------------------------ independent math
def closed_form(l: int, m: int) -> sympy.Expr:
    """Real solid harmonic, component normalization, without the Condon-Shortley phase, in e3nn's axes.

    r^l K_lm (-1)^m P_l^m(cos theta) {cos m phi, 1, sin |m| phi}, with sympy's associated Legendre function (which
    carries the (-1)^m phase), polar axis y and azimuth from z towards x: (X, Y, Z) = (z, x, y).
    """
    X, Y, Z = Z_, X_, Y_
    am = abs(m)
    t = sympy.Symbol("t")
    # P_l^m(t) = (-1)^m (1 - t^2)^(m/2) d^m/dt^m P_l(t); (1 - t^2)^(m/2) r^m = |(X + iY)^m|, absorbed in C_m / S_m
    assoc = sympy.assoc_legendre(l, am, t)
    dpl = sympy.diff(sympy.legendre(l, t), t, am)
    assert sympy.simplify(assoc - (-1) ** am * (1 - t**2) ** sympy.Rational(am, 2) * dpl) == 0
    r2 = X**2 + Y**2 + Z**2
    # r^(l - m) d^m P_l(Z / r) = sum_k a_k Z^k r^(l - m - k): only k of the parity of l - m occur, so a polynomial
    coeffs = sympy.Poly(dpl, t).all_coeffs()[::-1]
    assert all(a == 0 for k, a in enumerate(coeffs) if (l - am - k) % 2)
    poly = sum(a * Z**k * r2 ** ((l - am - k) // 2) for k, a in enumerate(coeffs) if (l - am - k) % 2 == 0)
    cm = sympy.expand((X + sympy.I * Y) ** am)
    trig = sympy.re(cm) if m > 0 else (sympy.im(cm) if m < 0 else 1)
    k = sympy.sqrt((2 * l + 1) * sympy.factorial(l - am) / sympy.factorial(l + am)) * (sympy.sqrt(2) if m else 1)
    return sympy.expand(k * poly * trig)  # (-1)^m of P_l^m cancels the Condon-Shortley phase


@pytest.mark.parametrize("l", range(7))
def test_polynomials_equal_legendre_closed_form(l):
    vals = sympy_values(0, l)
    for m in range(-l, l + 1):
        assert sympy.expand(vals[m] - closed_form(l, m)) == 0, f"l={l} m={m}"


@pytest.mark.parametrize("l", range(7))
def test_polynomials_homogeneous_harmonic_and_sum_rule(l):
    vals = sympy_values(0, l)
    r2 = X_**2 + Y_**2 + Z_**2
    total = 0
    for m, p in vals.items():
        p = sympy.expand(p)
        poly = sympy.Poly(p, X_, Y_, Z_)
        assert all(sum(mon) == l for mon in poly.monoms()), f"l={l} m={m} not homogeneous of degree l"
        lap = sympy.diff(p, X_, 2) + sympy.diff(p, Y_, 2) + sympy.diff(p, Z_, 2)
        assert sympy.expand(lap) == 0, f"l={l} m={m} not harmonic"
        total += p**2
    assert sympy.expand(total - (2 * l + 1) * r2**l) == 0  # component normalization: sum_m Y_lm^2 = (2l+1) r^2l


@pytest.mark.parametrize("l", range(5))
def test_traced_derivatives_are_exact(l):
    p0 = sympy_values(0, l)
    d1 = sympy_values(1, l)
    d2 = sympy_values(2, l)
    xyz = (X_, Y_, Z_)
    for m in range(-l, l + 1):
        p = p0[m]
        grad = [sympy.diff(p, a) for a in xyz]
        assert sympy.expand(d1[m][0] - p) == 0
        for a in range(3):
            assert sympy.expand(d1[m][1 + a] - grad[a]) == 0, f"l={l} m={m} d/d{xyz[a]}"
        assert sympy.expand(d2[m][0] - p) == 0
        assert sympy.expand(d2[m][1] - sum(g * w for g, w in zip(grad, W_))) == 0, f"l={l} m={m} grad P . w"
        for a in range(3):
            hw = sum(sympy.diff(p, xyz[a], b) * w for b, w in zip(xyz, W_))
            assert sympy.expand(d2[m][2 + a] - hw) == 0, f"l={l} m={m} (H w)_{a}"


def mp_eval(order: int, point, w=(0, 0, 0), normalization: int = 1):
    """An mpmath evaluator of `traced(order)`; it computes at the caller's `mpmath.workdps` precision."""
    inputs = dict(zip(("x", "y", "z", "wx", "wy", "wz"), map(mpmath.mpf, (*point, *w))))
    return evaluator(order, inputs, lambda c: mpmath.mpf(str(sympy.N(c, 80))), normalization)


def test_all_l_at_50_digits_sum_rule_and_closed_form():
    """Every l up to 12: the sum rule on the unit sphere, and the closed form at a random point, to 1e-40."""
    rng = random.Random(0)
    with mpmath.workdps(50):
        for _ in range(3):
            p = [mpmath.mpf(rng.uniform(-1, 1)) for _ in range(3)]
            nrm = mpmath.sqrt(sum(c * c for c in p))
            p = [c / nrm for c in p]
            ev = mp_eval(0, p)
            for l in range(LMAX + 1):
                vals = [part(ev, traced(0).out[l, m], mpmath.mpf(0)) for m in range(-l, l + 1)]
                assert abs(sum(v * v for v in vals) - (2 * l + 1)) < 1e-40, f"sum rule l={l}"
                if l in (8, 12):  # the high l where the original EquiTriton had a wrong term; one m each side
                    for m in (-l + 1, 3):
                        ref = closed_form(l, m).subs({X_: p[0], Y_: p[1], Z_: p[2]})
                        assert abs(vals[m + l] - mpmath.mpf(str(sympy.N(ref, 60)))) < 1e-40, f"l={l} m={m}"


def test_all_l_derivatives_at_50_digits():
    """Every l: first- and second-order parts against central differences of the traced polynomials (h = 1e-15)."""
    rng = random.Random(1)
    h = mpmath.mpf("1e-15")
    with mpmath.workdps(60):
        p = [mpmath.mpf(rng.uniform(-1, 1)) for _ in range(3)]
        w = [mpmath.mpf(rng.uniform(-1, 1)) for _ in range(3)]
        ev1 = mp_eval(1, p)
        ev2 = mp_eval(2, p, w)
        shifted = {}
        for a in range(3):
            for s in (1, -1):
                q = list(p)
                q[a] += s * h
                shifted[a, s] = mp_eval(1, q)
        zero = mpmath.mpf(0)
        for l in range(LMAX + 1):
            for m in range(-l, l + 1):
                v1, v2 = traced(1).out[l, m], traced(2).out[l, m]
                grad = [part(ev1, v1.tan.get(c), zero) for c in "xyz"]
                scale = 1 + max(abs(g) for g in grad)
                for a in range(3):
                    fd = (part(shifted[a, 1], v1.val, zero) - part(shifted[a, -1], v1.val, zero)) / (2 * h)
                    assert abs(fd - grad[a]) < 1e-25 * scale, f"l={l} m={m} d{a}"
                    # (H w)_a = d/dx_a (grad P . w), from the first-order program
                    gw = [
                        sum(part(shifted[a, s], v1.tan.get(c), zero) * wc for c, wc in zip("xyz", w)) for s in (1, -1)
                    ]
                    hw = zero if v2.tan.get("xyz"[a]) is None else part(ev2, v2.tan["xyz"[a]].tan.get("w"), zero)
                    assert abs((gw[0] - gw[1]) / (2 * h) - hw) < 1e-25 * scale**2, f"l={l} m={m} (Hw)_{a}"
                assert abs(part(ev2, v2.val.tan.get("w"), zero) - sum(g * wc for g, wc in zip(grad, w))) < 1e-40 * scale


# ------------------------------------------------------------------------------------------------ constant folding
def _leaves(v, path=()):
    """(path, Sym) for every named part of a traced output (a Sym or nested Duals)."""
    if v is None:
        return []
    if isinstance(v, emit.Dual):
        out = _leaves(v.val, path + ("val",))
        for k, t in sorted(v.tan.items()):
            out += _leaves(t, path + (k,))
        return out
    return [(path, v)]


def _mp_program(prog, inputs: dict, normalization: int):
    """Evaluate any program's statements (traced or folded: with `axpy`, a + c b) at mpmath precision."""
    stmts = {s.name: s for s in prog.stmts}
    memo = dict(inputs)

    def ev(name):
        if name not in memo:
            s = stmts[name]
            if s.op == "const":
                c = s.args[0]
                exact = c.value if c.per_normalization is None else c.per_normalization[normalization]
                memo[name] = mpmath.mpf(str(sympy.N(exact, 80)))
            elif s.op == "neg":
                memo[name] = -ev(s.args[0])
            elif s.op == "axpy":
                memo[name] = ev(s.args[0]) + ev(s.args[2]) * ev(s.args[1])
            else:
                a, b = ev(s.args[0]), ev(s.args[1])
                memo[name] = a + b if s.op == "add" else a - b if s.op == "sub" else a * b
        return memo[name]

    return ev


@pytest.mark.parametrize("order", [0, 1, 2])
def test_folded_program_equals_traced_at_50_digits(order):
    """fold.py (the torch fallback's constant folding) changes no value: every output part of every l, for each
    normalization, equals the traced program's at a random point, to 1e-40; and it removes ops."""
    from equitriton.codegen.fold import fold

    rng = random.Random(3 + order)
    t = emit.trace(order, m_major=order > 0)
    f = fold(t)
    with mpmath.workdps(50):
        point = {n: mpmath.mpf(rng.uniform(-1, 1)) for n in ("x", "y", "z", "wx", "wy", "wz")}
        for normalization in range(3):
            ev_t = _mp_program(t.prog, point, normalization)
            ev_f = _mp_program(f.prog, point, normalization)
            for lm in t.out:
                want, got = _leaves(t.out[lm]), _leaves(f.out[lm])
                assert [p for p, _ in want] == [p for p, _ in got], lm
                for (path, a), (_, b) in zip(want, got):
                    va, vb = ev_t(a.name), ev_f(b.name)
                    assert abs(va - vb) <= 1e-40 * (1 + abs(va)), f"{lm} {path} normalization {normalization}"
    ops = lambda prog: sum(s.op not in ("input", "const") for s in prog.stmts)  # noqa: E731
    assert ops(f.prog) < 0.8 * ops(t.prog)


# ------------------------------------------------------------------------------------------------ constants
def test_normalization_factors():
    for l in (0, 1, 5, 12):
        for m in (-l, 0, l):
            integral, component, norm = output_factor(l, m).per_normalization
            assert sympy.simplify(integral - component / sympy.sqrt(4 * sympy.pi)) == 0
            assert sympy.simplify(norm - component / sympy.sqrt(2 * l + 1)) == 0


def test_emitted_constants_are_correctly_rounded():
    """Bit patterns in the Triton kernels: nearest float64 / float32 to the exact sympy value."""
    rng = random.Random(2)
    consts = [s.args[0] for s in traced(2).prog.stmts if s.op == "const"]
    for c in rng.sample(consts, 40) + [emit.Const(value=sympy.sqrt(2) / sympy.sqrt(sympy.pi))]:
        for v in [c.value] if c.per_normalization is None else c.per_normalization:
            exact = mpmath.mpf(str(sympy.N(v, 60)))
            f64 = struct.unpack("<d", struct.pack("<q", emit._bits64(v)))[0]
            f32 = np.frombuffer(np.int32(emit._bits32(v)).tobytes(), dtype=np.float32)[0]
            with mpmath.workdps(60):
                assert abs(mpmath.mpf(f64) - exact) <= abs(exact) * 2.0**-53, v
                assert abs(mpmath.mpf(float(f32)) - exact) <= abs(exact) * 2.0**-24, v
            assert math.isfinite(f64) and f64 > 0


# ------------------------------------------------------------------------------------------------ derivative ladder
@pytest.mark.parametrize("normalization", range(3))
@pytest.mark.parametrize("l", [1, 2, 5, 9, 12])
def test_derivative_ladder_holds_exactly_per_normalization(l, normalization):
    """codegen/ladder.py: d/da Y_{l,m} = sum_m' D^l_a[m, m'] Y_{l-1,m'}, with the output factors of each
    normalization, checked exactly in sympy against the traced polynomials (independent of ladder.py's own solve,
    which drops the factors); at most two terms per (a, m), one sign for all three normalizations."""
    from equitriton.codegen.ladder import rungs

    hi = sympy_values(0, l, normalization)
    lo = sympy_values(0, l - 1, normalization)
    ladder = rungs(l)
    for a, sym in zip("xyz", (X_, Y_, Z_)):
        for m in range(-l, l + 1):
            row = [r for r in ladder[a] if r.m == m]
            assert len(row) <= 2, (a, m)
            assert all(len({sympy.sign(v) for v in r.value}) == 1 for r in row)
            combo = sum((r.value[normalization] * lo[r.m_low] for r in row), sympy.Integer(0))
            assert sympy.expand(sympy.diff(hi[m], sym) - combo) == 0, f"l={l} d/d{a} m={m}"


def test_derivative_ladder_rejects_l_out_of_range():
    from equitriton.codegen.ladder import rungs

    for bad in (0, LMAX + 1):
        with pytest.raises(ValueError, match="ladder runs from l = 1"):
            rungs(bad)
