"""The Triton kernels on a GPU: CUDA (marked ``cuda``) and Intel XPU (marked ``xpu``); each skips cleanly without one.

Issue 2, points 2, 4, 8 and 9: kernels against the CPU torch fallback (float64 and float32, every l, every
normalization), gradcheck on the device, no recompilation when N changes, one kernel launch per direction, 64-bit
offsets with N * dim > 2**31 (CUDA, memory permitting), and torch.compile on the device.
"""

import pytest
import torch
from e3nn import o3
from torch.autograd import gradcheck, gradgradcheck

import equitriton
from equitriton import SphericalHarmonics, spherical_harmonics
from equitriton.kernels import launch


def _available(kind: str) -> bool:
    if kind == "cuda":
        return torch.cuda.is_available()
    return hasattr(torch, "xpu") and torch.xpu.is_available()


DEVICES = [
    pytest.param(
        "cuda",
        marks=[pytest.mark.cuda, pytest.mark.skipif(not _available("cuda"), reason="needs a CUDA GPU (none found)")],
    ),
    pytest.param(
        "xpu",
        marks=[pytest.mark.xpu, pytest.mark.skipif(not _available("xpu"), reason="needs an Intel XPU (none found)")],
    ),
]
needs_cuda = pytest.mark.skipif(not _available("cuda"), reason="needs a CUDA GPU (none found)")

ALL = list(range(13))
NORMALIZATIONS = {"integral": 0, "component": 1, "norm": 2}
F64, F32 = torch.float64, torch.float32


def rel_err(a, b):
    a, b = a.double().cpu(), b.double().cpu()
    assert a.shape == b.shape
    scale = b.abs().max()
    err = (a - b).abs().max()
    return (err if scale == 0 else err / scale).item()


def rand(*shape, seed=0, dtype=F64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def synchronize(device):
    (torch.cuda if device == "cuda" else torch.xpu).synchronize()


def all_directions(x, g, w, ls, normalize, normalization):
    ops = torch.ops.equitriton
    return [
        ops.sh_forward(x, ls, normalize, normalization),
        ops.sh_backward(x, g, ls, normalize, normalization),
        *ops.sh_double_backward(x, g, w, ls, normalize, normalization),
    ]


# ---------------------------------------------------------------------------------------- kernels vs CPU fallback
def normalization_cases(ls):
    """Every (normalize, normalization) pair, except for l sets that reach l = 12: each pair is its own compiled kernel
    per direction, and the l = 12 derivative kernels take minutes each to compile. Normalization is one scale per l
    (checked for every l < 12 on the other sets, and for l = 12 on the CPU interpreter in test_triton_interpreter.py);
    two pairs there still cover normalize on/off and two normalizations."""
    if max(ls) >= 12:
        return [(True, "integral"), (False, "component")]
    return [(normalize, name) for normalize in (True, False) for name in NORMALIZATIONS]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [F64, F32], ids=["float64", "float32"])
@pytest.mark.parametrize(
    "ls", [ALL, [3, 1, 3, 0], [12, 5], [0], [1, 0, 1], [7, 2, 11]], ids=lambda ls: "-".join(map(str, ls))
)
def test_kernels_match_cpu_fallback(device, dtype, ls):
    assert equitriton.backend_for(device) == "triton"
    dim = sum(2 * l + 1 for l in ls)
    n = 1000  # several programs and a masked tail
    x, g, w = rand(n, 3, seed=1, dtype=dtype), rand(n, dim, seed=2, dtype=dtype), rand(n, 3, seed=3, dtype=dtype)
    tol = 1e-13 if dtype == F64 else 2e-7
    if dtype == F32 and not launch.compute_f64(dtype, max(ls)):
        tol = 1e-6  # float32 arithmetic on both sides (l_max <= 1): a few ulps apart (GPU FMA contraction)
    for normalize, name in normalization_cases(ls):
        gpu = all_directions(x.to(device), g.to(device), w.to(device), ls, normalize, NORMALIZATIONS[name])
        cpu = all_directions(x, g, w, ls, normalize, NORMALIZATIONS[name])
        for what, a, b in zip(("forward", "backward", "dbl grad_y", "dbl x"), gpu, cpu):
            assert a.device.type == device and a.dtype == dtype
            assert rel_err(a, b) <= tol, f"{what}, normalize={normalize}, {name}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [F64, F32], ids=["float64", "float32"])
