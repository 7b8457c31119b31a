"""Starting structures for the NVE stability runs.

Presets (case-insensitive):

* ``cu-fcc`` (aliases ``cu``, ``fcc-cu``): periodic fcc copper, conventional cubic cell
  (a = 3.61 Å, 4 atoms) repeated ``size`` times along each axis -> ``4 * size**3`` atoms
  (``size=2``: 32 atoms, ``size=3``: 108, ``size=4``: 256, ``size=7``: 1372), or ``(a, b, c)`` / ``"AxBxC"``
  times -> ``4 * a * b * c`` atoms (``"7x6x6"``: 1008).
* ``cu-cluster`` (alias ``cluster``): a free Cu icosahedron (no periodic boundaries) with
  ``size`` shells -> 13 (size 2), 55 (size 3), 147 (size 4) atoms, centred in a vacuum box
  of 10 Å padding (the box is only cosmetic; ``pbc=False``).

Anything else is treated as a file path and read with :func:`ase.io.read` (last frame), so
every format ASE understands (extended XYZ, CIF, POSCAR, ``.traj``, ...) works.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

#: fcc Cu lattice constant in Å (experimental, room temperature).
CU_LATTICE_A = 3.61

PRESETS: dict[str, str] = {
    "cu-fcc": "periodic fcc Cu supercell, 4*size^3 atoms (a = 3.61 Å)",
    "cu-cluster": "free Cu icosahedron with `size` shells (13/55/147/... atoms), pbc=False",
}

_ALIASES = {"cu": "cu-fcc", "fcc-cu": "cu-fcc", "cu_fcc": "cu-fcc", "cluster": "cu-cluster", "cu_cluster": "cu-cluster"}

#: default ``size`` per preset (32-atom fcc cell, 55-atom cluster).
DEFAULT_SIZE = {"cu-fcc": 2, "cu-cluster": 3}


@dataclass(frozen=True)
class SystemSpec:
    """Description of a built system, for reports.

    Attributes:
        name: preset name or the file path as given.
        source: ``"preset"`` or ``"file"``.
        size: preset size parameter or repeats (``None`` for files without repeats).
        n_atoms: number of atoms.
        formula: chemical formula (ASE ``get_chemical_formula``).
        pbc: periodic boundary flags.
        cell_A: 3x3 cell matrix in Å.
    """

    name: str
    source: str
    size: int | tuple[int, int, int] | None
    n_atoms: int
    formula: str
    pbc: tuple[bool, bool, bool]
    cell_A: list[list[float]]

    def to_dict(self) -> dict:
        """JSON-serialisable dict of the fields."""
        return {
            "name": self.name,
            "source": self.source,
            "size": list(self.size) if isinstance(self.size, tuple) else self.size,
            "n_atoms": self.n_atoms,
            "formula": self.formula,
            "pbc": list(self.pbc),
            "cell_A": self.cell_A,
        }


def canonical_preset(name: str) -> str | None:
    """Return the canonical preset name for ``name`` (or an alias), or ``None`` if it is not a preset."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    return key if key in PRESETS else None


SizeLike = int | tuple[int, int, int] | str


def parse_size(size: SizeLike | None) -> int | tuple[int, int, int] | None:
    """Normalise a size: ``None``, an int ``n`` (or ``"n"``), or repeats ``(a, b, c)`` (or ``"AxBxC"``).

    Raises ``ValueError`` naming the value if it is not one of those with positive entries.
    """
    if size is None:
        return None
    if isinstance(size, str):
        parts = size.lower().replace("*", "x").split("x")
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"size must be N or AxBxC with positive integers, got {size!r}") from None
        if len(values) not in (1, 3):
            raise ValueError(f"size must be N or AxBxC with positive integers, got {size!r}")
        size = values[0] if len(values) == 1 else tuple(values)
    if isinstance(size, (tuple, list)):
        if len(size) != 3 or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in size):
            raise ValueError(f"repeats must be three positive integers, got {size!r}")
        reps = tuple(int(v) for v in size)
        return reps[0] if reps[0] == reps[1] == reps[2] else reps
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        return int(size)
    raise ValueError(f"size must be N or AxBxC with positive integers, got {size!r}")


