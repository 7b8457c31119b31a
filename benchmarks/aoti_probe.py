"""Does AOTInductor work on this CUDA machine at all, for a model that is neither nequip's nor ours?

    python -X faulthandler benchmarks/aoti_probe.py f32|f64 [same|fresh]

Exports a 3-layer MLP, compiles it with torch._inductor.aoti_compile_and_package, loads it back with
aoti_load_package and compares with eager. `same` loads in the compiling process (what nequip-compile does to check
its artifact); `fresh` loads in a new Python process that never compiled anything (what a deployment does), after
listing the shared libraries of the package's .so that the dynamic loader cannot find. On the lent H200 (torch
2.11.0+cu130, CUDA 13.0, driver 580.159.04, 2026-11-30) the `same` load segfaults for float32 and float64 alike:
the CUDA AOTInductor crash of nequip-compile (docs/md_performance_notes.md) is this machine's torch/CUDA stack, not
the models.
"""

import os
import subprocess
import sys
import tempfile
import zipfile

import torch

LOAD = """
import sys, torch
dt = getattr(torch, sys.argv[2])
runner = torch._inductor.aoti_load_package(sys.argv[1])
print("loaded", flush=True)
torch.manual_seed(0)
x = torch.randn(5, 4, device="cuda", dtype=dt)
print("ran, output shape", tuple(runner(x).shape), flush=True)
"""


def missing_libraries(package: str) -> list[str]:
    """`ldd` lines reading 'not found' for every shared object inside the package."""
    out = []
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(package) as z:
        for name in z.namelist():
            if name.endswith(".so"):
                path = z.extract(name, tmp)
                ldd = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
                out += [f"{name}: {ln.strip()}" for ln in ldd.splitlines() if "not found" in ln]
    return out


def main() -> None:
    dt = {"f32": torch.float32, "f64": torch.float64}[sys.argv[1] if len(sys.argv) > 1 else "f64"]
    where = sys.argv[2] if len(sys.argv) > 2 else "same"
    m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.SiLU(), torch.nn.Linear(8, 1)).to("cuda", dt)
    x = torch.randn(5, 4, device="cuda", dtype=dt)
    ep = torch.export.export(m, (x,))
    path = torch._inductor.aoti_compile_and_package(ep, package_path=f"/tmp/aoti_probe_{dt}_{where}.pt2")
    print("compiled", path, flush=True)
    if where == "fresh":
        print("unresolved libraries:", missing_libraries(path) or "none", flush=True)
        proc = subprocess.run(
            [sys.executable, "-X", "faulthandler", "-c", LOAD, path, str(dt).split(".")[-1]],
            env=dict(os.environ),
            capture_output=True,
            text=True,
        )
        print(proc.stdout + proc.stderr[-3000:], f"fresh-process load rc {proc.returncode}", flush=True)
        return
    runner = torch._inductor.aoti_load_package(path)
    print("loaded", flush=True)
    print("max |aoti - eager|", (runner(x) - m(x)).abs().max().item(), flush=True)


if __name__ == "__main__":
    main()
