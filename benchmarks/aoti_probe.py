"""Does AOTInductor work on this CUDA machine at all, for a model that is neither nequip's nor ours?

    python -X faulthandler benchmarks/aoti_probe.py f32|f64 [same|fresh|dlopen] [inductor.key=value ...]

Exports a 3-layer MLP, compiles it with torch._inductor.aoti_compile_and_package, loads it back with
aoti_load_package and compares with eager. `same` loads in the compiling process (what nequip-compile does to check
its artifact); `fresh` loads in a new Python process that never compiled anything (what a deployment does), after
listing the shared libraries of the package's .so that the dynamic loader cannot find. On the lent H200 (torch
2.11.0+cu130, CUDA 13.0, driver 580.159.04, 2026-11-30) the `same` load segfaults for float32 and float64 alike,
so the CUDA AOTInductor crash of nequip-compile (docs/md_performance_notes.md) is not the models'. Its cause, found
with `dlopen` and the C++ stack trace: the machine's CXX=/opt/gcc/bin/g++ builds a wrapper .so that crashes in
std::regex; with CXX=/usr/bin/g++ the artifact loads and matches eager.

`dlopen` prints the package's `.so` files' `ldd` and loads them with ctypes first (is it the shared object's own
initialisers that crash, or torch's model container built on it?), then loads the package. Each `key=value` is set in
torch._inductor.config before compiling (for example aot_inductor.embed_kernel_binary=True), so one device call can
try several compile options. torch's C++ stack trace is printed on a fatal signal where torch offers that.
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


def ldd_lines(package: str, only_missing: bool = True) -> list[str]:
    """`ldd` lines for every shared object inside the package: those reading 'not found', or all of them."""
    out = []
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(package) as z:
        for name in z.namelist():
            if name.endswith(".so"):
                path = z.extract(name, tmp)
                ldd = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
                out += [f"{name}: {ln.strip()}" for ln in ldd.splitlines() if not only_missing or "not found" in ln]
    return out


def _set_inductor_config(assignments: list[str]) -> None:
    """`a.b=value` -> torch._inductor.config.a.b = value (Python literal, else the string)."""
    import ast

    for item in assignments:
        key, _, raw = item.partition("=")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        *parents, leaf = key.split(".")
        obj = torch._inductor.config
        for name in parents:
            obj = getattr(obj, name)
        if not hasattr(obj, leaf):
            raise SystemExit(f"torch._inductor.config has no {key!r}")
        setattr(obj, leaf, value)
        print(f"inductor config {key} = {value!r}", flush=True)


def _dlopen_all(package: str) -> None:
    """ctypes-load every .so of the package (torch already loaded, so libtorch*.so resolve)."""
    import ctypes

    tmp = tempfile.mkdtemp()
    with zipfile.ZipFile(package) as z:
        for name in z.namelist():
            if name.endswith(".so"):
                ctypes.CDLL(z.extract(name, tmp), mode=ctypes.RTLD_GLOBAL)
                print("dlopen ok:", name, flush=True)


def main() -> None:
    dt = {"f32": torch.float32, "f64": torch.float64}[sys.argv[1] if len(sys.argv) > 1 else "f64"]
    where = sys.argv[2] if len(sys.argv) > 2 else "same"
    if hasattr(torch._C, "_set_print_stack_traces_on_fatal_signal"):
        torch._C._set_print_stack_traces_on_fatal_signal(True)
    _set_inductor_config(sys.argv[3:])
    m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.SiLU(), torch.nn.Linear(8, 1)).to("cuda", dt)
    x = torch.randn(5, 4, device="cuda", dtype=dt)
    ep = torch.export.export(m, (x,))
    path = torch._inductor.aoti_compile_and_package(
        ep, package_path=f"/tmp/aoti_probe_{dt}_{where}_{abs(hash(tuple(sys.argv[3:])))}.pt2"
    )
    print("compiled", path, flush=True)
    if where == "fresh":
        print("unresolved libraries:", ldd_lines(path) or "none", flush=True)
        proc = subprocess.run(
            [sys.executable, "-X", "faulthandler", "-c", LOAD, path, str(dt).split(".")[-1]],
            env=dict(os.environ),
            capture_output=True,
            text=True,
        )
        print(proc.stdout + proc.stderr[-3000:], f"fresh-process load rc {proc.returncode}", flush=True)
        return
    if where == "dlopen":
        print("\n".join(["ldd:"] + ldd_lines(path, only_missing=False)), flush=True)
        _dlopen_all(path)
    runner = torch._inductor.aoti_load_package(path)
    print("loaded", flush=True)
    print("max |aoti - eager|", (runner(x) - m(x)).abs().max().item(), flush=True)


if __name__ == "__main__":
    main()
