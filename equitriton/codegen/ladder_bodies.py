"""Bodies built on the derivative ladder (`ladder.py`): the Triton kernels' LADDER backward and double backward, and
the torch fallback's backward and double backward.

The kernels trace only the values Y_l of l < l_max (the forward's recurrence, one value per product instead of the
4 or 8 parts of the forward-mode duals) and apply the ladder to them. For each degree L of the l set, in the block
right after Y_{L-1} is made:

    c_a = (D^L_a)^T g_L                                   (2L - 1 values per axis a)
    v_a += c_a . Y_{L-1}                                   (backward: v = sum_k g_k grad Y_k)

and for the double backward, with w the incoming direction and w' = (w - u (u.w)) / r its image through du/dx:

    gg_L = sum_a w'_a D^L_a Y_{L-1}                        (the output d(grad_y) of degree L)
    vl_a += L (c_a . Y_{L-1})                              (the Euler term of render.py's chain rule)
    b += sum_m' tw_m' grad Y_{L-1,m'},    tw = sum_a w_a c_a   (b = H w: the ladder of degree L - 1 on Y_{L-2})

The prologue/epilogue (normalisation and its chain rule) are render.py's, shared with the traced-dual bodies.
"""

from __future__ import annotations

from .emit import TritonTarget, _bits32, _bits64, body, levels, trace
from .harmonics import LMAX
from .ir import Const
from .ladder import AXES, rungs

# LOAD_FENCE's mask for a grad_y load (render._fence), from the accumulators as they are where it is set; shared with
# the traced duals' fence slots (render._number_fences)
FENCE_MASK = "mask & _fence(vx + vy + vz, IS_F64)"


def gy_column(name: str, column: str, fence_mask: str, pad: str) -> list[str]:
    """Lines giving `name` the grad_y column `column` (a constexpr expression) of the program's rows: from the row
    tile `gt` (GY_TILE; it holds the first PDIM columns, the whole row or its head) or by its own load, masked by
    `fence_mask` (LOAD_FENCE)."""
    load = f"{name} = tl.load(grow + {column}, mask={fence_mask}, other=0.0)"
    return [
        f"{pad}if GY_TILE and {column} < PDIM:",
        f"{pad}    {name} = gt[{column}]",
        f"{pad}else:",
        f"{pad}    {load}",
    ]


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


