"""The Triton kernels themselves (equitriton/generated/triton_kernels.py), run on CPU by the Triton interpreter.

Issue 2, point 4: with ``TRITON_INTERPRET=1`` CPU tensors go through the Triton kernels, which is how CI tests them.
All cases run in ONE subprocess (the interpreter must be selected before triton is imported); each case compares the
forward, backward and double-backward kernels with the generated torch fallback (``TRITON_INTERPRET=0`` at call
time), which test_numerics.py / test_gradients.py tie to e3nn and to independent references.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ALL = list(range(13))
NORMS = {"integral": 0, "component": 1, "norm": 2}


def _case(ls, normalize, normalization, dtype="float64", n=37, layout="contiguous", env=None, directions="fbd"):
    parts = ["-".join(map(str, ls)) if len(ls) < 13 else "0..12", "n" if normalize else "u", normalization, dtype]
    if layout != "contiguous":
        parts.append(layout)
    if env:
        parts += [f"{k.removeprefix('EQUITRITON_')}={v}" for k, v in env.items()]
    if n != 37:
        parts.append(f"N{n}")
    return dict(
        id="/".join(parts),
        ls=ls,
        normalize=normalize,
        normalization=NORMS[normalization],
        dtype=dtype,
        n=n,
        layout=layout,
        env=env or {},
        directions=directions,
    )


CASES = (
    # every l at once, every (normalize, normalization), float64
    [_case(ALL, nz, nm) for nz in (True, False) for nm in NORMS]
    # float32 (evaluated in float64 and rounded, as the fallback) and the native float32 path
    + [_case(ALL, True, "component", "float32"), _case(ALL, False, "integral", "float32")]
    + [_case(ALL, True, "norm", "float32", env={"EQUITRITON_FLOAT32_COMPUTE": "float32"})]
    # mixed / repeated / unordered sets, several programs and a masked tail (N = 300 > 2 blocks)
    + [
        _case([3, 1, 3, 0], True, "norm", n=300),
        _case([12, 5], False, "component"),
        _case([2, 2], True, "integral", "float32", n=300),
        _case([0], True, "integral"),
        _case([1], False, "norm"),
        _case([7, 0, 11], True, "component"),
    ]
    # strided / expanded / batched inputs
    + [
        _case([0, 1, 2, 3], True, "integral", layout="strided"),
        _case([4, 2], False, "norm", layout="transposed"),
        _case([5], True, "component", layout="expanded"),
        _case([1, 2], True, "integral", layout="batched"),
        _case([3, 0], True, "integral", n=0),
    ]
    # the forward's store variants (per-column, per-l tile, whole-row tile, whole-row tile through a flat index),
    # forced (launch.py reads them per call); the flat store at every l_max (its gather index depends on DIM and P)
    + [
        _case(ALL, True, "integral", env={"EQUITRITON_WIDE_IO": wide, "EQUITRITON_FULL_ROW": full}, directions="f")
        for wide, full in (("0", "0"), ("1", "0"), ("1", "1"))
    ]
    + [
        _case(
            list(range(lmax + 1)),
            lmax % 2 == 0,
            norm,
            dtype,
            n=n,
            directions="f",
            env={"EQUITRITON_FULL_ROW": "1", "EQUITRITON_FLAT_STORE": "1"},
        )
        for lmax, norm, dtype, n in (
            (0, "integral", "float64", 77),
            (1, "norm", "float32", 130),
            (2, "component", "float64", 300),
            (3, "integral", "float32", 65),
            (4, "norm", "float64", 129),
            (6, "component", "float32", 200),
            (12, "integral", "float64", 97),
        )
    ]
    + [_case([6, 1, 6], True, "norm", env={"EQUITRITON_WIDE_IO": w}, directions="f") for w in ("0", "1")]
    # tiles built by selects (SELECT_TILE) against join trees, per-l and whole-row, and the whole row in column
    # chunks (ROW_CHUNK) where the row is wider than the chunk
    + [
        _case(ALL, True, "component", env={"EQUITRITON_SELECT_TILE": sel, "EQUITRITON_FULL_ROW": full}, directions="f")
        for sel, full in (("0", "1"), ("1", "0"), ("1", "1"))
    ]
    + [
        _case(
            list(range(lmax + 1)),
            True,
            "integral",
            dtype,
            n=n,
            directions="f",
            env={"EQUITRITON_FULL_ROW": "1", "EQUITRITON_SELECT_TILE": "1", "EQUITRITON_ROW_CHUNK": chunk},
        )
        for lmax, dtype, n, chunk in (
            (2, "float32", 130, "0"),
            (9, "float64", 97, "64"),
            (11, "float32", 70, "128"),
            (12, "float64", 65, "64"),
            # power-of-two pieces of at most 16 columns (FORWARD_PIECES)
            (2, "float32", 130, "16"),
            (8, "float64", 97, "16"),
            (12, "float32", 65, "16"),
        )
    ]
    # the row built by selects as each l is made, in chunks of whole l's of at most ANY_ROW_CHUNK columns, each stored
    # once its last l is made (launch.row_chunks; forced with FULL_ROW off): 0..12 in two chunks (121 + 48 columns),
    # chunks ending on a full tile (0..7 = 64 columns), single-l chunks, sparse and repeated ascending sets in several
    # chunks, an unordered set (one chunk whatever the cap), masked tails
    + [
        _case(
            ls,
            nz,
            norm,
            dtype,
            n=n,
            directions="f",
            env={"EQUITRITON_FULL_ROW": "0", "EQUITRITON_SELECT_TILE": "1", "EQUITRITON_ANY_ROW_CHUNK": cap},
        )
        for ls, nz, norm, dtype, n, cap in (
            (ALL, True, "component", "float64", 97, "128"),
            (ALL, False, "norm", "float32", 65, "64"),
            (list(range(9)), True, "integral", "float32", 70, "64"),
            (list(range(9)), True, "norm", "float64", 130, "16"),
            (list(range(7)), False, "component", "float64", 37, "32"),
            ([0, 2, 10], True, "norm", "float64", 70, "16"),
            ([2, 2, 5], True, "integral", "float32", 300, "5"),
            ([3, 1, 3, 0], True, "norm", "float64", 130, "16"),
        )
    ]
    # the row cut into ranges of whole l's, each stored by its own programs (PARTS_AT, sh_forward_parts_kernel):
    # two and three ranges, a native-float32 first range (l = 0) before float64 ones, the first range through
    # ANY_ROW (FULL_ROW off) and through ROW32's offsets, masked tails; an l set other than 0..l_max ignores it
    + [
        _case(ls, nz, norm, dtype, n=n, directions="f", env={"EQUITRITON_PARTS_AT": at, **env})
        for ls, nz, norm, dtype, n, at, env in (
            (ALL, True, "component", "float64", 97, "11", {}),
            (ALL, False, "norm", "float32", 65, "8,11", {}),
            (list(range(9)), True, "integral", "float32", 70, "7", {}),
            (list(range(3)), True, "norm", "float32", 40, "1", {}),
            (ALL, True, "integral", "float64", 130, "10", {"EQUITRITON_ROW32": "1"}),
            (list(range(7)), True, "component", "float64", 33, "2,4", {"EQUITRITON_FULL_ROW": "0"}),
            ([0, 2, 10], True, "norm", "float64", 37, "2", {}),
        )
    ]
    # the derivative kernels' statement orders (l-major / m-major), forced
    + [
        _case(ALL, False, "component", env={"EQUITRITON_M_MAJOR": m, "EQUITRITON_LADDER": "0"}, directions="bd")
        for m in ("0", "1")
    ]
    # the derivative kernels on the derivative ladder (codegen/ladder.py) and on traced duals, forced: every
    # normalization, sparse sets whose degrees below are not in the set, float32, a masked tail
    + [
        _case(ls, nz, norm, dtype, n=n, env={"EQUITRITON_LADDER": lad}, directions="bd")
        for lad in ("0", "1")
        for ls, nz, norm, dtype, n in (
            (ALL, True, "integral", "float64", 37),
            (ALL, True, "norm", "float32", 37),
            ([12, 5], True, "component", "float64", 70),
            ([0, 2, 10], False, "norm", "float64", 37),
            ([1], True, "integral", "float32", 130),
        )
    ]
    # LOAD_FENCE (each grad_y load waits for the accumulators some columns or one degree back), forced on both bodies
    # and both statement orders: the fence must never mask a load off (its pattern is a signaling NaN, which no
    # arithmetic returns)
    + [
        _case(ls, True, norm, dtype, n=n, env={"EQUITRITON_LOAD_FENCE": "1", **env}, directions="bd")
        for env, ls, norm, dtype, n in (
            ({"EQUITRITON_LADDER": "0", "EQUITRITON_M_MAJOR": "1"}, ALL, "norm", "float64", 37),
            ({"EQUITRITON_LADDER": "0", "EQUITRITON_M_MAJOR": "0"}, [12, 5], "component", "float32", 70),
            ({"EQUITRITON_LADDER": "1"}, ALL, "integral", "float64", 37),
            ({"EQUITRITON_LADDER": "1"}, [0, 2, 10], "norm", "float32", 130),
            # two degrees of loads in flight (the ladder's gnext2)
            ({"EQUITRITON_LADDER": "1", "EQUITRITON_LOAD_FENCE": "2"}, ALL, "norm", "float32", 37),
            ({"EQUITRITON_LADDER": "1", "EQUITRITON_LOAD_FENCE": "2"}, [0, 2, 10], "component", "float64", 70),
            # three degrees in flight (gnext3; --sweep fence3)
            ({"EQUITRITON_LADDER": "1", "EQUITRITON_LOAD_FENCE": "3"}, [0, 1, 2, 3, 4, 5, 6], "norm", "float64", 37),
            ({"EQUITRITON_LADDER": "1", "EQUITRITON_LOAD_FENCE": "3"}, [1, 4, 2, 7], "component", "float32", 70),
        )
    ]
    # the launch table's entries for l sets other than 0..l_max (--sweep sparse, docs/kernel_tuning.md item 21), as
    # the plan takes them (no override): a grad_y tile or none, 32 or 64 rows per program, masked tails
    + [
        _case(ls, True, "component", dtype, n=n, directions="bd")
        for ls, dtype, n in (
            ([0, 2, 10], "float32", 70),
            ([12], "float64", 37),
            ([12], "float32", 37),
            ([6], "float32", 130),
            ([6], "float64", 37),
        )
    ]
    # GY_TILE: the grad_y row as one coalesced tile split into columns (rows of up to 64 padded columns; of a wider
    # row its first 64 columns, the rest loaded column by column), forced on both bodies and orders, sparse and
    # repeated sets, masked tails; l_max 3's 16 columns are the case it was made for
    + [
        _case(ls, True, norm, dtype, n=n, env={"EQUITRITON_GY_TILE": "1", **env}, directions="bd")
        for env, ls, norm, dtype, n in (
            ({"EQUITRITON_LADDER": "1"}, [0, 1, 2, 3], "component", "float64", 70),
            ({"EQUITRITON_LADDER": "1"}, [0, 1, 2, 3], "norm", "float32", 37),
            ({"EQUITRITON_LADDER": "0", "EQUITRITON_M_MAJOR": "1"}, [0, 1, 2, 3, 4, 5], "integral", "float64", 37),
            ({"EQUITRITON_LADDER": "0", "EQUITRITON_M_MAJOR": "0"}, [3, 1, 3, 0], "norm", "float32", 130),
            ({"EQUITRITON_LADDER": "1", "EQUITRITON_LOAD_FENCE": "2"}, [2, 6], "component", "float64", 37),
            # wider than GY_TILE_MAX: the head of the row (degrees 0-7) in the tile, degree 8 column by column,
            # fenced or not; [10, 11, 12]: the tile's edge inside degree 12
            ({"EQUITRITON_LADDER": "1"}, [0, 1, 2, 3, 4, 5, 6, 7, 8], "norm", "float64", 37),
            ({"EQUITRITON_LADDER": "1", "EQUITRITON_LOAD_FENCE": "2"}, list(range(10)), "component", "float32", 37),
            ({"EQUITRITON_LADDER": "1", "EQUITRITON_LOAD_FENCE": "3"}, list(range(9)), "integral", "float32", 37),
            ({"EQUITRITON_LADDER": "0", "EQUITRITON_M_MAJOR": "1"}, list(range(9)), "integral", "float64", 37),
            ({"EQUITRITON_LADDER": "1"}, [10, 11, 12], "norm", "float64", 37),
            ({"EQUITRITON_LADDER": "0"}, [0, 1], "integral", "float64", 37),
        )
    ]
    # ROW32 (a program's rows as 32-bit offsets from its 64-bit first row), forced: every direction and store, sparse
    # sets, masked tails, and inputs whose row stride is not 3 (strided, transposed, expanded: stride 0, batched)
    + [
        _case(ls, nz, norm, dtype, n=n, layout=layout, env={"EQUITRITON_ROW32": "1", **env}, directions=dirs)
        for ls, nz, norm, dtype, n, layout, env, dirs in (
            (ALL, True, "component", "float64", 70, "contiguous", {}, "fbd"),
            ([0, 1, 2], True, "norm", "float32", 130, "transposed", {}, "fbd"),
            ([2, 0, 9], False, "integral", "float32", 300, "strided", {"EQUITRITON_LADDER": "1"}, "fbd"),
            ([0, 1, 2, 3], True, "norm", "float64", 37, "batched", {"EQUITRITON_GY_TILE": "1"}, "bd"),
            ([4], True, "component", "float64", 37, "expanded", {}, "fbd"),
            (
                [0, 1, 2, 3, 4, 5, 6],
                True,
                "norm",
                "float64",
                97,
                "contiguous",
                {"EQUITRITON_LADDER": "1", "EQUITRITON_WIDE_IO": "1", "EQUITRITON_SELECT_TILE": "1"},
                "d",
            ),
        )
    ]
    # the ladder double backward's d(grad_y) as per-degree tiles (join tree / selects; with selects also in
    # power-of-two pieces of at most ROW_CHUNK columns), forced
    + [
        _case(
            ls,
            True,
            "norm",
            dtype,
            n=n,
            env={
                "EQUITRITON_LADDER": "1",
                "EQUITRITON_WIDE_IO": "1",
                "EQUITRITON_SELECT_TILE": sel,
                "EQUITRITON_ROW_CHUNK": chunk,
            },
            directions="d",
        )
        for sel, chunk in (("0", "0"), ("1", "0"), ("1", "2"), ("1", "4"))
        for ls, dtype, n in ((ALL, "float64", 70), ([2, 0, 9], "float32", 37))
    ]
)

_SCRIPT = r"""
import json, os, sys, time
import torch
import triton  # noqa: F401  (imported with TRITON_INTERPRET=1)
from equitriton import ops

