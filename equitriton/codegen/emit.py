"""Emit the traced spherical-harmonic programs as Triton kernels and as a torch fallback.

Both targets come from the same statements: the Triton kernels (one per direction: forward, backward,
double backward, each covering any set of l in one launch) and the torch functions that CPU tensors use.
Statements are grouped by the smallest l that needs them and guarded by `LMAX >= l`, so a kernel compiled
for l_max = 2 contains only the l <= 2 work.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import sympy

from .harmonics import LMAX, make_inputs, solid_harmonics
from .ir import Const, Dual, Program

EPS = sympy.Rational(1, 10**12)  # torch.nn.functional.normalize's default eps, as e3nn uses it


# ----------------------------------------------------------------------------------------------------------- constants
def _f64(value: sympy.Expr) -> float:
    return float(sympy.N(value, 60))


def _f32(value: sympy.Expr) -> np.float32:
    """The float32 nearest to the exact value (no double rounding through float64)."""
    exact = sympy.N(value, 60)
    guess = np.float32(_f64(value))
    cands = [np.nextafter(guess, np.float32(-np.inf)), guess, np.nextafter(guess, np.float32(np.inf))]
    return min(cands, key=lambda c: abs(sympy.Float(float(c), 60) - exact))


def _bits64(value: sympy.Expr) -> int:
    return struct.unpack("<q", struct.pack("<d", _f64(value)))[0]


def _bits32(value: sympy.Expr) -> int:
    return int(np.frombuffer(_f32(value).tobytes(), dtype=np.int32)[0])


def _const_values(c: Const) -> list[sympy.Expr]:
    vals = list(c.per_normalization) if c.per_normalization is not None else [c.value]
    for v in vals:
        assert v > 0, "constants are emitted as positive bit patterns"
    return vals


# ----------------------------------------------------------------------------------------------------------- programs
@dataclass
class Traced:
    prog: Program
    inputs: list[str]
    out: dict  # (l, m) -> traced value (Sym or nested Dual)


def trace(order: int, m_major: bool = False, lmax: int = LMAX) -> Traced:
    prog = Program()
    xyz = make_inputs(prog, order)
    out = solid_harmonics(prog, *xyz, lmax, m_major=m_major)
    return Traced(prog, [s.name for s in prog.stmts if s.op == "input"], out)


def _name(v) -> str | None:
    return None if v is None else v.name


def sinks(order: int, value) -> dict[str, str | None]:
    """The named parts of one traced output that a kernel of the given order consumes."""
    if order == 0:
        return {"p": _name(value)}
    if order == 1:
        return {"p": _name(value.val), **{f"d{a}": _name(value.tan.get(a)) for a in "xyz"}}
    parts = {"p": _name(value.val.val), "dw": _name(value.val.tan.get("w"))}
    for a in "xyz":
        t = value.tan.get(a)
        parts[f"d{a}"] = None if t is None else _name(t.val)
        parts[f"h{a}"] = None if t is None else _name(t.tan.get("w"))
    return parts


def levels(traced: Traced, order: int) -> tuple[dict[str, int], dict[tuple[int, int], dict[str, str | None]]]:
    """For each needed statement, the smallest l whose outputs depend on it."""
    by_name = {s.name: s for s in traced.prog.stmts}
    level: dict[str, int] = {}
    parts = {}
    for (l, m), v in sorted(traced.out.items()):
        parts[l, m] = sinks(order, v)
        stack = [n for n in parts[l, m].values() if n is not None]
        while stack:
            n = stack.pop()
            if n in level and level[n] <= l:
                continue
            level[n] = l
            stack.extend(by_name[n].deps)
    return level, parts


# ----------------------------------------------------------------------------------------------------------- targets
_SYMBOL = {"add": "+", "sub": "-", "mul": "*"}


class Target:
    """How one backend spells statements."""

    indent = "    "

    def const(self, name: str, c: Const) -> str:
        raise NotImplementedError

    def op(self, name: str, op: str, args: tuple) -> str:
        if op == "neg":
            return f"{name} = -{args[0]}"
        return f"{name} = {args[0]} {_SYMBOL[op]} {args[1]}"


class TritonTarget(Target):
    def const(self, name: str, c: Const) -> str:
        vals = _const_values(c)
        if len(vals) == 1:
            return f"{name} = _const({_bits64(vals[0])}, {_bits32(vals[0])}, IS_F64)"
        b64 = ", ".join(str(_bits64(v)) for v in vals)
        b32 = ", ".join(str(_bits32(v)) for v in vals)
        return f"{name} = _norm_const({b64}, {b32}, NORMALIZATION, IS_F64)"


class TorchTarget(Target):
    """Constants as entries of a coefficient table (any sign: folded scales may be negative); `axpy` (a + c b, from
    fold.py) as one torch.add."""

    def __init__(self):
        self.table: list[list[float]] = []  # rows: [f64 x3 normalizations, f32 x3]

    def op(self, name: str, op: str, args: tuple) -> str:
        if op == "axpy":
            return f"{name} = torch.add({args[0]}, {args[1]}, alpha={args[2]})"
        return super().op(name, op, args)

    def const(self, name: str, c: Const) -> str:
        vals = list(c.per_normalization) if c.per_normalization is not None else [c.value]
        if len(vals) == 1:
            vals = vals * 3
        self.table.append([_f64(v) for v in vals] + [float(_f32(v)) for v in vals])
        return f"{name} = k[{len(self.table) - 1}]"


def body(traced: Traced, order: int, target: Target, per_l: dict[int, list[str]], guard: str) -> list[str]:
    """Statements grouped into `if {guard} >= l:` blocks, each followed by that l's consumer lines."""
    level, _ = levels(traced, order)
    lines: list[str] = []
    for l in range(LMAX + 1):
        block = []
        for s in traced.prog.stmts:
            if s.op == "input" or level.get(s.name) != l:
                continue
            block.append(target.const(s.name, s.args[0]) if s.op == "const" else target.op(s.name, s.op, s.args))
        block += per_l.get(l, [])
        if not block:
            continue
        lines.append(f"if {guard} >= {l}:")
        lines += [target.indent + b for b in block]
    return lines


