"""Time one MD step (energy + forces) of NequIP / Allegro models: stock nequip vs EquiTriton-MD (issue 4, point 5).

    python benchmarks/md_step.py --out DIR                    # GPU, about 3 minutes on an H100
    python benchmarks/md_step.py --quick --device cpu --out DIR
    python benchmarks/report_md.py DIR/md_step.json [MORE.json ...] -o docs/md_performance.md  # newest run wins

Models are untrained and built in-process by nequip's model builders, float64, from one config family: NequIP
(2 layers, 16 features, r_max 4.5 Å) and Allegro (2 layers, 16 scalar / 8 tensor features, r_max 4.5 Å), l_max 1..4.
"stock" and "patched" models of one (kind, l_max) have identical weights (same seed); "patched" is the stock model
after ``md_plugin.patch_model``. Systems are rattled fcc Cu supercells (4 n^3 atoms).

Modes (each run with the stock and the patched model):

* ``nequip-matscipy``: nequip's ``NequIPCalculator``, its default (matscipy, host) neighbor list;
* ``nequip-vesin``: the same with nequip's vesin (host) neighbor-list backend;
* ``ours-eager``: ``EquiTritonCalculator`` on nequip's data path (input checks included);
* ``ours-fast``: ``EquiTritonCalculator(fast_step=True)``: neighbor list on the device (vesin-torch), positions in and
  one concatenated result out as the only transfers;
* ``ours-compile``: ``ours-fast`` with the energy+force graph through ``torch.compile`` (``fast_step="compile"``);
* ``ours-graph``: ``ours-compile`` replayed from CUDA graphs on inputs padded to bucketed edge counts
  (``fast_step="graph"``; CUDA only);
* ``ours-aoti``: ``ours-fast`` on an AOTInductor artifact made by nequip's own ``nequip-compile`` pipeline (with
  ``--modifiers enable_EquiTritonSphericalHarmonics`` for the patched model).

Each call moves the atoms (a pool of rattled copies), so every call rebuilds the neighbor list; results come back to
the host every call, so wall time is the step time. The stock and patched variants of a case are timed together, in
alternating calls (ABBA order), so that drift of the machine reaches both alike and their ratio compares the models
(``benchmarks/md_ab.py`` does the same for one case over longer rounds). Cases run in priority order under a time
budget (``--budget-s``); a case that fails, or that the budget no longer allows, is recorded as such and the run
goes on. DIR/md_step.json is rewritten after every case. A torch.profiler pass over the headline system (NequIP,
l_max 2, 2,048 atoms) records where the time goes and how busy the GPU is (union of device-activity intervals / wall
time).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

SCHEMA = "equitriton-md/md_step/1"
TIMESTEP_FS = 2.0
R_MAX = 4.5
HEADLINE = {"model": "nequip", "l_max": 2, "n_atoms": 2048}
QUICK_HEADLINE = {"model": "nequip", "l_max": 2, "n_atoms": 32}
MODES = {
    "nequip-matscipy": "nequip NequIPCalculator, matscipy neighbor list on the host (nequip's default)",
    "nequip-vesin": "nequip NequIPCalculator, vesin neighbor list on the host",
    "ours-eager": "EquiTritonCalculator on nequip's data path (host neighbor list), input checks on",
    "ours-fast": "EquiTritonCalculator(fast_step=True): vesin-torch neighbor list on the device, one transfer back",
    "ours-compile": "ours-fast + torch.compile(dynamic=True) of the energy+force graph (fast_step='compile')",
    "ours-graph": "ours-compile replayed from CUDA graphs, inputs padded to bucketed edge counts (fast_step='graph')",
    "ours-aoti": "ours-fast on a nequip-compile AOTInductor artifact (target ase)",
}
# rough one-off costs (s) of a case on an H100, to keep a run inside its budget
SETUP_COST_S = {"ours-compile": 45.0, "ours-graph": 50.0, "ours-aoti": 90.0}
CUDA_ONLY = ("ours-graph",)


# ------------------------------------------------------------------------------------------------------------ setup
def fcc_cu(n_atoms_target: int, seed: int) -> Any:
    """Rattled fcc Cu, cubic supercell with 4 n^3 >= n_atoms_target atoms (a = 3.61 Å, rattle 0.05 Å)."""
    from ase.build import bulk

    n = max(1, int(np.ceil((n_atoms_target / 4) ** (1 / 3) - 1e-9)))
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (n, n, n)
    atoms.rattle(stdev=0.05, seed=seed)
    return atoms


def size_for(n_atoms_target: int) -> int:
    n = max(1, int(np.ceil((n_atoms_target / 4) ** (1 / 3) - 1e-9)))
    return 4 * n**3


def build_model(kind: str, l_max: int, device: torch.device, patched: bool) -> torch.nn.Module:
    """Untrained float64 model from nequip's builders (same seed: stock and patched share weights)."""
    from nequip.utils.global_state import set_global_state

    from md_plugin import patch_model

    set_global_state(allow_tf32=False)
    common = dict(
        seed=1234,
        model_dtype="float64",
        type_names=["Cu"],
        r_max=R_MAX,
        l_max=l_max,
        avg_num_neighbors=42.0,  # fcc Cu within 4.5 Å: 12 + 6 + 24
        per_type_energy_shifts={"Cu": -3.5},
        per_type_energy_scales={"Cu": 0.5},
    )
    if kind == "nequip":
        from nequip.model import NequIPGNNModel

        model = NequIPGNNModel(num_layers=2, num_features=16, parity=True, **common)
    elif kind in ("allegro", "allegro-uncoupled"):
        from allegro.model import AllegroModel

        model = AllegroModel(
            # allegro-uncoupled: path weights shared across channels. With the default coupling, allegro's strided
            # tensor product forms one (edges, channels, d, d, d) temporary, 73.7 GiB in float64 at l_max 4 for the
            # 2,048-atom system (out of memory on a 140 GiB H200); uncoupled it is a matrix product
            tp_path_channel_coupling=kind == "allegro",
            parity=True,
            radial_chemical_embed={"_target_": "allegro.nn.TwoBodyBesselScalarEmbed", "num_bessels": 8},
            radial_chemical_embed_dim=16,
            scalar_embed_mlp_hidden_layers_depth=1,
            scalar_embed_mlp_hidden_layers_width=32,
            num_layers=2,
            num_scalar_features=16,
            num_tensor_features=8,
            allegro_mlp_hidden_layers_depth=1,
            allegro_mlp_hidden_layers_width=32,
            readout_mlp_hidden_layers_depth=1,
            readout_mlp_hidden_layers_width=16,
            **common,
        )
    else:
        raise ValueError(f"unknown model kind {kind!r}")
    if patched:
        patch_model(model)
    return model.to(device).eval()


