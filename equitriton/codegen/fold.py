"""Fold constant factors out of a traced program, for the torch fallback.

The traced recurrences multiply by a constant at almost every step (Legendre coefficients, output factors, the
doublings and negations that differentiation adds). In a Triton kernel those multiplies are free (registers, FMA);
in the torch fallback each one is an op: a pass over the chunk's rows. Here every value is carried as
`scale * base`, with `scale` an exact number per normalization and `base` a statement of the new program, so that

    c * v, -v, v + v          cost nothing (the scale changes),
    a * b                     is one multiply of the bases (the scales multiply),
    a + b                     is one add of the bases (equal scales), or one `torch.add(A, B, alpha=r)` (others),

and a value is multiplied by its scale only where an output consumes it (`Folded.scaled`). Fewer ops, and fewer
roundings: each scale is rounded once, from its exact value.

Every constant of the traced programs is q * sqrt(s) * pi^(p/2) (rational q, square-free integer s, p in {0, -1}):
`Exact` keeps that form, so products and ratios are exact and equal scales compare equal, without sympy simplification.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import sympy

from .ir import Const, Dual, Program, Sym


@dataclass(frozen=True)
class Exact:
    """q * sqrt(s) * pi^(p/2), s a square-free positive integer."""

    q: Fraction
    s: int = 1
    p: int = 0

    def __mul__(self, other: Exact) -> Exact:
        g = math.gcd(self.s, other.s)  # s1 s2 = g^2 (s1/g)(s2/g), the last square-free since s1, s2 are
        return Exact(self.q * other.q * g, (self.s // g) * (other.s // g), self.p + other.p)

    def inverse(self) -> Exact:
        # 1 / (q sqrt(s)) = sqrt(s) / (q s)
        return Exact(1 / (self.q * self.s), self.s, -self.p)

    def __neg__(self) -> Exact:
        return Exact(-self.q, self.s, self.p)

    def __add__(self, other: Exact) -> Exact:
        assert (self.s, self.p) == (other.s, other.p), "sums of unlike radicals do not occur in the traced programs"
        return Exact(self.q + other.q, self.s, self.p)

    def sympy(self) -> sympy.Expr:
        return (
            sympy.Rational(self.q.numerator, self.q.denominator)
            * sympy.sqrt(self.s)
            * sympy.pi ** sympy.Rational(self.p, 2)
        )


ONE = Exact(Fraction(1))


def exact(value: sympy.Expr) -> Exact:
    """`value` (a traced constant) in the q * sqrt(s) * pi^(p/2) form."""
    sign = 1 if value > 0 else -1
    sq = sympy.expand(value * value)  # rational * pi^p (exact: the constants are products of square roots)
    p = int(sq.as_powers_dict().get(sympy.pi, 0))
    r = sympy.Rational(sq / sympy.pi**p)
    assert r.is_Rational and p in (0, -1), f"unexpected constant {value}"
    # sqrt(a / b) = sqrt(a b) / b; a b = f^2 s with s square-free
    ab = int(r.p) * int(r.q)
    f, s = 1, 1
    for prime, k in sympy.factorint(ab).items():
        f *= prime ** (k // 2)
        s *= prime ** (k % 2)
    return Exact(Fraction(sign * f, int(r.q)), s, p)  # value^2 = r pi^p


Scale = tuple  # (Exact, Exact, Exact): integral, component, norm


def _scale(c: Const) -> Scale:
    vals = c.per_normalization if c.per_normalization is not None else (c.value,) * 3
    return tuple(exact(v) for v in vals)


def _mul(a: Scale, b: Scale) -> Scale:
    return tuple(x * y for x, y in zip(a, b))


def _ratio(a: Scale, b: Scale) -> Scale:
    return tuple(x * y.inverse() for x, y in zip(a, b))


def _neg(a: Scale) -> Scale:
    return tuple(-x for x in a)


UNIT = (ONE, ONE, ONE)
MINUS = _neg(UNIT)


def const(scale: Scale) -> Const:
    """A `Const` for the program (possibly negative: the torch target emits float literals, not bit patterns)."""
    vals = tuple(x.sympy() for x in scale)
    if len(set(scale)) == 1:
        return Const(value=vals[0])
    return Const(per_normalization=vals)


@dataclass
class Folded:
    """The folded program, with the traced outputs' structure in `out`. An output part whose scale is not 1 is a
    statement `mul(c, base)` (c its scale, a constant), emitted right after its base so that consumers can run as
    soon as their values exist; `scaled[name] = (c, base)` lets a consumer fold that multiply into its own op
    (the ladder bodies: the `value` of an `addcmul_`), which leaves the statement unread (and dropped)."""

    prog: Program
    inputs: list[str]
    out: dict
    scaled: dict


def _leaves(v):
    if v is None:
        return []
    if isinstance(v, Dual):
        return _leaves(v.val) + [n for t in v.tan.values() for n in _leaves(t)]
    return [v.name]


def fold(traced) -> Folded:
    """`traced` (emit.Traced) with its constant factors folded out (see the module docstring)."""
    new = Program()
    sinks = {n for v in traced.out.values() for n in _leaves(v)}
    val: dict[str, tuple[Scale, str | None]] = {}  # old name -> (scale, new base name; None for a pure constant)
    done: dict[str, Sym] = {}  # old sink name -> its value in the new program
    scaled: dict[str, tuple[str, str]] = {}
    for s in traced.prog.stmts:
        if s.op == "input":
            val[s.name] = (UNIT, new.input(s.name).name)
        elif s.op == "const":
            val[s.name] = (_scale(s.args[0]), None)
        elif s.op == "neg":
            sa, ba = val[s.args[0]]
            val[s.name] = (_neg(sa), ba)
        elif s.op == "mul":
            (sa, ba), (sb, bb) = val[s.args[0]], val[s.args[1]]
            if ba is None or bb is None:
                val[s.name] = (_mul(sa, sb), ba if bb is None else bb)
            else:
                val[s.name] = (_mul(sa, sb), new._emit("mul", (ba, bb), (ba, bb)).name)
        else:  # add, sub
            (sa, ba), (sb, bb) = val[s.args[0]], val[s.args[1]]
            assert ba is not None and bb is not None, "constant terms do not occur in the traced sums"
            if s.op == "sub":
                sb = _neg(sb)
            if ba == bb:
                total = tuple(x + y for x, y in zip(sa, sb))
                assert all(t.q for t in total), "a traced sum cancels exactly"
                val[s.name] = (total, ba)
            else:
                r = _ratio(sb, sa)
                if r == UNIT:
                    base = new._emit("add", (ba, bb), (ba, bb))
                elif r == MINUS:
                    base = new._emit("sub", (ba, bb), (ba, bb))
                else:  # a + r b, r exact per normalization
                    c = new.const(const(r)).name
                    base = new._emit("axpy", (ba, bb, c), (ba, bb, c))
                val[s.name] = (sa, base.name)
        if s.name in sinks and s.op != "input":
            scale, base = val[s.name]
            if base is None:  # a constant output (Y_0, or a derivative of Y_1): the constant itself
                done[s.name] = new.const(const(scale))
            elif scale == UNIT:
                done[s.name] = Sym(new, base)
            else:
                c = new.const(const(scale)).name
                done[s.name] = new._emit("mul", (c, base), (c, base))
                scaled[done[s.name].name] = (c, base)

    def part(v):
        if v is None:
            return None
        if isinstance(v, Dual):
            return Dual(part(v.val), {k: part(t) for k, t in v.tan.items()})
        return done.get(v.name) or Sym(new, v.name)  # inputs keep their names

    out = {lm: part(v) for lm, v in traced.out.items()}
    return Folded(new, [s.name for s in new.stmts if s.op == "input"], out, scaled)
