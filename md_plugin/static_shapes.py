"""Fixed-shape model inputs, so that one captured CUDA graph serves many MD steps.

A CUDA graph replays kernels on fixed buffers, but the edge count of an MD system changes at every step. Here the
input is padded to a bucketed edge count with edges that contribute exactly nothing:

* two *ghost atoms* (model type 0) are appended, 1.5 ``r_max`` apart; no real atom has an edge to them;
* every padding edge runs from the first ghost to the second, with a zero cell shift, so its length is 1.5
  ``r_max``, beyond the cutoff: nequip's and Allegro's cutoff envelopes are exactly 0 there, and so is their
  derivative, so the real atoms' energies, forces and the stress do not change;
* the outputs are cut back to the real atoms, and the total energy is the sum of their per-atom energies (the
  ghosts' per-atom energies are their type's energy shift, not part of the system).

tests/test_md_fast_step.py checks padded against unpadded results for NequIP and Allegro models (bulk, cluster,
slab); tests/test_md_cuda.py the graph replay on the GPU.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import torch
from nequip.data import AtomicDataDict

GHOSTS = 2
# Edge buckets: multiples of this many edges, with this much headroom when a new bucket is chosen; a bucket is
# kept while the edge count stays within it and above SHRINK of it. Every padding edge costs as much as a real one
# (10,976 Cu atoms on the H200: 5% headroom made the step 7% slower than unpadded), while an NVE or NVT run's edge
# count moves by tenths of a percent from step to step: 2% headroom, a new capture after a 4% drop.
EDGE_QUANTUM = 256
HEADROOM = 1.02
SHRINK = 0.94


def edge_bucket(n_edges: int, current: Optional[int] = None) -> int:
    """The padded edge count for ``n_edges``: ``current`` while it still fits, else a new bucket with headroom."""
    if current is not None and SHRINK * current <= n_edges <= current:
        return current
    return max(EDGE_QUANTUM, -(-int(n_edges * HEADROOM) // EDGE_QUANTUM) * EDGE_QUANTUM)


def pad(data: AtomicDataDict.Type, n_edges: int, r_max: float) -> AtomicDataDict.Type:
    """``data`` with two ghost atoms and ``n_edges - E`` padding edges between them (module docstring)."""
    pos = data[AtomicDataDict.POSITIONS_KEY]
    types = data[AtomicDataDict.ATOM_TYPE_KEY]
    edges = data[AtomicDataDict.EDGE_INDEX_KEY]
    shifts = data[AtomicDataDict.EDGE_CELL_SHIFT_KEY]
    n, extra = pos.shape[0], n_edges - edges.shape[1]
    if extra < 0:
        raise ValueError(f"cannot pad {edges.shape[1]} edges to {n_edges}")
    ghost_pos = torch.zeros((GHOSTS, 3), dtype=pos.dtype, device=pos.device)
    ghost_pos[1, 0] = 1.5 * r_max
    ghost_types = torch.zeros((GHOSTS,) + tuple(types.shape[1:]), dtype=types.dtype, device=types.device)
    pad_edges = torch.tensor([[n], [n + 1]], dtype=edges.dtype, device=edges.device).expand(2, extra)
    out = dict(data)
    out[AtomicDataDict.POSITIONS_KEY] = torch.cat([pos, ghost_pos])
    out[AtomicDataDict.ATOM_TYPE_KEY] = torch.cat([types, ghost_types])
    out[AtomicDataDict.EDGE_INDEX_KEY] = torch.cat([edges, pad_edges], dim=1)
    out[AtomicDataDict.EDGE_CELL_SHIFT_KEY] = torch.cat([shifts, shifts.new_zeros((extra, 3))])
    return out


def unpad(out: AtomicDataDict.Type, n_atoms: int, keys) -> AtomicDataDict.Type:
    """The outputs ``keys`` (those present) of a padded input, for the ``n_atoms`` real atoms only (copies, not
    views of graph buffers)."""
    res = {}
    per_atom = out.get(AtomicDataDict.PER_ATOM_ENERGY_KEY)
    for key in keys:
        if key not in out:
            continue
        value = out[key]
        if key == AtomicDataDict.TOTAL_ENERGY_KEY:
            if per_atom is None:
                raise ValueError("padded inputs need the model's per-atom energies to leave out the ghost atoms")
            res[key] = per_atom[:n_atoms].sum().reshape(value.shape)
        elif key in (AtomicDataDict.PER_ATOM_ENERGY_KEY, AtomicDataDict.FORCE_KEY):
            res[key] = value[:n_atoms].clone()
        else:
            res[key] = value.clone()
    return res


class GraphReplay:
    """One CUDA graph of ``fn(*inputs)`` for one set of input shapes: inputs are copied into static buffers and the
    captured kernels replayed (no Python, no launches per kernel); the outputs are the graph's own buffers."""

    def __init__(self, fn, inputs: List[torch.Tensor], warmup: int = 2) -> None:
        self.inputs = [t.clone() for t in inputs]
        side = torch.cuda.Stream(device=self.inputs[0].device)
        side.wait_stream(torch.cuda.current_stream(self.inputs[0].device))
        with torch.cuda.stream(side):  # first calls (lazy init, autotuning) outside the capture, as CUDA graphs need
            for _ in range(warmup):
                fn(*self.inputs)
        torch.cuda.current_stream(self.inputs[0].device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = fn(*self.inputs)

    def __call__(self, inputs: List[torch.Tensor]):
        for buf, t in zip(self.inputs, inputs):
            buf.copy_(t)
        self.graph.replay()
        return self.outputs


class GraphCache:
    """CUDA graphs by input shapes, the most recent ``size`` kept (each holds its own memory pool)."""

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self.graphs: Dict[tuple, GraphReplay] = {}
        self.captures = 0

    def __call__(self, fn, inputs: List[torch.Tensor]):
        key = tuple(tuple(t.shape) for t in inputs)
        graph = self.graphs.pop(key, None)
        if graph is None:
            graph = GraphReplay(fn, inputs)
            self.captures += 1
            while len(self.graphs) >= self.size:
                self.graphs.pop(next(iter(self.graphs)))
        self.graphs[key] = graph  # most recent last
        return graph(inputs)
