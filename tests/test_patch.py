"""`equitriton.patch`: e3nn's spherical harmonics routed through equitriton, and restored exactly.

Issue 2, point 5. Routing is proven by the ops that actually run (a TorchDispatchMode trace), not by values, which
agree either way. Importing equitriton.patch patches the whole process, so this module imports it inside a fixture
and leaves e3nn unpatched afterwards (other test modules compare against e3nn's own code). The import-order case
(nequip imported before equitriton.patch) runs in a fresh subprocess.
"""

import importlib
import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from e3nn import o3
from e3nn.o3 import _spherical_harmonics as e3nn_sh_module
from torch.utils._python_dispatch import TorchDispatchMode

import equitriton

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")

REPO = Path(__file__).resolve().parent.parent
F64 = torch.float64
OUR_OP = "equitriton.sh_forward.default"


def is_e3nn_forward(fn) -> bool:
    return fn.__module__ == "e3nn.o3._spherical_harmonics" and fn.__qualname__ == "SphericalHarmonics.forward"


@pytest.fixture(scope="module")
def eqpatch():
    """equitriton.patch, imported here (which patches); e3nn is unpatched again when the module's tests are done."""
    before = e3nn_sh_module.SphericalHarmonics.forward
    mod = importlib.import_module("equitriton.patch")
    yield mod
    mod.unpatch()
    assert e3nn_sh_module.SphericalHarmonics.forward is before or is_e3nn_forward(
        e3nn_sh_module.SphericalHarmonics.forward
    )


@pytest.fixture
def patched_state(eqpatch):
    """Each test starts patched (as after `import equitriton.patch`) and ends unpatched."""
    eqpatch.patch()
    yield eqpatch
    eqpatch.unpatch()


class OpLog(TorchDispatchMode):
    """Records the name of every op dispatched inside the block."""

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def ops_run_by(fn, *args) -> list[str]:
    with OpLog() as log:
        out = fn(*args)
        if out.requires_grad:
            out.backward(torch.randn_like(out))
    return log.ops


def x_input(n=6, seed=0, requires_grad=False):
    return torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=F64).requires_grad_(requires_grad)


# ------------------------------------------------------------------------------------------------------- semantics
def test_import_patches_and_unpatch_restores_the_same_function(eqpatch):
    import equitriton.patch  # noqa: F401  (a second import is a no-op; the fixture imported it)

    original = eqpatch._E3NN_FORWARD
    assert is_e3nn_forward(original)
    eqpatch.patch()
    assert eqpatch.is_patched()
    assert o3.SphericalHarmonics.forward is not original
    eqpatch.unpatch()
    assert not eqpatch.is_patched()
    assert o3.SphericalHarmonics.forward is original
    assert e3nn_sh_module.SphericalHarmonics.__dict__["forward"] is original


def test_patch_and_unpatch_are_idempotent(patched_state):
    p = patched_state
    p.patch()
    p.patch()
    assert p.is_patched()
    p.unpatch()
    assert not p.is_patched()
    p.unpatch()
    assert not p.is_patched() and is_e3nn_forward(o3.SphericalHarmonics.forward)


def test_patched_context_restores_previous_state(patched_state):
    p = patched_state
    p.unpatch()
    with p.patched():
        assert p.is_patched()
        with p.patched():
            assert p.is_patched()
        assert p.is_patched()  # the inner block found it patched and leaves it so
    assert not p.is_patched()
    p.patch()
    with p.patched():
        assert p.is_patched()
    assert p.is_patched()  # was patched before the block: stays patched
    p.unpatch()
    with pytest.raises(KeyError):
        with p.patched():
            raise KeyError("inside")
    assert not p.is_patched()  # restored on an exception too


def test_reloaded_module_still_restores_e3nn(patched_state):
    """A second copy of equitriton.patch (reload) finds e3nn patched; its unpatch must still restore e3nn's own code."""
    original = patched_state._E3NN_FORWARD
    reloaded = importlib.reload(patched_state)  # re-runs the module: patches again with a new function object
    assert reloaded.is_patched()
    reloaded.unpatch()
    assert o3.SphericalHarmonics.forward is original and not reloaded.is_patched()


# -------------------------------------------------------------------------------------------------------- routing
@pytest.mark.parametrize("normalize", [True, False])
def test_function_and_module_route_to_equitriton_when_patched(patched_state, normalize):
    p = patched_state
    ls = [0, 3, 1, 3]
    existing = o3.SphericalHarmonics(ls, normalize, "component")  # built before the patch below
    p.unpatch()
    assert OUR_OP not in ops_run_by(existing, x_input(requires_grad=True))
    unpatched_ops = set(ops_run_by(o3.spherical_harmonics, ls, x_input(requires_grad=True), normalize, "component"))
    assert OUR_OP not in unpatched_ops and "aten.mul.Tensor" in unpatched_ops
    ref = o3.spherical_harmonics(ls, x_input(), normalize, "component")

    p.patch()
    for fn, args in (
        (o3.spherical_harmonics, (ls, x_input(requires_grad=True), normalize, "component")),
        (o3.SphericalHarmonics(ls, normalize, "component"), (x_input(requires_grad=True),)),
        (existing, (x_input(requires_grad=True),)),  # instances made before patching are routed too
    ):
        ran = ops_run_by(fn, *args)
        assert ran.count(OUR_OP) == 1, ran
        assert "equitriton.sh_backward.default" in ran
        # none of e3nn's polynomial work ran (it is a few hundred aten multiplications otherwise)
        assert "aten.mul.Tensor" not in ran and "aten.stack.default" not in ran, ran
    assert torch.allclose(o3.spherical_harmonics(ls, x_input(), normalize, "component"), ref, rtol=0, atol=1e-13)


