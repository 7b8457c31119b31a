"""``EquiTritonCalculator``: nequip's ASE calculator with equitriton spherical harmonics.

It subclasses ``nequip.integrations.ase.NequIPCalculator`` and reuses its loaders
(``_from_saved_model``, ``from_compiled_model``), neighbor-list transforms and result handling. What
it adds:

* ``patch=True`` (default) runs ``md_plugin.patch_model`` on eager models before use;
  ``patch=False`` gives the stock model (for comparisons).
* ``device="auto" | "cuda" | "xpu" | "cpu"``.
* ``sh_backend``: ``"equitriton-triton"``, ``"equitriton-torch-fallback"``, ``"e3nn"`` (stock), or
  ``"unknown"``.
* Clear errors for missing / wrong-kind files, unknown species, NaN/inf positions, periodic atoms
  without a cell, and stress on non-periodic systems (``md_plugin.validation``).
* ``fast_step=True``: the whole step stays on the model's device (``md_plugin.fast_step``);
  ``fast_step="compile"`` also runs the energy+force graph through ``torch.compile``; ``fast_step="graph"`` replays
  it from CUDA graphs.

Units: positions Å, energies eV, forces eV/Å, stress eV/Å³ (ASE Voigt order), ``energies`` eV/atom.
"""

from __future__ import annotations

import pathlib
import zipfile
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import ase.data
import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import all_changes
from nequip.integrations.ase import NequIPCalculator
from nequip.nn import graph_model

from .device import DeviceLike, resolve_device
from .hook import EQUITRITON_LIB, is_equitriton_sh, patch_model, sh_backend_of
from .validation import (
    COMPILED_MODEL_SUFFIXES,
    SAVED_MODEL_SUFFIXES,
    aoti_model_dtype,
    check_atoms,
    check_compiled_device,
    check_model_file,
)

_CUSTOM_OPS_KEY = "nequip_custom_ops_libs"


def _equitriton_backend_name(device: torch.device) -> str:
    import equitriton

    return "equitriton-triton" if equitriton.backend_for(device) == "triton" else "equitriton-torch-fallback"


def compiled_model_uses_equitriton(path: Union[str, pathlib.Path]) -> bool:
    """True if a ``nequip-compile`` artifact was built from a model patched with equitriton SH.

    The patch marks each equitriton SH module with ``_nequip_custom_ops_libs = ("equitriton",)``, which
    nequip copies into the artifact's metadata (``nequip_custom_ops_libs``): an ``extra/`` entry of a
    TorchScript ``.nequip.pth`` zip, a ``nequip_custom_ops_libs.txt`` entry of an AOTInductor ``.nequip.pt2``.
    """
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            if name.endswith(f"extra/{_CUSTOM_OPS_KEY}") or name == f"{_CUSTOM_OPS_KEY}.txt":
                if EQUITRITON_LIB in zf.read(name).decode().split():
                    return True
    return False