assert ops.use_triton(torch.device("cpu")), "TRITON_INTERPRET=1 must route CPU tensors to the Triton kernels"
cases = json.loads(sys.stdin.read())
out = {}


def make(case, shape, gen, dtype):
    layout = case["layout"]
    if layout == "strided":
        return torch.randn(*shape[:-1], 2 * shape[-1], generator=gen, dtype=dtype)[..., ::2]
    if layout == "transposed":
        return torch.randn(shape[-1], shape[0], generator=gen, dtype=dtype).t()
    if layout == "expanded":
        return torch.randn(1, shape[-1], generator=gen, dtype=dtype).expand(*shape)
    if layout == "batched":
        return torch.randn(2, shape[0], shape[-1], generator=gen, dtype=dtype).transpose(0, 1)
    return torch.randn(*shape, generator=gen, dtype=dtype)


def rel_err(a, b):
    # max |a - b| / max |b|; the plain max |a - b| where b is exactly zero (e.g. the l = 0 derivatives)
    if b.numel() == 0:
        return 0.0
    a, b = a.double(), b.double()
    scale = b.abs().max()
    err = (a - b).abs().max()
    return float(err if scale == 0 else err / scale)


def run_all(case, x, g, w, interpret):
    os.environ["TRITON_INTERPRET"] = "1" if interpret else "0"
    args = (case["ls"], case["normalize"], case["normalization"])
    res = {}
    if "f" in case["directions"]:
        res["forward"] = torch.ops.equitriton.sh_forward(x, *args)
    if "b" in case["directions"]:
        res["backward"] = torch.ops.equitriton.sh_backward(x, g, *args)
    if "d" in case["directions"]:
        gg, gx = torch.ops.equitriton.sh_double_backward(x, g, w, *args)
        res["double_backward_grad_y"], res["double_backward_x"] = gg, gx
    return res


