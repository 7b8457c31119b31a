"""The CPU fallback's execution paths give the same numbers: row chunks (any size, one or several threads), one call,
TorchScript or plain Python bodies, grad/inference modes. (Speed: benchmarks/cpu_fallback.py, docs/cpu_fallback.md.)"""

from __future__ import annotations

import pytest
import torch

from equitriton import fallback, ops
from equitriton.generated import torch_fallback as tf
from equitriton.kernels import launch

pytestmark = pytest.mark.skipif(ops.use_triton(torch.device("cpu")), reason="CPU runs the Triton interpreter here")

LS = [0, 3, 1, 3, 12, 2]  # repeats, any order, up to l = 12


def _points(n: int, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    x[0] = 0.0  # zero vector (clamped normalisation)
    x[1] *= 1e-9
    return x.to(dtype)


def _all_orders(x: torch.Tensor, ls, normalize: bool, normalization: int = 0):
    """Y, dL/dx and both double-backward outputs, straight through the custom ops."""
    dim = sum(2 * l + 1 for l in ls)
    gen = torch.Generator().manual_seed(1)
    g = torch.randn(x.shape[0], dim, generator=gen, dtype=torch.float64).to(x.dtype)
    w = torch.randn(x.shape[0], 3, generator=gen, dtype=torch.float64).to(x.dtype)
    y = torch.ops.equitriton.sh_forward(x, ls, normalize, normalization)
    gx = torch.ops.equitriton.sh_backward(x, g, ls, normalize, normalization)
    gg, gx2 = torch.ops.equitriton.sh_double_backward(x, g, w, ls, normalize, normalization)
    return y, gx, gg, gx2


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 700 rows: a few thousand rows run as many chunks (and over threads where there are several)."""
    monkeypatch.setattr(fallback, "_CPU_CHUNK", {k: (700,) * 13 for k in fallback._CPU_CHUNK})


@pytest.fixture
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [1, 2, 3], indirect=True)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("normalize", [True, False])
def test_chunks_and_threads_match_one_call(monkeypatch, threads, dtype, normalize):
    x = _points(2900, dtype)
    one = _all_orders(x, LS, normalize, 2)  # 2900 rows: a single call with the default table
    monkeypatch.setattr(fallback, "_CPU_CHUNK", {k: (700,) * 13 for k in fallback._CPU_CHUNK})
    chunked = _all_orders(x, LS, normalize, 2)
    for a, b in zip(one, chunked):
        assert a.dtype == b.dtype == dtype and a.shape == b.shape
        assert torch.equal(a, b)


@pytest.mark.parametrize("threads", [2], indirect=True)
def test_nan_row_stays_in_its_row_across_chunks(small_chunks, threads):
    x = _points(2100)
    clean = _all_orders(x, LS, True)
    for bad in (699, 700, 1400):  # either side of a chunk boundary
        x_nan = x.clone()
        x_nan[bad, 2] = float("nan")
        keep = torch.ones(x.shape[0], dtype=torch.bool)
        keep[bad] = False
        for c, d in zip(clean, _all_orders(x_nan, LS, True)):
            assert torch.equal(c[keep], d[keep])
            assert torch.isnan(d[bad]).any()


@pytest.mark.parametrize("threads", [2], indirect=True)
def test_modes_carry_into_threads(small_chunks, threads):
    """Inference mode, no_grad and autograd through the chunked, threaded path."""
    x = _points(2100)
    ref = _all_orders(x, LS, True)
    with torch.inference_mode():
        y = torch.ops.equitriton.sh_forward(x, LS, True, 0)
    assert torch.equal(y, ref[0])
    with torch.no_grad():
        y = torch.ops.equitriton.sh_forward(x, LS, True, 0)
    assert torch.equal(y, ref[0])
    xg = x.clone().requires_grad_(True)
    g = torch.randn_like(ref[0])
    (gx,) = torch.autograd.grad(torch.ops.equitriton.sh_forward(xg, LS, True, 0), xg, g)
    assert torch.equal(gx, torch.ops.equitriton.sh_backward(x, g, LS, True, 0))


@pytest.mark.parametrize("normalize", [True, False])
def test_torchscript_and_python_bodies_agree_bitwise(normalize):
    x = _points(300)
    ls, dim = LS, sum(2 * l + 1 for l in LS)
    offs = list(launch.offsets(ls)[0])
    gen = torch.Generator().manual_seed(2)
    g = torch.randn(300, dim, generator=gen, dtype=torch.float64)
    w = torch.randn(300, 3, generator=gen, dtype=torch.float64)
    for fn, args in ((tf.forward, (x,)), (tf.backward, (x, g)), (tf.double_backward, (x, g, w))):
        script = tf.scripted(fn)
        assert script is not fn, "TorchScript did not compile the body"
        a = fn(*args, ls, offs, dim, normalize, 1)
        with torch.jit.optimized_execution(False):
            b = script(*args, ls, offs, dim, normalize, 1)
        for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            assert torch.equal(u, v)


def test_plain_python_when_torchscript_cannot_compile(monkeypatch):
    def refuse(fn):
        raise RuntimeError("no TorchScript here")

    monkeypatch.setattr(tf, "_SCRIPTED", {})
    monkeypatch.setattr(torch.jit, "script", refuse)
    assert tf.scripted(tf.backward) is tf.backward
    x = _points(50)
    y = torch.ops.equitriton.sh_forward(x, LS, True, 0)
    assert torch.isfinite(y).all()


def test_empty_and_single_row():
    for n in (0, 1):
        out = _all_orders(_points(2)[:n], LS, True)
        assert [t.shape[0] for t in out] == [n] * 4


def test_benchmark_and_report_smoke(tmp_path):
    """benchmarks/cpu_fallback.py on a tiny grid, then the report it feeds (no timing asserted)."""
    import importlib.util
    import json
    from pathlib import Path

    bench = Path(__file__).resolve().parent.parent / "benchmarks"
    mods = {}
    for name in ("cpu_fallback", "report_cpu_fallback"):
        spec = importlib.util.spec_from_file_location(name, bench / f"{name}.py")
        mods[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mods[name])
    out = tmp_path / "cpu.json"
    args = ["--out", str(out), "--label", "after", "--lmax", "2", "--n", "64", "--reps", "1", "--no-first-call"]
    assert mods["cpu_fallback"].main(args + ["--budget", "1", "--min-time", "0"]) == 0
    run = json.loads(out.read_text())
    assert {(r["impl"], r["direction"], r["dtype"]) for r in run["results"]} == {
        (i, d, t) for i in ("e3nn", "equitriton") for d in ("fwd", "fwd+bwd") for t in ("float64", "float32")
    }
    text = mods["report_cpu_fallback"].report([run])
    assert "| 2 | " in text and "after: " in text
    assert "## Where equitriton is still slower than e3nn" in text


def test_aot_inductor_forces_at_other_batch_sizes(tmp_path):
    """Y and dE/dx (the backward, as a force field runs it) exported with a dynamic row count, compiled by
    AOTInductor and run at row counts other than the example's. Accumulating the backward in place through views of
    one (3, N) tensor exported right but compiled to outputs of the example's row count (Allegro: wrong energy)."""

    class Forces(torch.nn.Module):
        def forward(self, x, c):
            x = x.requires_grad_(True)
            e = (torch.ops.equitriton.sh_forward(x, [0, 1, 2, 3], True, 0) * c).sum()
            (gx,) = torch.autograd.grad(e, x)
            return e.detach(), gx

    m = Forces()
    c = torch.randn(16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    n = torch.export.Dim("n", min=2, max=1 << 20)
    ep = torch.export.export(m, (_points(37), c), dynamic_shapes={"x": {0: n}, "c": None})
    path = torch._inductor.aoti_compile_and_package(ep, package_path=str(tmp_path / "forces.pt2"))
    loaded = torch._inductor.aoti_load_package(path)
    for rows in (37, 5, 101):
        x = _points(rows, seed=rows)
        for want, got in zip(m(x.clone(), c), loaded(x.clone(), c)):
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("ls", [[1], [0, 1], [2, 0], [0, 1, 2, 3], [3, 1, 3], [2, 2, 1]])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("normalization", [0, 1, 2])
def test_small_l_bodies_match_the_per_term_bodies(ls, normalize, normalization):
    """l_max <= 3, few rows: the stacked-monomial bodies (_forward_small, _backward_small) give the per-term bodies'
    numbers to rounding, zero vector included, and the ops take them below the row thresholds."""
    n = 300
    assert n <= min(r for rows in fallback._CPU_SMALL_ROWS.values() for r in rows[1:])
    x = _points(n)
    offs, dim = launch.offsets(ls)
    g = torch.randn(n, dim, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    rest = (ls, list(offs), dim, normalize, normalization)
    for fn, args in ((tf.forward, (x,)), (tf.backward, (x, g))):
        small = fallback._bound(fn, rest, True, True)(*args, None)
        term = fallback._bound(fn, rest, True, False)(*args, None)
        assert small.shape == term.shape
        scale = term.abs().max().clamp_min(1e-300)
        assert ((small - term).abs().max() / scale).item() <= 1e-14
    y = torch.ops.equitriton.sh_forward(x, ls, normalize, normalization)
    assert torch.equal(y, fallback._bound(tf.forward, rest, True, True)(x, None))


@pytest.mark.parametrize("ls", [[0], [1], [0, 1], [1, 0, 1], [1, 1, 0, 0]])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("normalization", [0, 1, 2])
def test_l1_forward_body_matches_the_per_term_body(ls, normalize, normalization):
    """l_max <= 1: the fill / multiply body (_forward_l1) gives the per-term body's numbers to rounding, a zero vector
    and a NaN row (which stays in its row) included; the op runs it at any row count (in one call: no chunks at
    l_max <= 1), and float32 input the same body evaluated in float32."""
    n = 3 * 16384 + 5
    x = _points(n)
    x[3] = 0.0
    x[17, 2] = float("nan")
    offs, dim = launch.offsets(ls)
    rest = (ls, list(offs), dim, normalize, normalization)
    l1 = fallback._bound(tf.forward, rest, True, True)(x, None)
    term = fallback._bound(tf.forward, rest, True, False)(x, None)
    assert torch.equal(torch.isnan(l1), torch.isnan(term))
    assert torch.isnan(l1[17]).any() == (1 in ls) and not torch.isnan(l1[torch.arange(n) != 17]).any()
    ok = ~torch.isnan(term)
    assert ((l1[ok] - term[ok]).abs().max() / term[ok].abs().max()).item() <= 1e-15
    torch.testing.assert_close(
        torch.ops.equitriton.sh_forward(x, ls, normalize, normalization), l1, rtol=0, atol=0, equal_nan=True
    )
    y32 = torch.ops.equitriton.sh_forward(x.float(), ls, normalize, normalization)
    f64 = ops.launch.compute_f64(torch.float32, max(ls))  # float32 is evaluated natively at l_max <= 1
    want32 = fallback._bound(tf.forward, rest, f64, True)(fallback._up(x.float(), f64), None).float()
    torch.testing.assert_close(y32, want32, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("normalize", [True, False])
def test_small_l_bodies_keep_nonfinite_values_in_place(normalize):
    """A NaN input or an overflow in one row: that row gets the per-term body's values (NaN / inf exactly where they
    are there), the other rows the small body's values of the clean input."""
    ls, n = [0, 1, 2, 3], 50
    offs, dim = launch.offsets(ls)
    rest = (ls, list(offs), dim, normalize, 0)
    x = _points(n)
    g = torch.randn(n, dim, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    bad = x.clone()
    bad[7, 1] = float("nan")
    bad[9] = torch.tensor([1e120, 0.5, 2.0], dtype=torch.float64)
    gbad = g.clone()
    gbad[11, 4] = float("inf")
    rows = torch.ones(n, dtype=torch.bool)
    rows[[7, 9, 11]] = False
    for fn, clean, dirty in ((tf.forward, (x,), (bad,)), (tf.backward, (x, g), (bad, gbad))):
        small, term = fallback._bound(fn, rest, True, True), fallback._bound(fn, rest, True, False)
        a, b, t = small(*clean, None), small(*dirty, None), term(*dirty, None)
        assert torch.equal(a[rows], b[rows])
        for r in (7, 9, 11):
            if fn is tf.forward and r == 11:
                continue
            assert torch.equal(torch.isnan(b[r]), torch.isnan(t[r])) and torch.equal(
                torch.isinf(b[r]), torch.isinf(t[r])
            )
        assert not torch.isfinite(b[7]).all()


@pytest.mark.parametrize("width", [3, 9, 25])
@pytest.mark.parametrize("n", [1, 15, 16, 17, 40, 1000])
def test_blocked_transposing_copies(width, n):
    """The fallback's blocked (rows, 16, width) transposing copies, with and without a tail of n % 16 rows, equal a
    plain transpose; and the forward's stacked columns equal torch.stack(dim=-1)."""
    src = torch.randn(n, width, dtype=torch.float64)
    rows = tf._to_rows(torch.empty(width, n, dtype=torch.float64), src)
    assert torch.equal(rows, src.t())
    assert torch.equal(tf._to_columns(torch.empty(n, width, dtype=torch.float64), rows), src)
    assert torch.equal(tf._columns(rows, None), src)
    cols = list(src.unbind(1))
    assert torch.equal(tf._stack(cols, None), torch.stack(cols, dim=-1))


def test_chunk_threads_restore_the_thread_count():
    """Calls split over chunk threads run each thread's ops serially (fallback._chunks) and leave the caller's
    torch.get_num_threads() as it was; the result is the single-call body's."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        n = 3 * fallback._CPU_CHUNK["forward"][2] + 7
        x = _points(n)
        ls = [0, 1, 2]
        offs, dim = launch.offsets(ls)
        y = torch.ops.equitriton.sh_forward(x, ls, True, 0)
        assert torch.get_num_threads() == 2
        ref = tf.forward(x, ls, list(offs), dim, True, 0)
        assert ((y - ref).abs().max() / ref.abs().max()).item() <= 1e-15
    finally:
        torch.set_num_threads(before)