@pytest.mark.parametrize(
    "env",
    [
        {"EQUITRITON_LADDER": "0"},
        {"EQUITRITON_LADDER": "1", "EQUITRITON_WIDE_IO": "0"},
        {"EQUITRITON_LADDER": "1", "EQUITRITON_WIDE_IO": "1", "EQUITRITON_SELECT_TILE": "1"},
        # d(grad_y) tiles in power-of-two pieces (kernel_tuning.md item 12; in the launch table at float32 l_max 2 only)
        *(
            {
                "EQUITRITON_LADDER": "1",
                "EQUITRITON_WIDE_IO": "1",
                "EQUITRITON_SELECT_TILE": "1",
                "EQUITRITON_ROW_CHUNK": c,
            }
            for c in ("2", "4")
        ),
        *({"EQUITRITON_LOAD_FENCE": "1", **e} for e in ({"EQUITRITON_LADDER": "0"}, {"EQUITRITON_LADDER": "1"})),
        {"EQUITRITON_LOAD_FENCE": "2", "EQUITRITON_LADDER": "1"},
        {"EQUITRITON_LOAD_FENCE": "3", "EQUITRITON_LADDER": "1"},  # kernel_tuning.md item 22
        # the grad_y row as one coalesced tile split into columns (kernel_tuning.md item 15)
        *({"EQUITRITON_GY_TILE": "1", **e} for e in ({"EQUITRITON_LADDER": "0"}, {"EQUITRITON_LADDER": "1"})),
    ],
    ids=[
        "dual",
        "ladder",
        "ladder-tiles",
        "ladder-pieces-2",
        "ladder-pieces-4",
        "dual-fence",
        "ladder-fence",
        "ladder-fence-2",
        "ladder-fence-3",
        "dual-gytile",
        "ladder-gytile",
    ],
)
def test_derivative_bodies_match_cpu_fallback(device, dtype, env, monkeypatch):
    """Both bodies of the derivative kernels (traced duals, the derivative ladder with d(grad_y) column by column or
    as per-degree tiles), forced, on the device: the launch table picks per (l_max, dtype), so the one not picked
    would otherwise go untested on the GPU. [0, 1, 2, 3]: a row of 16 columns, tiled by GY_TILE without padding."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for ls in (ALL, [12, 5], [2, 0, 9], [0, 1, 2, 3]):
        dim = sum(2 * l + 1 for l in ls)
        x, g, w = (
            rand(700, 3, seed=6, dtype=dtype),
            rand(700, dim, seed=7, dtype=dtype),
            rand(700, 3, seed=8, dtype=dtype),
        )
        x[0] = 0.0  # the clamped branch of the normalisation
        gpu = all_directions(x.to(device), g.to(device), w.to(device), ls, True, NORMALIZATIONS["norm"])
        cpu = all_directions(x, g, w, ls, True, NORMALIZATIONS["norm"])
        for what, a, b in list(zip(("forward", "backward", "dbl grad_y", "dbl x"), gpu, cpu))[1:]:
            assert rel_err(a, b) <= (1e-13 if dtype == F64 else 2e-7), f"{what} {ls}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [F64, F32], ids=["float64", "float32"])
def test_row32_matches_cpu_fallback(device, dtype, monkeypatch):
    """ROW32 (32-bit row offsets from each program's first row) forced on: the launch table has it at four points
    only. Every direction, whole-row and sparse sets, a masked tail and an input whose row stride is 6."""
    monkeypatch.setenv("EQUITRITON_ROW32", "1")
    for ls in (list(range(7)), [2, 0, 9], [0, 1, 2]):
        dim = sum(2 * l + 1 for l in ls)
        x = rand(700, 6, seed=9, dtype=dtype)[:, ::2]
        g, w = rand(700, dim, seed=10, dtype=dtype), rand(700, 3, seed=11, dtype=dtype)
        gpu = all_directions(x.to(device), g.to(device), w.to(device), ls, True, NORMALIZATIONS["component"])
        cpu = all_directions(x, g, w, ls, True, NORMALIZATIONS["component"])
        for what, a, b in zip(("forward", "backward", "dbl grad_y", "dbl x"), gpu, cpu):
            assert rel_err(a, b) <= (1e-13 if dtype == F64 else 2e-7), f"{what} {ls}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [F64, F32], ids=["float64", "float32"])
@pytest.mark.parametrize("cap", ["16", "49", "128"])
def test_chunked_row_forward_matches_cpu_fallback(device, dtype, cap, monkeypatch):
    """The forward's row built by selects in chunks of whole l's, each stored once its last l is made (ANY_ROW_CHUNK,
    kernel_tuning.md item 18), forced with FULL_ROW off: whole sets up to l = 12, a sparse ascending set and an
    unordered one, a masked tail. The forward alone: its kernels compile in seconds."""
    monkeypatch.setenv("EQUITRITON_FULL_ROW", "0")
    monkeypatch.setenv("EQUITRITON_SELECT_TILE", "1")
    monkeypatch.setenv("EQUITRITON_ANY_ROW_CHUNK", cap)
    for ls in (ALL, list(range(9)), [0, 2, 10], [3, 1, 3, 0]):
        x = rand(700, 3, seed=12, dtype=dtype)
        x[0] = 0.0
        for normalize, name in ((True, "norm"), (False, "integral")):
            gpu = torch.ops.equitriton.sh_forward(x.to(device), ls, normalize, NORMALIZATIONS[name])
            cpu = torch.ops.equitriton.sh_forward(x, ls, normalize, NORMALIZATIONS[name])
            assert rel_err(gpu, cpu) <= (1e-13 if dtype == F64 else 2e-7), f"{ls} {normalize} {name}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [F64, F32], ids=["float64", "float32"])
def test_parts_forward_matches_cpu_fallback(device, dtype, monkeypatch):
    """The forward's row cut into ranges of whole l's, each stored by its own programs (PARTS_AT,
    sh_forward_parts_kernel; kernel_tuning.md item 19): two and three ranges, through the ops (wrap_triton), the
    eager path (launch.run_cached on CUDA) and torch.compile, a masked tail and a strided input; rows of N = 2^16
    so that many programs of both ranges run at once."""
    from equitriton import ops

    for ls, at in ((ALL, "10"), (ALL, "8,11"), (ALL, "11"), (list(range(9)), "7"), (list(range(3)), "1")):
        monkeypatch.setenv("EQUITRITON_PARTS_AT", at)
        assert launch.plan("forward", ls, True, 1, dtype)[1]["PARTS"] == len(at.split(",")) + 1
        for n in (700, 2**16 + 3):
            x = rand(n, 6, seed=13, dtype=dtype)[:, ::2]
            x[0] = 0.0
            for normalize, name in ((True, "norm"), (False, "integral")):
                cpu = torch.ops.equitriton.sh_forward(x, ls, normalize, NORMALIZATIONS[name])
                gpu = torch.ops.equitriton.sh_forward(x.to(device), ls, normalize, NORMALIZATIONS[name])
                assert rel_err(gpu, cpu) <= (1e-13 if dtype == F64 else 2e-7), f"{ls} {at} {normalize} {name}"
        xd = x.to(device)
        eager = ops.sh_eager(xd, ls, True, 1)
        assert torch.equal(eager, torch.ops.equitriton.sh_forward(xd, ls, True, 1)), f"eager {ls} {at}"
        # Inductor launches the same kernel through its own launcher (its FX graph cache is keyed on the graph, not
        # on EQUITRITON_PARTS_AT, so it may hold another cut's kernel: compared to the bound, not bit for bit)
        torch._dynamo.reset()
        compiled = torch.compile(lambda t, ls=ls: torch.ops.equitriton.sh_forward(t, ls, True, 1), fullgraph=True)
        assert rel_err(compiled(xd), eager) <= (1e-13 if dtype == F64 else 2e-7), f"torch.compile {ls} {at}"


@pytest.mark.parametrize("device", DEVICES)
def test_torch_func_transforms_on_device(device):
    """equitriton/transforms.py on the device, with the CPU tests' transforms (tests/test_transforms.py): the batching
    rule and the functorch autograd Functions launch the kernels, and every transform equals e3nn's on that device."""
    from test_transforms import all_transforms

    ls = [0, 1, 2, 5]
    x = rand(5, 3, seed=12).to(device)
    ours = all_transforms(lambda v: spherical_harmonics(ls, v, True, "component"), x)
    ref = all_transforms(lambda v: o3.spherical_harmonics(ls, v, True, "component"), x)
    for name in ref:
        assert ours[name].device == x.device and ours[name].shape == ref[name].shape, name
        assert rel_err(ours[name], ref[name]) <= 1e-12, name


@pytest.mark.parametrize("device", DEVICES)
def test_fx_traced_module_on_device(device):
    module = SphericalHarmonics([0, 2, 3], normalize=True)
    traced = torch.fx.symbolic_trace(module)
    x = rand(300, 3, seed=13).to(device).requires_grad_(True)
    y = traced(x)
    assert torch.equal(y, module(x))
    (g,) = torch.autograd.grad(y.sin().sum(), x)
    (g_ref,) = torch.autograd.grad(o3.spherical_harmonics([0, 2, 3], x, True).sin().sum(), x)
    assert rel_err(g, g_ref) <= 1e-12


@pytest.mark.parametrize("device", DEVICES)
def test_float64_matches_e3nn_on_device(device):
    x = rand(4096, 3, seed=4).to(device)
    for normalize in (True, False):
        for name in NORMALIZATIONS:
            ours = spherical_harmonics(ALL, x, normalize, name)
            ref = o3.spherical_harmonics(ALL, x, normalize, name)
            assert rel_err(ours, ref) <= 1e-12


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_and_empty_on_device(device):
    base = rand(50, 6, seed=5).to(device)
    x = base[:, ::2]
    assert torch.equal(spherical_harmonics([2, 0], x, True), spherical_harmonics([2, 0], x.contiguous(), True))
    assert spherical_harmonics([2, 0], torch.empty(0, 3, dtype=F64, device=device), True).shape == (0, 6)


# ---------------------------------------------------------------------------------------------------- gradcheck
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("ls", [[0, 1, 2, 3, 4], [12], [5, 2, 5]], ids=lambda ls: "-".join(map(str, ls)))
def test_gradcheck_on_device(device, ls):
    x = (rand(4, 3, seed=6) * 0.8).to(device).requires_grad_(True)
    dim = sum(2 * l + 1 for l in ls)
    grad_out = rand(4, dim, seed=7).to(device)

    def f(x):
        return spherical_harmonics(ls, x, True, "component")

    assert gradcheck(f, (x,), fast_mode=True)
    assert gradgradcheck(f, (x,), (grad_out,), fast_mode=True)


# ----------------------------------------------------------------------------------- compile once, launch once
def _compiled_count(kernel) -> int:
    caches = getattr(kernel, "device_caches", None)
    assert caches is not None, "triton JITFunction.device_caches not found: update this test for the triton version"
    return sum(len(c[0]) for c in caches.values())


@pytest.mark.parametrize("device", DEVICES)
def test_no_recompilation_when_n_changes(device):
    ls = [0, 1, 2, 5]
    dim = 1 + 3 + 5 + 11
    kernels = [launch.kernels.sh_forward_kernel, launch.kernels.sh_backward_kernel]
    kernels.append(launch.kernels.sh_double_backward_kernel)

    def run(n, seed):
        x, g, w = (rand(n, c, seed=seed + i).to(device) for i, c in enumerate((3, dim, 3)))
        all_directions(x, g, w, ls, True, 1)
        synchronize(device)

    run(64, 0)  # compiles once per direction
    counts = [_compiled_count(k) for k in kernels]
    for i, n in enumerate((1, 7, 129, 4097, 100_003, 1 << 20)):
        run(n, 10 * i)
    assert [_compiled_count(k) for k in kernels] == counts, "a new N compiled a new kernel"


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("ls", [ALL, [3, 1, 3, 0]], ids=["0..12", "3-1-3-0"])
@pytest.mark.parametrize("dtype", [F64, F32], ids=["float64", "float32"])
def test_one_launch_per_direction(ls, dtype):
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    dim = sum(2 * l + 1 for l in ls)
    x, g, w = rand(5000, 3, dtype=dtype).cuda(), rand(5000, dim, dtype=dtype).cuda(), rand(5000, 3, dtype=dtype).cuda()
    ops = torch.ops.equitriton
    # the forward of a row cut into ranges of l's (the table's PARTS_AT, float64 l_max 12) is the parts kernel
    forward = launch.forward_kernel(launch.plan("forward", ls, True, 0, dtype, rows=5000)[1]).fn.__name__
    calls = {
        forward: lambda: ops.sh_forward(x, ls, True, 0),
        "sh_backward_kernel": lambda: ops.sh_backward(x, g, ls, True, 0),
        "sh_double_backward_kernel": lambda: ops.sh_double_backward(x, g, w, ls, True, 0),
    }
    for name, call in calls.items():
        call()  # compile outside the profile
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            call()
            torch.cuda.synchronize()
        launched = [e.name for e in prof.events() if e.device_type == DeviceType.CUDA]
        assert len(launched) == 1 and name in launched[0], launched


# ------------------------------------------------------------------------------------------- eager fast path
def _through_autograd(fn, x, g, ls):
    """Y, dY/dx . g and the second derivatives (w.r.t. x and g) of |dY/dx . g|^2, through `fn`'s autograd."""
    x = x.clone().requires_grad_(True)
    g = g.clone().requires_grad_(True)
    y = fn(x, ls, True, 1)
    (gx,) = torch.autograd.grad(y, x, g, create_graph=True)
    return (y, gx, *torch.autograd.grad((gx * gx).sum(), (x, g)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [F64, F32], ids=["float64", "float32"])
@pytest.mark.parametrize("ls", [[0, 1, 2], [3, 1, 3, 0], list(range(7))], ids=lambda ls: "-".join(map(str, ls)))
def test_eager_path_same_bits_as_the_ops(device, dtype, ls):
    """The public API's eager path (ops.sh_eager; on CUDA the cached-kernel launch launch.run_cached) gives the ops'
    bits in every direction: at several N with one compiled kernel, for a pointer that is not 16-byte aligned (another
    specialisation), and a cached kernel is what it launches the second time."""
    from equitriton import ops

    dim = sum(2 * l + 1 for l in ls)
    for i, (n, offset) in enumerate(((1000, 0), (4097, 0), (333, 1), (70_001, 1), (5, 0))):
        buf = rand(n * 3 + offset, seed=i, dtype=dtype).to(device)
        x = buf[offset:].view(n, 3)
        g = rand(n, dim, seed=100 + i, dtype=dtype).to(device)
        assert ops.eager(x)
        fast = _through_autograd(ops.sh_eager, x, g, ls)
        ref = _through_autograd(torch.ops.equitriton.sh_forward, x, g, ls)
        for a, b in zip(fast, ref):
            assert torch.equal(a, b)
        if i == 0:
            assert abs(rel_err(fast[0], equitriton.spherical_harmonics(ls, x.cpu(), True, "component"))) < 1e-12
    if device == "cuda" and launch.FAST_LAUNCH:
        kernels = {k[0] for k in launch._COMPILED}
        assert {launch.kernels.sh_forward_kernel, launch.kernels.sh_backward_kernel} <= kernels
        assert launch.kernels.sh_double_backward_kernel in kernels


@pytest.mark.cuda
@needs_cuda
def test_eager_path_one_launch_per_direction_and_other_device():
    """The eager path launches one kernel per direction, and runs on the tensor's GPU when another one is current."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    ls = [0, 1, 2, 3]
    x = rand(4096, 3).cuda().requires_grad_(True)
    g = rand(4096, 16).cuda()

    def step():
        y = spherical_harmonics(ls, x, True)
        return torch.autograd.grad(y, x, g)[0]

    step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    launched = [e.name for e in prof.events() if e.device_type == DeviceType.CUDA]
    assert sum("sh_forward_kernel" in n for n in launched) == 1, launched
    assert sum("sh_backward_kernel" in n for n in launched) == 1, launched
    if torch.cuda.device_count() < 2:
        return
    x1 = x.detach().to("cuda:1").requires_grad_(True)
    with torch.cuda.device(0):
        for _ in range(2):  # the second call takes the cached kernel
            y1 = spherical_harmonics(ls, x1, True)
            gx1 = torch.autograd.grad(y1, x1, g.to("cuda:1"))[0]
    assert y1.device == x1.device and gx1.device == x1.device
    assert torch.equal(y1.cpu(), spherical_harmonics(ls, x.detach(), True).cpu())
    assert torch.equal(gx1.cpu(), step().cpu())


# -------------------------------------------------------------------------------------------- 64-bit offsets
@pytest.mark.cuda
@needs_cuda
def test_offsets_past_2_31_elements_on_gpu():
    """l = 0..12 (dim 169), N = 13M float32 rows: N * dim = 2.2e9 > 2**31 output elements (8.8 GB each way)."""
    dim = 169
    n = 13_000_000
    assert n * dim > 2**31
    need = n * dim * 4 * 2 + n * 3 * 4 * 2 + (2 << 30)  # Y or g, and grad_x, plus slack; one big buffer at a time
    free, _ = torch.cuda.mem_get_info()
    if free < need:
        pytest.skip(f"needs {need / 2**30:.1f} GiB free on the GPU, {free / 2**30:.1f} GiB free")
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(n, 3, generator=gen, device="cuda", dtype=F32)
    boundary = 2**31 // dim  # the first row whose elements start past 2**31
    rows = torch.cat([torch.arange(0, 300), torch.arange(boundary - 300, boundary + 300), torch.arange(n - 300, n)])
    x_rows = x[rows.cuda()].cpu()

    y = torch.ops.equitriton.sh_forward(x, ALL, True, 1)
    torch.cuda.synchronize()
    y_rows = y[rows.cuda()].cpu()
    del y
    assert rel_err(y_rows, torch.ops.equitriton.sh_forward(x_rows, ALL, True, 1)) <= 2e-7

    g = torch.randn(n, dim, generator=gen, device="cuda", dtype=F32)
    gx = torch.ops.equitriton.sh_backward(x, g, ALL, True, 1)
    torch.cuda.synchronize()
    g_rows = g[rows.cuda()].cpu()
    del g
    assert rel_err(gx[rows.cuda()], torch.ops.equitriton.sh_backward(x_rows, g_rows, ALL, True, 1)) <= 2e-7


# ---------------------------------------------------------------------------------------------- torch.compile
class _Energy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.sh = SphericalHarmonics([0, 2, 1, 3], True, "component")
        self.register_buffer("w", rand(16, seed=8))

    def forward(self, x):
        return (self.sh(x) * self.w).sum()


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_on_device(device):
    torch._dynamo.reset()
    m = _Energy().to(device)
    x = rand(3000, 3, seed=9).to(device)
    explanation = torch._dynamo.explain(m)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    c = torch.compile(m, fullgraph=True)
    xc, xe = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ec, ee = c(xc), m(xe)
    assert rel_err(ec, ee) <= 1e-12
    ec.backward()
    ee.backward()
    assert rel_err(xc.grad, xe.grad) <= 1e-12

    def forces(x):
        return torch.autograd.grad(m(x), x, create_graph=True)[0]

    v = rand(3000, 3, seed=10).to(device)
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        cf = torch.compile(forces, fullgraph=True)
        xc, xe = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        fc, fe = cf(xc), forces(xe)
        assert rel_err(fc, fe) <= 1e-12
        assert rel_err(torch.autograd.grad((fc * v).sum(), xc)[0], torch.autograd.grad((fe * v).sum(), xe)[0]) <= 1e-12


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("ls", [[0, 1], [0, 1, 2]])
def test_torch_compile_fuse_lmax_fuses_on_device(device, dtype, ls):
    """l_max <= fuse_lmax under torch.compile on the device: elementwise ops Inductor fuses (no custom op in the
    graph), the op's values and e3nn's derivatives."""
    m = SphericalHarmonics(ls, True, "component").to(device)
    m.fuse_lmax = max(ls)
    torch._dynamo.reset()
    x = rand(3000, 3, seed=11).to(device=device, dtype=dtype)
    explanation = torch._dynamo.explain(m)(x)
    targets = [str(n.target) for g in explanation.graphs for n in g.graph.nodes if n.op == "call_function"]
    assert explanation.graph_break_count == 0 and not any("equitriton" in t for t in targets), targets
    c = torch.compile(m, fullgraph=True)
    tol = 1e-15 if dtype == torch.float64 else 3e-7
    assert rel_err(c(x), torch.ops.equitriton.sh_forward(x, ls, True, 1)) <= tol
    w = rand(3000, m.irreps_out.dim, seed=12).to(device=device, dtype=dtype)
    grads = []
    for f in (c, o3.SphericalHarmonics(ls, True, "component")):
        xg = x.clone().requires_grad_(True)
        grads.append(torch.autograd.grad((f(xg) * w).sum(), xg)[0])
    assert rel_err(grads[0], grads[1]) <= (1e-12 if dtype == torch.float64 else 1e-5)