t_all = time.time()
for case in cases:
    saved = {k: os.environ.get(k) for k in case["env"]}
    os.environ.update(case["env"])
    ops.launch.FLOAT32_COMPUTE = os.environ.get("EQUITRITON_FLOAT32_COMPUTE", "float64")
    try:
        dtype = getattr(torch, case["dtype"])
        gen = torch.Generator().manual_seed(len(out))
        dim = sum(2 * l + 1 for l in case["ls"])
        x = make(case, (case["n"], 3), gen, dtype)
        if case["layout"] == "batched":
            x = x.unsqueeze(0).expand(2, *x.shape)  # (2, n, 2, 3), non-contiguous
        g = torch.randn(*x.shape[:-1], dim, generator=gen, dtype=dtype)
        w = make(case, (case["n"], 3), gen, dtype)
        if case["layout"] == "batched":
            w = w.unsqueeze(0).expand(2, *w.shape)
        t0 = time.time()
        tri = run_all(case, x, g, w, True)
        elapsed = time.time() - t0
        ref = run_all(case, x, g, w, False)
        r = {"seconds": elapsed}
        for k in tri:
            a, b = tri[k], ref[k]
            r[k] = {
                "shape_ok": a.shape == b.shape and a.dtype == b.dtype,
                "err": rel_err(a, b),
                "finite": bool(torch.isfinite(a).all()),
            }
        out[case["id"]] = r
    except Exception as e:  # reported per case
        out[case["id"]] = {"error": f"{type(e).__name__}: {e}"[:2000]}
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        ops.launch.FLOAT32_COMPUTE = os.environ.get("EQUITRITON_FLOAT32_COMPUTE", "float64")
out["_total_seconds"] = time.time() - t_all
print("JSON" + json.dumps(out))
"""


def _interpreter_env() -> dict:
    """A subprocess environment that selects the Triton interpreter and imports this checkout."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    return env