def aoti_compile(model: torch.nn.Module, data: Dict[str, torch.Tensor], device: torch.device, path: str, patched: bool):
    """nequip-compile's own AOTInductor pipeline (target ``ase``) on an in-memory model.

    ``nequip.scripts.compile.main`` loads a model file; here its loader is pointed at ``model`` (and ``data`` as the
    example input), everything else -- modifiers, metadata, dynamic shapes, export, custom-ops embedding -- is nequip's.
    """
    import nequip.scripts.compile as nequip_compile

    from md_plugin import MODIFIER_NAME

    def load_in_memory(*args, return_data_dict: bool = False, **kwargs):
        example = {k: v.detach().cpu() for k, v in data.items()}
        return (model, example) if return_data_dict else model

    argv = [
        "in-memory.nequip.zip",
        path,
        "--mode",
        "aotinductor",
        "--device",
        device.type,
        "--target",
        "ase",
    ]
    if patched:
        argv += ["--modifiers", MODIFIER_NAME]
    original = nequip_compile.load_saved_model
    nequip_compile.load_saved_model = load_in_memory
    try:
        nequip_compile.main(argv)
    finally:
        nequip_compile.load_saved_model = original


_MODELS: Dict[Tuple, torch.nn.Module] = {}


def cached_model(kind: str, l_max: int, device: torch.device, patched: bool) -> torch.nn.Module:
    """``build_model``, once per (kind, l_max, device, patched): the eager modes only read the model."""
    key = (kind, l_max, str(device), patched)
    if key not in _MODELS:
        _MODELS[key] = build_model(kind, l_max, device, patched)
    return _MODELS[key]


