"""A tiny straight-line IR and forward-mode automatic differentiation for code generation.

The spherical-harmonic math is written once, in plain Python, over `Sym` values. Running it records
SSA statements (one multiply/add per line) into a `Program`. Derivatives come from running the same
math over `Dual` numbers whose parts are `Sym`s: the product and sum rules then emit the derivative
statements, so first and second derivatives are derived mechanically, never written by hand.

Constants are exact: a `Const` carries the exact sympy value and is emitted per target (bit pattern in
Triton, float literal in torch). Zero derivatives are `None` and cost nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy


@dataclass(frozen=True)
class Const:
    """An exact constant; `per_normalization` holds three values (integral, component, norm) when it depends on it."""

    value: sympy.Expr | None = None
    per_normalization: tuple[sympy.Expr, sympy.Expr, sympy.Expr] | None = None


@dataclass
class Stmt:
    name: str
    op: str  # "input", "const", "add", "sub", "mul", "neg"
    args: tuple
    deps: tuple[str, ...] = ()


@dataclass
class Program:
    """Records SSA statements with common-subexpression elimination."""

    stmts: list[Stmt] = field(default_factory=list)
    _cse: dict = field(default_factory=dict)
    _count: int = 0
    _ones: set = field(default_factory=set)  # names of constants that are exactly 1 (derivative seeds)

    def _emit(self, op: str, args: tuple, deps: tuple[str, ...]) -> Sym:
        key = (op, args)
        if op in ("add", "mul"):  # commutative: canonical order improves CSE
            key = (op, tuple(sorted(args)))
        if key in self._cse:
            return Sym(self, self._cse[key])
        name = f"t{self._count}"
        self._count += 1
        self.stmts.append(Stmt(name, op, args, deps))
        self._cse[key] = name
        return Sym(self, name)

    def input(self, name: str) -> Sym:
        self.stmts.append(Stmt(name, "input", ()))
        return Sym(self, name)

    def const(self, c: Const) -> Sym:
        key = ("const", c)
        if key in self._cse:
            return Sym(self, self._cse[key])
        name = f"c{self._count}"
        self._count += 1
        self.stmts.append(Stmt(name, "const", (c,)))
        self._cse[key] = name
        if c.value is not None and c.value == 1:
            self._ones.add(name)
        return Sym(self, name)


class Sym:
    """A value in a `Program`; arithmetic on it records statements."""

    __slots__ = ("prog", "name")

    def __init__(self, prog: Program, name: str):
        self.prog = prog
        self.name = name

    def __add__(self, other: Sym) -> Sym:
        return self.prog._emit("add", (self.name, other.name), (self.name, other.name))

    def __sub__(self, other: Sym) -> Sym:
        return self.prog._emit("sub", (self.name, other.name), (self.name, other.name))

    def __mul__(self, other: Sym) -> Sym:
        if self.name in self.prog._ones:
            return other
        if other.name in self.prog._ones:
            return self
        return self.prog._emit("mul", (self.name, other.name), (self.name, other.name))

    def __neg__(self) -> Sym:
        return self.prog._emit("neg", (self.name,), (self.name,))


def _add(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def _mul(a, b):
    if a is None or b is None:
        return None
    return a * b


class Dual:
    """Forward-mode dual number: `val` plus one tangent per named direction; parts may be Duals (nesting)."""

    __slots__ = ("val", "tan")

    def __init__(self, val, tan: dict | None = None):
        self.val = val
        self.tan = tan or {}

    def __add__(self, other: Dual) -> Dual:
        keys = set(self.tan) | set(other.tan)
        return Dual(self.val + other.val, {k: _add(self.tan.get(k), other.tan.get(k)) for k in sorted(keys)})

    def __sub__(self, other: Dual) -> Dual:
        keys = set(self.tan) | set(other.tan)
        tan = {}
        for k in sorted(keys):
            a, b = self.tan.get(k), other.tan.get(k)
            tan[k] = a if b is None else (-b if a is None else a - b)
        return Dual(self.val - other.val, tan)

    def __mul__(self, other: Dual) -> Dual:
        keys = set(self.tan) | set(other.tan)
        tan = {}
        for k in sorted(keys):
            tan[k] = _add(_mul(self.tan.get(k), other.val), _mul(self.val, other.tan.get(k)))
        return Dual(self.val * other.val, tan)

    def __neg__(self) -> Dual:
        return Dual(-self.val, {k: (None if v is None else -v) for k, v in self.tan.items()})


def constant_like(template, c: Sym):
    """Lift a constant `Sym` into the same (possibly nested) Dual structure as `template`, with zero tangents."""
    if isinstance(template, Dual):
        return Dual(constant_like(template.val, c), {})
    return c
