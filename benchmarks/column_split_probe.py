"""Probe: the forward's output row written by several programs, each storing the columns of one range of l's.

docs/kernel_tuning.md item 19. The float64 l_max 12 forward stores 169 columns per row; as one 256-wide tile that
spills (item 8), as two tiles stored one after the other it reaches 71% of copy bandwidth, and in chunks stored as
their l's are made it is slower still (item 18). l_max 10 (121 columns, one 128-wide tile) reaches 92%. With
PARTS_AT the row is cut into ranges of whole l's (e.g. l = 0..10 | 11..12) and each range gets its own programs
(generated sh_forward_parts_kernel): program p handles rows block p // PARTS and stores only range p % PARTS, as
whole tiles, so the programs of one block of rows are neighbours and the memory sectors they share are written
close together in time ("interleaved"). To see whether that matters, the probe also runs a copy of the kernel on a
2-D grid (blocks of rows x ranges) in which every program of the first range runs before any of the next
("part-major", as separate launches per range would).

    python benchmarks/column_split_probe.py --sass          # sm_90 registers and spills per variant, no GPU needed
    python benchmarks/column_split_probe.py --out DIR       # on a CUDA machine: check, then time at N = 2^22
    TRITON_INTERPRET=1 python benchmarks/column_split_probe.py --check-only --device cpu
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import torch
import triton
import triton.testing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from roofline import sass_summary  # noqa: E402
from tune_kernels import copy_bandwidth, time_calls  # noqa: E402

from equitriton.generated import torch_fallback  # noqa: E402
from equitriton.kernels import launch  # noqa: E402

N_BIG = 2**22
# (l_max, dtype, PARTS_AT: the l's where each range after the first starts)
SPLITS = [
    (12, torch.float64, (11,)),  # 121 | 48 columns: tiles of 128 and 64
    (12, torch.float64, (8, 11)),  # 64 | 57 | 48: tiles of 64
    (12, torch.float64, (10,)),  # 100 | 69: tiles of 128 and 128
    (8, torch.float32, (7,)),  # 49 | 32: tiles of 64 and 32
    (8, torch.float32, (8,)),  # 64 | 17: tiles of 64 and 32
    (8, torch.float64, (7,)),  # 49 | 32
    (10, torch.float64, (9,)),  # 81 | 40
]
SHAPES = ((32, 1), (64, 2), (128, 4))  # (BLOCK, num_warps)
ORDERS = ("interleaved", "part-major")


def part_major_kernel(workdir: str):
    """sh_forward_parts_kernel from a copy of the generated module in which the range is program_id(1) and the
    block of rows program_id(0): on a (blocks, ranges) grid every program of range 0 comes first."""
    src = open(os.path.join(ROOT, "equitriton", "generated", "triton_kernels.py")).read()
    for old, new in (
        ("return tl.program_id(0) // PARTS", "return tl.program_id(0)"),
        ("part = tl.program_id(0) % PARTS", "part = tl.program_id(1)"),
    ):
        if src.count(old) != 1:
            raise RuntimeError(f"the generated kernels no longer hold {old!r} once: update the probe")
        src = src.replace(old, new)
    path = os.path.join(workdir, "part_major_kernels.py")
    with open(path, "w") as f:  # Triton reads a kernel's source from its file
        f.write(src)
    spec = importlib.util.spec_from_file_location("part_major_kernels", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.sh_forward_parts_kernel


def variants() -> list[dict]:
    out = []
    for order, (lmax, dtype, cuts), (block, warps) in itertools.product(ORDERS, SPLITS, SHAPES):
        cfg = dict(launch.config("forward", lmax, dtype), PARTS_AT=cuts, BLOCK=block, num_warps=warps)
        out.append(dict(lmax=lmax, dtype=dtype, cuts=cuts, order=order, cfg=cfg))
    return out


def _meta(v: dict) -> dict:
    ls = list(range(v["lmax"] + 1))
    offs, dim = launch.offsets(ls)
    return launch.meta(ls, offs, dim, True, 1, v["dtype"], v["cfg"])


def call(v: dict, x, out, part_major=None):
    n, meta = x.shape[0], _meta(v)
    if v["order"] == "interleaved":
        kernel, grid = launch.forward_kernel(meta), launch.grid(n, v["cfg"])
    else:
        kernel, grid = part_major, (triton.cdiv(n, v["cfg"]["BLOCK"]), meta["PARTS"])
    return lambda: kernel[grid](x, out, n, x.stride(0), x.stride(1), **meta)


def table_call(lmax: int, x, out):
    """The shipped forward (launch table config) on the same buffers."""
    cfg, meta, _ = launch.plan("forward", list(range(lmax + 1)), True, 1, x.dtype)
    n = x.shape[0]
    return lambda: launch.forward_kernel(meta)[launch.grid(n, cfg)](x, out, n, x.stride(0), x.stride(1), **meta)


def check(v: dict, dev, part_major) -> float:
    """Max relative error against the float64 fallback on 1000 rows; a column left unwritten (NaN) gives inf."""
    ls = list(range(v["lmax"] + 1))
    offs, dim = launch.offsets(ls)
    torch.manual_seed(v["lmax"])
    x = torch.randn(1000, 3, dtype=v["dtype"], device=dev)
    x[0] = 0
    out = torch.full((1000, dim), float("nan"), dtype=v["dtype"], device=dev)
    call(v, x, out, part_major)()
    ref = torch_fallback.forward(x.cpu().double(), ls, list(offs), dim, True, 1)
    err = ((out.cpu().double() - ref).abs().max() / ref.abs().max()).item()
    return err if err == err else float("inf")


def time_call(make, lmax, dtype, dev, pool=2) -> float:
    _, dim = launch.offsets(list(range(lmax + 1)))
    xs = [torch.randn(N_BIG, 3, dtype=dtype, device=dev) for _ in range(pool)]
    out = torch.empty(N_BIG, dim, dtype=dtype, device=dev)
    return time_calls([make(x, out) for x in xs])


def _label(v: dict) -> dict:
    ranges = launch.part_ranges(v["lmax"], v["cuts"])
    return dict(
        lmax=v["lmax"],
        dtype=str(v["dtype"]).replace("torch.", ""),
        ranges=[[r[0], r[-1]] for r in ranges],
        BLOCK=v["cfg"]["BLOCK"],
        num_warps=v["cfg"]["num_warps"],
        order=v["order"],
    )


def sass() -> None:
    """Registers, spill stores and instructions of each variant compiled for sm_90 (no GPU needed)."""
    from triton.backends.compiler import GPUTarget

    bindir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    for v in variants():
        if v["order"] != "interleaved":
            continue  # the same code per program
        meta = _meta(v)
        warps = meta.pop("num_warps")
        ptr = "*fp64" if v["dtype"] == torch.float64 else "*fp32"
        sig = {"X": ptr, "OUT": ptr, "N": "i32", "stride_n": "i32", "stride_c": "i32"}
        sig.update({k: "constexpr" for k in meta})
        attrs = {(i,): [["tt.divisibility", 16]] for i in range(2)}
        src = triton.compiler.ASTSource(fn=launch.forward_kernel(meta), signature=sig, constexprs=meta, attrs=attrs)
        t0 = time.perf_counter()
        compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(compiled.asm["cubin"])
            f.flush()
            dump = subprocess.run([os.path.join(bindir, "cuobjdump"), "-sass", f.name], capture_output=True, text=True)
            res = subprocess.run(
                [os.path.join(bindir, "cuobjdump"), "-res-usage", f.name], capture_output=True, text=True
            )
        usage = {k.lower(): int(val) for k, val in re.findall(r"\b(REG|STACK):(\d+)", res.stdout)}
        row = dict(_label(v), regs=usage.get("reg"), stack=usage.get("stack"))
        row.update(compile_s=round(time.perf_counter() - t0, 1), **sass_summary(dump.stdout))
        print(json.dumps(row), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sass", action="store_true", help="compile for sm_90 and print SASS summaries (no GPU)")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--check-only", action="store_true", help="only check every variant (no timing)")
    ap.add_argument("--device", default="cuda", help="device of --check-only (cpu with TRITON_INTERPRET=1)")
    ap.add_argument("--shard", default="0/1", help="this process's share i/n of the variants (parallel compiles)")
    args = ap.parse_args()
    if args.sass:
        sass()
        return
    part_major = part_major_kernel(tempfile.mkdtemp(prefix="column_split_"))
    if args.check_only:
        i, n = map(int, args.shard.split("/"))
        for v in variants()[i::n]:
            print(json.dumps(dict(_label(v), max_rel_err=check(v, torch.device(args.device), part_major))), flush=True)
        return
    dev = torch.device("cuda")
    copy = copy_bandwidth(dev)
    rows, tables = [], {}
    for v in variants():
        lmax, dtype = v["lmax"], v["dtype"]
        _, dim = launch.offsets(list(range(lmax + 1)))
        nbytes = N_BIG * (3 + dim) * (8 if dtype == torch.float64 else 4)
        key = (lmax, dtype)
        if key not in tables:
            tables[key] = time_call(lambda x, out, lmax=lmax: table_call(lmax, x, out), lmax, dtype, dev)
            row = dict(lmax=lmax, dtype=str(dtype).replace("torch.", ""), variant="table", ms=tables[key])
            row["pct_copy"] = round(100 * nbytes / tables[key] / 1e6 / copy, 1)
            print(json.dumps(row), flush=True)
            rows.append(row)
        row = _label(v)
        try:
            row["max_rel_err"] = check(v, dev, part_major)
            if row["max_rel_err"] > (1e-12 if dtype == torch.float64 else 1e-6):
                row["error"] = "wrong"
            else:
                row["ms"] = time_call(lambda x, out, v=v: call(v, x, out, part_major), lmax, dtype, dev)
                row["pct_copy"] = round(100 * nbytes / row["ms"] / 1e6 / copy, 1)
                row["vs_table"] = round(tables[key] / row["ms"], 3)
        except Exception as e:  # a variant that does not compile is reported, the others still run
            row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
        print(json.dumps(row), flush=True)
        rows.append(row)
    info = dict(
        device=torch.cuda.get_device_name(),
        torch=torch.__version__,
        triton=triton.__version__,
        date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        copy_gbs=round(copy, 1),
        n=N_BIG,
    )
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "column_split_probe.json"), "w") as f:
        json.dump(dict(info=info, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