def _consumer(order: int, parts, L: int, wide_store) -> list[str]:
    """Lines for degree L (needs Y_{L-1}, and Y_{L-2} for the double backward's Hessian term).

    Streamed one column m' of degree L - 1 at a time, so that only g_L and the values stay live: c_a[m'] feeds the
    three accumulators (independent chains) and, for the Hessian, tw[m'] times grad Y_{L-1,m'} (the ladder of
    degree L - 1 applied to Y_{L-2}: H w = sum_m' tw[m'] grad Y_{L-1,m'})."""
    pad = "        "
    lines = ["for i in tl.static_range(len(LS)):", f"    if LS[i] == {L}:"]
    # LOAD_FENCE = d: degree L's loads wait for the accumulators of degree L - 1 - d (render._fence), d degrees of
    # loads in flight (1 to 3)
    for j in range(2 * L + 1):
        lines += gy_column(f"g{j}", f"OFFS[i] + {j}", "gmask", pad)
    rung = rungs(L)
    low = rungs(L - 1) if order == 2 and L >= 2 else None
    for a in AXES:  # k{a}{n}: the coefficients of D^L_a; h{a}{n}: those of D^{L-1}_a
        lines += [f"{pad}k{a}{n} = {_coef(r.magnitude)}" for n, r in enumerate(rung[a])]
        if low is not None:
            lines += [f"{pad}h{a}{n} = {_coef(r.magnitude)}" for n, r in enumerate(low[a])]
    lines += [f"{pad}a{a} = zero" for a in AXES]
    for jl in range(2 * L - 1):
        m_low = jl - (L - 1)
        y = _y(parts, L - 1, m_low)
        have = []
        for a in AXES:  # c_a = ((D^L_a)^T g)[m'], then a_a += c_a Y_{L-1,m'}
            c = _sum([(r.negative, f"g{r.m + L} * k{a}{n}") for n, r in enumerate(rung[a]) if r.m_low == m_low])
            if c is not None:
                lines += [f"{pad}c{a} = {c}", f"{pad}a{a} += c{a} * {y}"]
                have.append(a)
        if low is None or not have:
            continue
        lines.append(f"{pad}tw = " + " + ".join(f"w{a} * c{a}" for a in have))
        for b in AXES:  # b_b += tw d/db Y_{L-1,m'}
            d = _sum(
                [(r.negative, f"h{b}{n} * {_y(parts, L - 2, r.m_low)}") for n, r in enumerate(low[b]) if r.m == m_low]
            )
            if d is not None:
                lines.append(f"{pad}b{b} += tw * ({d})")
    for a in AXES:
        lines.append(f"{pad}v{a} += a{a}")
        if order == 2:
            lines.append(f"{pad}vl{a} += a{a} * {L}.0")
    lines += [
        f"{pad}if LOAD_FENCE:",
        f"{pad}    gmask = gnext",
        f"{pad}    if LOAD_FENCE >= 3:",
        f"{pad}        gnext = gnext2",
        f"{pad}        gnext2 = gnext3",
        f"{pad}        gnext3 = {FENCE_MASK}",
        f"{pad}    elif LOAD_FENCE == 2:",
        f"{pad}        gnext = gnext2",
        f"{pad}        gnext2 = {FENCE_MASK}",
        f"{pad}    else:",
        f"{pad}        gnext = {FENCE_MASK}",
    ]
    if order == 1:
        return lines
    values = []
    for j in range(2 * L + 1):  # gg_L = sum_a w'_a D^L_a Y_{L-1}
        m = j - L
        terms = []
        for a in AXES:
            d = _sum(
                [(r.negative, f"k{a}{n} * {_y(parts, L - 1, r.m_low)}") for n, r in enumerate(rung[a]) if r.m == m]
            )
            if d is not None:
                terms.append((False, f"wp{a} * ({d})"))
        lines.append(f"{pad}q{j} = {_sum(terms) or 'zero'}")
        values.append(f"q{j}")
    return lines + _store(values, wide_store)


def _store(values: list[str], wide_store) -> list[str]:
    """gg_L's row segment: one (BLOCK, 2L + 1) tile (WIDE_IO; built by selects with SELECT_TILE), else column by
    column. Per-column 8-byte stores at a stride of DIM leave memory sectors partly written (the forward measured
    2-7x slower with them, docs/kernel_tuning.md item 2)."""
    pad = "        "
    narrow = [f"{pad}    tl.store(ggrow + OFFS[i] + {j}, {v}, mask=mask)" for j, v in enumerate(values)]
    return [f"{pad}if WIDE_IO:", *wide_store("ggrow", values, pad + "    "), f"{pad}else:", *narrow]


def ladder_body(order: int, wide_store) -> list[str]:
    """The body of the backward (order 1) or double backward (order 2) kernel on the ladder: the values Y_l of
    l < LMAX_TRACED, each degree's consumer in the `if LMAX >= L - 1` block that makes Y_{L-1}. `wide_store(ptr,
    values, pad)` gives the lines of one row-segment tile store (render._wide_store)."""
    traced = trace(0, lmax=LMAX - 1)
    _, parts = levels(traced, 0)
    per_l: dict[int, list[str]] = {}
    for low in range(LMAX):
        lines = []
        if order == 2 and low == 0:  # Y_0 is a constant: its d(grad_y) column is zero
            lines += ["for i in tl.static_range(len(LS)):", "    if LS[i] == 0:", *_store(["zero"], wide_store)]
        per_l[low] = lines + _consumer(order, parts, low + 1, wide_store)
    head = ["wpx = wx * s1 - x * s2", "wpy = wy * s1 - y * s2", "wpz = wz * s1 - z * s2"] if order == 2 else []
    # LOAD_FENCE: the masks of the next degree's loads and of the up to two after (see _consumer)
    head += ["gmask = mask", "gnext = mask", "gnext2 = mask", "gnext3 = mask"]
    return head + body(traced, 0, TritonTarget(), per_l, "LMAX")