def test_patched_module_and_function_trace_with_torch_fx(patched_state):
    """torch.fx.symbolic_trace of e3nn's module and of a module calling our function, patched: the graph records our
    op and gives e3nn's values and gradients. (A function calling e3nn's `spherical_harmonics` does not trace, patched
    or not: it builds a module that fx cannot find among the traced one's submodules.)"""
    ls = [0, 1, 2, 5]
    x = x_input(requires_grad=True)
    patched_state.unpatch()
    ref = o3.SphericalHarmonics(ls, True, "norm")(x)
    (ref_grad,) = torch.autograd.grad(ref.square().sum(), x)
    patched_state.patch()
    module = torch.fx.symbolic_trace(o3.SphericalHarmonics(ls, True, "norm"))
    function = torch.fx.symbolic_trace(lambda v: equitriton.spherical_harmonics(ls, v, True, "norm"))
    for traced in (module, function):
        assert "equitriton.sh_forward" in traced.code
        y = traced(x)
        (grad,) = torch.autograd.grad(y.square().sum(), x)
        assert torch.allclose(y, ref, rtol=0, atol=1e-13) and torch.allclose(grad, ref_grad, rtol=0, atol=1e-12)


def test_unpatch_routes_back_to_e3nn(patched_state):
    p = patched_state
    m = o3.SphericalHarmonics(2, True)
    assert OUR_OP in ops_run_by(m, x_input())
    p.unpatch()
    ran = ops_run_by(m, x_input())
    assert OUR_OP not in ran and "aten.mul.Tensor" in ran


# ---------------------------------------------------------------------------------- pickle, state_dict, TorchScript
def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 3, dtype=F64), o3.SphericalHarmonics("1x0e+2x1o+2e", True, "norm"))


@pytest.fixture
def e3nn_eager_defaults():
    """e3nn's shipped optimization defaults. nequip, once imported by another test, switches e3nn to jit_mode
    'script', and e3nn modules built then hold ScriptFunctions, which cannot be pickled, patched or not."""
    import e3nn

    old = e3nn.get_optimization_defaults()
    e3nn.set_optimization_defaults(jit_mode="eager")
    yield
    e3nn.set_optimization_defaults(**old)


def test_patched_module_pickles(patched_state, e3nn_eager_defaults):
    model = _model()
    x = x_input(5)
    y = model(x)
    copy = pickle.loads(pickle.dumps(model))
    assert isinstance(copy[1], o3.SphericalHarmonics)
    assert torch.equal(copy(x), y)
    assert OUR_OP in ops_run_by(copy, x)
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert torch.equal(loaded(x), y)


def test_patched_module_state_dict_round_trip(patched_state):
    model = _model()
    x = x_input(5)
    sd = model.state_dict()
    assert set(sd) == {"0.weight", "0.bias"}  # SphericalHarmonics adds no state, patched or not
    fresh = _model()
    with torch.no_grad():
        fresh[0].weight.add_(1.0)
    assert not torch.equal(fresh(x), model(x))
    fresh.load_state_dict(sd)
    assert torch.equal(fresh(x), model(x))


def test_patched_module_scripts(patched_state):
    p = patched_state
    model = _model()
    x = x_input(5)
    scripted = torch.jit.script(model)
    assert "equitriton::sh_forward" in str(scripted.inlined_graph)
    assert torch.equal(scripted(x), model(x))
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    buf.seek(0)
    loaded = torch.jit.load(buf)
    p.unpatch()  # a scripted module keeps the code it was compiled with
    assert torch.allclose(loaded(x), model(x), rtol=0, atol=1e-13)
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loaded(xg).sum(), xg)
    assert torch.isfinite(g).all()


# ---------------------------------------------------------------------------------------------- import order
_FRESH_PROCESS = r"""
import json
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import equitriton

# nequip and allegro bind e3nn's class at import time, before equitriton is imported
from e3nn.o3._spherical_harmonics import SphericalHarmonics as EarlyRef
import nequip.nn.embedding._edge as nequip_edge
import allegro.nn.tensorembed as allegro_embed

original = EarlyRef.forward
early_instance = nequip_edge.SphericalHarmonics([0, 1, 2], True, "component")


class OpLog(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def routed(fn, *args):
    with OpLog() as log:
        fn(*args)
    return "equitriton.sh_forward.default" in log.ops


x = torch.randn(4, 3, dtype=torch.float64)
report = {"before_import": routed(early_instance, x)}
import equitriton.patch

report["is_patched"] = equitriton.patch.is_patched()
report["nequip_class_routed"] = routed(nequip_edge.SphericalHarmonics(3, False), x)
report["allegro_class_routed"] = routed(allegro_embed.SphericalHarmonics([1, 1], True), x)
report["early_instance_routed"] = routed(early_instance, x)
report["same_class"] = nequip_edge.SphericalHarmonics is allegro_embed.SphericalHarmonics is EarlyRef
equitriton.patch.unpatch()
report["unpatch_restores_identity"] = EarlyRef.forward is original
report["unpatched_not_routed"] = not routed(early_instance, x)
with equitriton.patch.patched():
    report["scoped_routed"] = routed(early_instance, x)
report["scoped_restored"] = EarlyRef.forward is original
print("JSON" + json.dumps(report))
"""


def test_class_imported_before_patch_is_patched_in_fresh_process():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS], env=env, capture_output=True, text=True, timeout=600, cwd=REPO
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("JSON")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(lines[-1][4:])
    assert report == {
        "before_import": False,
        "is_patched": True,
        "nequip_class_routed": True,
        "allegro_class_routed": True,
        "early_instance_routed": True,
        "same_class": True,
        "unpatch_restores_identity": True,
        "unpatched_not_routed": True,
        "scoped_routed": True,
        "scoped_restored": True,
    }
