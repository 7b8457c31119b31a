"""Does AOTInductor work on this CUDA machine at all, for a model that is neither nequip's nor ours?

    python -X faulthandler benchmarks/aoti_probe.py f32|f64

Exports a 3-layer MLP, compiles it with torch._inductor.aoti_compile_and_package, loads it back with
aoti_load_package and compares with eager. On the lent H200 (torch 2.11.0+cu130, CUDA 13.0, driver 580.159.04,
2026-11-30) the load segfaults for float32 and float64 alike: the CUDA AOTInductor crash of nequip-compile
(docs/md_performance_notes.md) is this machine's torch/CUDA stack, not the models.
"""

import sys

import torch


def main() -> None:
    dt = {"f32": torch.float32, "f64": torch.float64}[sys.argv[1] if len(sys.argv) > 1 else "f64"]
    m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.SiLU(), torch.nn.Linear(8, 1)).to("cuda", dt)
    x = torch.randn(5, 4, device="cuda", dtype=dt)
    ep = torch.export.export(m, (x,))
    path = torch._inductor.aoti_compile_and_package(ep, package_path=f"/tmp/aoti_probe_{dt}.pt2")
    print("compiled", path, flush=True)
    runner = torch._inductor.aoti_load_package(path)
    print("loaded", flush=True)
    print("max |aoti - eager|", (runner(x) - m(x)).abs().max().item(), flush=True)


if __name__ == "__main__":
    main()
