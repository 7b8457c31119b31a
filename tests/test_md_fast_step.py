"""md_plugin.fast_step: the on-device step (vesin-torch neighbor list) equals nequip's default path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.cluster import Icosahedron

from md_plugin import EquiTritonCalculator, default_model_path
from md_plugin.fast_step import DeviceStep

pytest.importorskip("vesin_torch")


pytestmark = pytest.mark.usefixtures("float64_default")


def _systems():
    b = bulk("Cu", "fcc", a=3.61, cubic=True) * (3, 2, 2)
    b.rattle(stdev=0.08, seed=5)
    c = Icosahedron("Cu", noshells=3)
    c.rattle(stdev=0.08, seed=6)
    c.pbc = False
    # mixed periodicity: a slab periodic in x, y only
    s = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    s.rattle(stdev=0.05, seed=7)
    s.pbc = [True, True, False]
    return {"bulk": b, "cluster": c, "slab": s}


@pytest.mark.parametrize("kind", ["nequip", "allegro"])
@pytest.mark.parametrize("system", ["bulk", "cluster", "slab"])
def test_fast_step_matches_default_path(kind, system):
    path = default_model_path(kind)
    ref_calc = EquiTritonCalculator.from_saved_model(path, device="cpu")
    fast_calc = EquiTritonCalculator.from_saved_model(path, device="cpu", fast_step=True)
    assert isinstance(fast_calc._fast, DeviceStep)
    atoms = _systems()[system]
    props = ["energy", "energies", "forces"] + (["stress"] if system == "bulk" else [])
    for step in range(3):  # moving atoms: neighbor list rebuilt every call, cached types reused
        a = atoms.copy()
        a.positions += 0.02 * step
        ref, got = a.copy(), a.copy()
        ref.calc, got.calc = ref_calc, fast_calc
        for p in props:
            r = np.asarray(ref.calc.get_property(p, ref))
            g = np.asarray(got.calc.get_property(p, got))
            np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-10 * max(np.abs(r).max(), 1e-3), err_msg=p)


def test_fast_step_graph_matches_nequip_neighbor_list():
    from nequip.data import AtomicDataDict

    calc = EquiTritonCalculator.from_saved_model(default_model_path(), device="cpu", fast_step=True)
    atoms = _systems()["bulk"]
    data = calc._fast.data_from_atoms(atoms)
    ref = calc.atoms_to_data(atoms)

    def edges(d):
        ei = d[AtomicDataDict.EDGE_INDEX_KEY].numpy()
        sh = d[AtomicDataDict.EDGE_CELL_SHIFT_KEY].numpy().round().astype(int)
        return sorted(zip(ei[0], ei[1], *sh.T))

    assert edges(data) == edges(ref)
    assert torch.equal(data[AtomicDataDict.ATOM_TYPE_KEY].view(-1), ref[AtomicDataDict.ATOM_TYPE_KEY].view(-1))
    assert data[AtomicDataDict.POSITIONS_KEY].dtype == torch.float64


@pytest.mark.parametrize("kind", ["nequip", "allegro"])
def test_padded_inputs_give_the_same_results(kind):
    """static_shapes(): ghost atoms and padding edges beyond the cutoff change no energy, per-atom energy, force or
    stress of the real atoms, in three periodicities, as the edge count moves across buckets."""
    path = default_model_path(kind)
    ref_calc = EquiTritonCalculator.from_saved_model(path, device="cpu")
    calc = EquiTritonCalculator.from_saved_model(path, device="cpu", fast_step=True)
    calc._fast.static_shapes()
    buckets = set()
    for name, atoms in _systems().items():
        props = ["energy", "energies", "forces"] + (["stress"] if name == "bulk" else [])
        for step in range(2):
            a = atoms.copy()
            a.positions *= 1.0 + 0.03 * step  # fewer edges: the bucket is kept or changes
            ref, got = a.copy(), a.copy()
            ref.calc, got.calc = ref_calc, calc
            for p in props:
                r = np.asarray(ref.calc.get_property(p, ref))
                g = np.asarray(got.calc.get_property(p, got))
                assert g.shape == r.shape, p
                np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-10 * max(np.abs(r).max(), 1e-3), err_msg=p)
            n_edges = calc._fast.data_from_atoms(a)["edge_index"].shape[1]
            assert n_edges <= calc._fast._edges and calc._fast._edges % 256 == 0
            buckets.add(calc._fast._edges)
    assert len(buckets) >= 3


def test_edge_buckets_and_padding():
    from md_plugin import static_shapes as ss

    assert ss.edge_bucket(10) == 256 and ss.edge_bucket(1000) == 1024  # 1000 * 1.02 rounded up to 256s
    assert ss.edge_bucket(970, 1024) == 1024 and ss.edge_bucket(1024, 1024) == 1024  # still fits: kept
    assert ss.edge_bucket(1030, 1024) == 1280 and ss.edge_bucket(900, 1280) == 1024  # grown, shrunk
    calc = EquiTritonCalculator.from_saved_model(default_model_path(), device="cpu", fast_step=True)
    data = calc._fast.data_from_atoms(_systems()["cluster"])
    n, e = data["pos"].shape[0], data["edge_index"].shape[1]
    padded = ss.pad(data, e + 7, r_max=4.0)
    assert padded["pos"].shape == (n + 2, 3) and padded["edge_index"].shape == (2, e + 7)
    assert torch.equal(padded["edge_index"][:, e:], torch.tensor([[n] * 7, [n + 1] * 7]))
    ghost_edge = padded["pos"][n + 1] - padded["pos"][n]
    assert ghost_edge.norm().item() == pytest.approx(6.0)  # 1.5 r_max: beyond the cutoff
    assert torch.equal(padded["edge_index"][:, :e], data["edge_index"])
    with pytest.raises(ValueError, match="cannot pad"):
        ss.pad(data, e - 1, r_max=4.0)


def test_graphs_need_cuda_and_compile():
    calc = EquiTritonCalculator.from_saved_model(default_model_path(), device="cpu", fast_step=True)
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        calc._fast.use_graphs()
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        EquiTritonCalculator.from_saved_model(default_model_path(), device="cpu", fast_step="graph")


def test_compile_rejects_unknown_backend_and_compiled_models():
    calc = EquiTritonCalculator.from_saved_model(default_model_path(), device="cpu", fast_step=True)
    with pytest.raises(ValueError, match="unknown torch.compile backend 'nope'"):
        calc._fast.compile("nope")
    with pytest.raises(ValueError, match="fast_step must be False, True, 'compile' or 'graph'"):
        EquiTritonCalculator.from_saved_model(default_model_path(), device="cpu", fast_step="yes")


@pytest.mark.parametrize("kind", ["nequip", pytest.param("allegro", marks=pytest.mark.slow)])
def test_compiled_step_matches_default_path(kind):
    """The make_fx-traced energy+force graph (torch.compile, 'eager' backend: tests the tracing, not inductor) gives
    the default path's numbers for systems of different sizes and periodicity without retracing."""
    path = default_model_path(kind)
    ref_calc = EquiTritonCalculator.from_saved_model(path, device="cpu")
    calc = EquiTritonCalculator.from_saved_model(path, device="cpu", fast_step=True)
    calc._fast.compile("eager")
    systems = _systems()
    for name in ("bulk", "cluster", "slab"):
        atoms = systems[name]
        props = ["energy", "energies", "forces"] + (["stress"] if name == "bulk" else [])
        ref, got = atoms.copy(), atoms.copy()
        ref.calc, got.calc = ref_calc, calc
        for p in props:
            r = np.asarray(ref.calc.get_property(p, ref))
            g = np.asarray(got.calc.get_property(p, got))
            np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-10 * max(np.abs(r).max(), 1e-3), err_msg=f"{name} {p}")
    compiled = calc._fast._compiled
    assert compiled is not None and compiled[1][0] == "pos"
    # the traced graph on padded inputs (what fast_step="graph" replays): the same numbers
    calc._fast.static_shapes()
    for name in ("bulk", "cluster"):
        ref, got = systems[name].copy(), systems[name].copy()
        ref.calc, got.calc = ref_calc, calc
        for p in ("energy", "energies", "forces"):
            r = np.asarray(ref.calc.get_property(p, ref))
            g = np.asarray(got.calc.get_property(p, got))
            np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-10 * max(np.abs(r).max(), 1e-3), err_msg=f"{name} {p}")


