"""SH traced as fusable ops inside a consumer like Allegro's: GPU time of one compiled energy + gradient call.

Allegro's SH (l_max 2) feed one elementwise product with the radial embedding, (edges, 9) x (edges, channels) ->
(edges, channels, 9). Under torch.compile Inductor fuses the SH polynomials into that product and their backward
into the reduction that makes dL/dx, recomputing them per channel; so the ops a traced SH form emits cost GPU time
there, where a standalone SH benchmark sees none. Side by side in one process, each compiled on its own,
traced as nequip traces its compiled step (make_fx, then torch.compile), interleaved rounds of CUDA-event timing,
values checked against e3nn first:

- `e3nn`: e3nn's SphericalHarmonics;
- `ours-fused`: equitriton's module with fuse_lmax 2 (what md_plugin.patch_model gives Allegro): the traced form of
  the generated polynomials;
- `ours-fused-rows`: the same, with the traced direction of before 2026-12-01 (a contiguous (3, n) copy and |x| from
  its squares), to measure what the current traced form changed;
- `ours-op`: fuse_lmax 1, the custom op (our Triton kernels, opaque to Inductor).

    python benchmarks/fused_sh.py --out OUTDIR      # fused_sh.json and fused_sh.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
from torch.fx.experimental.proxy_tensor import make_fx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.shbench.results import device_info, git_state, now_utc, versions  # noqa: E402
from equitriton.generated import torch_fallback  # noqa: E402
from equitriton.harmonics import SphericalHarmonics  # noqa: E402

VARIANTS = ("e3nn", "ours-fused", "ours-fused-rows", "ours-op")


def _direction_rows(xyz, normalize: bool, eps: float):
    # the traced direction before 2026-12-01: contiguous rows, |x| from their squares
    u = xyz.t().contiguous()
    if not normalize:
        return u, u, u
    x, y, z = u.unbind(0)
    r = torch.sqrt(x * x + y * y + z * z)
    d = torch.clamp_min(r, eps)
    return u / d, d, r < eps


def step_fn(variant: str, lmax: int, example):
    """The compiled energy + gradient of an Allegro-like consumer of the SH of `variant`, traced as nequip traces its
    compiled step (make_fx, symbolic shapes, the backward unrolled) and given to torch.compile(dynamic=True)."""
    if variant == "e3nn":
        from e3nn import o3

        sh = o3.SphericalHarmonics(o3.Irreps.spherical_harmonics(lmax), normalize=True, normalization="component")
    else:
        sh = SphericalHarmonics(list(range(lmax + 1)), normalize=True, normalization="component")
        sh.fuse_lmax = 1 if variant == "ours-op" else lmax

    def step(vec, rad, w):
        vec = vec.detach().requires_grad_()
        y = sh(vec)
        energy = (y[:, None, :] * rad[:, :, None] * w).sum()
        (grad,) = torch.autograd.grad(energy, vec)
        return energy, grad

    saved = torch_fallback._direction_traced
    if variant == "ours-fused-rows":
        torch_fallback._direction_traced = _direction_rows
    try:
        gm = make_fx(step, tracing_mode="symbolic")(*example)
    finally:
        torch_fallback._direction_traced = saved
    return torch.compile(gm, dynamic=True)


def time_ms(fn, args, reps: int) -> list[float]:
    start = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    end = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for i in range(reps):
        start[i].record()
        fn(*args)
        end[i].record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) for s, e in zip(start, end)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--edges", default="79180,424000", help="edge counts (2,048 and 10,976 Cu atoms at r_max 4.5 Å)")
    p.add_argument("--channels", default="8,16")
    p.add_argument("--lmax", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--reps", type=int, default=50)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("fused_sh.py times CUDA kernels: no CUDA device here")
    dev = torch.device("cuda")
    dtype = torch.float64
    cases = []
    for n_edges in [int(s) for s in args.edges.split(",")]:
        for channels in [int(s) for s in args.channels.split(",")]:
            g = torch.Generator(device=dev).manual_seed(0)
            inputs = (
                torch.randn(n_edges, 3, device=dev, dtype=dtype, generator=g),
                torch.randn(n_edges, channels, device=dev, dtype=dtype, generator=g),
                torch.randn(n_edges, channels, (args.lmax + 1) ** 2, device=dev, dtype=dtype, generator=g),
            )
            fns = {v: step_fn(v, args.lmax, inputs) for v in VARIANTS}
            ref = None
            for v, fn in fns.items():  # compile, and check each against e3nn before timing
                energy, grad = fn(*inputs)
                if ref is None:
                    ref = (energy, grad)
                scale = grad.abs().max().item()
                rel = max(
                    abs((energy - ref[0]).item()) / abs(ref[0].item()), (grad - ref[1]).abs().max().item() / scale
                )
                if not rel < 1e-10:
                    sys.exit(f"{v}: differs from e3nn by {rel:.1e} (relative) at {n_edges} edges")
            samples = {v: [] for v in VARIANTS}
            for _ in range(args.rounds):  # interleaved rounds: drifts of clock or host load hit every variant
                for v, fn in fns.items():
                    samples[v] += time_ms(fn, inputs, args.reps)
            row = {"edges": n_edges, "channels": channels, "l_max": args.lmax, "dtype": "float64"}
            row["ms_median"] = {v: statistics.median(s) for v, s in samples.items()}
            cases.append(row)
            print(n_edges, channels, {v: round(m, 4) for v, m in row["ms_median"].items()}, flush=True)
    doc = {
        "meta": {
            "date_utc": now_utc(),
            "device": device_info(dev),
            "versions": versions(),
            "git": git_state(Path(__file__).resolve().parent.parent),
            "argv": sys.argv[1:],
            "what": __doc__.split("\n\n")[0],
        },
        "cases": cases,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fused_sh.json").write_text(json.dumps(doc, indent=1))
    lines = ["| edges | channels | " + " | ".join(VARIANTS) + " |", "|---|---|" + "---|" * len(VARIANTS)]
    for c in cases:
        ms = c["ms_median"]
        lines.append(f"| {c['edges']:,} | {c['channels']} | " + " | ".join(f"{ms[v]:.4f}" for v in VARIANTS) + " |")
    (out / "fused_sh.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