def make_calculator(
    mode: str,
    model_spec: Tuple[str, int, bool],
    device: torch.device,
    args,
    workdir: str,
    model=None,
    fuse_lmax: Optional[int] = None,
):
    """A fresh ASE calculator for ``mode``; returns ``(calc, setup_seconds)``. ``model``: one to use instead of the
    cached model of ``model_spec`` (not for ``ours-aoti``, which builds its own). ``fuse_lmax`` (``ours-aoti``,
    patched only): the artifact's SH get this ``fuse_lmax`` instead of the modifier's policy. The calculator's
    ``built_sh_fuse_lmax`` is the ``fuse_lmax`` of the model it runs (``ours-aoti``: of the model the artifact was
    built from), so that a run records what it timed."""
    from nequip.integrations.ase import NequIPCalculator
    from nequip.integrations.utils import basic_transforms

    from md_plugin import EquiTritonCalculator

    kind, l_max, patched = model_spec
    t0 = time.perf_counter()
    if model is not None and mode == "ours-aoti":
        raise ValueError("ours-aoti builds its model from model_spec; a given model cannot be used")
    if fuse_lmax is not None and not (mode == "ours-aoti" and patched):
        raise ValueError("fuse_lmax is for a patched ours-aoti artifact; other modes take a patched model")
    model = model if model is not None else cached_model(kind, l_max, device, patched)
    if mode in ("nequip-matscipy", "nequip-vesin"):
        backend = mode.split("-", 1)[1]
        meta = model.metadata
        transforms = basic_transforms(meta, R_MAX, ["Cu"], {"Cu": "Cu"}, neighborlist_backend=backend)
        calc = NequIPCalculator(model=model, device=device, transforms=transforms)
    elif mode == "ours-eager":
        calc = EquiTritonCalculator.from_model(model, device=device, patch=False)
    elif mode == "ours-fast":
        calc = EquiTritonCalculator.from_model(model, device=device, patch=False, fast_step=True)
    elif mode == "ours-compile":
        calc = EquiTritonCalculator.from_model(model, device=device, patch=False, fast_step=True)
        calc._fast.compile(backend=args.compile_backend)
    elif mode == "ours-graph":
        calc = EquiTritonCalculator.from_model(model, device=device, patch=False, fast_step=True)
        calc._fast.compile(backend=args.compile_backend).use_graphs()
    elif mode == "ours-aoti":
        probe = EquiTritonCalculator.from_model(model, device=device, patch=False, fast_step=True)
        example = probe._fast.data_from_atoms(fcc_cu(256, seed=99))
        tag = ("patched" if patched else "stock") + ("" if fuse_lmax is None else f"_fuse{fuse_lmax}")
        path = os.path.join(workdir, f"{kind}_l{l_max}_{tag}.nequip.pt2")
        to_compile = build_model(kind, l_max, device, patched=False)  # patched: nequip-compile's modifier patches it
        if fuse_lmax is not None:  # the modifier keeps the setting of a model already patched
            from md_plugin import patch_model

            patch_model(to_compile, fuse_lmax=fuse_lmax)
        aoti_compile(to_compile, example, device, path, patched)
        calc = EquiTritonCalculator.from_compiled_model(path, device=device, fast_step=True)
        model = to_compile
    else:
        raise ValueError(f"unknown mode {mode!r}")
    calc.built_sh_fuse_lmax = _fuse_lmax(model)
    return calc, time.perf_counter() - t0


# ------------------------------------------------------------------------------------------------------------ timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step(atoms) -> None:
    """One energy+forces evaluation (ASE computes both in one calculate call)."""
    atoms.get_forces()
    atoms.get_potential_energy()


class PositionPool:
    """Rattled copies of a structure's positions, cycled so that every call sees new positions."""

    def __init__(self, atoms, k: int = 4, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        base = atoms.get_positions()
        self.positions = [base + rng.normal(scale=0.01, size=base.shape) for _ in range(k)]
        self.i = 0

    def next(self) -> np.ndarray:
        self.i = (self.i + 1) % len(self.positions)
        return self.positions[self.i]


def time_calls(atoms, pool: PositionPool, device, warmup: int, min_reps: int, max_reps: int, min_time_s: float):
    """Per-call wall times (s) after ``warmup`` calls; at least ``min_reps``, until ``min_time_s`` or ``max_reps``."""
    first = None
    for i in range(warmup):
        t0 = time.perf_counter()
        atoms.set_positions(pool.next())
        step(atoms)
        _sync(device)
        if i == 0:
            first = time.perf_counter() - t0
    times: List[float] = []
    t_start = time.perf_counter()
    while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() - t_start < min_time_s):
        t0 = time.perf_counter()
        atoms.set_positions(pool.next())
        step(atoms)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times, first


def time_interleaved(items, device, min_reps: int, max_reps: int, min_time_s: float):
    """``time_calls`` for several calculators at once (stock and patched of one case): after each one's warm-up, single
    calls alternate between them, in ABBA order, so that a drift of the machine (clocks, other load) reaches all of
    them alike. ``items``: (atoms, pool, warmup) per calculator; returns [(times, first)] in the same order."""
    firsts = []
    for atoms, pool, warmup in items:
        _, first = time_calls(atoms, pool, device, warmup, 0, 0, 0.0)
        firsts.append(first)
    times: List[List[float]] = [[] for _ in items]
    t_start = time.perf_counter()
    budget = min_time_s * len(items)
    rnd = 0
    while min(map(len, times)) < max_reps and (
        min(map(len, times)) < min_reps or time.perf_counter() - t_start < budget
    ):
        order = range(len(items)) if rnd % 2 == 0 else reversed(range(len(items)))
        for k in order:
            atoms, pool, _ = items[k]
            t0 = time.perf_counter()
            atoms.set_positions(pool.next())
            step(atoms)
            _sync(device)
            times[k].append(time.perf_counter() - t0)
        rnd += 1
    return list(zip(times, firsts))


