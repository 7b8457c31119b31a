"""The e3nn-compatible API (equitriton/harmonics.py): input forms, shapes, attributes, dtypes and argument errors.

Issue 2, points 5 and 8. Values are compared with e3nn (unpatched) in float64; the numerics proper are in
test_numerics.py and the derivatives in test_gradients.py. The 64-bit offset arithmetic of the Triton kernels is
checked here under the Triton interpreter, in a subprocess, without allocating N * dim > 2**31 elements.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from e3nn import o3

import equitriton
from equitriton import SphericalHarmonics, spherical_harmonics

REPO = Path(__file__).resolve().parent.parent
F64 = torch.float64
NORMALIZATIONS = ["integral", "component", "norm"]


def e3nn_module(*args, **kwargs):
    """e3nn's own module; refuses to build while e3nn is patched (the reference would be ourselves)."""
    assert o3.SphericalHarmonics.forward.__module__ == "e3nn.o3._spherical_harmonics", "e3nn is patched"
    return o3.SphericalHarmonics(*args, **kwargs)


def rel_err(a, b):
    assert a.shape == b.shape and a.dtype == b.dtype
    return ((a - b).abs().max() / b.abs().max()).item()


def rand(*shape, seed=0, dtype=F64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# --------------------------------------------------------------------------------------------------- input forms
FORMS = [
    (0, None),
    (5, None),
    (12, None),
    ([0, 1, 2], None),
    ([3, 1, 3, 0], None),  # repeats, any order
    ([12, 0], None),
    ((2, 2), None),  # any sequence
    ("0e + 1o + 2e", None),
    ("1x0e+4x1o+3x2e", None),  # multiplicities
    ("2x1o + 0e + 3x3o", None),
    ("0e + 1e + 2e", None),  # odd l with p = 1: e3nn infers a pseudovector input
    (o3.Irreps("1x0e+4x1o+3x2e"), None),
    (o3.Irreps.spherical_harmonics(4), None),
    (o3.Irreps.spherical_harmonics(3, p=1), None),
    ([0, 1, 2], "1e"),
    ("0e+1e+2e+3e", "1x1e"),
    (o3.Irreps("2x2e + 1o"), o3.Irreps("1o")),
]


@pytest.mark.parametrize("irreps_out,irreps_in", FORMS, ids=[str(f[0]) + "|" + str(f[1]) for f in FORMS])
def test_module_matches_e3nn_for_every_input_form(irreps_out, irreps_in):
    ref = e3nn_module(irreps_out, True, "component", irreps_in=irreps_in)
    ours = SphericalHarmonics(irreps_out, True, "component", irreps_in=irreps_in)
    assert ours.irreps_out == ref.irreps_out and str(ours.irreps_out) == str(ref.irreps_out)
    assert ours.irreps_in == ref.irreps_in
    assert ours.normalize == ref.normalize and ours.normalization == ref.normalization
    # the private attributes nequip/allegro and equitriton.patch read
    assert ours._ls_list == ref._ls_list and ours._lmax == ref._lmax and ours._is_range_lmax == ref._is_range_lmax
    x = rand(11, 3, seed=1)
    y, y_ref = ours(x), ref(x)
    assert y.shape == y_ref.shape == (11, ref.irreps_out.dim)
    assert rel_err(y, y_ref) <= 1e-12


@pytest.mark.parametrize(
    "irreps_out", [f[0] for f in FORMS if f[1] is None], ids=[str(f[0]) for f in FORMS if f[1] is None]
)
def test_function_matches_e3nn_for_every_input_form(irreps_out):
    x = rand(2, 5, 3, seed=2)
    for normalize in (True, False):
        for normalization in NORMALIZATIONS:
            y = spherical_harmonics(irreps_out, x, normalize, normalization)
            y_ref = e3nn_module(irreps_out, normalize, normalization)(x)
            assert y.shape == y_ref.shape
            assert rel_err(y, y_ref) <= 1e-12


def test_signatures_and_defaults_match_e3nn():
    import inspect

    for ours, ref in ((spherical_harmonics, o3.spherical_harmonics), (SphericalHarmonics, o3.SphericalHarmonics)):
        p, q = inspect.signature(ours).parameters, inspect.signature(ref).parameters
        assert list(p) == list(q)
        assert [v.default for v in p.values()] == [v.default for v in q.values()]
    x = rand(4, 3, seed=3)
    assert torch.equal(spherical_harmonics(2, x, True), spherical_harmonics(2, x, True, "integral"))
    assert SphericalHarmonics(2, True).normalization == "integral"


def test_from_e3nn_and_repr():
    ref = e3nn_module("1x0e+4x1o+3x2e", False, "norm")
    ours = SphericalHarmonics.from_e3nn(ref)
    assert (ours.irreps_out, ours.irreps_in, ours.normalize, ours.normalization) == (
        ref.irreps_out,
        ref.irreps_in,
        ref.normalize,
        ref.normalization,
    )
    assert ours._ls_list == ref._ls_list
    assert "normalize=False" in repr(ours) and "'norm'" in repr(ours) and str(ref.irreps_out) in repr(ours)


# ---------------------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("shape", [(3,), (1, 3), (2, 3, 3), (2, 1, 4, 3), (0, 3), (2, 0, 3), (0, 0, 3)])
def test_batch_shapes_and_empty(shape):
    ls = [0, 2, 1, 2]
    x = rand(*shape, seed=4).requires_grad_(True)
    y = spherical_harmonics(ls, x, True)
    y_ref = e3nn_module(ls, True)(x.detach())
    assert y.shape == y_ref.shape == shape[:-1] + (14,)
    if y.numel():
        assert rel_err(y.detach(), y_ref) <= 1e-12
    g = rand(*y.shape, seed=5)
    (gx,) = torch.autograd.grad(y, x, g, create_graph=True)
    assert gx.shape == x.shape
    (gxx,) = torch.autograd.grad(gx, x, torch.ones_like(gx))
    assert gxx.shape == x.shape


def _views():
    base = rand(9, 6, seed=6)
    return {
        "column stride 2": base[:, ::2],
        "transposed": rand(3, 9, seed=7).t(),
        "row stride 2": rand(18, 3, seed=8)[::2],
        "expanded (stride 0)": rand(1, 3, seed=9).expand(9, 3),
        "batched non-contiguous": rand(4, 3, 5, seed=10).transpose(1, 2),
    }


@pytest.mark.parametrize("name", list(_views()))
def test_non_contiguous_input(name):
    x = _views()[name]
    assert not x.is_contiguous()
    ls = [1, 0, 3]
    y = spherical_harmonics(ls, x, True, "norm")
    assert torch.equal(y, spherical_harmonics(ls, x.contiguous(), True, "norm"))
    assert rel_err(y, e3nn_module(ls, True, "norm")(x)) <= 1e-12
    # gradients w.r.t. the view equal those w.r.t. a contiguous copy
    xv = x.clone().requires_grad_(True) if x.stride(-2) == 0 else x.detach().requires_grad_(True)
    xc = x.contiguous().requires_grad_(True)
    g = rand(*y.shape, seed=11)
    (gv,) = torch.autograd.grad(spherical_harmonics(ls, xv, True, "norm"), xv, g)
    (gc,) = torch.autograd.grad(spherical_harmonics(ls, xc, True, "norm"), xc, g)
    assert torch.equal(gv, gc)


# ------------------------------------------------------------------------------------------------------ dtypes
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_computed_in_float32_and_cast_back(dtype):
    ls = [0, 1, 2, 6]
    x = rand(20, 3, seed=12).to(dtype)
    y = spherical_harmonics(ls, x, True, "component")
    assert y.dtype == dtype
    assert torch.equal(y, spherical_harmonics(ls, x.float(), True, "component").to(dtype))
    ref = spherical_harmonics(ls, x.double(), True, "component")
    assert (y.double() - ref).abs().max() <= torch.finfo(dtype).eps * ref.abs().max()
    # the module and the backward keep the dtype too
    xg = x.clone().requires_grad_(True)
    ym = SphericalHarmonics(ls, True, "component")(xg)
    assert ym.dtype == dtype and torch.equal(ym, y)
    (gx,) = torch.autograd.grad(ym, xg, torch.ones_like(ym))
    assert gx.dtype == dtype and torch.isfinite(gx).all()


def test_float32_stays_float32():
    x = rand(8, 3, seed=13, dtype=torch.float32)
    y = spherical_harmonics([0, 4, 12], x, True)
    assert y.dtype == torch.float32
    ref = spherical_harmonics([0, 4, 12], x.double(), True)
    assert rel_err(y.double(), ref) <= 1e-6


# ---------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("shape", [(5, 2), (5, 4), (3, 1), (), (2,), (3, 0)])
def test_last_dimension_must_be_3(shape):
    x = torch.zeros(shape, dtype=F64)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 3\)"):
        spherical_harmonics(1, x, True)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 3\)"):
        SphericalHarmonics(1, True)(x)


