"""Stock vs patched NequIP step on CPU, interleaved call by call, with the time spent in the model's SH module.

    python benchmarks/cpu_step_ab.py [--atoms-repeat 2] [--calls 400] [--threads 1] [--out FILE.json]

Loads the shipped default model twice through `EquiTritonCalculator` (patch=False / patch=True), alternates single
energy+forces calls between them (ABBA), and times with forward hooks the spherical-harmonics module inside each
model (forward only: its backward runs inside the autograd engine). Also times the same SH modules alone on the
model's edge vectors, back to back ("warm") and after a burst of other torch work ("cold"), which is the state they
meet inside a model step. Prints a table and, with --out, writes JSON. Run it on a quiet machine: it measures.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import md_step as M  # noqa: E402  (its position pool and interleaved timer)


def _sh_module(model: torch.nn.Module) -> torch.nn.Module:
    for _, mod in model.named_modules():
        if type(mod).__name__ == "SphericalHarmonics":
            return mod
    raise RuntimeError("the model has no SphericalHarmonics module")


def _median_us(fn, reps: int, between=None) -> float:
    times = []
    for _ in range(reps):
        if between is not None:
            between()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def main(argv=None) -> int:
    from ase.build import bulk

    from md_plugin import EquiTritonCalculator, default_model_path

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--atoms-repeat", type=int, default=2, help="fcc Cu cubic cell repeated n x n x n (4 n^3 atoms)")
    p.add_argument("--calls", type=int, default=400)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.set_default_dtype(torch.float64)  # as md_step.py: nequip's from_ase builds positions in the default dtype
    atoms0 = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((a.atoms_repeat,) * 3)
    atoms0.rattle(0.05, seed=1)
    cpu = torch.device("cpu")
    variants = {"stock": False, "patched": True}
    calcs = {
        v: EquiTritonCalculator.from_saved_model(default_model_path(), device="cpu", patch=p)
        for v, p in variants.items()
    }
    sh_time = {v: [0.0, 0] for v in variants}
    edges = {}
    mods = {}
    for v, calc in calcs.items():
        mod = mods[v] = _sh_module(calc.model)

        def pre(m, inp, v=v):
            m._t0 = time.perf_counter()
            edges[v] = inp[0].detach().clone()

        def post(m, inp, out, v=v):
            sh_time[v][0] += time.perf_counter() - m._t0
            sh_time[v][1] += 1

        mod.register_forward_pre_hook(pre)
        mod.register_forward_hook(post)
    items = []
    for calc in calcs.values():
        atoms = atoms0.copy()
        atoms.calc = calc
        pool = M.PositionPool(atoms, seed=1)  # the same positions for both variants
        M.time_calls(atoms, pool, cpu, 10, 0, 0, 0.0)  # warm-up, outside the SH timing below
        items.append((atoms, pool, 0))
    sh_time = {v: [0.0, 0] for v in variants}
    timed = M.time_interleaved(items, cpu, a.calls, a.calls, 0.0)
    step = {v: times for v, (times, _) in zip(variants, timed)}
    # the SH modules alone on the model's edge vectors (requires_grad, as in the model)
    x = edges["stock"].requires_grad_(True)
    lin = [torch.nn.Linear(64, 64).double() for _ in range(30)]
    h = torch.randn(x.shape[0], 64, dtype=torch.float64)

    def other_work():
        y = h
        for layer in lin:
            y = torch.tanh(layer(y))

    for mod in mods.values():
        mod._forward_hooks.clear()
        mod._forward_pre_hooks.clear()
    alone = {
        v: {"warm_us": _median_us(lambda m=m: m(x), 400), "cold_us": _median_us(lambda m=m: m(x), 400, other_work)}
        for v, m in mods.items()
    }
    # our forward, layer by layer from the public module down to the generated TorchScript body (l set and settings
    # of the model's module): where the time goes when the caches are cold
    from equitriton import fallback, ops
    from equitriton.generated import torch_fallback as tf
    from equitriton.kernels import launch

    ours = mods["patched"]
    ls, normalize = list(ours._ls_list), ours.normalize
    nid = ops.NORMALIZATION_IDS[ours.normalization]
    offs, dim = launch.offsets(ls)
    f64 = launch.compute_f64(x.dtype, max(ls))
    xd = fallback._up(x.detach(), f64)  # what fallback.cpu_forward hands the bound body
    small = xd.shape[0] <= fallback._CPU_SMALL_ROWS["forward"][max(ls)]
    impl = fallback._bound(tf.forward, (ls, offs, dim, normalize, nid), f64, small)
    layers = {
        "module (public API)": lambda: ours(x),
        "ops.sh_eager (autograd.Function)": lambda: ops.sh_eager(x, ls, normalize, nid),
        "fallback.cpu_forward (fallback dispatch)": lambda: fallback.cpu_forward(xd, ls, normalize, nid),
        "bound body (fallback._bound)": lambda: impl(xd, None),
    }
    chain = {k: {"warm_us": _median_us(f, 400), "cold_us": _median_us(f, 400, other_work)} for k, f in layers.items()}
    res = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": a.threads,
        "n_atoms": len(atoms0),
        "n_edges": int(x.shape[0]),
        "calls": a.calls,
        "step_ms_median": {v: statistics.median(t) * 1e3 for v, t in step.items()},
        "patched_over_stock_step": statistics.median(step["patched"]) / statistics.median(step["stock"]),
        "sh_forward_in_model_us": {v: s / n * 1e6 for v, (s, n) in sh_time.items()},
        "sh_forward_alone_us": alone,
        "ours_forward_by_layer_us": chain,
    }
    print(json.dumps(res, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
