"""Input checks for the calculator: clear errors instead of silent wrong results.

Stock nequip accepts NaN/inf positions and returns NaN (or finite garbage from the neighbor list);
these checks run on the host before any data goes to the device.
"""

from __future__ import annotations

import json
import pathlib
import zipfile
from typing import Collection, Optional, Sequence

import numpy as np
import torch
from ase import Atoms

SAVED_MODEL_SUFFIXES = (".ckpt", ".nequip.zip")
COMPILED_MODEL_SUFFIXES = (".nequip.pth", ".nequip.pt2")

# what each kind of model file is, for error messages
FILE_KINDS = {
    ".ckpt": "a nequip-train checkpoint (torch.save archive)",
    ".nequip.zip": "a nequip-package file (torch.package archive)",
    ".nequip.pth": "a nequip-compile TorchScript model",
    ".nequip.pt2": "a nequip-compile AOTInductor model",
}
_FACTORY_FOR = {
    ".ckpt": "from_saved_model",
    ".nequip.zip": "from_saved_model",
    ".nequip.pth": "from_compiled_model",
    ".nequip.pt2": "from_compiled_model",
}


def sniff_model_file(path: str | pathlib.Path) -> Optional[str]:
    """Which kind of nequip model file ``path`` holds, judged by its content, as its canonical suffix.

    All four kinds are zip archives, told apart by their entries: AOTInductor packages hold
    ``data/aotinductor/``, torch.package archives ``.data/version``, TorchScript archives ``code/``, and
    ``torch.save`` archives (checkpoints) ``data.pkl``. Returns ``None`` for anything else (not a zip, or a zip
    of none of these kinds).
    """
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return None
    if any("/data/aotinductor/" in n for n in names):
        return ".nequip.pt2"
    if any(n.endswith("/.data/version") for n in names):
        return ".nequip.zip"
    if any("/code/" in n for n in names):
        return ".nequip.pth"
    if any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
        return ".ckpt"
    return None


def check_model_file(path: str | pathlib.Path, allowed: Sequence[str], factory: str) -> pathlib.Path:
    """Check that ``path`` exists, is a file, ends in one of ``allowed`` and holds what its name says.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: wrong kind of file, by name or by content (the message says what it is and which
            factory takes it).
    """
    p = pathlib.Path(path)
    if not p.exists():
        raise FileNotFoundError(f"model file not found: {p}")
    if not p.is_file():
        raise ValueError(f"model path is not a file: {p}")
    name = p.name
    if not any(name.endswith(s) for s in allowed):
        hint = ""
        if any(name.endswith(s) for s in COMPILED_MODEL_SUFFIXES):
            hint = " (a compiled model: use EquiTritonCalculator.from_compiled_model)"
        elif any(name.endswith(s) for s in SAVED_MODEL_SUFFIXES):
            hint = " (a saved model: use EquiTritonCalculator.from_saved_model)"
        raise ValueError(f"{factory} expects a file ending in {' or '.join(allowed)}, got {name!r}{hint}")
    suffix = next(s for s in allowed if name.endswith(s))
    found = sniff_model_file(p)
    if found is None:
        raise ValueError(f"{p} is not {FILE_KINDS[suffix]}: its content is not a model file of any nequip kind")
    if found != suffix:
        raise ValueError(
            f"{p} is named like {FILE_KINDS[suffix]} but holds {FILE_KINDS[found]}; "
            f"name it *{found} and load it with EquiTritonCalculator.{_FACTORY_FOR[found]}"
        )
    return p


def aoti_device_type(path: str | pathlib.Path) -> Optional[str]:
    """The device type an AOTInductor package was compiled for: ``AOTI_DEVICE_KEY`` of the wrapper's metadata
    (``"cpu"``, ``"cuda"``, ``"xpu"``), or ``None`` where the package records none."""
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            if "/data/aotinductor/" in name and name.endswith("wrapper_metadata.json"):
                return json.loads(zf.read(name)).get("AOTI_DEVICE_KEY") or None
    return None


def aoti_model_dtype(path: str | pathlib.Path) -> Optional[torch.dtype]:
    """The dtype an AOTInductor package's model computes in (nequip's ``model_dtype`` in the wrapper's metadata), or
    ``None`` for a TorchScript file or a package that records none. The artifact checks no input dtype: float32
    positions given to a float64 artifact are read as garbage."""
    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            if "/data/aotinductor/" in name and name.endswith("wrapper_metadata.json"):
                found = json.loads(zf.read(name)).get("model_dtype")
                return {"float32": torch.float32, "float64": torch.float64}.get(found)
    return None


def check_compiled_device(path: str | pathlib.Path, device_type: str) -> None:
    """An AOTInductor package runs only on the device type it was compiled for; say so before loading it (a CPU
    package asked to run on CUDA would otherwise fail deep inside the artifact, or run on the wrong device).

    Raises:
        ValueError: the package records another device type.
    """
    built = aoti_device_type(path)
    if built is not None and built != device_type:
        raise ValueError(
            f"{path} is an AOTInductor model compiled for {built!r}; it cannot run on {device_type!r}. "
            f"Compile it again with `nequip-compile ... --device {device_type}`, or load it with device={built!r}"
        )


def check_atoms(atoms: Atoms, known_species: Collection[str], require_stress: bool = False) -> None:
    """Validate ``atoms`` before evaluation.

    Args:
        atoms: the structure; positions in Å.
        known_species: chemical symbols the calculator can map to model types.
        require_stress: the caller asked for ``stress`` (needs a 3D-periodic, non-degenerate cell).

    Raises:
        ValueError: empty structure, NaN/inf positions or cell, species not in the model, periodic
            directions with a zero/degenerate cell, or stress requested for a non-periodic system.
    """
    n = len(atoms)
    if n == 0:
        raise ValueError("atoms is empty (0 atoms)")
    pos = np.asarray(atoms.positions)
    bad = ~np.isfinite(pos).all(axis=1)
    if bad.any():
        idx = np.flatnonzero(bad)
        raise ValueError(
            f"atoms.positions contains NaN or infinite values at {idx.size} atom(s), first indices {idx[:10].tolist()}"
        )
    symbols = set(atoms.get_chemical_symbols())
    unknown = sorted(symbols - set(known_species))
    if unknown:
        raise ValueError(
            f"species {unknown} not in the model (it knows {sorted(known_species)}); "
            "pass chemical_species_to_atom_type_map to map them to model types"
        )
    cell = np.asarray(atoms.cell.array, dtype=float)
    if not np.isfinite(cell).all():
        raise ValueError("atoms.cell contains NaN or infinite values")
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if pbc.any():
        lengths = np.linalg.norm(cell, axis=1)
        empty = [ax for ax in range(3) if pbc[ax] and lengths[ax] == 0.0]
        if empty:
            raise ValueError(
                f"atoms are periodic along axes {empty} but have no cell vector there (cell={cell.tolist()}); "
                "set atoms.cell or atoms.pbc=False"
            )
        if pbc.all() and abs(np.linalg.det(cell)) < 1e-12:
            raise ValueError(f"atoms are periodic but the cell is degenerate (volume 0): {cell.tolist()}")
    if require_stress and not pbc.all():
        raise ValueError(
            f"stress requested but atoms are not periodic in all three directions (pbc={pbc.tolist()}); "
            "stress needs a 3D-periodic cell"
        )
