"""An energy+forces step that stays on the model's device.

nequip's ``NequIPCalculator`` builds the graph on the host (``from_ase``, a CPU neighbor list, type
mapping), copies several tensors to the device, runs the model, and copies each output back
separately. ``DeviceStep`` instead:

* copies positions (and the cell, when it changes) to the device, nothing else: atomic numbers are
  mapped to model types on the device and cached while they do not change;
* builds the neighbor list on the device with vesin-torch (``vesin.torch.NeighborList``; CUDA kernels
  on GPU, the same library on CPU), with nequip's edge convention (``edge_index[0]`` = centre,
  ``edge_index[1]`` = neighbour, ``edge_cell_shift`` = integer lattice shift of the neighbour);
* brings every output back in one transfer (energy, per-atom energies, forces, stress concatenated).

Positions and cell are given to the model in the model's dtype (float64 for float64 models).
Per-edge-type cutoffs are not supported here (use the default path).
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import torch
from ase import Atoms
from ase.stress import full_3x3_to_voigt_6_stress
from nequip.data import AtomicDataDict


class DeviceStep:
    """Evaluate a nequip model on ``device`` with an on-device neighbor list.

    Args:
        model: eval-mode nequip model taking an ``AtomicDataDict`` (eager, TorchScript or AOTI wrapper).
        device: where the model lives.
        r_max: neighbor cutoff in Å.
        lookup_table: ``(Zmax,)`` int64 map from atomic number to model type (-1 = unknown species).
        dtype: dtype of positions/cell given to the model.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        device: torch.device,
        r_max: float,
        lookup_table: torch.Tensor,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        try:
            from vesin_torch import NeighborList
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError("fast_step needs vesin-torch: pip install vesin-torch") from err
        self.model = model
        self.device = torch.device(device)
        self.r_max = float(r_max)
        self.dtype = dtype
        self.lookup_table = lookup_table.to(self.device)
        self.nl = NeighborList(cutoff=self.r_max, full_list=True)
        self._numbers: Optional[np.ndarray] = None
        self._types: Optional[torch.Tensor] = None
        self._cell_key: Optional[bytes] = None
        self._cell: Optional[torch.Tensor] = None
        self._pbc: Optional[torch.Tensor] = None

    @classmethod
    def from_calculator(cls, calc) -> DeviceStep:
        """Build from a ``NequIPCalculator`` (reads its model, device, cutoff and type map)."""
        from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper, NeighborListTransform

        r_max, table = None, None
        for t in calc.transforms:
            if isinstance(t, NeighborListTransform):
                if getattr(t, "per_edge_type_cutoff", None) is not None:
                    raise NotImplementedError("fast_step does not support per-edge-type cutoffs")
                r_max = float(t.r_max)
            if isinstance(t, ChemicalSpeciesToAtomTypeMapper):
                table = t.lookup_table
        if r_max is None or table is None:
            raise ValueError(
                "fast_step needs the calculator's NeighborListTransform and ChemicalSpeciesToAtomTypeMapper"
            )
        dtype = _model_dtype(calc.model)
        return cls(calc.model, calc.device, r_max, table, dtype=dtype)

    def data_from_atoms(self, atoms: Atoms) -> AtomicDataDict.Type:
        """Build the model input on the device; shapes: pos (N, 3), cell (1, 3, 3), edges (2, E)."""
        pos = torch.as_tensor(np.ascontiguousarray(atoms.positions), dtype=self.dtype).to(
            self.device, non_blocking=True
        )
        numbers = np.asarray(atoms.numbers)
        if self._numbers is None or not np.array_equal(numbers, self._numbers):
            z = torch.as_tensor(numbers, dtype=torch.long).to(self.device)
            types = torch.index_select(self.lookup_table, 0, z)
            self._types, self._numbers = types, numbers.copy()
        pbc = np.asarray(atoms.pbc, dtype=bool)
        cell_np = np.ascontiguousarray(atoms.cell.array, dtype=np.float64)
        key = cell_np.tobytes() + pbc.tobytes()
        if key != self._cell_key:
            self._cell = torch.as_tensor(cell_np, dtype=self.dtype).to(self.device)
            self._pbc = torch.as_tensor(pbc).to(self.device)
            self._cell_key = key
        periodic = bool(pbc.any())
        box = self._cell if periodic else torch.zeros((3, 3), dtype=self.dtype, device=self.device)
        pairs, shifts = self.nl.compute(points=pos, box=box, periodic=self._pbc if periodic else False, quantities="PS")
        data: AtomicDataDict.Type = {
            AtomicDataDict.POSITIONS_KEY: pos,
            AtomicDataDict.ATOM_TYPE_KEY: self._types,
            AtomicDataDict.EDGE_INDEX_KEY: pairs.t().to(torch.long).contiguous(),
        }
        if periodic:
            data[AtomicDataDict.CELL_KEY] = self._cell.view(1, 3, 3)
            data[AtomicDataDict.PBC_KEY] = self._pbc.view(1, 3)
            data[AtomicDataDict.EDGE_CELL_SHIFT_KEY] = shifts.to(self.dtype)
        return data

    def __call__(self, atoms: Atoms) -> AtomicDataDict.Type:
        """Run the model on ``atoms``; outputs stay on the device."""
        return self.model(self.data_from_atoms(atoms))

    def compute(
        self, atoms: Atoms, energy_units_to_eV: float = 1.0, length_units_to_A: float = 1.0
    ) -> Dict[str, np.ndarray]:
        """ASE results (eV, eV/Å, eV/Å³ Voigt) for ``atoms`` with a single device→host copy."""
        out = self(atoms)
        n = len(atoms)
        parts, names = [], []
        for key, name in (
            (AtomicDataDict.TOTAL_ENERGY_KEY, "energy"),
            (AtomicDataDict.PER_ATOM_ENERGY_KEY, "energies"),
            (AtomicDataDict.FORCE_KEY, "forces"),
            (AtomicDataDict.STRESS_KEY, "stress"),
        ):
            if key in out and (name != "stress" or AtomicDataDict.CELL_KEY in out or bool(np.any(atoms.pbc))):
                parts.append(out[key].detach().reshape(-1).to(torch.float64))
                names.append(name)
        flat = torch.cat(parts).cpu().numpy()
        sizes = {"energy": 1, "energies": n, "forces": 3 * n, "stress": 9}
        results: Dict[str, np.ndarray] = {}
        offset = 0
        for name in names:
            chunk = flat[offset : offset + sizes[name]]
            offset += sizes[name]
            if name == "energy":
                results["energy"] = energy_units_to_eV * chunk.reshape(())
                results["free_energy"] = results["energy"]
            elif name == "energies":
                results["energies"] = energy_units_to_eV * chunk
            elif name == "forces":
                results["forces"] = (energy_units_to_eV / length_units_to_A) * chunk.reshape(n, 3)
            else:
                stress = chunk.reshape(3, 3) * (energy_units_to_eV / length_units_to_A**3)
                results["stress"] = full_3x3_to_voigt_6_stress(stress)
        return results


def _model_dtype(model: torch.nn.Module) -> torch.dtype:
    from nequip.nn import graph_model

    metadata = getattr(model, "metadata", None)
    if isinstance(metadata, dict) and graph_model.MODEL_DTYPE_KEY in metadata:
        return {"float32": torch.float32, "float64": torch.float64}[metadata[graph_model.MODEL_DTYPE_KEY]]
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.get_default_dtype()