class EquiTritonCalculator(NequIPCalculator):
    """ASE calculator for NequIP / Allegro models with equitriton spherical harmonics.

    Prefer the factories ``from_saved_model``, ``from_compiled_model``, ``from_model``.

    Args:
        model: an eval-mode nequip model (eager ``GraphModel``, TorchScript or AOTInductor wrapper).
        device: ``"auto"`` (CUDA, else XPU, else CPU), ``"cuda"``, ``"xpu"``, ``"cpu"`` or a ``torch.device``.
        patch: replace e3nn spherical harmonics by equitriton's (eager models only; compiled models
            carry whatever they were compiled with).
        validate: run the input checks of ``md_plugin.validation`` on every calculation.
        fast_step: ``True``: evaluate through ``md_plugin.fast_step.DeviceStep`` (neighbor list on the model's
            device via vesin-torch, one host transfer per call). ``"compile"``: the same, with the model's
            energy+force graph run through ``torch.compile`` (eager models; compiled on the first call). ``"graph"``
            (CUDA): the compiled graph replayed from CUDA graphs, inputs padded to bucketed edge counts
            (``md_plugin.static_shapes``).
        sh_backend: override the reported backend (used by ``from_compiled_model``).
        **kwargs: forwarded to ``NequIPCalculator`` (``transforms``, ``energy_units_to_eV``,
            ``length_units_to_A``) and ASE's ``Calculator``.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]

    def __init__(
        self,
        model: torch.nn.Module,
        device: DeviceLike = "auto",
        patch: bool = True,
        validate: bool = True,
        fast_step: Union[bool, str] = False,
        sh_backend: Optional[str] = None,
        model_dtype: Optional[torch.dtype] = None,
        **kwargs: Any,
    ) -> None:
        device = resolve_device(device)
        eager = not isinstance(model, torch.jit.ScriptModule) and any(True for _ in model.named_modules())
        self.replaced_modules: List = []
        if patch and eager and _has_sh(model):
            self.replaced_modules = patch_model(model)
        super().__init__(model=model, device=device, **kwargs)
        self.validate = bool(validate)
        self._sh_backend_override = sh_backend
        self._known_species = _species_from_transforms(self.transforms)
        # nequip builds the model input in torch's default dtype, which nequip's global state sets to float64 once
        # per process; a float64 artifact (AOTInductor: no dtype check) read float32 input as garbage when the
        # default had been set back to float32 since. The input is cast to the model's dtype instead.
        from .fast_step import _model_dtype

        self.model_dtype = model_dtype if model_dtype is not None else _model_dtype(model)
        self._fast = None
        if fast_step:
            from .fast_step import DeviceStep

            if fast_step not in (True, "compile", "graph"):
                raise ValueError(f"fast_step must be False, True, 'compile' or 'graph', got {fast_step!r}")
            self._fast = DeviceStep.from_calculator(self)
            if fast_step in ("compile", "graph"):
                self._fast.compile()
            if fast_step == "graph":
                self._fast.use_graphs()

    # ------------------------------------------------------------------------------------------
    # factories
    # ------------------------------------------------------------------------------------------
    @classmethod
    def from_saved_model(
        cls,
        path: Union[str, pathlib.Path],
        device: DeviceLike = "auto",
        chemical_species_to_atom_type_map: Optional[Union[Dict[str, str], bool]] = None,
        patch: bool = True,
        **kwargs: Any,
    ) -> EquiTritonCalculator:
        """Load a nequip checkpoint (``.ckpt``) or package (``.nequip.zip``).

        Args:
            path: the model file.
            device: see the class docstring.
            chemical_species_to_atom_type_map: ``{symbol: model_type}``; ``None`` or ``True`` = identity
                on the model's type names (no warning: we set it explicitly).
            patch: ``False`` gives the stock model.
            **kwargs: nequip's ``_from_saved_model`` options (``compile_mode``, ``model_name``,
                ``neighborlist_backend``, ...) and constructor options.
        """
        path = check_model_file(path, SAVED_MODEL_SUFFIXES, "from_saved_model")
        dev = resolve_device(device)
        if chemical_species_to_atom_type_map is None:
            chemical_species_to_atom_type_map = True
        return cls._from_saved_model(
            str(path),
            device=dev,
            chemical_species_to_atom_type_map=chemical_species_to_atom_type_map,
            patch=patch,
            **kwargs,
        )

    @classmethod
    def _from_saved_model(cls, model_path, device: DeviceLike = "auto", **kwargs: Any) -> EquiTritonCalculator:
        """nequip's saved-model loader with ``device="auto"`` support (also used by nequip's test mixins)."""
        return super()._from_saved_model(model_path, device=resolve_device(device), **kwargs)

    @classmethod
    def from_compiled_model(
        cls,
        compile_path: Union[str, pathlib.Path],
        device: DeviceLike = "auto",
        chemical_species_to_atom_type_map: Optional[Union[Dict[str, str], bool]] = None,
        **kwargs: Any,
    ) -> EquiTritonCalculator:
        """Load a ``nequip-compile`` artifact: TorchScript ``.nequip.pth`` or AOTInductor ``.nequip.pt2``.

        To carry equitriton kernels the artifact must have been compiled with
        ``--modifiers enable_EquiTritonSphericalHarmonics``; ``sh_backend`` tells which it was.
        AOTInductor artifacts must be compiled with ``--target ase`` and for the same device type (a package
        compiled for another device type raises ``ValueError``; ``device="auto"`` does not pick the package's).
        """
        path = check_model_file(compile_path, COMPILED_MODEL_SUFFIXES, "from_compiled_model")
        dev = resolve_device(device)
        check_compiled_device(path, dev.type)
        if chemical_species_to_atom_type_map is None:
            chemical_species_to_atom_type_map = True
        if compiled_model_uses_equitriton(path):
            import equitriton  # noqa: F401  (registers its ops before the artifact loads)

            backend = _equitriton_backend_name(dev)
        else:
            backend = "e3nn"
        kwargs.setdefault("sh_backend", backend)
        kwargs.setdefault("model_dtype", aoti_model_dtype(path))  # None (TorchScript): its parameters' dtype
        kwargs["patch"] = False
        return super().from_compiled_model(
            str(path), device=dev, chemical_species_to_atom_type_map=chemical_species_to_atom_type_map, **kwargs
        )

    @classmethod
    def from_model(
        cls,
        model: torch.nn.Module,
        device: DeviceLike = "auto",
        chemical_species_to_atom_type_map: Optional[Union[Dict[str, str], bool]] = None,
        patch: bool = True,
        neighborlist_backend: Optional[str] = None,
        **kwargs: Any,
    ) -> EquiTritonCalculator:
        """Wrap an in-memory nequip ``GraphModel`` (r_max and type names come from ``model.metadata``).

        The model is put in eval mode and, with ``patch=True``, patched in place.
        """
        from nequip.integrations.utils import basic_transforms, handle_chemical_species_map

        metadata = getattr(model, "metadata", None)
        if not isinstance(metadata, dict) or graph_model.R_MAX_KEY not in metadata:
            raise ValueError(
                f"from_model needs a nequip GraphModel with metadata (r_max, type_names); got {type(model).__name__}"
            )
        if "transforms" in kwargs:
            raise KeyError("`transforms` not allowed here (they are built from the model metadata)")
        r_max = float(metadata[graph_model.R_MAX_KEY])
        type_names = metadata[graph_model.TYPE_NAMES_KEY].split(" ")
        if chemical_species_to_atom_type_map is None:
            chemical_species_to_atom_type_map = True
        species_map = handle_chemical_species_map(chemical_species_to_atom_type_map, type_names)
        nl_kwargs = {} if neighborlist_backend is None else {"neighborlist_backend": neighborlist_backend}
        transforms = basic_transforms(metadata, r_max, type_names, species_map, **nl_kwargs)
        model.eval()
        return cls(model=model, device=device, patch=patch, transforms=transforms, **kwargs)

    # ------------------------------------------------------------------------------------------
    # reporting
    # ------------------------------------------------------------------------------------------
    @property
    def sh_backend(self) -> str:
        """``"equitriton-triton"``, ``"equitriton-torch-fallback"``, ``"e3nn"`` or ``"unknown"``."""
        if self._sh_backend_override is not None:
            return self._sh_backend_override
        if isinstance(self.model, torch.jit.ScriptModule):
            return "unknown"
        backend = sh_backend_of(self.model, self.device)
        return "unknown" if backend == "none" else backend

    @property
    def r_max(self) -> float:
        """Neighbor-list cutoff in Å (from the transforms)."""
        from nequip.data.transforms import NeighborListTransform

        for t in self.transforms:
            if isinstance(t, NeighborListTransform):
                return float(t.r_max)
        raise AttributeError("calculator has no NeighborListTransform")

    # ------------------------------------------------------------------------------------------
    # evaluation
    # ------------------------------------------------------------------------------------------
    def atoms_to_data(self, atoms: Atoms) -> Dict[str, Any]:
        """nequip's model input, built in float64 for a float64 model whatever torch's default dtype is (nequip
        reads the positions into the default dtype: float32 would round them, and a float64 artifact takes them
        unchecked); for a float32 model as nequip builds it (the model casts its input)."""
        default = torch.get_default_dtype()
        if self.model_dtype == torch.float64 and default != torch.float64:
            torch.set_default_dtype(torch.float64)
        try:
            return super().atoms_to_data(atoms)
        finally:
            torch.set_default_dtype(default)

    def calculate(
        self,
        atoms: Optional[Atoms] = None,
        properties: Sequence[str] = ("energy",),
        system_changes: Sequence[str] = all_changes,
    ) -> None:
        """Compute ``properties`` for ``atoms`` (see ``implemented_properties``); results in ``self.results``."""
        target = atoms if atoms is not None else self.atoms
        if self.validate and target is not None:
            check_atoms(target, self._known_species, require_stress="stress" in properties)
        if self._fast is not None:
            from ase.calculators.calculator import Calculator

            Calculator.calculate(self, atoms)
            self.results = self._fast.compute(self.atoms, self.energy_units_to_eV, self.length_units_to_A)
        else:
            super().calculate(atoms, list(properties), system_changes)
        if not np.asarray(self.atoms.pbc, dtype=bool).all():
            # a stress from a non-periodic box is meaningless: never hand it out (asking for it raises)
            self.results.pop("stress", None)


def _has_sh(model: torch.nn.Module) -> bool:
    from .hook import is_e3nn_sh

    return any(is_e3nn_sh(m) or is_equitriton_sh(m) for m in model.modules())


def _species_from_transforms(transforms: List[Callable]) -> List[str]:
    """Chemical symbols the calculator's type mapper accepts (all symbols if it has none)."""
    from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper

    for t in transforms:
        if isinstance(t, ChemicalSpeciesToAtomTypeMapper):
            table = t.lookup_table.detach().cpu().numpy()
            return [
                ase.data.chemical_symbols[z] for z in np.flatnonzero(table >= 0) if z < len(ase.data.chemical_symbols)
            ]
    return list(ase.data.chemical_symbols[1:])
