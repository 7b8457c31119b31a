"""Compile time of the generated Triton kernels, stage by stage, for an sm_90 target without a GPU.

    python benchmarks/compile_time.py                                   # l sets 0-12, 12,5 and 0-8; all directions
    python benchmarks/compile_time.py --lsets "0-12" --directions double_backward --timeout 900
    python benchmarks/compile_time.py --markdown docs/compile_time.md  # also write the table

Each (l set, direction) compiles in a child process (`triton.compile` of an `ASTSource` for
GPUTarget("cuda", 90, 32): Triton's frontend, MLIR passes, LLVM and the ptxas that ships in the wheel run on the
CPU), with exactly the constexprs and num_warps that equitriton/kernels/launch.py passes (tuned.json), and Triton's
cache bypassed. Reported per stage, in seconds:

    ast     Python AST -> TTIR (Triton's code generator: constexpr folding, static_range unrolling, inlining)
    ttir    TTIR optimisation passes          ttgir  TTIR -> TTGIR + GPU passes
    llir    TTGIR -> LLVM IR + LLVM -O3       ptx    LLVM NVPTX backend        cubin  ptxas

and sizes: TTIR/LLVM/PTX line counts, registers and spill bytes (ptxas -v, which Triton runs anyway). A child that
runs past --timeout is killed; the stages it finished are still reported. Times are single-threaded CPU time
on this machine, not the GPU host's; ratios between l sets and before/after a change are what carry over.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

from warm_kernels import parse_lset  # same l-set syntax as the pre-compile script; its folder is on sys.path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ["ast", "ttir", "ttgir", "llir", "ptx", "cubin"]
DIRECTIONS = ["forward", "backward", "double_backward"]
PTRS = {"forward": ["X", "OUT"], "backward": ["X", "G", "GX"], "double_backward": ["X", "G", "W", "GG", "GX"]}
INTS = {
    "forward": ["N", "stride_n", "stride_c"],
    "backward": ["N", "stride_n", "stride_c"],
    "double_backward": ["N", "stride_n", "stride_c", "stride_wn", "stride_wc"],
}


def _count(text) -> int:
    return text.count("\n") + 1 if isinstance(text, str) else 0


def child(direction: str, lset: str, dtype_name: str, normalize: bool, normalization: int, skip_coalesce=False) -> None:
    """Compile one kernel; print one JSON line per finished stage (so a killed child still reports)."""
    sys.path.insert(0, ROOT)
    os.environ["TRITON_ALWAYS_COMPILE"] = "1"
    import torch
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import CUDABackend
    from triton.compiler import compiler as tc

    from equitriton.kernels import launch

    ls = parse_lset(lset)
    dtype = getattr(torch, dtype_name)
    offs, o = [], 0
    for l in ls:
        offs.append(o)
        o += 2 * l + 1
    cfg = launch.config(direction, max(ls), dtype)
    meta = launch.meta(ls, offs, o, normalize, normalization, dtype, cfg)
    num_warps = meta.pop("num_warps")
    kernel = (
        launch.forward_kernel(meta) if direction == "forward" else getattr(launch.kernels, f"sh_{direction}_kernel")
    )
    ptr = "*fp64" if dtype == torch.float64 else "*fp32"
    signature = {a: ptr for a in PTRS[direction]}
    signature.update({a: "i32" for a in INTS[direction]})
    signature.update({k: "constexpr" for k in meta})
    # pointers from torch allocations are 16-byte aligned, as the launcher specialises them
    attrs = {(i,): [["tt.divisibility", 16]] for i in range(len(PTRS[direction]))}
    src = triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs=meta, attrs=attrs)

    def emit(**kv):
        print(json.dumps(kv), flush=True)

    emit(event="config", cfg={k: v for k, v in meta.items() if k not in ("LS", "OFFS")}, num_warps=num_warps)

    make_ir = tc.ASTSource.make_ir

    def timed_make_ir(self, *a, **k):
        t = time.perf_counter()
        mod = make_ir(self, *a, **k)
        emit(event="stage", stage="ast", s=time.perf_counter() - t, lines=_count(str(mod)))
        return mod

    tc.ASTSource.make_ir = timed_make_ir
    add_stages = CUDABackend.add_stages
    sizes = {}

    def timed_add_stages(self, stages, options, language):
        add_stages(self, stages, options, language)
        for name, fn in list(stages.items()):

            def wrapped(src, metadata, fn=fn, name=name):
                t = time.perf_counter()
                out = fn(src, metadata)
                dt = time.perf_counter() - t
                lines = _count(out) if isinstance(out, str) else (_count(str(out)) if name != "cubin" else 0)
                sizes[name] = lines
                if name == "cubin":
                    emit(event="stage", stage=name, s=dt, bytes=len(out), sha=hashlib.sha256(out).hexdigest()[:16])
                else:
                    emit(event="stage", stage=name, s=dt, lines=lines)
                return out

            stages[name] = wrapped

    CUDABackend.add_stages = timed_add_stages
    t0 = time.perf_counter()
    os.environ.setdefault("TRITON_CACHE_DIR", tempfile.mkdtemp(prefix="ct_cache_"))
    # ptxas's own log (-v) goes to Triton's temporary log file; dump it to stdout for the parent to parse
    from triton import knobs

    knobs.nvidia.dump_ptxas_log = True
    # --skip-coalesce: the launcher's own switch (launch.compiling, EQUITRITON_SKIP_COALESCE), as a launch uses it
    with launch.compiling(direction, cfg, enabled=skip_coalesce):
        compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})
    emit(event="done", total_s=time.perf_counter() - t0, shared=compiled.metadata.shared)


_PTXAS = re.compile(r"Used (\d+) registers")
_SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_STACK = re.compile(r"(\d+) bytes stack frame")


def run_one(direction, lset, dtype, normalize, normalization, timeout, skip_coalesce=False) -> dict:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        direction,
        lset,
        dtype,
        str(int(normalize)),
        str(normalization),
    ] + (["--skip-coalesce"] if skip_coalesce else [])
    res = {"direction": direction, "lset": lset, "dtype": dtype, "stages": {}, "sizes": {}, "timed_out": False}
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env).stdout
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        res["timed_out"] = True
    res["wall_s"] = time.perf_counter() - t0
    for line in out.splitlines():
        m = _PTXAS.search(line)
        if m:
            res["sizes"]["regs"] = int(m.group(1))
        m = _SPILL.search(line)
        if m:
            res["sizes"]["spill_st"], res["sizes"]["spill_ld"] = int(m.group(1)), int(m.group(2))
        m = _STACK.search(line)
        if m:
            res["sizes"]["stack"] = int(m.group(1))
        if not line.startswith("{"):
            continue
        ev = json.loads(line)
        if ev["event"] == "stage":
            res["stages"][ev["stage"]] = ev["s"]
            if "sha" in ev:
                res["cubin_sha256"] = ev["sha"]
            if "lines" in ev:
                res["sizes"][ev["stage"] + "_lines"] = ev["lines"]
        elif ev["event"] == "config":
            res["cfg"] = ev["cfg"]
            res["num_warps"] = ev["num_warps"]
    return res


def python_lines(direction: str) -> int:
    """Lines of the generated kernel's Python source (the same file for every l set; constexpr guards prune it)."""
    sys.path.insert(0, ROOT)
    from equitriton.generated import triton_kernels as k

    return len(getattr(k, f"sh_{direction}_kernel").src.splitlines())


