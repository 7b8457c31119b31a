"""The benchmark plan: which points exist, in which order they run, and how many bytes each one must move.

A point is (implementation, direction, l set, dtype, N). Every combination of the grid gets exactly one record in
the JSON, also the ones that are not measured (status "unsupported" or "skipped", with the reason), so a table can
tell "slower" from "not run". Pure Python: no torch import, so the tests run it anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

DENSE_LMAX = (1, 2, 3, 4, 6, 8, 10, 12)
SPARSE_LSETS = ((6,), (0, 2, 10), (12,))
LSETS = tuple(tuple(range(l + 1)) for l in DENSE_LMAX) + SPARSE_LSETS
DTYPES = ("float64", "float32")
ITEMSIZE = {"float64": 8, "float32": 4}

# forward_backward: autograd through the public API; forward_backward_graph: the forward and backward ops replayed
# from one CUDA graph (how an MD step runs them), measured at small N only, where launch overhead matters;
# training: forward, backward with create_graph and double backward through autograd (the SH part of a step that
# trains on forces), the one way to compare double backwards with peers that have no standalone double-backward op.
DIRECTIONS = ("forward", "backward", "forward_backward", "forward_backward_graph", "double_backward", "training")
NS = tuple(4**k for k in range(5, 13))  # 2^10, 2^12, ..., 2^24
HEADLINE_NS = (2**12, 2**22)  # measured first, so a deadline never loses them
HEADLINE_LMAX = (1, 2, 4, 8, 12)  # the dense l sets of the first tier
GRAPH_NS = (2**10, 2**12, 2**14)
PEER_NS = tuple(n for n in NS if 2**12 <= n <= 2**22)
ORIG_NS = (2**12, 2**16, 2**20, 2**22)  # the original kernels recompile for every N (N is a constexpr there)

QUICK_LSETS = ((0, 1, 2), (0, 1, 2, 3, 4))
QUICK_NS = HEADLINE_NS

# Minimum traffic of each direction, in elements per row (times itemsize): every input read once, every output
# written once. forward_backward counts the two ops as autograd runs them (y is written, then x and grad are read).
BYTES_MODEL = {
    "forward": "N*(3 + dim): read x, write Y",
    "backward": "N*(3 + dim + 3): read x and dY, write dx",
    "forward_backward": "N*(3 + dim) + N*(3 + dim + 3): the forward op, then the backward op",
    "forward_backward_graph": "as forward_backward",
    "double_backward": "N*(3 + dim + 3 + dim + 3): read x, dY and w, write ddY and dx",
    "training": "N*(3 + dim) + N*(3 + dim + 3) + N*(3 + dim + 3 + dim + 3): the forward, backward and double-backward "
    "ops",
}


def dim_of(ls: Iterable[int]) -> int:
    """Output width sum(2l + 1) of the l set."""
    return sum(2 * l + 1 for l in ls)


def row_elements(direction: str, dim: int) -> int:
    """Elements each row must move in `direction` (see BYTES_MODEL)."""
    fwd, bwd, dbl = 3 + dim, 3 + dim + 3, 3 + dim + 3 + dim + 3
    return {
        "forward": fwd,
        "backward": bwd,
        "forward_backward": fwd + bwd,
        "forward_backward_graph": fwd + bwd,
        "double_backward": dbl,
        "training": fwd + bwd + dbl,
    }[direction]


def bytes_moved(direction: str, n: int, ls: Iterable[int], dtype: str) -> int:
    """Bytes a call must move at least: the numerator of every GB/s figure, the same for ours and every peer."""
    return n * row_elements(direction, dim_of(ls)) * ITEMSIZE[dtype]


def lset_label(ls: Iterable[int]) -> str:
    """'l<=6' for all orders up to l_max, '[0,2,10]' for a sparse set."""
    ls = tuple(ls)
    if ls == tuple(range(max(ls) + 1)):
        return f"l<={max(ls)}"
    return "[" + ",".join(map(str, ls)) + "]"


def parse_lset(text: str) -> tuple[int, ...]:
    """'6' or 'l<=6' -> (0..6); '[0,2,10]' or '0,2,10' -> (0, 2, 10); a bracketed single '[12]' -> (12,)."""
    t = text.strip().replace(" ", "")
    if t.startswith("l<="):
        return tuple(range(int(t[3:]) + 1))
    if t.startswith("["):
        return tuple(int(v) for v in t.strip("[]").split(",") if v)
    if "," in t:
        return tuple(int(v) for v in t.split(","))
    return tuple(range(int(t) + 1))


@dataclass(frozen=True)
class Caps:
    """What an implementation can be asked for. `ns`: the N it is timed at (None: every N of the plan)."""

    directions: tuple[str, ...]
    max_l: int = 12
    ns: tuple[int, ...] | None = None
    ns_reason: str = ""
    direction_reasons: dict = field(default_factory=dict)
    max_l_reason: str = ""
    ns_by_direction: dict = field(default_factory=dict)


DIRECTION_REASONS = {
    "backward": "no standalone backward op (autograd only: see forward_backward)",
    "forward_backward_graph": "the CUDA-graph variant is timed for ours only",
    "double_backward": "no standalone double-backward op",
    "training": "not twice differentiable",
}
NO_DOUBLE_BACKWARD = "its backward is not differentiable: no double backward"
OURS = "equitriton"
CAPS = {
    OURS: Caps(DIRECTIONS, ns_by_direction={"forward_backward_graph": GRAPH_NS}),
    "e3nn": Caps(("forward", "forward_backward", "training"), ns=PEER_NS, ns_reason="peers are timed at 2^12..2^22"),
    "e3nn_compile": Caps(
        ("forward", "forward_backward"),
        ns=PEER_NS,
        ns_reason="peers are timed at 2^12..2^22",
        direction_reasons={
            "training": "torch.compile cannot differentiate its compiled backward: 'torch.compile with aot_autograd "
            "does not currently support double backward' (RuntimeError, torch 2.11 and 2.13)"
        },
    ),
    "equitriton_orig": Caps(
        ("forward", "backward", "forward_backward"),
        max_l=10,
        ns=ORIG_NS,
        ns_reason="the original kernels compile once per N (N is a tl.constexpr): timed at 2^12, 2^16, 2^20, 2^22",
        max_l_reason="the original EquiTriton implements l <= 10",
        direction_reasons={"double_backward": NO_DOUBLE_BACKWARD, "training": NO_DOUBLE_BACKWARD},
    ),
    "sphericart": Caps(
        ("forward", "forward_backward", "training"), ns=PEER_NS, ns_reason="peers are timed at 2^12..2^22"
    ),
    "cuequivariance": Caps(
        ("forward", "forward_backward", "training"),
        max_l=8,
        ns=PEER_NS,
        ns_reason="peers are timed at 2^12..2^22",
        max_l_reason="cuequivariance builds its SH descriptor in sympy: 16 s for l=7, 95 s for l=8 on a 2-core "
        "x86 host, about 6x more per l, so l >= 9 cannot fit the 5-minute run",
    ),
}
IMPL_ORDER = tuple(CAPS)


@dataclass(frozen=True)
class Point:
    impl: str
    direction: str
    ls: tuple[int, ...]
    dtype: str
    n: int

    @property
    def dim(self) -> int:
        return dim_of(self.ls)

    @property
    def bytes(self) -> int:
        return bytes_moved(self.direction, self.n, self.ls, self.dtype)

    @property
    def group(self) -> tuple:
        """The points that differ only in N: a slow smaller N predicts a slower larger one."""
        return (self.impl, self.direction, self.ls, self.dtype)

    def record(self, status: str, reason: str | None = None, **fields) -> dict:
        """The JSON record of this point (see results.POINT_KEYS)."""
        rec = {
            "impl": self.impl,
            "direction": self.direction,
            "ls": list(self.ls),
            "lset": lset_label(self.ls),
            "dtype": self.dtype,
            "n": self.n,
            "dim": self.dim,
            "bytes": self.bytes,
            "status": status,
            "reason": reason,
            "ms": None,
            "gbps": None,
            "frac_copy": None,
            "rel_err": None,
            "tol": None,
            "pool": None,
            "pool_bytes": None,
            "seconds": None,
        }
        rec.update(fields)
        return rec


def static_exclusion(p: Point) -> tuple[str, str] | None:
    """(status, reason) when the point is never measured by design; None when it is planned."""
    caps = CAPS[p.impl]
    if p.direction not in caps.directions:
        return "unsupported", caps.direction_reasons.get(p.direction, DIRECTION_REASONS[p.direction])
    if max(p.ls) > caps.max_l:
        return "unsupported", caps.max_l_reason
    ns = caps.ns_by_direction.get(p.direction, caps.ns)
    if ns is not None and p.n not in ns:
        if p.direction in caps.ns_by_direction:
            return "skipped", "the CUDA-graph variant is timed at N = 2^10, 2^12, 2^14 (launch-bound sizes) only"
        return "skipped", caps.ns_reason
    return None


def grid(
    impls: Iterable[str] = IMPL_ORDER,
    lsets: Iterable[tuple[int, ...]] = LSETS,
    dtypes: Iterable[str] = DTYPES,
    ns: Iterable[int] = NS,
    directions: Iterable[str] = DIRECTIONS,
) -> list[Point]:
    """Every point of the grid, in run order, so a deadline loses the least important points: tier 0, the headline
    N (2^12, 2^22) and l_max (1, 2, 4, 8, 12) of every implementation; tier 1, the other l sets at the headline N;
    tier 2, ours at the other N; tier 3, the peers at the other N; tier 4, the force-training chain (`training`,
    whose peer calls take up to a second each: a deadline cuts it before any other direction; its headline N first).
    Within a tier by N ascending (tiers 2-4), dtype, l set, implementation and direction."""
    impls, lsets, dtypes, ns, directions = map(list, (impls, lsets, dtypes, ns, directions))
    pts = [Point(i, d, tuple(ls), t, n) for i in impls for d in directions for ls in lsets for t in dtypes for n in ns]
    return sorted(pts, key=lambda p: (tier(p),) + _within_tier(p, impls, lsets, dtypes, directions))


def tier(p: Point) -> int:
    """Run-order tier of a point (see grid)."""
    if p.direction == "training":
        return 4
    if p.n in HEADLINE_NS:
        return 0 if p.ls in {tuple(range(l + 1)) for l in HEADLINE_LMAX} else 1
    return 2 if p.impl == OURS else 3


def _within_tier(p: Point, impls, lsets, dtypes, directions) -> tuple:
    return (
        # the headline N of an l set run together (also first in tier 4): a deadline loses neither
        0 if tier(p) < 2 or (tier(p) == 4 and p.n in HEADLINE_NS) else p.n,
        dtypes.index(p.dtype),
        lsets.index(p.ls),
        impls.index(p.impl),
        directions.index(p.direction),
        p.n,
    )


def predicted_ms(p: Point, measured: dict[tuple, dict[int, float]], max_ratio: int = 16) -> float | None:
    """Time of `p` from the points of its group measured so far, or None: linear in N from the largest smaller N
    within a factor `max_ratio` (a launch-bound small N would predict far too much), and never more than the time
    at a larger N (time does not fall with N)."""
    done = measured.get(p.group, {})
    below = [n for n in done if n < p.n <= n * max_ratio]
    above = [n for n in done if n > p.n]
    guesses = ([done[max(below)] * p.n / max(below)] if below else []) + ([done[min(above)]] if above else [])
    return min(guesses) if guesses else None