def ns_per_day(seconds_per_call: float, timestep_fs: float = TIMESTEP_FS) -> float:
    """ns of MD per day at one energy+forces call per step of ``timestep_fs``."""
    return 86400.0 / seconds_per_call * timestep_fs * 1e-6


# ------------------------------------------------------------------------------------------------------------ profile
def _phase_wrap(obj: Any, name: str, label: str) -> None:
    """Wrap ``obj.name`` (a bound method) in a ``record_function(label)`` on this instance only."""
    from torch.profiler import record_function

    method = getattr(obj, name)

    @functools.wraps(method)
    def wrapped(*a, **k):
        with record_function(label):
            return method(*a, **k)

    setattr(obj, name, wrapped)


def _union_us(intervals: List[Tuple[float, float]]) -> float:
    total, end = 0.0, -np.inf
    for s, e in sorted(intervals):
        if e <= end:
            continue
        total += e - max(s, end)
        end = e
    return total


PHASES = {
    "host: ASE->graph + neighbor list + H2D": "phase/data",
    "model (launch + device work)": "phase/model",
    "results to host": "phase/results",
}


def profile_calls(
    calc, atoms, pool: PositionPool, device: torch.device, n_steps: int, device_top: Optional[int] = 12
) -> Dict[str, Any]:
    """torch.profiler over ``n_steps`` calls: phase times, device busy fraction, top ops by host and device time.
    ``device_top``: how many device ops to list, ``None`` for all of them with their full names (kernel names end in
    Inductor's index, which ties a kernel to its source in the generated code)."""
    from torch.profiler import ProfilerActivity, profile, record_function

    fast = getattr(calc, "_fast", None)
    if fast is not None:
        _phase_wrap(fast, "data_from_atoms", PHASES["host: ASE->graph + neighbor list + H2D"])
        _phase_wrap(fast, "run_model", PHASES["model (launch + device work)"])
    else:
        _phase_wrap(calc, "atoms_to_data", PHASES["host: ASE->graph + neighbor list + H2D"])
        _phase_wrap(calc, "call_model", PHASES["model (launch + device work)"])
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    _sync(device)
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for _ in range(n_steps):
            with record_function("md_step"):
                atoms.set_positions(pool.next())
                step(atoms)
        _sync(device)
        wall_s = time.perf_counter() - t0
    events = prof.events()
    device_intervals = []
    for ev in events:
        if ev.device_type == torch.autograd.DeviceType.CUDA:
            device_intervals.append((ev.time_range.start, ev.time_range.end))
    busy_us = _union_us(device_intervals)
    phases = {}
    by_key = {e.key: e for e in prof.key_averages()}
    for title, label in PHASES.items():
        if label in by_key:
            phases[title] = by_key[label].cpu_time_total / 1e3 / n_steps
    step_ms = wall_s * 1e3 / n_steps
    model_ms = phases.get("model (launch + device work)", 0.0)
    data_ms = phases.get("host: ASE->graph + neighbor list + H2D", 0.0)
    phases["results to host + ASE bookkeeping"] = max(0.0, step_ms - model_ms - data_ms)

    def top(attr: str, n: Optional[int] = 12):
        rows = []
        for e in prof.key_averages():
            if e.key.startswith(("phase/", "md_step")):
                continue
            v = getattr(e, attr, 0.0) or 0.0
            if v > 0:
                rows.append(
                    {
                        "name": e.key if n is None else e.key[:90],
                        "calls_per_step": e.count / n_steps,
                        "self_cpu_ms_per_step": e.self_cpu_time_total / 1e3 / n_steps,
                        "self_device_ms_per_step": (getattr(e, "self_device_time_total", 0.0) or 0.0) / 1e3 / n_steps,
                    }
                )
        key = "self_device_ms_per_step" if attr == "self_device_time_total" else "self_cpu_ms_per_step"
        return sorted(rows, key=lambda r: -r[key])[:n]  # [:None]: all

    return {
        "steps": n_steps,
        "wall_ms_per_step": step_ms,
        "device_busy_ms_per_step": busy_us / 1e3 / n_steps if device.type == "cuda" else None,
        "device_ops_per_step": len(device_intervals) / n_steps if device.type == "cuda" else None,  # kernels, copies
        "gpu_busy_fraction": (busy_us / 1e6) / wall_s if device.type == "cuda" else None,
        "phases_ms_per_step": phases,
        "top_host_ops": top("self_cpu_time_total"),
        "top_device_ops": top("self_device_time_total", device_top) if device.type == "cuda" else [],
    }