@pytest.fixture(scope="module")
def interpreter_results():
    env = _interpreter_env()
    env.pop("EQUITRITON_FLOAT32_COMPUTE", None)
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT], input=json.dumps(CASES), env=env, capture_output=True, text=True, timeout=900
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("JSON")]
    assert proc.returncode == 0 and lines, proc.stdout[-4000:] + proc.stderr[-4000:]
    return json.loads(lines[-1][4:])


def _tolerance(case):
    if case["dtype"] == "float64":
        return 1e-13
    # float32 arithmetic in both (forced, or l_max <= launch.NATIVE_F32_MAX_L); operation order may differ slightly
    if case["env"].get("EQUITRITON_FLOAT32_COMPUTE") == "float32" or max(case["ls"], default=0) <= 1:
        return 1e-5
    return 2.0**-23  # both evaluated in float64, then rounded once to float32: at most an ulp apart


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_kernel_matches_torch_fallback(interpreter_results, case):
    r = interpreter_results[case["id"]]
    assert "error" not in r, r.get("error")
    expected = {"f": ["forward"], "b": ["backward"], "d": ["double_backward_grad_y", "double_backward_x"]}
    names = [k for d in case["directions"] for k in expected[d]]
    assert sorted(k for k in r if k != "seconds") == sorted(names)
    for name in names:
        assert r[name]["shape_ok"], name
        assert r[name]["finite"], name
        assert r[name]["err"] <= _tolerance(case), f"{name}: {r[name]['err']:.3g}"