@pytest.mark.parametrize(
    "dtype", [torch.int32, torch.int64, torch.uint8, torch.bool, torch.complex64, torch.complex128]
)
def test_non_real_floating_dtype_is_refused(dtype):
    x = torch.ones(4, 3, dtype=dtype)
    with pytest.raises(TypeError, match="dtype"):
        spherical_harmonics([0, 1], x, True)
    with pytest.raises(TypeError, match="dtype"):
        SphericalHarmonics([0, 1], False)(x)


@pytest.mark.parametrize("l", [-1, 13, [0, 13], [2, -3], "0e + 13o", o3.Irreps("14e")])
def test_l_out_of_range(l):
    x = rand(3, 3)
    with pytest.raises(ValueError, match=r"l = -?\d+ is out of range"):
        spherical_harmonics(l, x, True)
    with pytest.raises(ValueError, match=r"l = -?\d+ is out of range"):
        SphericalHarmonics(l, True)


@pytest.mark.parametrize("l", [1.5, None, [0, "1"], [0, None], [True], [1.0]])
def test_l_of_wrong_type(l):
    with pytest.raises(TypeError, match="must be an int"):
        spherical_harmonics(l, rand(3, 3), True)


def test_x_must_be_a_tensor():
    with pytest.raises(TypeError, match="torch.Tensor"):
        spherical_harmonics(1, [[0.0, 0.0, 1.0]], True)