# ------------------------------------------------------------------------------------------------------------ plan
@dataclass
class Case:
    model: str
    l_max: int
    n_atoms: int
    mode: str
    patched: bool
    group: str
    profile: bool = False


@dataclass
class Plan:
    cases: List[Case] = field(default_factory=list)

    def add(self, group: str, models, lmaxes, sizes, modes, profile: bool = False) -> None:
        seen = {(c.model, c.l_max, c.n_atoms, c.mode, c.patched) for c in self.cases}
        for mode in modes:
            for model in models:
                for l_max in lmaxes:
                    for n in sizes:  # stock and patched of one size next to each other: timed interleaved
                        for patched in (False, True):
                            key = (model, l_max, size_for(n), mode, patched)
                            if key not in seen:
                                seen.add(key)
                                self.cases.append(Case(model, l_max, size_for(n), mode, patched, group, profile))


def _ints(text: str) -> List[int]:
    return [int(v) for v in text.split(",") if v]


def make_plan(args) -> Plan:
    modes = [m for m in args.modes.split(",") if m]
    for m in modes:
        if m not in MODES:
            raise SystemExit(f"unknown mode {m!r}; choose from {sorted(MODES)}")
    models = [m for m in args.models.split(",") if m]
    cheap = [m for m in modes if m not in SETUP_COST_S]
    costly = [m for m in modes if m in SETUP_COST_S]
    plan = Plan()
    if args.quick:
        plan.add("headline", models[:1], [2], [QUICK_HEADLINE["n_atoms"]], modes, profile=True)
        plan.add("l_max", models, [1, 2], [QUICK_HEADLINE["n_atoms"]], [m for m in ("ours-fast",) if m in modes])
        plan.add("size", models[:1], [2], [32, 108], [m for m in ("ours-fast",) if m in modes])
        return plan
    head = HEADLINE["n_atoms"]
    # 1. the reference system, every cheap mode, with a profile
    plan.add("headline", ["nequip"] if "nequip" in models else models[:1], [2], [head], cheap, profile=True)
    lmaxes, sizes = _ints(args.lmax), _ints(args.sizes)
    # 2. l_max 1..4, both architectures, at the reference size
    plan.add("l_max", models, lmaxes, [head], [m for m in ("ours-fast", "nequip-matscipy") if m in cheap])
    # 3. system size ~100 .. >= 10,000 atoms at l_max 2
    plan.add("size", models, [2], sizes, [m for m in ("nequip-matscipy", "ours-fast") if m in cheap])
    # 4. the rest of the cheap modes on the l_max sweep
    plan.add("l_max", models, lmaxes, [head], cheap)
    # 5. compiled modes (expensive setup): headline system first, then the size sweep with the same compiled model
    lmax_sweep = _ints(args.compiled_lmax or "")  # the compiled modes' l_max sweep at the reference size
    if args.compiled_sizes:  # only these sizes (and the l_max sweep), every model: a targeted re-measurement
        # 'none': the l_max sweep alone (each compiled model costs minutes: no l_max 2 model that is not asked for)
        sizes = [] if args.compiled_sizes == "none" else _ints(args.compiled_sizes)
        for mode in costly:
            plan.add("compiled", models, lmax_sweep, [head], [mode])
            plan.add("compiled", models, [2], sizes, [mode])
        for case in plan.cases:  # the reference system of each compiled mode gets its GPU-busy profile here too
            case.profile = case.profile or (
                case.group == "compiled" and (case.l_max, case.n_atoms) == (2, size_for(head))
            )
        return plan
    for mode in costly:
        plan.add("compiled", ["nequip"] if "nequip" in models else models[:1], [2], [head], [mode], profile=True)
    for mode in costly:  # sizes before l_max: the l_max 2 model compiled for the headline serves them
        plan.add("compiled", models, [2], [head, 108, 10976], [mode])
    for mode in costly:
        plan.add("compiled", models, lmax_sweep, [head], [mode])
    return plan


# ------------------------------------------------------------------------------------------------------------ run
def resolve_device_name(device: str) -> str:
    from md_plugin.device import resolve_device

    return resolve_device(device).type


