"""Probe: the forward's output row written by several programs, each storing the columns of one range of l's.

docs/kernel_tuning.md item 19. The float64 l_max 12 forward stores 169 columns per row; as one 256-wide tile that
spills (item 8), as two tiles stored one after the other it reaches 71% of copy bandwidth, and in chunks stored as
their l's are made it is slower still (item 18). l_max 10 (121 columns, one 128-wide tile) reaches 92%. Here the row
is cut into column ranges of whole l's (e.g. l = 0..10 | 11..12) and each range gets its own programs: program p of
a 1-D grid of PARTS x blocks handles rows block p // PARTS and stores only range p % PARTS, as one tile, computing
the l's its range needs (the tail's programs run the recurrence from l = 0 but keep only their l's live). The two
programs of a row block run next to each other, so the memory sectors they share are written close together in
time ("interleaved"); "part-major" runs every head program first, as two launches would.

Nothing here changes the shipped kernels: the probe imports a copy of the generated module in which the row block
comes from a helper instead of tl.program_id(0), and calls the generated forward once per range with that range's
compile-time arguments (the row stride stays the whole row's DIM).

    python benchmarks/column_split_probe.py --sass          # sm_90 registers and spills per variant, no GPU needed
    python benchmarks/column_split_probe.py --out DIR       # on a CUDA machine: check, then time at N = 2^22
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
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
from tune_kernels import copy_bandwidth  # noqa: E402

from equitriton.generated import torch_fallback  # noqa: E402
from equitriton.kernels import launch  # noqa: E402

N_BIG = 2**22
# (l_max, dtype, the l's where each range after the first starts)
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


def ranges(lmax: int, cuts: tuple) -> list[list[int]]:
    bounds = [0, *cuts, lmax + 1]
    return [list(range(a, b)) for a, b in zip(bounds, bounds[1:])]


def part_meta(ls_part: list[int], lmax: int, dtype, block: int, warps: int) -> dict:
    """The generated forward's compile-time arguments for one range of l's inside the whole 0..l_max row."""
    offs_all, dim = launch.offsets(list(range(lmax + 1)))
    base = offs_all[ls_part[0]]
    width = sum(2 * l + 1 for l in ls_part)
    head = ls_part[0] == 0
    cfg = dict(WIDE_IO=True, FULL_ROW=head, SELECT_TILE=True, BLOCK=block, num_warps=warps)
    offs_part = [offs_all[l] for l in ls_part]
    m = launch.meta(ls_part, offs_part, width, True, 1, dtype, cfg)
    m.pop("num_warps")
    m["DIM"] = dim  # the row stride: the part writes its columns into the whole row
    if not head:  # one select-built tile at the range's first column (ANY_ROW, one chunk)
        pad = launch.padded_width(width)
        n = len(ls_part)
        m.update(
            ANY_ROW=True,
            FULL_ROW=False,
            ROW_BASE=(base,) * n,
            ROW_WIDTH=(width,) * n,
            ROW_FIRST=pad,
            ROW_END=(0,) * (n - 1) + (1,),
            ROW_NEXT=(0,) * n,
        )
    return m


def _literal(v) -> str:
    return repr(tuple(v)) if isinstance(v, tuple) else repr(v)


def build_module(variants: list[dict], workdir: str):
    """A copy of the generated kernels with the row block taken from _block_id, plus one wrapper kernel per
    variant that dispatches on the part; written to `workdir` (Triton reads a kernel's source from its file)."""
    src = open(os.path.join(ROOT, "equitriton", "generated", "triton_kernels.py")).read()
    src = src.replace("tl.program_id(0)", "_block_id(N, BLOCK)")
    lines = [
        src,
        "",
        "@triton.jit",
        "def _block_id(N, BLOCK: tl.constexpr):",
        "    return tl.program_id(0) // PARTS_ if INTERLEAVED_ else tl.program_id(0) % tl.cdiv(N, BLOCK)",
        "",
    ]
    for k, v in enumerate(variants):
        parts = len(v["metas"])
        interleaved = v["order"] == "interleaved"
        body = [
            "@triton.jit(do_not_specialize=['N', 'stride_n', 'stride_c'])",
            f"def split_{k}(X, OUT, N, stride_n, stride_c):",
            f"    part = tl.program_id(0) % {parts}"
            if interleaved
            else f"    part = tl.program_id(0) // tl.cdiv(N, {v['BLOCK']})",
        ]
        for p, m in enumerate(v["metas"]):
            kw = ", ".join(f"{name}={_literal(val)}" for name, val in m.items())
            body.append(f"    {'if' if p == 0 else 'elif'} part == {p}:")
            body.append(f"        sh_forward_kernel(X, OUT, N, stride_n, stride_c, {kw})")
        lines += body + [""]
    # _block_id's constants: one module per (parts, order), so they are module-level constexprs
    parts = len(variants[0]["metas"])
    text = (
        "\n".join(lines)
        .replace("PARTS_", str(parts))
        .replace("INTERLEAVED_", str(variants[0]["order"] == "interleaved"))
    )
    name = f"split_{parts}_{variants[0]['order'].replace('-', '_')}"
    path = os.path.join(workdir, name + ".py")
    with open(path, "w") as f:
        f.write(text)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def variants_of(order: str, parts: int) -> list[dict]:
    out = []
    for lmax, dtype, cuts in SPLITS:
        if len(cuts) + 1 != parts:
            continue
        for block, warps in SHAPES:
            metas = [part_meta(r, lmax, dtype, block, warps) for r in ranges(lmax, cuts)]
            out.append(dict(lmax=lmax, dtype=dtype, cuts=cuts, BLOCK=block, num_warps=warps, order=order, metas=metas))
    return out


def all_variants(workdir: str) -> list[tuple[dict, object]]:
    """(variant, its wrapper kernel) for every split, shape and order."""
    found = []
    for order in ORDERS:
        for parts in (2, 3):
            vs = variants_of(order, parts)
            if vs:
                mod = build_module(vs, workdir)
                found += [(v, getattr(mod, f"split_{k}")) for k, v in enumerate(vs)]
    return found


def call(kernel, v, x, out):
    n = x.shape[0]
    grid = (len(v["metas"]) * triton.cdiv(n, v["BLOCK"]),)
    return lambda: kernel[grid](x, out, n, x.stride(0), x.stride(1), num_warps=v["num_warps"])


def table_call(lmax, x, out):
    """The shipped forward (launch table config) on the same buffers."""
    ls = list(range(lmax + 1))
    cfg, m, _ = launch.plan("forward", ls, True, 1, x.dtype)
    n = x.shape[0]
    meta = dict(m)
    return lambda: launch.kernels.sh_forward_kernel[launch.grid(n, cfg)](x, out, n, x.stride(0), x.stride(1), **meta)


def check(kernel, v, dev) -> float:
    lmax = v["lmax"]
    ls = list(range(lmax + 1))
    offs, dim = launch.offsets(ls)
    torch.manual_seed(lmax)
    x = torch.randn(1000, 3, dtype=v["dtype"], device=dev)
    x[0] = 0
    out = torch.full((1000, dim), float("nan"), dtype=v["dtype"], device=dev)  # an unwritten column stays NaN
    call(kernel, v, x, out)()
    ref = torch_fallback.forward(x.cpu().double(), ls, list(offs), dim, True, 1)
    err = ((out.cpu().double() - ref).abs().max() / ref.abs().max()).item()
    return err if err == err else float("inf")


def time_call(make, lmax, dtype, dev, pool=2) -> float:
    _, dim = launch.offsets(list(range(lmax + 1)))
    xs = [torch.randn(N_BIG, 3, dtype=dtype, device=dev) for _ in range(pool)]
    out = torch.empty(N_BIG, dim, dtype=dtype, device=dev)
    it = itertools.cycle([make(x, out) for x in xs])
    return triton.testing.do_bench(lambda: next(it)(), warmup=10, rep=40, return_mode="median")


def sass(workdir: str) -> list[dict]:
    """Registers, spill stores and instructions of each variant's kernel compiled for sm_90 (no GPU needed)."""
    import re
    import subprocess

    from triton.backends.compiler import GPUTarget

    rows = []
    for v, kernel in all_variants(workdir):
        if v["order"] != "interleaved":
            continue  # same body
        ptr = "*fp64" if v["dtype"] == torch.float64 else "*fp32"
        sig = {"X": ptr, "OUT": ptr, "N": "i32", "stride_n": "i32", "stride_c": "i32"}
        attrs = {(i,): [["tt.divisibility", 16]] for i in range(2)}
        src = triton.compiler.ASTSource(fn=kernel, signature=sig, constexprs={}, attrs=attrs)
        t0 = time.perf_counter()
        compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": v["num_warps"]})
        bindir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(compiled.asm["cubin"])
            f.flush()
            out = subprocess.run([os.path.join(bindir, "cuobjdump"), "-sass", f.name], capture_output=True, text=True)
            res = subprocess.run(
                [os.path.join(bindir, "cuobjdump"), "-res-usage", f.name], capture_output=True, text=True
            )
        usage = {k.lower(): int(val) for k, val in re.findall(r"\b(REG|STACK):(\d+)", res.stdout)}
        row = dict(
            _label(v), regs=usage.get("reg"), stack=usage.get("stack"), compile_s=round(time.perf_counter() - t0, 1)
        )
        row.update(sass_summary(out.stdout))
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def _label(v: dict) -> dict:
    return dict(
        lmax=v["lmax"],
        dtype=str(v["dtype"]).replace("torch.", ""),
        ranges=[[r[0], r[-1]] for r in ranges(v["lmax"], v["cuts"])],
        BLOCK=v["BLOCK"],
        num_warps=v["num_warps"],
        order=v["order"],
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sass", action="store_true", help="compile for sm_90 and print SASS summaries (no GPU)")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--check-only", action="store_true", help="only check every variant (no timing)")
    ap.add_argument("--device", default="cuda", help="device of --check-only (cpu with TRITON_INTERPRET=1)")
    ap.add_argument("--shard", default="0/1", help="--check-only: this process's share i/n of the variants")
    ap.add_argument("--workdir", help="where the kernel modules are written (shared by the shards)")
    args = ap.parse_args()
    workdir = args.workdir or tempfile.mkdtemp(prefix="column_split_")
    os.makedirs(workdir, exist_ok=True)
    if args.sass:
        sass(workdir)
        return
    if args.check_only:  # e.g. TRITON_INTERPRET=1 on CPU: every variant against the float64 fallback
        i, n = map(int, args.shard.split("/"))  # on a GPU, shards compile in parallel into Triton's disk cache
        for v, kernel in all_variants(workdir)[i::n]:
            print(json.dumps(dict(_label(v), max_rel_err=check(kernel, v, torch.device(args.device)))), flush=True)
        return
    dev = torch.device("cuda")
    copy = copy_bandwidth(dev)
    rows = []
    tables = {}
    for v, kernel in all_variants(workdir):
        lmax, dtype = v["lmax"], v["dtype"]
        _, dim = launch.offsets(list(range(lmax + 1)))
        nbytes = N_BIG * (3 + dim) * (8 if dtype == torch.float64 else 4)
        key = (lmax, dtype)
        if key not in tables:
            ms = time_call(lambda x, out, lmax=lmax: table_call(lmax, x, out), lmax, dtype, dev)
            tables[key] = ms
            row = dict(lmax=lmax, dtype=str(dtype).replace("torch.", ""), variant="table", ms=ms)
            row["pct_copy"] = round(100 * nbytes / ms / 1e6 / copy, 1)
            print(json.dumps(row), flush=True)
            rows.append(row)
        row = _label(v)
        try:
            row["max_rel_err"] = check(kernel, v, dev)
            if row["max_rel_err"] > (1e-12 if dtype == torch.float64 else 1e-6):
                row["error"] = "wrong"
            else:
                row["ms"] = time_call(lambda x, out, kernel=kernel, v=v: call(kernel, v, x, out), lmax, dtype, dev)
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