def test_empty_l_list():
    with pytest.raises(ValueError, match="at least one l"):
        spherical_harmonics([], rand(3, 3), True)


@pytest.mark.parametrize("normalization", ["Integral", "unit", "", None, 1])
def test_unknown_normalization(normalization):
    with pytest.raises((ValueError, TypeError), match="normalization"):
        spherical_harmonics(1, rand(3, 3), True, normalization)
    with pytest.raises((ValueError, TypeError), match="normalization"):
        SphericalHarmonics(1, True, normalization)


@pytest.mark.parametrize(
    "irreps_out,irreps_in",
    [
        ("0o", None),
        ("1o + 1e", None),
        ("2o", None),
        ("1e", "1o"),
        ([0, 1], "2e"),
        ([0, 1], "1x1o + 1x1o"),
        ("0e", "0e"),
    ],
)
def test_parity_that_e3nn_rejects(irreps_out, irreps_in):
    with pytest.raises(ValueError) as ref:
        e3nn_module(irreps_out, True, irreps_in=irreps_in)
    with pytest.raises(ValueError, match="parity|irreps_in") as ours:
        SphericalHarmonics(irreps_out, True, irreps_in=irreps_in)
    assert "irreps" in str(ours.value) and "irreps" in str(ref.value)


def test_unsupported_device_is_refused():
    from equitriton.harmonics import check_device

    with pytest.raises(ValueError, match="mps"):
        check_device(torch.device("mps"))
    for ok in ("cpu", "cuda", "xpu", "meta"):
        check_device(torch.device(ok))


