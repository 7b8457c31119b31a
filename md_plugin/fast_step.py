"""An energy+forces step that stays on the model's device.

nequip's ``NequIPCalculator`` builds the graph on the host (``from_ase``, a CPU neighbor list, type
mapping), copies several tensors to the device, runs the model, and copies each output back
separately. ``DeviceStep`` instead:

* copies positions (and the cell, when it changes) to the device, nothing else: atomic numbers are
  mapped to model types on the device and cached while they do not change;
* builds the neighbor list on the device with vesin-torch (``vesin.torch.NeighborList``; CUDA kernels
  on GPU, the same library on CPU), with nequip's edge convention (``edge_index[0]`` = centre,
  ``edge_index[1]`` = neighbour, ``edge_cell_shift`` = integer lattice shift of the neighbour);
* brings every output back in one transfer (energy, per-atom energies, forces, stress concatenated);
* optionally (``compile()``) runs the model's energy+force graph through ``torch.compile``: on the first call the
  forward and its force backward are unrolled into one FX graph by nequip's own ``nequip_make_fx`` (symbolic
  num_atoms / num_edges, checked not to shape-specialize), which is then compiled with ``dynamic=True``, so a
  changing neighbor count does not recompile. nequip's train-time ``compile_mode="compile"`` falls back to eager for
  single-frame inputs, which is why this exists;
* optionally (``use_graphs()``, CUDA) replays that compiled graph from a CUDA graph: the input is padded to a bucketed
  edge count with ghost atoms and edges that contribute exactly nothing (``md_plugin.static_shapes``), so one capture
  serves every step whose edge count stays in its bucket, and the step's ~1,000 kernel launches become one replay.

Positions and cell are given to the model in the model's dtype (float64 for float64 models).
Per-edge-type cutoffs are not supported here (use the default path).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from ase import Atoms
from ase.stress import full_3x3_to_voigt_6_stress
from nequip.data import AtomicDataDict

from . import static_shapes

_OUTPUT_KEYS = (
    AtomicDataDict.TOTAL_ENERGY_KEY,
    AtomicDataDict.PER_ATOM_ENERGY_KEY,
    AtomicDataDict.FORCE_KEY,
    AtomicDataDict.STRESS_KEY,
)


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
        self._compile_backend: Optional[str] = None
        self._compiled: Optional[Tuple[Callable, List[str], List[str]]] = None
        self._pad = False  # static_shapes(): padded inputs
        self._edges: Optional[int] = None  # the current edge bucket
        self.graphs: Optional[static_shapes.GraphCache] = None  # use_graphs(): CUDA graphs by input shapes

    def compile(self, backend: str = "inductor") -> DeviceStep:
        """Run the model through ``torch.compile(backend=backend, dynamic=True)`` from the next call on (eager
        models only; traced on first use, see the module docstring). Returns ``self``."""
        if isinstance(self.model, torch.jit.ScriptModule) or not hasattr(self.model, "metadata"):
            raise ValueError("DeviceStep.compile needs an eager nequip GraphModel (not a compiled artifact)")
        known = torch._dynamo.list_backends(exclude_tags=())
        if backend not in known:
            raise ValueError(f"unknown torch.compile backend {backend!r}; available: {sorted(known)}")
        self._compile_backend = backend
        self._compiled = None
        return self

    def static_shapes(self) -> DeviceStep:
        """Pad every input to a bucketed edge count (``md_plugin.static_shapes``); same results. Returns ``self``."""
        self._pad = True
        return self

    def use_graphs(self) -> DeviceStep:
        """Replay the compiled energy+force graph from CUDA graphs on padded inputs (``compile()`` first; CUDA
        devices only). Returns ``self``."""
        if self.device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device; this model is on {self.device.type!r}")
        if self._compile_backend is None:
            raise ValueError("use_graphs() replays the compiled graph: call compile() first")
        self.graphs = static_shapes.GraphCache()
        return self.static_shapes()

    def _trace_and_compile(self, data: AtomicDataDict.Type) -> Tuple[Callable, List[str], List[str]]:
        from nequip.nn.compile import ListInputOutputWrapper
        from nequip.utils.fx import nequip_make_fx

        in_keys = list(data.keys())
        out = self.model(dict(data))
        out_keys = [k for k in _OUTPUT_KEYS if k in out]
        wrapper = ListInputOutputWrapper(self.model, in_keys, out_keys)
        fx = nequip_make_fx(model=wrapper, data=data, fields=in_keys)
        return torch.compile(fx, dynamic=True, backend=self._compile_backend), in_keys, out_keys

    def run_model(self, data: AtomicDataDict.Type) -> AtomicDataDict.Type:
        """The model on device-resident ``data`` (eager, or compiled after ``compile()``)."""
        if self._compile_backend is None:
            return self.model(data)
        if self._compiled is None:
            self._compiled = self._trace_and_compile(data)
        fn, in_keys, out_keys = self._compiled
        inputs = [data[k] for k in in_keys]
        outs = fn(*inputs) if self.graphs is None else self.graphs(fn, inputs)
        return dict(zip(out_keys, outs))

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
        dtype = getattr(calc, "model_dtype", None) or _model_dtype(calc.model)
        return cls(calc.model, calc.device, r_max, table, dtype=dtype)

    def data_from_atoms(self, atoms: Atoms) -> AtomicDataDict.Type:
        """Build the model input on the device; shapes: pos (N, 3), cell (1, 3, 3), pbc (1, 3), edges (2, E),
        edge_cell_shift (E, 3)."""
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
        # the same fields as nequip's from_ase + NeighborListTransform, non-periodic systems included (zero cell,
        # zero shifts): compiled (AOTInductor) models take a fixed set of inputs
        return {
            AtomicDataDict.POSITIONS_KEY: pos,
            AtomicDataDict.ATOM_TYPE_KEY: self._types,
            AtomicDataDict.EDGE_INDEX_KEY: pairs.t().to(torch.long).contiguous(),
            AtomicDataDict.CELL_KEY: self._cell.view(1, 3, 3),
            AtomicDataDict.PBC_KEY: self._pbc.view(1, 3),
            AtomicDataDict.EDGE_CELL_SHIFT_KEY: shifts.to(self.dtype),
        }

    def __call__(self, atoms: Atoms) -> AtomicDataDict.Type:
        """Run the model on ``atoms``; outputs stay on the device."""
        data = self.data_from_atoms(atoms)
        if not self._pad:
            return self.run_model(data)
        self._edges = static_shapes.edge_bucket(data[AtomicDataDict.EDGE_INDEX_KEY].shape[1], self._edges)
        out = self.run_model(static_shapes.pad(data, self._edges, self.r_max))
        return static_shapes.unpad(out, len(atoms), _OUTPUT_KEYS)

    def compute(
        self, atoms: Atoms, energy_units_to_eV: float = 1.0, length_units_to_A: float = 1.0
    ) -> Dict[str, np.ndarray]:
        """ASE results (eV, eV/Å, eV/Å³ Voigt) for ``atoms`` with a single device→host copy.

        ``stress`` only for 3D-periodic systems (nequip's stress of a zero cell is meaningless).
        """
        out = self(atoms)
        n = len(atoms)
        periodic = bool(np.all(atoms.pbc))
        parts, names = [], []
        for key, name in zip(_OUTPUT_KEYS, ("energy", "energies", "forces", "stress")):
            if key in out and (name != "stress" or periodic):
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