# ------------------------------------------------------------------------------------------------------------- torch
def torch_backward_consumer(parts, scaled: dict, target, L: int, names) -> list[str]:
    """The torch fallback's backward for degree L on the ladder: one in-place `addcmul_` per non-zero coefficient,
    v_a += (k * s) g_m Y_{L-1,m'}, with s the folded scale of Y_{L-1,m'} (fold.py: `scaled`) and k the ladder
    coefficient (a coefficient-table entry, `names` gives each a fresh c-name). No temporaries."""
    lines, body = [], []
    for a in AXES:
        for r in rungs(L)[a]:
            kname = next(names)
            lines.append(target.const(kname, _signed_const(r.value)))
            body.append(_add_times_y(f"v{a}", f"gs[o + {r.m + L}]", kname, parts, scaled, L - 1, r.m_low))
    return lines + [f"for o in at[{L}]:"] + body


def _signed_const(value) -> Const:
    """A coefficient-table entry (the torch target takes any sign)."""
    return Const(per_normalization=tuple(value))


def _add_times_y(dst: str, factor: str, k: str, parts, scaled: dict, l: int, m: int) -> str:
    """The loop-body line `dst += k * factor * Y_{l,m}`, with Y folded (fold.py: scale * base): one `addcmul_`, or
    one `add_` where Y is a constant (Y_0, whose base is a c-name)."""
    y = _y(parts, l, m)
    scale, base = scaled.get(y, (None, y))
    value = k if scale is None else f"{k} * {scale}"
    if base.startswith("c"):
        return f"    {dst}.add_({factor}, alpha={value} * {base})"
    return f"    {dst}.addcmul_({factor}, {base}, value={value})"


def torch_double_backward_consumer(parts, scaled: dict, target, L: int, names) -> list[str]:
    """The torch fallback's double backward for degree L on the ladder (the Triton body's math, in in-place ops):
    the gradient part a (into v and, times L, vl), the d(grad_y) columns sum_a w'_a D^L_a Y_{L-1}, and the Hessian
    term b += sum_m' tw_m' grad Y_{L-1,m'} with tw = sum_a w_a (D^L_a)^T g."""
    lines, body = [], []
    rung = rungs(L)
    low = rungs(L - 1) if L >= 2 else None
    k = {}
    for a in AXES:
        for n, r in enumerate(rung[a]):
            k[a, n] = next(names)
            lines.append(target.const(k[a, n], _signed_const(r.value)))
        if low is not None:
            for n, r in enumerate(low[a]):
                k["h" + a, n] = next(names)
                lines.append(target.const(k["h" + a, n], _signed_const(r.value)))
    for a in AXES:  # a_a = sum over the coefficients of k g_m Y_{L-1,m'}
        body.append(f"    a{a} = torch.zeros_like(x)")
        for n, r in enumerate(rung[a]):
            body.append(_add_times_y(f"a{a}", f"gs[o + {r.m + L}]", k[a, n], parts, scaled, L - 1, r.m_low))
        body += [f"    v{a}.add_(a{a})", f"    vl{a}.add_(a{a}, alpha={L}.0)"]
    for j in range(2 * L + 1):  # d(grad_y) column (L, m)
        body.append("    col = torch.zeros_like(x)")
        for a in AXES:
            for n, r in enumerate(rung[a]):
                if r.m == j - L:
                    body.append(_add_times_y("col", f"wp{a}", k[a, n], parts, scaled, L - 1, r.m_low))
        body.append(f"    cols[o + {j}] = col")
    if low is not None:
        for jl in range(2 * L - 1):  # tw_m' = sum_a w_a ((D^L_a)^T g)_m', then b += tw_m' grad Y_{L-1,m'}
            m_low = jl - (L - 1)
            body.append("    tw = torch.zeros_like(x)")
            for a in AXES:
                for n, r in enumerate(rung[a]):
                    if r.m_low == m_low:
                        body.append(f"    tw.addcmul_(w{a}, gs[o + {r.m + L}], value={k[a, n]})")
            for b in AXES:
                for n, r in enumerate(low[b]):
                    if r.m == m_low:
                        body.append(_add_times_y(f"b{b}", "tw", k["h" + b, n], parts, scaled, L - 2, r.m_low))
    return lines + [f"for o in at[{L}]:"] + body


__all__ = ["ladder_body", "torch_backward_consumer", "torch_double_backward_consumer"]