def test_compiled_step_one_graph_across_edge_counts():
    """fast_step="compile" with the patched model: one dynamo graph for every edge and atom count (the SH custom ops
    keep the edge dimension symbolic), no graph breaks, no recompilation; SH forward and backward inside the graph."""
    from torch._dynamo.utils import counters

    calc = EquiTritonCalculator.from_saved_model(default_model_path(), device="cpu", fast_step=True)
    assert calc.sh_backend.startswith("equitriton")
    calc._fast.compile("eager")
    torch._dynamo.reset()
    counters.clear()
    base = bulk("Cu", "fcc", a=3.61, cubic=True)
    seen = set()
    with torch._dynamo.config.patch(error_on_recompile=True):
        for i, reps in enumerate([(2, 2, 2), (2, 2, 2), (2, 2, 2), (3, 2, 2), (3, 3, 2)]):
            atoms = base * reps
            atoms.rattle(stdev=0.02 + 0.1 * i, seed=i)
            seen.add((len(atoms), calc._fast.data_from_atoms(atoms)["edge_index"].shape[1]))
            atoms.calc = calc
            assert np.isfinite(atoms.get_forces()).all()
    assert len({e for _, e in seen}) >= 4 and len({n for n, _ in seen}) == 3, seen
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
    assert not counters["graph_break"], dict(counters["graph_break"])
    targets = {str(n.target) for n in calc._fast._compiled[0].graph.nodes if n.op == "call_function"}
    assert {"equitriton.sh_forward.default", "equitriton.sh_backward.default"} <= targets


@pytest.mark.parametrize("kind, op_expected", [("allegro", False), ("nequip", True)])
def test_compiled_step_traces_sh_as_patch_model_set_them(kind, op_expected):
    """fast_step="compile" traces the step with nequip's make_fx: Allegro's l_max 2 SH (fuse_lmax 2) are recorded
    as plain ops Inductor fuses, NequIP's (fuse_lmax 0) as the custom op; the same forces either way. (Before
    2026-12-01 make_fx recorded the op whatever fuse_lmax said.)"""
    calc = EquiTritonCalculator.from_saved_model(default_model_path(kind), device="cpu", fast_step=True)
    stock = EquiTritonCalculator.from_saved_model(default_model_path(kind), device="cpu", patch=False)
    calc._fast.compile("eager")
    torch._dynamo.reset()
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    atoms.rattle(stdev=0.05, seed=3)
    forces = calc.get_forces(atoms.copy())
    targets = {str(n.target) for n in calc._fast._compiled[0].graph.nodes if n.op == "call_function"}
    assert any(t.startswith("equitriton.") for t in targets) == op_expected, sorted(targets)
    np.testing.assert_allclose(forces, stock.get_forces(atoms.copy()), rtol=1e-10, atol=1e-12)
