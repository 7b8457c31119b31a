"""md_plugin.validation via EquiTritonCalculator: bad input gives a clear error, never a silent result."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from md_plugin import EquiTritonCalculator, default_model_path
from md_plugin.validation import check_atoms, sniff_model_file


@pytest.fixture(scope="module")
def calc():
    return EquiTritonCalculator.from_saved_model(default_model_path(), device="cpu")


def _bulk():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    atoms.rattle(stdev=0.05, seed=1)
    return atoms


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="model file not found"):
        EquiTritonCalculator.from_saved_model(tmp_path / "nope.nequip.zip")
    with pytest.raises(FileNotFoundError, match="model file not found"):
        EquiTritonCalculator.from_compiled_model(tmp_path / "nope.nequip.pt2")


def test_wrong_file_kind(tmp_path):
    xyz = tmp_path / "structure.xyz"
    xyz.write_text("1\n\nCu 0 0 0\n")
    with pytest.raises(ValueError, match=r"ending in \.ckpt or \.nequip\.zip, got 'structure\.xyz'"):
        EquiTritonCalculator.from_saved_model(xyz)
    compiled = tmp_path / "model.nequip.pt2"
    compiled.write_bytes(b"")
    with pytest.raises(ValueError, match="use EquiTritonCalculator.from_compiled_model"):
        EquiTritonCalculator.from_saved_model(compiled)
    with pytest.raises(ValueError, match="use EquiTritonCalculator.from_saved_model"):
        EquiTritonCalculator.from_compiled_model(default_model_path())
    with pytest.raises(ValueError, match="not a file"):
        EquiTritonCalculator.from_saved_model(tmp_path)


def test_wrong_file_kind_by_content(tmp_path):
    for name in ("garbage.nequip.zip", "garbage.ckpt"):
        bad = tmp_path / name
        bad.write_text("not a model")
        with pytest.raises(ValueError, match=r"is not a nequip-(package file|train checkpoint).*not a model file"):
            EquiTritonCalculator.from_saved_model(bad)
    for name in ("garbage.nequip.pt2", "garbage.nequip.pth"):
        bad = tmp_path / name
        bad.write_bytes(b"PK\x05\x06" + b"\x00" * 18)  # an empty zip: right container, no model inside
        with pytest.raises(ValueError, match="is not a nequip-compile"):
            EquiTritonCalculator.from_compiled_model(bad)
    renamed = tmp_path / "package.nequip.pt2"
    renamed.write_bytes(default_model_path().read_bytes())
    with pytest.raises(ValueError, match=r"holds a nequip-package file .*name it \*\.nequip\.zip .*from_saved_model"):
        EquiTritonCalculator.from_compiled_model(renamed)
    assert sniff_model_file(default_model_path()) == ".nequip.zip"


def test_species_not_in_model(calc):
    atoms = _bulk()
    atoms[3].symbol = "Au"
    atoms.calc = calc
    with pytest.raises(ValueError, match=r"species \['Au'\] not in the model \(it knows \['Cu'\]\)"):
        atoms.get_potential_energy()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_positions(calc, bad):
    atoms = _bulk()
    pos = atoms.positions
    pos[5, 1] = bad
    atoms.positions = pos
    atoms.calc = calc
    with pytest.raises(ValueError, match=r"NaN or infinite values at 1 atom\(s\), first indices \[5\]"):
        atoms.get_forces()


def test_periodic_atoms_without_cell(calc):
    atoms = Atoms("Cu4", positions=[[0, 0, 0], [1.8, 1.8, 0], [1.8, 0, 1.8], [0, 1.8, 1.8]], pbc=True)
    atoms.calc = calc
    with pytest.raises(ValueError, match=r"periodic along axes \[0, 1, 2\] but have no cell vector"):
        atoms.get_potential_energy()
    atoms.cell = [[3.6, 0, 0], [0, 3.6, 0], [0, 0, 0]]
    with pytest.raises(ValueError, match=r"periodic along axes \[2\]"):
        atoms.get_potential_energy()


def test_stress_needs_3d_periodic_cell(calc):
    atoms = _bulk()
    atoms.pbc = False
    atoms.calc = calc
    energy = atoms.get_potential_energy()  # fine without stress
    assert np.isfinite(energy)
    with pytest.raises(ValueError, match="stress requested but atoms are not periodic"):
        atoms.get_stress()


def test_degenerate_cell_and_empty_atoms():
    atoms = _bulk()
    atoms.cell = [[3.6, 0, 0], [3.6, 0, 0], [0, 0, 3.6]]
    with pytest.raises(ValueError, match="degenerate"):
        check_atoms(atoms, ["Cu"])
    with pytest.raises(ValueError, match="0 atoms"):
        check_atoms(Atoms(), ["Cu"])


def test_validate_false_skips_checks():
    calc = EquiTritonCalculator.from_saved_model(default_model_path(), device="cpu", validate=False)
    atoms = _bulk()
    atoms.calc = calc
    assert np.isfinite(atoms.get_potential_energy())
