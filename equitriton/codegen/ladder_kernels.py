"""Triton bodies of the backward and double backward built on the derivative ladder (`ladder.py`).

The kernels trace only the values Y_l of l < l_max (the forward's recurrence, one value per product instead of the
4 or 8 parts of the forward-mode duals) and apply the ladder to them. For each degree L of the l set, in the block
right after Y_{L-1} is made:

    c_a = (D^L_a)^T g_L                                   (2L - 1 values per axis a)
    v_a += c_a . Y_{L-1}                                   (backward: v = sum_k g_k grad Y_k)

and for the double backward, with w the incoming direction and w' = (w - u (u.w)) / r its image through du/dx:

    gg_L = sum_a w'_a D^L_a Y_{L-1}                        (the output d(grad_y) of degree L)
    vl_a += L (c_a . Y_{L-1})                              (the Euler term of render.py's chain rule)
    b_b += ((D^{L-1}_b)^T tw) . Y_{L-2},  tw = sum_a w_a c_a  (b = H w, the ladder applied twice)

The prologue/epilogue (normalisation and its chain rule) are render.py's, shared with the traced-dual bodies.
"""

from __future__ import annotations

from .emit import TritonTarget, _bits32, _bits64, body, levels, trace
from .harmonics import LMAX
from .ladder import AXES, rungs


def _coef(value) -> str:
    b64 = ", ".join(str(_bits64(v)) for v in value)
    b32 = ", ".join(str(_bits32(v)) for v in value)
    return f"_norm_const({b64}, {b32}, NORMALIZATION, IS_F64)"


def _sum(terms: list[tuple[bool, str]]) -> str | None:
    """`a + b - c ...` from (negative, product) pairs; None when there is no term."""
    if not terms:
        return None
    neg, first = terms[0]
    out = f"-({first})" if neg else first
    for neg, t in terms[1:]:
        out += f" - {t}" if neg else f" + {t}"
    return out


def _y(parts, l: int, m: int) -> str:
    return parts[l, m]["p"]


def _consumer(order: int, parts, L: int) -> list[str]:
    """Lines for degree L (needs Y_{L-1}, and Y_{L-2} for the double backward's Hessian term)."""
    pad = "        "
    lines = ["for i in tl.static_range(len(LS)):", f"    if LS[i] == {L}:"]
    lines += [f"{pad}g{j} = tl.load(grow + OFFS[i] + {j}, mask=mask, other=0.0)" for j in range(2 * L + 1)]
    rung = rungs(L)
    for a in AXES:
        # k{a}{n}: the coefficients of D^L_a, named once; c{a}{j'}: (D^L_a)^T g, for Y_{L-1, j' - (L - 1)}
        lines += [f"{pad}k{a}{n} = {_coef(r.magnitude)}" for n, r in enumerate(rung[a])]
        for jl in range(2 * L - 1):
            terms = [(r.negative, f"g{r.m + L} * k{a}{n}") for n, r in enumerate(rung[a]) if r.m_low + L - 1 == jl]
            expr = _sum(terms)
            lines.append(f"{pad}c{a}{jl} = {expr if expr is not None else 'zero'}")
        dot = _sum([(False, f"c{a}{jl} * {_y(parts, L - 1, jl - (L - 1))}") for jl in range(2 * L - 1)])
        if order == 1:
            lines.append(f"{pad}v{a} += {dot}")
        else:
            lines += [f"{pad}s = {dot}", f"{pad}v{a} += s", f"{pad}vl{a} += s * {L}.0"]
    if order == 1:
        return lines
    for j in range(2 * L + 1):  # gg_L, column by column
        m = j - L
        terms = []
        for a in AXES:
            d = _sum(
                [(r.negative, f"k{a}{n} * {_y(parts, L - 1, r.m_low)}") for n, r in enumerate(rung[a]) if r.m == m]
            )
            if d is not None:
                terms.append((False, f"wp{a} * ({d})"))
        lines.append(f"{pad}tl.store(ggrow + OFFS[i] + {j}, {_sum(terms) or 'zero'}, mask=mask)")
    if L >= 2:  # b = H w: tw = sum_a w_a c_a, then the ladder of degree L - 1 down to Y_{L-2}
        lines += [f"{pad}tw{jl} = wx * cx{jl} + wy * cy{jl} + wz * cz{jl}" for jl in range(2 * L - 1)]
        low = rungs(L - 1)
        for b in AXES:
            lines += [f"{pad}h{b}{n} = {_coef(r.magnitude)}" for n, r in enumerate(low[b])]
            dot = []
            for jll in range(2 * L - 3):
                e = _sum(
                    [(r.negative, f"tw{r.m + L - 1} * h{b}{n}") for n, r in enumerate(low[b]) if r.m_low + L - 2 == jll]
                )
                if e is not None:
                    dot.append((False, f"({e}) * {_y(parts, L - 2, jll - (L - 2))}"))
            if dot:
                lines.append(f"{pad}b{b} += {_sum(dot)}")
    return lines


def ladder_body(order: int) -> list[str]:
    """The body of the backward (order 1) or double backward (order 2) kernel on the ladder: the values Y_l of
    l < LMAX_TRACED, each degree's consumer in the `if LMAX >= L - 1` block that makes Y_{L-1}."""
    traced = trace(0, lmax=LMAX - 1)
    _, parts = levels(traced, 0)
    per_l: dict[int, list[str]] = {}
    for low in range(LMAX):
        lines = []
        if order == 2 and low == 0:  # Y_0 is a constant: its d(grad_y) column is zero
            lines += [
                "for i in tl.static_range(len(LS)):",
                "    if LS[i] == 0:",
                "        tl.store(ggrow + OFFS[i], zero, mask=mask)",
            ]
        per_l[low] = lines + _consumer(order, parts, low + 1)
    head = ["wpx = wx * s1 - x * s2", "wpy = wy * s1 - y * s2", "wpz = wz * s1 - z * s2"] if order == 2 else []
    return head + body(traced, 0, TritonTarget(), per_l, "LMAX")


__all__ = ["ladder_body"]
