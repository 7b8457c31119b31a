"""md_plugin.calculator: EquiTritonCalculator (patched) == nequip's NequIPCalculator (stock)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.cluster import Icosahedron
from nequip.integrations.ase import NequIPCalculator

from md_plugin import EquiTritonCalculator, default_model_path
from md_plugin.hook import is_e3nn_sh, is_equitriton_sh

PROPS_PERIODIC = ("energy", "free_energy", "energies", "forces", "stress")
PROPS_CLUSTER = ("energy", "free_energy", "energies", "forces")


pytestmark = pytest.mark.usefixtures("float64_default")


def cu_bulk():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    atoms.rattle(stdev=0.08, seed=3)
    return atoms


def cu_cluster():
    atoms = Icosahedron("Cu", noshells=2)
    atoms.rattle(stdev=0.08, seed=4)
    atoms.pbc = False
    return atoms


def _props(calc, atoms, props):
    a = atoms.copy()
    a.calc = calc
    return {p: np.array(a.calc.get_property(p, a), dtype=np.float64) for p in props}


def assert_props_close(got, ref, rtol):
    for key, r in ref.items():
        g = got[key]
        assert g.shape == r.shape, key
        atol = rtol * max(float(np.abs(r).max()), 1e-3)
        np.testing.assert_allclose(g, r, rtol=rtol, atol=atol, err_msg=key)


@pytest.mark.parametrize("kind", ["nequip", "allegro"])
@pytest.mark.parametrize("system", ["bulk", "cluster"])
def test_patched_matches_stock_nequip_calculator(kind, system):
    path = default_model_path(kind)
    atoms, props = (cu_bulk(), PROPS_PERIODIC) if system == "bulk" else (cu_cluster(), PROPS_CLUSTER)
    stock = NequIPCalculator._from_saved_model(str(path), device="cpu", chemical_species_to_atom_type_map=True)
    ours = EquiTritonCalculator.from_saved_model(path, device="cpu")
    assert not any(is_equitriton_sh(m) for m in stock.model.modules())
    assert any(is_equitriton_sh(m) for m in ours.model.modules())
    assert not any(is_e3nn_sh(m) for m in ours.model.modules())
    assert ours.sh_backend == "equitriton-torch-fallback"
    ref = _props(stock, atoms, props)
    got = _props(ours, atoms, props)
    assert_props_close(got, ref, rtol=1e-10)
    # the numbers are not trivially zero, and per-atom energies add up
    assert abs(float(ref["energy"])) > 1e-3 and np.abs(ref["forces"]).max() > 1e-3
    np.testing.assert_allclose(got["energies"].sum(), got["energy"], rtol=1e-12)


def test_patch_false_gives_stock_model():
    calc = EquiTritonCalculator.from_saved_model(default_model_path(), device="cpu", patch=False)
    assert calc.sh_backend == "e3nn"
    assert calc.replaced_modules == []
    assert any(is_e3nn_sh(m) for m in calc.model.modules())


def test_device_auto_on_cpu_machine():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: auto resolves to cuda")
    calc = EquiTritonCalculator.from_saved_model(default_model_path(), device="auto")
    assert calc.device == torch.device("cpu")
    assert set(calc.implemented_properties) == set(PROPS_PERIODIC)


def test_checkpoint_matches_stock(md_trained_nequip_run):
    ckpt, pkg = md_trained_nequip_run
    stock = NequIPCalculator._from_saved_model(str(ckpt), device="cpu", chemical_species_to_atom_type_map=True)
    ours = EquiTritonCalculator.from_saved_model(ckpt, device="cpu")
    assert [n for n, _ in ours.replaced_modules] == ["model.func.spharm.sh"]
    atoms = cu_bulk()
    assert_props_close(_props(ours, atoms, PROPS_PERIODIC), _props(stock, atoms, PROPS_PERIODIC), rtol=1e-10)
    # the package made from the same checkpoint gives the same numbers
    from_pkg = EquiTritonCalculator.from_saved_model(pkg, device="cpu")
    assert_props_close(_props(from_pkg, atoms, PROPS_PERIODIC), _props(stock, atoms, PROPS_PERIODIC), rtol=1e-10)


@pytest.mark.parametrize("kind", ["nequip", "allegro"])
@pytest.mark.parametrize("model_dtype, rtol", [("float64", 1e-10), ("float32", 1e-5)])
def test_from_model_uses_metadata_and_matches_stock(kind, model_dtype, rtol, md_fresh_model):
    stock_model = md_fresh_model(kind, model_dtype, l_max=3).eval()
    our_model = md_fresh_model(kind, model_dtype, l_max=3).eval()
    our_model.load_state_dict(stock_model.state_dict())
    ours = EquiTritonCalculator.from_model(our_model, device="cpu")
    assert ours.r_max == pytest.approx(4.0)
    assert ours.replaced_modules and ours.sh_backend == "equitriton-torch-fallback"
    stock = EquiTritonCalculator.from_model(stock_model, device="cpu", patch=False)
    assert stock.sh_backend == "e3nn"
    for atoms, props in ((cu_bulk(), PROPS_PERIODIC), (cu_cluster(), PROPS_CLUSTER)):
        assert_props_close(_props(ours, atoms, props), _props(stock, atoms, props), rtol=rtol)


def test_from_model_rejects_non_graph_model():
    with pytest.raises(ValueError, match="GraphModel with metadata"):
        EquiTritonCalculator.from_model(torch.nn.Linear(3, 3))


def test_species_map_renames_species():
    atoms = cu_bulk()
    gold = atoms.copy()
    gold.set_chemical_symbols(["Au"] * len(gold))
    as_cu = EquiTritonCalculator.from_saved_model(default_model_path(), device="cpu")
    as_au = EquiTritonCalculator.from_saved_model(
        default_model_path(), device="cpu", chemical_species_to_atom_type_map={"Au": "Cu"}
    )
    ref = _props(as_cu, atoms, PROPS_PERIODIC)
    got = _props(as_au, gold, PROPS_PERIODIC)
    assert_props_close(got, ref, rtol=1e-12)
    with pytest.raises(ValueError, match=r"species \['Cu'\] not in the model"):
        _props(as_au, atoms, ("energy",))