def test_meta_tensors_give_e3nns_shapes_and_derivatives():
    """Meta tensors (shape inference, deferred initialisation) work as with e3nn, through the ops' fake kernels, to
    the second derivative; the patched e3nn entry points too."""
    x = torch.empty(4, 7, 3, dtype=F64, device="meta", requires_grad=True)
    for ls, dim in (([0, 1, 2], 9), ([12, 5], 36)):
        for y in (spherical_harmonics(ls, x, True, "component"), SphericalHarmonics(ls, False)(x)):
            ref = o3.spherical_harmonics(ls, x, True, "component")
            assert y.device.type == "meta" and y.shape == ref.shape == (4, 7, dim) and y.dtype == F64
        (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
        (h,) = torch.autograd.grad(g.sum(), x)
        assert g.shape == h.shape == x.shape and h.device.type == "meta"
    assert spherical_harmonics(2, x.detach().float(), True).dtype == torch.float32


def test_backend_for():
    assert equitriton.backend_for("cpu") == ("triton" if os.environ.get("TRITON_INTERPRET") == "1" else "torch")
    assert equitriton.backend_for(torch.zeros(1)) == equitriton.backend_for("cpu")
    assert equitriton.backend_for("cuda") == "triton"
    assert equitriton.LMAX == 12


# ------------------------------------------------------------------------------------------------ 64-bit offsets
# Under the Triton interpreter, run the real kernels for programs whose row indices start at ROW0 = 2**28: with
# ls = [12, 3] (dim = 32; and l = 0..12, dim = 169, for the forward) the element offsets rows * dim exceed 2**33,
# so any 32-bit step in the index math (program id * BLOCK, rows * DIM) wraps. The program id is shifted in the
# interpreter and the tensor base pointers are shifted back by ROW0 rows, so the kernel reads and writes a small real
# buffer exactly where it would in a 2**28-row one; the results must equal the unshifted launch.
_OFFSETS_SCRIPT = r"""
import json
import os

import numpy as np
import torch
import triton
import triton.language as tl
from triton.runtime import interpreter as interp

from equitriton import ops
from equitriton.kernels import launch

K = launch.kernels
ROW0 = 2**28
LS, N = [12, 3], 40
DIM = launch.offsets(LS)[1]
report = {}


@triton.jit
def offsets_kernel(OUT, pid, DIM: tl.constexpr, BLOCK: tl.constexpr):
    tl.store(OUT + tl.arange(0, BLOCK), K.row_offsets(pid, BLOCK) * DIM)


@triton.jit
def offsets_kernel_int32(OUT, pid, DIM: tl.constexpr, BLOCK: tl.constexpr):
    tl.store(OUT + tl.arange(0, BLOCK), (pid * BLOCK + tl.arange(0, BLOCK)) * DIM)  # int32 row indices


# 1) the helper, with an int32 program id as tl.program_id gives it; the int32 control must overflow
for name, kern in (("row_offsets", offsets_kernel), ("int32_control", offsets_kernel_int32)):
    out = torch.zeros(64, dtype=torch.int64)
    kern[(1,)](out, ROW0 // 64, DIM=DIM, BLOCK=64)
    report[name] = bool(torch.equal(out, (torch.arange(64, dtype=torch.int64) + ROW0) * DIM))
print("JSON" + json.dumps(report), flush=True)  # before the real kernels, which crash if their offsets wrap

# 2) the real kernels, program ids shifted by ROW0 / BLOCK and base pointers shifted back by ROW0 rows
shift_by_ptr = {}
real_cvt = interp._implicit_cvt
real_pid = interp.interpreter_builder.create_get_program_id


def shifted_cvt(arg):
    out = real_cvt(arg)
    if hasattr(arg, "data_ptr") and arg.data_ptr() in shift_by_ptr:
        out.handle.data[0] = np.uint64(arg.data_ptr() - shift_by_ptr[arg.data_ptr()])
    return out


def launch_rows_from(row0, kernel, direction, ls, tensors, strides):
    # launch `kernel` over N rows as if they were rows row0 .. row0 + N - 1 of a larger batch
    offs, dim = launch.offsets(ls)
    cfg = launch.config(direction, max(ls), torch.float64, parts=False)  # one program per block of rows
    assert row0 % cfg["BLOCK"] == 0
    shift_by_ptr.clear()
    shift_by_ptr.update({t.data_ptr(): row0 * t.stride(0) * t.element_size() for t in tensors})

    def pid(axis):
        h = real_pid(axis)
        return interp.TensorHandle(h.data + np.int32(row0 // cfg["BLOCK"] if axis == 0 else 0), h.dtype)

    interp.interpreter_builder.create_get_program_id = pid
    interp._implicit_cvt = shifted_cvt
    try:
        meta = launch.meta(ls, offs, dim, True, 1, torch.float64, cfg)
        kernel[(triton.cdiv(N, cfg["BLOCK"]),)](*tensors, row0 + N, *strides, **meta)
    finally:
        interp.interpreter_builder.create_get_program_id = real_pid
        interp._implicit_cvt = real_cvt


FULL = list(range(13))  # dim 169, l = 0..12 in order: launch.py may store the forward row as one tile
DIM_FULL = launch.offsets(FULL)[1]
g = torch.Generator().manual_seed(0)
x = torch.randn(N, 3, generator=g, dtype=torch.float64)
gy = torch.randn(N, DIM, generator=g, dtype=torch.float64)
w = torch.randn(N, 3, generator=g, dtype=torch.float64)
results = {}
for row0 in (0, ROW0):
    shapes = ((N, DIM), (N, 3), (N, DIM), (N, 3), (N, DIM_FULL))
    y, gx, gg, gx2, y_full = (torch.full(s, float("nan"), dtype=torch.float64) for s in shapes)
    launch_rows_from(row0, K.sh_forward_kernel, "forward", LS, [x, y], (3, 1))
    launch_rows_from(row0, K.sh_backward_kernel, "backward", LS, [x, gy, gx], (3, 1))
    launch_rows_from(row0, K.sh_double_backward_kernel, "double_backward", LS, [x, gy, w, gg, gx2], (3, 1, 3, 1))
    launch_rows_from(row0, K.sh_forward_kernel, "forward", FULL, [x, y_full], (3, 1))
    results[row0] = [y, gx, gg, gx2, y_full]
os.environ["TRITON_INTERPRET"] = "0"  # the reference: the torch fallback (ops reads this at call time)
ref = [
    torch.ops.equitriton.sh_forward(x, LS, True, 1),
    torch.ops.equitriton.sh_backward(x, gy, LS, True, 1),
    *torch.ops.equitriton.sh_double_backward(x, gy, w, LS, True, 1),
    torch.ops.equitriton.sh_forward(x, FULL, True, 1),
]
names = ["forward", "backward", "double_backward_grad_y", "double_backward_x", "forward_l_0_to_12"]
for name, a, b, r in zip(names, results[0], results[ROW0], ref):
    report[name] = {
        "shifted_equals_unshifted": bool(torch.equal(a, b)),
        "unshifted_vs_op": float((a - r).abs().max() / r.abs().max()),
    }
print("JSON" + json.dumps(report))
"""


@pytest.mark.parametrize("row32", ["0", "1"], ids=["64-bit-rows", "ROW32"])
def test_offsets_are_64_bit_under_interpreter(row32):
    # both row schemes: 64-bit row indices, and ROW32's 64-bit first row plus 32-bit offsets (launch.config)
    env = dict(
        os.environ,
        TRITON_INTERPRET="1",
        EQUITRITON_ROW32=row32,
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    )
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_OFFSETS_SCRIPT)], env=env, capture_output=True, text=True, timeout=600
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("JSON")]
    report = json.loads(lines[-1][4:]) if lines else {}
    assert report.get("row_offsets") is True, "row_offsets(pid, BLOCK) * DIM is wrong for a large program id"
    assert report.get("int32_control") is False, "control: int32 row indices should overflow here"
    assert proc.returncode == 0, (
        f"the kernels failed (exit {proc.returncode}; a negative code is a signal, e.g. an out-of-range access from "
        f"wrapped offsets):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    )
    del report["row_offsets"], report["int32_control"]
    assert set(report) == {"forward", "backward", "double_backward_grad_y", "double_backward_x", "forward_l_0_to_12"}
    for name, r in report.items():
        assert r["unshifted_vs_op"] <= 1e-13, name
        assert r["shifted_equals_unshifted"], f"{name}: offsets past 2**31 elements index differently"
