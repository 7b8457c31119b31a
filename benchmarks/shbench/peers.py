"""The implementations under test: ours and each peer, behind one small interface.

Each implementation says whether it can run here (`availability`), builds the callables for one (l set, dtype)
(`prepare`), and names the compile jobs its points need (`jobs_for`) and how to run one in a worker (`warm`), so slow
compiles run in parallel before the timing starts. Every peer gives its own float64 reference: e3nn evaluated in the
peer's convention, so values are compared wherever the conventions can be mapped onto each other.
"""

from __future__ import annotations

import importlib
import os
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import torch
from torch import Tensor

WARM_N = 1024  # compile-phase size: a power of two like every timed N, so Triton specialises N the same way


def _grad(f: Callable[[Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
    """(x leaf with requires_grad, g) -> dx of <f(x), g>, through autograd."""
    return lambda x, g: torch.autograd.grad(f(x), x, g)[0]


def _train(f: Callable[[Tensor], Tensor]) -> Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]:
    """(x leaf, g leaf, w) -> (ddY, dx): forward, backward with create_graph, then the gradients of <dx, w> w.r.t.
    g and x, all through autograd (what a force-training step asks of the SH)."""

    def run(x, g, w):
        (dx,) = torch.autograd.grad(f(x), x, g, create_graph=True)
        return torch.autograd.grad(dx, (g, x), w)

    return run


def _e3nn(ls, normalize: bool, normalization: str, perm=None) -> Callable[[Tensor], Tensor]:
    from e3nn import o3

    m = o3.SphericalHarmonics(list(ls), normalize, normalization)
    return (lambda x: m(x)) if perm is None else (lambda x: m(x[:, perm]))


@dataclass
class Prepared:
    """The callables of one implementation for one (l set, dtype); None where a direction is not offered."""

    out_dim: int
    reference: Callable[[Tensor], Tensor]  # float64 x (n, 3) -> float64 output in this implementation's convention
    forward: Callable | None = None  # x -> Y
    backward: Callable | None = None  # (x, dY) -> dx, the backward op alone
    forward_backward: Callable | None = None  # (x leaf, dY) -> dx, autograd through the forward
    double_backward: Callable | None = None  # (x, dY, w) -> (ddY, dx)
    training: Callable | None = None  # (x leaf, dY leaf, w) -> (ddY, dx), autograd through forward and backward
    graph_ops: tuple | None = None  # (forward op, backward op) replayed from one CUDA graph


class Impl:
    name = ""
    label = ""
    convention = ""
    notes = ""
    needs_cuda = False  # its kernels run on CUDA only: on a CPU smoke run it is recorded as unavailable

    def __init__(self, peers_dir: Path | None = None, cache_dir: Path | None = None) -> None:
        self.peers_dir = peers_dir
        self.cache_dir = cache_dir
        self._prepared: dict = {}

    def availability(self, device: torch.device | None = None) -> dict:
        """{'available': bool, 'version': str | None, 'reason': str | None}; never raises."""
        if self.needs_cuda and device is not None and device.type != "cuda":
            return {"available": False, "version": None, "reason": f"needs a CUDA device ({self.needs_cuda})"}
        try:
            return {"available": True, "version": self._version(), "reason": None}
        except Exception as e:  # any import failure makes the peer unavailable, with the reason
            return {"available": False, "version": None, "reason": f"{type(e).__name__}: {e}"[:500]}

    def _version(self) -> str:
        raise NotImplementedError

    def prepare(self, ls: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Prepared:
        key = (tuple(ls), dtype, str(device))
        if key not in self._prepared:
            self._prepared[key] = self._prepare(tuple(ls), dtype, device)
        return self._prepared[key]

    def _prepare(self, ls, dtype, device) -> Prepared:
        raise NotImplementedError

    def jobs_for(self, point) -> list[dict]:
        """Compile-phase jobs (JSON-able dicts with a unique 'id') that must finish before `point` runs."""
        return []

    def warm(self, job: dict, device: torch.device) -> None:
        """Run one compile job (in a worker process)."""


def _job(impl: str, what: str, ls, dtype: str, cost: float, **extra) -> dict:
    from .points import lset_label

    jid = "/".join([impl, what, lset_label(ls), dtype] + [str(v) for v in extra.values()])
    return {"id": jid, "impl": impl, "what": what, "ls": list(ls), "dtype": dtype, "cost": cost, **extra}


def _dtype(name: str) -> torch.dtype:
    return getattr(torch, name)


# ------------------------------------------------------------------------------------------------------------- ours
class Ours(Impl):
    name = "equitriton"
    label = "EquiTriton-MD (ours)"
    convention = "e3nn's: normalize=True, component normalization, e3nn's axis order and l order"

    def _version(self) -> str:
        import equitriton

        return equitriton.__version__

    def _prepare(self, ls, dtype, device):
        import equitriton

        ops, ls = torch.ops.equitriton, list(ls)

        def fwd(x):
            return ops.sh_forward(x, ls, True, 1)

        def bwd(x, g):
            return ops.sh_backward(x, g, ls, True, 1)

        def api(x):
            return equitriton.spherical_harmonics(ls, x, True, "component")

        return Prepared(
            out_dim=sum(2 * l + 1 for l in ls),
            reference=_e3nn(ls, True, "component"),
            forward=fwd,
            backward=bwd,
            forward_backward=_grad(api),
            double_backward=lambda x, g, w: ops.sh_double_backward(x, g, w, ls, True, 1),
            training=_train(api),
            graph_ops=(fwd, bwd),
        )

    _KERNELS = {
        "forward": ("forward",),
        "backward": ("backward",),
        "forward_backward": ("forward", "backward"),
        "forward_backward_graph": ("forward", "backward"),
        "double_backward": ("double_backward",),
        "training": ("forward", "backward", "double_backward"),
    }
    # rough compile seconds (sm_90, one core), for longest-first ordering: measured 9 s / 115 s for l = 12 forward /
    # backward, 2 s / 5 s / 25 s for l = 6 forward / backward / double backward
    _COST = {
        "forward": lambda l: 0.06 * l * l,
        "backward": lambda l: 0.07 * l**3,
        "double_backward": lambda l: 0.15 * l**3,
    }

    def jobs_for(self, point):
        lmax = max(point.ls)
        return [_job(self.name, k, point.ls, point.dtype, self._COST[k](lmax)) for k in self._KERNELS[point.direction]]

    def warm(self, job, device):
        p = self.prepare(tuple(job["ls"]), _dtype(job["dtype"]), device)
        x = torch.randn(WARM_N, 3, dtype=_dtype(job["dtype"]), device=device)
        g = torch.randn(WARM_N, p.out_dim, dtype=x.dtype, device=device)
        if job["what"] == "forward":
            p.forward(x)
        elif job["what"] == "backward":
            p.backward(x, g)
        else:
            p.double_backward(x, g, torch.randn_like(x))


# ------------------------------------------------------------------------------------------------------------- e3nn
class E3nnEager(Impl):
    name = "e3nn"
    label = "e3nn (eager)"
    convention = "the reference convention (normalize=True, component)"

    def _version(self) -> str:
        import e3nn

        return e3nn.__version__

    def _module(self, ls, device):
        from e3nn import o3

        return o3.SphericalHarmonics(list(ls), True, "component").to(device)

    def _prepare(self, ls, dtype, device):
        f = self._module(ls, device)
        return Prepared(
            out_dim=sum(2 * l + 1 for l in ls),
            reference=_e3nn(ls, True, "component"),
            forward=f,
            forward_backward=_grad(f),
            training=_train(f),
        )


class E3nnCompile(E3nnEager):
    name = "e3nn_compile"
    label = "e3nn + torch.compile"
    notes = (
        "torch.compile(o3.SphericalHarmonics(...), fullgraph=True, dynamic=True): dynamic=True so one graph serves "
        "every N; the inference graph (forward) and the autograd graph (forward_backward) are compiled in the "
        "compile phase, in parallel, and loaded from Inductor's caches in the timing process"
    )

    @staticmethod
    def configure() -> None:
        """Allow one compiled graph per (l set, dtype, grad mode) of the whole run on SphericalHarmonics.forward."""
        import torch._dynamo

        for knob in ("recompile_limit", "cache_size_limit"):
            if hasattr(torch._dynamo.config, knob):
                setattr(torch._dynamo.config, knob, 256)
        if hasattr(torch._dynamo.config, "accumulated_cache_size_limit"):
            torch._dynamo.config.accumulated_cache_size_limit = 4096

    def _prepare(self, ls, dtype, device):
        self.configure()
        f = torch.compile(self._module(ls, device), fullgraph=True, dynamic=True)
        return Prepared(
            out_dim=sum(2 * l + 1 for l in ls),
            reference=_e3nn(ls, True, "component"),
            forward=f,
            forward_backward=_grad(f),
        )

    def jobs_for(self, point):
        what = "inference" if point.direction == "forward" else "autograd"
        # AOT-autograd alone traced the l<=12 forward+backward graph in 108 s on one core
        cost = (1.2 if what == "autograd" else 0.2) * max(point.ls) ** 2
        return [_job(self.name, what, point.ls, point.dtype, cost)]

    def warm(self, job, device):
        p = self.prepare(tuple(job["ls"]), _dtype(job["dtype"]), device)
        x = torch.randn(WARM_N, 3, dtype=_dtype(job["dtype"]), device=device)
        if job["what"] == "inference":
            p.forward(x)
        else:
            p.forward_backward(x.requires_grad_(), torch.randn(WARM_N, p.out_dim, dtype=x.dtype, device=device))


# --------------------------------------------------------------------------------------------- original EquiTriton
class Original(Impl):
    name = "equitriton_orig"
    label = "EquiTriton (original, IntelLabs)"
    convention = (
        "no input normalisation: evaluates r^l Y_l, equal to e3nn with normalize=False, component normalization "
        "(so it is checked against that and timed doing less work than normalize=True); l <= 10; l in ascending order"
    )
    notes = (
        "sph_harm.direct.TritonSphericalHarmonic: one kernel launch per l and direction; the backward alone is its "
        "autograd.Function.backward called with a stand-in ctx; N, offsets and strides are tl.constexpr, so each N "
        "compiles new kernels (done in the compile phase)"
    )
    module = "equitriton_orig.sph_harm.direct.utils"
    needs_cuda = "Triton kernels without a CPU path"

    def _utils(self):
        if self.peers_dir is not None and str(self.peers_dir) not in sys.path:
            sys.path.append(str(self.peers_dir))
        return importlib.import_module(self.module)

    def _version(self) -> str:
        self._utils()
        src = Path(importlib.import_module("equitriton_orig").__file__).parent / "SOURCE.txt"
        return src.read_text().split()[0] if src.exists() else "unknown"

    def _prepare(self, ls, dtype, device):
        u = self._utils()
        fn = u.TritonSphericalHarmonic
        ls_sorted = sorted(ls)
        offs = [sum(2 * k + 1 for k in ls_sorted[:i]) for i in range(len(ls_sorted))]

        def fwd(x):
            return fn.apply(ls_sorted, x)

        def bwd(x, g):
            # the original keeps l values and offsets in class attributes (set by its forward); set them the same way
            fn.__l_values__, fn.__offsets__ = ls_sorted, offs
            return fn.backward(SimpleNamespace(saved_tensors=(x,)), g)[1]

        return Prepared(
            out_dim=sum(2 * l + 1 for l in ls),
            reference=_e3nn(ls_sorted, False, "component"),
            forward=fwd,
            backward=bwd,
            forward_backward=_grad(fwd),
        )

    def jobs_for(self, point):
        return [_job(self.name, "kernels", point.ls, point.dtype, 0.3 * sum(point.ls), n=point.n)]

    def warm(self, job, device):
        """Compile without launching (JITFunction.warmup), with the launch arguments of the original's autograd
        Function; falls back to a real call at that N if warmup is not available."""
        u = self._utils()
        ls, n, dt = sorted(job["ls"]), job["n"], _dtype(job["dtype"])
        dim = sum(2 * l + 1 for l in ls)
        try:
            off = 0
            for l in ls:
                common = (u.BLOCK_SIZE, n * 3, n * dim, off, dim)
                u._get_fwd_kernel(l).warmup(dt, dt, *common, grid=(1,))
                u._get_bwd_kernel(l).warmup(dt, dt, dt, *common, grid=(1,))
                off += 2 * l + 1
        except Exception:
            p = self.prepare(tuple(job["ls"]), dt, device)
            x = torch.randn(n, 3, dtype=dt, device=device, requires_grad=True)
            p.forward_backward(x, torch.randn(n, dim, dtype=dt, device=device))


# ----------------------------------------------------------------------------------------------------- sphericart
class Sphericart(Impl):
    name = "sphericart"
    label = "sphericart-torch"
    convention = (
        "real SH in Wikipedia's convention with integral normalisation, normalize=True; always all l <= l_max in "
        "lexicographic order. sphericart(x) == e3nn(x[:, [1, 2, 0]], normalization='integral'): checked against "
        "that; timed on the raw output (no axis permutation, no rescaling); for sparse l sets it computes every "
        "l <= max(ls), and GB/s still counts only the requested columns"
    )

    def _version(self) -> str:
        from importlib.metadata import version

        import sphericart.torch  # noqa: F401

        return version("sphericart-torch")

    def _prepare(self, ls, dtype, device):
        import sphericart.torch as sct

        lmax = max(ls)
        calc = sct.SphericalHarmonics(lmax)
        return Prepared(
            out_dim=(lmax + 1) ** 2,
            reference=_e3nn(range(lmax + 1), True, "integral", perm=[1, 2, 0]),
            forward=calc,
            forward_backward=_grad(calc),
            training=_train(calc),
        )


# ------------------------------------------------------------------------------------------------- cuequivariance
class Cue(Impl):
    name = "cuequivariance"
    label = "cuequivariance-torch"
    convention = "e3nn's (checked: identical values), normalize=True via torch.nn.functional.normalize like its module"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fallback: dict[str, str] = {}  # dtype (or 'all') -> why 'naive' replaced the CUDA kernel 'uniform_1d'

    def _method(self, dtype: torch.dtype | None = None) -> str:
        if "all" not in self.fallback:
            try:
                import cuequivariance_ops_torch  # noqa: F401
            except Exception as e:
                self.fallback["all"] = f"cuequivariance_ops_torch does not import: {type(e).__name__}: {e}"[:300]
        return "naive" if "all" in self.fallback or str(dtype) in self.fallback else "uniform_1d"

    def _version(self) -> str:
        from importlib.metadata import version

        import cuequivariance_torch  # noqa: F401

        self._method()
        self.notes = self._notes()
        return version("cuequivariance-torch")

    def _notes(self) -> str:
        why = "; ".join(f"{k}: {v}" for k, v in self.fallback.items())
        method = f"method 'naive' (the library's pure-PyTorch fallback) where 'uniform_1d' failed: {why}" if why else ""
        return (
            (method or "method 'uniform_1d' (its CUDA kernel)")
            + "; the SH descriptor (sympy) is built in the compile phase and pickled to the timing process; the "
            "forward is its module's: normalize, then SegmentedPolynomial"
        )

    def _descriptor(self, ls):
        path = self.cache_dir / f"cue_sh_{'_'.join(map(str, ls))}.pkl" if self.cache_dir else None
        if path is not None and path.exists():
            return pickle.loads(path.read_bytes())
        import cuequivariance as cue

        poly = cue.descriptors.spherical_harmonics(cue.SO3(1), list(ls)).polynomial
        if path is not None:
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(pickle.dumps(poly))
            os.replace(tmp, path)
        return poly

    def _prepare(self, ls, dtype, device):
        import cuequivariance_torch as cuet

        method = self._method(dtype)
        if method == "naive" and max(ls) >= 6:
            raise NotImplementedError(
                "the 'naive' method (used as the CUDA kernel is unavailable, see notes) rejects l >= 6 ('Unsupported "
                "number of inputs: 6'), after minutes of setup"
            )
        poly = self._descriptor(ls)
        f = cuet.SegmentedPolynomial(poly, method=method).to(device)

        def fwd(x):
            return f([torch.nn.functional.normalize(x, dim=1)])[0]

        if method == "uniform_1d":
            try:  # the CUDA kernel may not load or may not take this dtype: then the library's torch fallback
                fwd(torch.randn(32, 3, dtype=dtype, device=device, requires_grad=True)).sum().backward()
            except Exception as e:
                self.fallback[str(dtype)] = f"{type(e).__name__}: {e}"[:300]
                self.notes = self._notes()
                return self._prepare(ls, dtype, device)

        return Prepared(
            out_dim=sum(2 * l + 1 for l in ls),
            reference=_e3nn(ls, True, "component"),
            forward=fwd,
            forward_backward=_grad(fwd),
            training=_train(fwd),
        )

    def jobs_for(self, point):
        # sympy descriptor: 16 s for l = 7, 95 s for l = 8 on one core
        return [_job(self.name, "descriptor", point.ls, "any", 95.0 * 6.0 ** (max(point.ls) - 8))]

    def warm(self, job, device):
        self._descriptor(tuple(job["ls"]))


IMPLS = {c.name: c for c in (Ours, E3nnEager, E3nnCompile, Original, Sphericart, Cue)}


def load(names, peers_dir: Path | None, cache_dir: Path | None) -> dict[str, Impl]:
    """Instances of the named implementations (all of IMPLS by default), in IMPLS order."""
    return {n: IMPLS[n](peers_dir, cache_dir) for n in IMPLS if n in set(names)}