def versions() -> Dict[str, Optional[str]]:
    from importlib import metadata

    out: Dict[str, Optional[str]] = {"python": platform.python_version(), "torch": torch.__version__}
    for dist in ("triton", "e3nn", "nequip", "nequip-allegro", "ase", "vesin", "vesin-torch", "matscipy", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    out["cuda"] = torch.version.cuda
    return out


def device_info(device: torch.device) -> Dict[str, Any]:
    info: Dict[str, Any] = {"type": device.type, "name": platform.processor() or platform.machine()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(name=p.name, memory_gib=round(p.total_memory / 2**30, 1), sm_count=p.multi_processor_count)
    else:
        info["threads"] = torch.get_num_threads()
    return info


def git_commit() -> Optional[str]:
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class Results:
    """The JSON document, rewritten (atomically) after every change."""

    def __init__(self, path: str, meta: Dict[str, Any]) -> None:
        self.path = path
        self.doc: Dict[str, Any] = {"schema": SCHEMA, "meta": meta, "cases": [], "profiles": [], "complete": False}
        self.flush()

    def flush(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.doc, f, indent=1, default=float)
        os.replace(tmp, self.path)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    import logging
    import warnings

    level = logging.root.manager.disable
    logging.disable(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            logging.disable(level)


def run(args) -> Dict[str, Any]:
    from md_plugin.device import resolve_device
    from md_plugin.hook import sh_backend_of

    device = resolve_device(args.device)
    torch.set_default_dtype(torch.float64)  # nequip's from_ase builds positions in the default dtype
    os.makedirs(args.out, exist_ok=True)
    plan = make_plan(args)
    meta = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device_info(device),
        "versions": versions(),
        "git_commit": git_commit(),
        "argv": sys.argv[1:],
        "quick": bool(args.quick),
        "budget_s": args.budget_s,
        "timestep_fs": TIMESTEP_FS,
        "model_dtype": "float64",
        "r_max": R_MAX,
        "models": {
            "nequip": "NequIPGNNModel, 2 layers, 16 features, parity, untrained (seed 1234)",
            "allegro": "AllegroModel, 2 layers, 16 scalar / 8 tensor features, Bessel embed, untrained (seed 1234)",
            "allegro-uncoupled": "the allegro model with tp_path_channel_coupling=False (fits l_max 4 in memory)",
        },
        "system": "rattled fcc Cu (a=3.61 Å, rattle 0.05 Å + 0.01 Å per call), cubic supercell",
        "modes": MODES,
        "headline": QUICK_HEADLINE if args.quick else HEADLINE,
        "planned_cases": len(plan.cases),
        # SH of l_max <= sh_fuse_lmax traced as fusable ops in every compiled mode: before 2026-12-01 (no such key)
        # only torch.export (ours-aoti) did so, while ours-compile / ours-graph, traced by make_fx, ran the op
        "sh_fusion_in_make_fx": True,
    }
    results = Results(os.path.join(args.out, "md_step.json"), meta)
    t_begin = time.perf_counter()
    deadline = t_begin + args.budget_s
    workdir = tempfile.mkdtemp(prefix="md_step_")
    calcs: Dict[Tuple, Any] = {}  # (mode, model, l_max, patched) -> calculator, reused across sizes
    setup_s: Dict[Tuple, float] = {}
    failed_setups: Dict[Tuple, str] = {}
    reference: Dict[Tuple, Dict[str, Any]] = {}  # (model, l_max, n_atoms) -> energy/forces of the first case run

    def record(rec: Dict[str, Any]) -> None:
        rec["elapsed_s"] = time.perf_counter() - t_begin
        results.doc["cases"].append(rec)
        results.flush()
        if args.verbose:
            _print_case(rec)

    def failed(rec: Dict[str, Any], ckey: Tuple, err: Exception) -> None:
        msg = f"{type(err).__name__}: {err}".strip()[:2000]
        rec.update(status="failed", error=msg, traceback=traceback.format_exc()[-4000:])
        if ckey not in calcs:
            failed_setups[ckey] = msg
        calcs.pop(ckey, None)
        if device.type == "cuda":
            torch.cuda.empty_cache()

    cases = plan.cases
    i = 0
    while i < len(cases):
        # the stock case and its patched twin (same model, l_max, size, mode) are timed together, interleaved
        group = cases[i : i + 2] if i + 1 < len(cases) and _twins(cases[i], cases[i + 1]) else cases[i : i + 1]
        i += len(group)
        # the budget decides for the pair: a stock build whose patched twin is then skipped is time wasted
        remaining = deadline - time.perf_counter()
        need = setup_need(group, calcs, setup_s) + 1.0
        if remaining < need:
            for case in group:
                rec = asdict(case)
                rec.update(
                    status="skipped",
                    reason=f"time budget ({args.budget_s:.0f} s) left {remaining:.0f} s, setup needs {need:.0f} s",
                )
                record(rec)
            continue
        live = []  # (rec, ckey, atoms, pool, warmup) of the cases set up for timing
        for case in group:
            rec: Dict[str, Any] = asdict(case)
            ckey = (case.mode, case.model, case.l_max, case.patched)
            if ckey in failed_setups:
                rec.update(status="failed", error=failed_setups[ckey], stage="setup")
                record(rec)
                continue
            try:
                with _quiet():
                    if ckey not in calcs:
                        spec = (case.model, case.l_max, case.patched)
                        calc, s = make_calculator(case.mode, spec, device, args, workdir)
                        # at most the stock/patched pair of one (mode, model, l_max) alive: device memory stays bounded
                        for other in [k for k in calcs if k[:3] != ckey[:3]]:
                            del calcs[other]
                        calcs[ckey], setup_s[ckey] = calc, s
                        rec["setup_s"] = s
                    atoms = fcc_cu(case.n_atoms, seed=7)
                    atoms.calc = calcs[ckey]
                    pool = PositionPool(atoms, seed=case.n_atoms)
                    warmup = args.warmup + (1 if case.mode in SETUP_COST_S else 0)
                live.append((case, rec, ckey, atoms, pool, warmup))
            except Exception as err:  # record and go on: one mode failing must not abort the run
                failed(rec, ckey, err)
                record(rec)
        if not live:
            continue
        try:
            with _quiet():
                timed = time_interleaved(
                    [(a, p, w) for _, _, _, a, p, w in live], device, args.min_reps, args.max_reps, args.min_time_s
                )
        except Exception as err:
            for _, rec, ckey, *_ in live:
                failed(rec, ckey, err)
                record(rec)
            continue
        for (case, rec, ckey, atoms, pool, _), (times, first) in zip(live, timed):
            try:
                calc = calcs[ckey]
                with _quiet():
                    # numbers check: every mode and variant at the same positions as the first one run for this system
                    atoms.set_positions(pool.positions[0])
                    forces = atoms.get_forces()
                    energy = float(atoms.get_potential_energy())
                    sh = getattr(calc, "sh_backend", None) or sh_backend_of(calc.model, device)
                    fuse = calc.built_sh_fuse_lmax
                    n_edges = _edge_count(atoms)
                    ref = reference.setdefault(
                        (case.model, case.l_max, case.n_atoms), {"energy": energy, "forces": forces}
                    )
                    scale = max(float(np.abs(ref["forces"]).max()), 1e-12)
                    diff = max(
                        abs(energy - ref["energy"]) / max(abs(ref["energy"]), 1e-12),
                        float(np.abs(forces - ref["forces"]).max()) / scale,
                    )
                t = np.asarray(times)
                med = float(np.median(t))
                rec.update(
                    status="ok",
                    n_edges=n_edges,
                    sh_backend=sh,
                    sh_fuse_lmax=fuse,
                    repeats=int(t.size),
                    interleaved_with=len(live) - 1,
                    ms_median=med * 1e3,
                    ms_mean=float(t.mean()) * 1e3,
                    ms_min=float(t.min()) * 1e3,
                    ms_std=float(t.std()) * 1e3,
                    first_call_ms=first * 1e3 if first is not None else None,
                    ns_per_day=ns_per_day(med),
                    rel_diff_vs_reference=diff,
                )
                if case.profile and time.perf_counter() < deadline:
                    with _quiet():
                        prof = profile_calls(calc, atoms, pool, device, n_steps=args.profile_steps)
                    results.doc["profiles"].append(
                        {**{k: rec[k] for k in ("model", "l_max", "n_atoms", "mode", "patched")}, **prof}
                    )
                    rec["gpu_busy_fraction"] = prof["gpu_busy_fraction"]
            except Exception as err:  # record and go on: one mode failing must not abort the run
                failed(rec, ckey, err)
            record(rec)
    results.doc["complete"] = True
    results.doc["total_s"] = time.perf_counter() - t_begin
    results.flush()
    return results.doc


def _fuse_lmax(model: torch.nn.Module) -> Optional[int]:
    """The largest ``fuse_lmax`` of the model's equitriton SH modules (None for a stock model): under torch.compile
    and export, SH up to that l_max are traced as fusable ops instead of the custom op (``md_plugin.patch_model``)."""
    from md_plugin.hook import is_equitriton_sh

    found = [int(m.fuse_lmax) for m in model.modules() if is_equitriton_sh(m)]
    return max(found) if found else None


def setup_need(group: Sequence[Case], built: Iterable[Tuple], setup_s: Dict[Tuple, float]) -> float:
    """Seconds of setup the group's cases still need: each one not built yet (``built`` holds calculator keys
    (mode, model, l_max, patched)) costs the larger of its mode's prior (SETUP_COST_S) and the slowest setup of
    that mode measured so far in this run (``setup_s``, same keys). Cheap modes cost nothing."""
    built = set(built)
    need = 0.0
    for case in group:
        prior = SETUP_COST_S.get(case.mode)
        if prior is None or (case.mode, case.model, case.l_max, case.patched) in built:
            continue
        need += max([prior] + [s for k, s in setup_s.items() if k[0] == case.mode])
    return need


def _twins(a: Case, b: Case) -> bool:
    """Whether two cases are the stock and patched variants of one (model, l_max, size, mode)."""
    return (a.model, a.l_max, a.n_atoms, a.mode) == (b.model, b.l_max, b.n_atoms, b.mode) and a.patched != b.patched


def _edge_count(atoms) -> Optional[int]:
    calc = atoms.calc
    fast = getattr(calc, "_fast", None)
    try:
        if fast is not None:
            return int(fast.data_from_atoms(atoms)["edge_index"].shape[1])
        return int(calc.atoms_to_data(atoms)["edge_index"].shape[1])
    except Exception:  # an edge count is informative only
        return None


def _print_case(rec: Dict[str, Any]) -> None:
    variant = "patched" if rec["patched"] else "stock  "
    tag = f"{rec['model']:8s} l{rec['l_max']} N={rec['n_atoms']:6d} {rec['mode']:16s} {variant}"
    if rec["status"] == "ok":
        print(
            f"{tag} {rec['ms_median']:9.2f} ms  {rec['ns_per_day']:8.3f} ns/day  [{rec['elapsed_s']:.0f} s]", flush=True
        )
    else:
        print(f"{tag} {rec['status']}: {rec.get('error', rec.get('reason', ''))[:150]}", flush=True)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", required=True, help="directory for md_step.json")
    p.add_argument("--device", default="auto", help="auto | cuda | xpu | cpu")
    p.add_argument("--quick", action="store_true", help="small sizes and few repeats (CI smoke test)")
    p.add_argument("--models", default="nequip,allegro", help="nequip, allegro, allegro-uncoupled (comma-separated)")
    p.add_argument("--lmax", default="1,2,3,4", help="the l_max sweep (reference size, cheap modes)")
    p.add_argument("--sizes", default=f"108,500,{HEADLINE['n_atoms']},10976", help="the size sweep (l_max 2); '' skips")
    p.add_argument("--modes", default=None, help=f"comma-separated subset of {','.join(MODES)}")
    p.add_argument("--budget-s", type=float, default=None, help="time budget for the cases (default 150, quick 60)")
    p.add_argument("--min-reps", type=int, default=None)
    p.add_argument("--max-reps", type=int, default=None)
    p.add_argument("--min-time-s", type=float, default=None, help="time each case at least this long")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls per case (first one timed separately)")
    p.add_argument("--profile-steps", type=int, default=None)
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend for ours-compile")
    p.add_argument(
        "--compiled-sizes",
        default=None,
        help="comma-separated atom counts: the compiled modes at these sizes only ('none': the --compiled-lmax "
        "sweep only)",
    )
    p.add_argument(
        "--compiled-lmax",
        default=None,
        help="comma-separated l_max: the compiled modes also at these l_max (reference size); after the default "
        "size sweep, before the --compiled-sizes cases",
    )
    p.add_argument("-q", "--quiet", dest="verbose", action="store_false")
    args = p.parse_args(argv)
    quick = args.quick
    if args.modes is None:
        cuda = resolve_device_name(args.device) == "cuda"
        args.modes = ",".join(m for m in MODES if not (quick and m in SETUP_COST_S) and (cuda or m not in CUDA_ONLY))
    defaults = dict(
        budget_s=(120.0, 150.0),
        min_reps=(2, 5),
        max_reps=(2, 100),
        min_time_s=(0.0, 0.4),
        warmup=(1, 2),
        profile_steps=(2, 5),
    )
    for name, (q, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, q if quick else full)
    doc = run(args)
    ok = sum(c["status"] == "ok" for c in doc["cases"])
    out = os.path.join(args.out, "md_step.json")
    print(f"md_step: {ok}/{len(doc['cases'])} cases ok in {doc['total_s']:.0f} s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