_FENCE_SCRIPT = r"""
import json, os, torch
from equitriton import ops
torch.manual_seed(0)
out = []
for dtype in (torch.float64, torch.float32):
    x = torch.randn(40, 3, dtype=dtype)
    x[1] = float("nan"); x[2, 0] = float("inf"); x[3] = 0.0; x[4, 2] = -float("inf")
    for ls in ([0, 1, 2, 3, 4], [2, 0, 9]):
        dim = sum(2 * l + 1 for l in ls)
        g = torch.randn(40, dim, dtype=dtype)
        g[5, 0] = float("nan"); g[6, -1] = float("inf"); g[7, dim // 2] = float("nan")
        w = torch.randn(40, 3, dtype=dtype)
        for body in ({"EQUITRITON_LADDER": "1"}, {"EQUITRITON_LADDER": "0", "EQUITRITON_M_MAJOR": "1"},
                     {"EQUITRITON_LADDER": "0", "EQUITRITON_M_MAJOR": "0"}):
            os.environ.update(body)
            res = []
            for fence in ("0", "1", "2", "3"):
                os.environ["EQUITRITON_LOAD_FENCE"] = fence
                bwd = torch.ops.equitriton.sh_backward(x, g, ls, True, 1)
                gg, gx = torch.ops.equitriton.sh_double_backward(x, g, w, ls, True, 1)
                res.append((bwd, gg, gx))
            bits = torch.int64 if dtype == torch.float64 else torch.int32
            same = all(torch.equal(a.view(bits), b.view(bits)) for fenced in res[1:] for a, b in zip(res[0], fenced))
            nonfinite = bool((~torch.isfinite(res[0][0])).any())
            out.append((str(dtype), ls, body, same, nonfinite))
print("RESULT" + json.dumps(out))
"""


def test_load_fence_changes_no_bit_even_for_non_finite_input():
    """LOAD_FENCE only orders loads: its mask compares the accumulators' bits with a signaling NaN, which no
    arithmetic returns, so the fenced kernels give bit-identical results, NaN and infinite rows included."""
    proc = subprocess.run(
        [sys.executable, "-c", _FENCE_SCRIPT], env=_interpreter_env(), capture_output=True, text=True, timeout=900
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(lines[-1][len("RESULT") :])
    assert len(rows) == 12
    for dtype, ls, body, same, nonfinite in rows:
        assert same, f"{dtype} {ls} {body}: fenced and unfenced results differ"
        assert nonfinite, "the case must include non-finite outputs"
