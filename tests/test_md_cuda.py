"""EquiTritonCalculator on a GPU (CUDA or Intel XPU): patched == stock on the device, Triton backend, fast step.

Every test skips cleanly on a machine without the device.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.cluster import Icosahedron
from nequip.integrations.ase import NequIPCalculator

from md_plugin import EquiTritonCalculator, default_model_path
from md_plugin.device import resolve_device, xpu_available

DEVICES = [
    pytest.param(
        "cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")]
    ),
    pytest.param("xpu", marks=[pytest.mark.xpu, pytest.mark.skipif(not xpu_available(), reason="no Intel XPU")]),
]
PROPS_PERIODIC = ("energy", "free_energy", "energies", "forces", "stress")
PROPS_CLUSTER = ("energy", "free_energy", "energies", "forces")


pytestmark = pytest.mark.usefixtures("float64_default")


def _systems():
    b = bulk("Cu", "fcc", a=3.61, cubic=True) * (3, 3, 3)
    b.rattle(stdev=0.08, seed=3)
    c = Icosahedron("Cu", noshells=3)
    c.rattle(stdev=0.08, seed=4)
    c.pbc = False
    return [(b, PROPS_PERIODIC), (c, PROPS_CLUSTER)]


def _compare(calc, ref_calc, rtol):
    for atoms, props in _systems():
        a, r = atoms.copy(), atoms.copy()
        a.calc, r.calc = calc, ref_calc
        for p in props:
            ref = np.asarray(r.calc.get_property(p, r), dtype=np.float64)
            got = np.asarray(a.calc.get_property(p, a), dtype=np.float64)
            atol = rtol * max(float(np.abs(ref).max()), 1e-3)
            np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol, err_msg=f"{p} pbc={atoms.pbc}")


@pytest.mark.parametrize("kind", ["nequip", "allegro"])
@pytest.mark.parametrize("device", DEVICES)
def test_patched_matches_stock_on_device(device, kind):
    path = default_model_path(kind)
    stock = NequIPCalculator._from_saved_model(str(path), device=device, chemical_species_to_atom_type_map=True)
    ours = EquiTritonCalculator.from_saved_model(path, device=device)
    assert ours.device.type == device
    assert ours.sh_backend == "equitriton-triton"
    _compare(ours, stock, rtol=1e-10)
    fast = EquiTritonCalculator.from_saved_model(path, device=device, fast_step=True)
    _compare(fast, stock, rtol=1e-10)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("kind", ["nequip", "allegro"])
def test_graph_step_matches_stock(kind):
    """fast_step="graph": the compiled energy+force graph replayed from CUDA graphs on padded inputs gives the stock
    numbers for a periodic bulk and a cluster, along a short trajectory whose edge count changes; one capture per
    edge bucket, not one per step. NequIP through inductor (fast_step="graph"); Allegro through the traced graph
    without inductor (its inductor compile takes minutes), which the CUDA graph replays the same way."""
    path = default_model_path(kind)
    stock = NequIPCalculator._from_saved_model(str(path), device="cuda", chemical_species_to_atom_type_map=True)
    if kind == "nequip":
        ours = EquiTritonCalculator.from_saved_model(path, device="cuda", fast_step="graph")
    else:
        ours = EquiTritonCalculator.from_saved_model(path, device="cuda", fast_step=True)
        ours._fast.compile("eager").use_graphs()
    _compare(ours, stock, rtol=1e-10)
    atoms, props = _systems()[0]
    steps = 6
    for i in range(steps):
        a = atoms.copy()
        a.positions *= 1.0 + 0.004 * i  # the edge count drifts down
        got, ref = a.copy(), a.copy()
        got.calc, ref.calc = ours, stock
        for p in props:
            r = np.asarray(stock.get_property(p, ref))
            g = np.asarray(ours.get_property(p, got))
            np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-10 * max(float(np.abs(r).max()), 1e-3), err_msg=p)
    graphs = ours._fast.graphs
    assert 2 <= graphs.captures < steps, graphs.captures  # two systems, then the trajectory reuses buckets


@pytest.mark.parametrize("device", DEVICES)
def test_aoti_deployment_on_device(device, tmp_path, md_nequip_extension_env):
    """`nequip-compile --mode aotinductor --device DEVICE --modifiers ...`: the artifact runs our Triton kernels from
    AOTInductor's own launcher and gives the stock model's numbers, on nequip's data path and on the fast step.

    The stock model is compiled first, without the modifier: where that crashes too, the deployment path itself is
    broken on this machine and the test says so as an xfail with the exit code; where the stock model compiles, ours
    must compile and match. Seen on the lent H200: CXX=/opt/gcc/bin/g++ builds wrapper .so files that segfault in
    std::regex at load (stock and ours alike); with CXX=/usr/bin/g++ (benchmarks/device_setup.sh) this test passed
    there (docs/md_performance_notes.md)."""
    from test_md_compile import nequip_compile, run_nequip_compile

    from md_plugin.calculator import compiled_model_uses_equitriton

    src = default_model_path()
    stock_proc = run_nequip_compile(
        src, tmp_path / "stock.nequip.pt2", "aotinductor", md_nequip_extension_env, (), device
    )
    if stock_proc.returncode != 0:
        pytest.xfail(
            f"nequip-compile of the stock model (no modifier) fails on {device} too, "
            f"exit code {stock_proc.returncode}: " + (stock_proc.stdout + stock_proc.stderr)[-300:]
        )
    out = tmp_path / "nequip_equitriton.nequip.pt2"
    nequip_compile(src, out, "aotinductor", md_nequip_extension_env, device=device)
    assert compiled_model_uses_equitriton(out)
    stock = NequIPCalculator._from_saved_model(
        str(default_model_path()), device=device, chemical_species_to_atom_type_map=True
    )
    for fast_step in (False, True):
        calc = EquiTritonCalculator.from_compiled_model(out, device=device, fast_step=fast_step)
        assert calc.device.type == device and calc.sh_backend == "equitriton-triton"
        _compare(calc, stock, rtol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_float32_model_on_device(device):
    from nequip.model import NequIPGNNModel
    from nequip.utils.global_state import set_global_state

    set_global_state(allow_tf32=False)

    def build():
        return NequIPGNNModel(
            seed=5,
            model_dtype="float32",
            type_names=["Cu"],
            r_max=4.5,
            l_max=3,
            num_layers=2,
            num_features=16,
            avg_num_neighbors=42.0,
            per_type_energy_shifts={"Cu": -3.5},
        ).eval()

    stock = EquiTritonCalculator.from_model(build(), device=device, patch=False)
    ours = EquiTritonCalculator.from_model(build(), device=device)
    assert stock.sh_backend == "e3nn" and ours.sh_backend == "equitriton-triton"
    _compare(ours, stock, rtol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_auto_picks_the_accelerator(device):
    if device == "xpu" and torch.cuda.is_available():
        pytest.skip("CUDA comes first for device='auto'")
    assert resolve_device("auto").type == device
    calc = EquiTritonCalculator.from_saved_model(default_model_path(), device="auto")
    assert calc.device.type == device and calc.sh_backend == "equitriton-triton"