def _repeats(size: int | tuple[int, int, int]) -> tuple[int, int, int]:
    return size if isinstance(size, tuple) else (size, size, size)


def fcc_cu(size: int | tuple[int, int, int] = 2, lattice_A: float = CU_LATTICE_A) -> Atoms:
    """Periodic fcc Cu supercell: the 4-atom cubic cell (lattice constant ``lattice_A``, Å) repeated ``size`` times
    per axis (``4 * size**3`` atoms) or ``(a, b, c)`` times (``4 * a * b * c`` atoms)."""
    from ase.build import bulk

    reps = _repeats(size)
    if min(reps) < 1:
        raise ValueError(f"cu-fcc size must be >= 1, got {size}")
    return bulk("Cu", "fcc", a=lattice_A, cubic=True).repeat(reps)


def cu_cluster(size: int = 3, lattice_A: float = CU_LATTICE_A, vacuum_A: float = 10.0) -> Atoms:
    """Free Cu icosahedral cluster with ``size`` shells (13, 55, 147, ... atoms), ``pbc=False``.

    Args:
        size: number of shells (>= 2; 1 would be a single atom).
        lattice_A: fcc lattice constant (Å) used for the nearest-neighbour distance.
        vacuum_A: padding (Å) of the cosmetic box around the cluster.
    """
    from ase.cluster import Icosahedron

    if size < 2:
        raise ValueError(f"cu-cluster size must be >= 2, got {size}")
    atoms = Icosahedron("Cu", noshells=size, latticeconstant=lattice_A)
    atoms.center(vacuum=vacuum_A)
    atoms.pbc = False
    return atoms


def build_system(name_or_file: str | Path, size: SizeLike | None = None) -> tuple[Atoms, SystemSpec]:
    """Build a preset system or read a structure file.

    Args:
        name_or_file: a preset name (see :data:`PRESETS`) or a path to any file :func:`ase.io.read` reads.
        size: preset size (supercell repeats for ``cu-fcc``: ``n`` or ``(a, b, c)`` / ``"AxBxC"``; shells for
            ``cu-cluster``: an int); with a file, repeats a periodic structure that many times per axis.

    Returns:
        ``(atoms, spec)`` -- a fresh :class:`ase.Atoms` without calculator or velocities, and its description.
    """
    preset = canonical_preset(str(name_or_file))
    size = parse_size(size)
    if preset is not None:
        size = DEFAULT_SIZE[preset] if size is None else size
        if preset == "cu-cluster" and isinstance(size, tuple):
            raise ValueError(f"cu-cluster size is a number of shells, got repeats {size}")
        atoms = fcc_cu(size) if preset == "cu-fcc" else cu_cluster(size)
        name, source = preset, "preset"
    else:
        path = Path(name_or_file)
        if not path.is_file():
            raise FileNotFoundError(
                f"{name_or_file!r} is neither a preset ({', '.join(PRESETS)}) nor an existing structure file"
            )
        from ase.io import read

        atoms = read(path, index=-1)
        atoms.calc = None
        atoms.set_velocities(np.zeros((len(atoms), 3)))
        if size is not None and _repeats(size) != (1, 1, 1):
            if not all(atoms.pbc):
                raise ValueError("--supercell/size can only repeat a fully periodic structure")
            atoms = atoms.repeat(_repeats(size))
        name, source = str(name_or_file), "file"
    spec = SystemSpec(
        name=name,
        source=source,
        size=size,
        n_atoms=len(atoms),
        formula=atoms.get_chemical_formula(),
        pbc=tuple(bool(p) for p in atoms.pbc),
        cell_A=np.asarray(atoms.cell).tolist(),
    )
    return atoms, spec