def body_in_order(
    traced: Traced, order: int, target: Target, per_lm: dict[tuple[int, int], list[str]], guard: str
) -> list[str]:
    """Statements in program order (runs of one level under one `if {guard} >= l:`), each output's consumer lines
    right after its last statement, so values die as soon as they are consumed."""
    level, parts = levels(traced, order)
    index = {s.name: i for i, s in enumerate(traced.prog.stmts)}
    ready: dict[int, list[tuple[int, int]]] = {}
    for lm, named in parts.items():
        last = max(index[n] for n in named.values() if n is not None)
        ready.setdefault(last, []).append(lm)
    lines: list[str] = []
    open_level = None
    for i, s in enumerate(traced.prog.stmts):
        lv = level.get(s.name)
        if s.op != "input" and lv is not None:
            if lv != open_level:
                lines.append(f"if {guard} >= {lv}:")
                open_level = lv
            stmt = target.const(s.name, s.args[0]) if s.op == "const" else target.op(s.name, s.op, s.args)
            lines.append(target.indent + stmt)
        for l, m in sorted(ready.get(i, [])):
            lines.append(f"if {guard} >= {l}:")
            lines += [target.indent + c for c in per_lm[l, m]]
            open_level = l
    return lines


def indent(lines: list[str], n: int) -> str:
    pad = "    " * n
    return "\n".join(pad + ln if ln else ln for ln in lines)


__all__ = [
    "EPS",
    "Traced",
    "trace",
    "levels",
    "body",
    "body_in_order",
    "indent",
    "TritonTarget",
    "TorchTarget",
    "Dual",
    "_bits64",
    "_bits32",
]