def table(results: list[dict]) -> str:
    head = (
        ["l set", "direction", "BLOCK/warps"]
        + [f"{s} s" for s in STAGES]
        + ["total s", "TTIR ops lines", "LLVM lines", "PTX lines", "regs", "spill st/ld B", "cubin sha256[:16]"]
    )
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        st = r["stages"]
        sz = r["sizes"]
        cfg = r.get("cfg", {})
        cells = [r["lset"], r["direction"], f"{cfg.get('BLOCK', '?')}/{r.get('num_warps', '?')}"]
        cells += [f"{st[s]:.1f}" if s in st else ("killed" if r["timed_out"] else "-") for s in STAGES]
        total = sum(st.values())
        cells.append(f"{total:.1f}" + (" (killed)" if r["timed_out"] else ""))
        cells += [
            str(sz.get("ttir_lines", "-")),
            str(sz.get("llir_lines", "-")),
            str(sz.get("ptx_lines", "-")),
            str(sz.get("regs", "-")),
            f"{sz['spill_st']}/{sz['spill_ld']}" if "spill_st" in sz else "-",
            r.get("cubin_sha256", "-"),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    ap.add_argument("--lsets", default="0-12;12,5;0-8", help="';'-separated l sets, e.g. '0-12;12,5'")
    ap.add_argument("--directions", default=",".join(DIRECTIONS))
    ap.add_argument("--dtype", default="float64")
    ap.add_argument("--normalize", type=int, default=1)
    ap.add_argument("--normalization", type=int, default=1, help="0 integral, 1 component, 2 norm")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per kernel")
    ap.add_argument(
        "--skip-coalesce",
        action="store_true",
        help="compile as EQUITRITON_SKIP_COALESCE=1 launches do (no TritonGPUCoalesce pass)",
    )
    ap.add_argument("--json", help="write the results as JSON here")
    ap.add_argument("--markdown", help="write the table (with date, versions, machine) here")
    a = ap.parse_args()
    if a.child:
        d, lset, dtype, nz, nm = a.child
        child(d, lset, dtype, bool(int(nz)), int(nm), a.skip_coalesce)
        return
    import triton

    results = []
    for lset in a.lsets.split(";"):
        for d in a.directions.split(","):
            r = run_one(d, lset, a.dtype, bool(a.normalize), a.normalization, a.timeout, a.skip_coalesce)
            results.append(r)
            print(json.dumps(r), flush=True)
    info = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "triton": triton.__version__,
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, {platform.processor() or ''}",
        "python_lines": {d: python_lines(d) for d in a.directions.split(",")},
    }
    text = table(results)
    print(text)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"info": info, "results": results}, f, indent=1)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(
                f"{info['date']}; triton {info['triton']}; {info['machine']}; dtype {a.dtype}, "
                f"normalize={bool(a.normalize)}, normalization={a.normalization}; target sm_90; "
                f"skip_coalesce={a.skip_coalesce}; generated kernel source lines {info['python_lines']}\n\n"
                f"{text}\n"
            )


if __name__ == "__main__":
    main()
