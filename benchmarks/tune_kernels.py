"""Launch-configuration sweep for the SH kernels on a GPU (issue 3, step 3): correctness first, then timings.

    python benchmarks/tune_kernels.py --phase compile --shard 0/8   # in parallel: fills Triton's disk cache
    python benchmarks/tune_kernels.py --phase time --out DIR        # one process: correctness + do_bench medians

Each configuration is (WIDE_IO, BLOCK, num_warps). Inputs rotate over a pool larger than L2, so no timing reads a
cached buffer. Writes DIR/tune.json; bytes counted: forward N*(3+dim), backward N*(3+dim+3), double backward
N*(3+dim+3+dim+3), times itemsize.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time

import torch
import triton
import triton.testing
from merge_tables import update_table  # its folder is on sys.path, as the script's own

from equitriton.codegen.render import FORWARD_PIECES, LADDER_PIECES, pow2_pieces
from equitriton.generated import torch_fallback
from equitriton.kernels import launch

LMAXES = (1, 2, 4, 8, 12)
DTYPES = (torch.float64, torch.float32)
CONFIGS = [
    dict(WIDE_IO=True, BLOCK=64, num_warps=4),
    dict(WIDE_IO=False, BLOCK=64, num_warps=4),
    dict(WIDE_IO=True, BLOCK=128, num_warps=4),
    dict(WIDE_IO=False, BLOCK=128, num_warps=4),
    dict(WIDE_IO=True, BLOCK=256, num_warps=8),
    dict(WIDE_IO=True, BLOCK=32, num_warps=2),
]
DEADLINE_S = float(os.environ.get("TUNE_DEADLINE_S", "330"))
N_BIG = 2**22


def l_set(lmax: int, cfg: dict) -> list:
    """The l set a sweep row runs: its LS (--sweep sparse), else 0..l_max."""
    return list(cfg.get("LS") or range(lmax + 1))


def kernel_call(direction, x, g, w, out, ls, cfg):
    offs, dim = launch.offsets(ls)
    n = x.shape[0]
    meta = launch.meta(ls, offs, dim, True, 1, x.dtype, {k: v for k, v in cfg.items() if k != "LS"})
    grid = launch.grid(n, cfg)  # PARTS_AT (forward): one program per range of l's and block of rows
    if cfg.get("MAXNREG"):  # --sweep regs: Triton's register cap per thread (ptxas .maxnreg)
        meta["maxnreg"] = cfg["MAXNREG"]
    if direction == "forward":
        kernel = launch.forward_kernel(meta)  # the parts kernel where PARTS_AT cuts the row
        return lambda: kernel[grid](x, out[0], n, x.stride(0), x.stride(1), **meta)
    if direction == "backward":
        return lambda: launch.kernels.sh_backward_kernel[grid](x, g, out[1], n, x.stride(0), x.stride(1), **meta)
    return lambda: launch.kernels.sh_double_backward_kernel[grid](
        x, g, w, out[0], out[1], n, x.stride(0), x.stride(1), w.stride(0), w.stride(1), **meta
    )


# --sweep forward: the whole-row output tile (FULL_ROW) against per-l tiles, at rows-per-program around the
# heuristic of launch.py
FORWARD_CONFIGS = [
    dict(WIDE_IO=True, FULL_ROW=True, BLOCK=64, num_warps=4),
    dict(WIDE_IO=True, FULL_ROW=True, BLOCK=32, num_warps=4),
    dict(WIDE_IO=True, FULL_ROW=True, BLOCK=16, num_warps=4),
    dict(WIDE_IO=True, FULL_ROW=False, BLOCK=64, num_warps=4),
]


# --sweep flat: the launch table's current forward config against the whole-row tile stored through a flat index
# (FLAT_STORE), with BLOCK x P (P = padded row width) at 2048 and 4096 values per program
FLAT_LMAXES = (1, 2, 3, 4, 6, 8, 10, 12)


def flat_configs(lmax: int, dtype) -> list[dict]:
    p = 1 << ((lmax + 1) ** 2 - 1).bit_length()
    current = {k: v for k, v in launch.config("forward", lmax, dtype).items() if k != "M_MAJOR"}
    flat = [dict(WIDE_IO=True, FULL_ROW=True, FLAT_STORE=True, BLOCK=max(4, b // p), num_warps=4) for b in (2048, 4096)]
    return [dict(current, current=True)] + flat


# --sweep select: the launch table's current forward config against tiles built by selects from one-row-per-thread
# values (SELECT_TILE: one shared-memory round trip per tile instead of one per join), BLOCK = 32 x num_warps,
# per-l tiles and the whole-row tile (from l_max 8 also in column chunks)
SELECT_LMAXES = (1, 2, 3, 4, 5, 6, 8, 10, 12)
# TUNE_SELECT_ROWS=pieces: only the table's config and its power-of-two pieces (the other rows were measured in
# earlier select sweeps, docs/kernel_tuning.md items 8-10)
SELECT_PIECES_ONLY = os.environ.get("TUNE_SELECT_ROWS", "all") == "pieces"


def select_configs(lmax: int, dtype) -> list[dict]:
    current = {k: v for k, v in launch.config("forward", lmax, dtype).items() if k != "M_MAJOR"}
    base = dict(WIDE_IO=True, FULL_ROW=True, SELECT_TILE=True)
    # per-l tiles built by selects measured 2-4x slower than the whole row in the first select sweep (H200,
    # 2026-11-29, docs/kernel_tuning.md item 8) and are no longer swept
    row = [dict(base, BLOCK=32 * w, num_warps=w) for w in (1, 2, 4, 8)]
    # from l_max 8 (81+ columns) also in column chunks (ROW_CHUNK), which bound the tile's registers
    chunked = [dict(base, ROW_CHUNK=c, BLOCK=32 * w, num_warps=w) for c in (64, 128) for w in (1, 2)]
    # the table's config with the row in power-of-two pieces of at most c columns, c in render.FORWARD_PIECES, where
    # that is not the one tile (H200, 2026-11-30: 1.02-3.1x slower than the one tile at every point; kernel_tuning.md
    # item 12)
    dim = (lmax + 1) ** 2
    pieces = [dict(current, ROW_CHUNK=c) for c in FORWARD_PIECES if len(pow2_pieces(dim, c)) > 1]
    if SELECT_PIECES_ONLY:
        return [dict(current, current=True)] + pieces
    return [dict(current, current=True)] + row + (chunked if lmax >= 8 else []) + pieces


# --sweep derivatives: the m-major backward / double backward kernels (column-by-column I/O) at two block sizes
DERIVATIVE_CONFIGS = [dict(WIDE_IO=False, BLOCK=64, num_warps=4), dict(WIDE_IO=False, BLOCK=128, num_warps=4)]


# --sweep dbl: the double backward at one row per thread (BLOCK = 32 x num_warps) against the current 64/4 (every row
# computed by two threads; docs/roofline.md, "As compiled")
DBL_LMAXES = (1, 2, 4, 8, 12)
DBL_CONFIGS = [(64, 4), (64, 2), (32, 1), (32, 2), (128, 4)]


# --sweep bwd: the backward at rows-per-thread and orders the derivatives sweep did not try (one row per thread at
# 1, 2, 4 and 8 warps; m-major and l-major), against the launch table's current config, where it is furthest from
# copy bandwidth (docs/roofline.md: the m-major dY reads of 2 threads per row overflow L1 at l_max 12)
BWD_LMAXES = (6, 8, 10, 12)
BWD_CONFIGS = [(32, 1), (64, 2), (128, 4), (256, 8)]


def bwd_configs(lmax: int, dtype) -> list[dict]:
    current = dict(launch.config("backward", lmax, dtype), current=True)
    rows = [dict(WIDE_IO=False, M_MAJOR=m, BLOCK=b, num_warps=w) for m in (True, False) for b, w in BWD_CONFIGS]
    return [current] + [
        c
        for c in rows
        if (c["BLOCK"], c["num_warps"], c["M_MAJOR"]) != (current["BLOCK"], current["num_warps"], current["M_MAJOR"])
    ]


# --sweep ladder: the derivative kernels on the derivative ladder (codegen/ladder.py: values of the degrees below,
# no traced duals) against the launch table's traced-dual config; the double backward's d(grad_y) column by column
# or as per-degree tiles built by selects (WIDE_IO + SELECT_TILE), at one or two rows per thread. High l_max first:
# a deadline cuts the cheap points.
# TUNE_LMAXES: the l_max of --sweep ladder, fence and depth
SWEEP_LMAXES = tuple(int(v) for v in os.environ.get("TUNE_LMAXES", "12,10,8,6,4,3,2,1").split(","))
# TUNE_LADDER_DUAL=0 leaves the traced-dual rows out (their figures taken from an earlier run of the same table)
LADDER_DUAL = os.environ.get("TUNE_LADDER_DUAL", "1") == "1"
# TUNE_DIRECTIONS=double_backward (or backward) sweeps one direction only, in --sweep ladder, fence and depth (a
# table written from it keeps the other's entries)
SWEEP_DIRECTIONS = tuple(os.environ.get("TUNE_DIRECTIONS", "backward,double_backward").split(","))
# The first sweep at l_max 1-4 (H200, 2026-11-30, docs/kernel_tuning.md item 11) dropped two rows: the backward at
# 64 / 4 (slower than 32 / 1 at every point but float32 l_max 1) and the double backward's column-by-column d(grad_y)
# (1.5-3x slower than the select tiles from l_max 2).
LADDER_CONFIGS = {
    "backward": [dict(BLOCK=32, num_warps=1)],
    "double_backward": [
        dict(BLOCK=32, num_warps=1, WIDE_IO=True, SELECT_TILE=True),
        dict(BLOCK=64, num_warps=2, WIDE_IO=True, SELECT_TILE=True),
        # d(grad_y) in power-of-two pieces of at most ROW_CHUNK columns (render._ladder_wide_store): H200,
        # 2026-11-30, faster only at float32 l_max 2 (pieces of 2), slower elsewhere (docs/kernel_tuning.md item 12)
        *(dict(BLOCK=32, num_warps=1, WIDE_IO=True, SELECT_TILE=True, ROW_CHUNK=c) for c in LADDER_PIECES),
    ],
}


def ladder_configs(lmax: int, dtype, direction: str) -> list[dict]:
    table = launch.config(direction, lmax, dtype)
    # the traced-dual row: the launch table's config, or, where the table already holds a ladder config, that
    # config's rows per thread with the duals' column-by-column I/O (the ladder-only tiles would keep Triton's slow
    # coalesce pass: minutes per compile at l_max 12)
    dual = dict(table, LADDER=False, WIDE_IO=False, SELECT_TILE=False, current=not table.get("LADDER"))
    return [dual] * LADDER_DUAL + [{"WIDE_IO": False, "LADDER": True, **c} for c in LADDER_CONFIGS[direction]]


# --sweep regs: the derivative kernels' table config under a register cap (MAXNREG, ptxas .maxnreg) that trades
# spills for occupancy. Nsight Compute (H200, 2026-11-30, docs/kernel_tuning.md item 13) found the backward from
# l_max 6 at 255 registers, 8 warps per SM (12.5% occupancy) and no eligible warp in 83-89% of cycles.
REGS_LMAXES = (6, 8, 10, 12)
REGS_CAPS = {"backward": (128, 168, 208), "double_backward": (168, 208)}


def regs_configs(lmax: int, dtype, direction: str) -> list[dict]:
    current = dict(launch.config(direction, lmax, dtype), current=True)
    rows = [current] + [dict(current, current=False, MAXNREG=r) for r in REGS_CAPS[direction]]
    if direction == "backward" and not current["LADDER"]:
        rows += [dict(BLOCK=32, num_warps=1, WIDE_IO=False, LADDER=True, MAXNREG=r) for r in (0, 168)]
    return rows


# --sweep fence: the derivative kernels with LOAD_FENCE (render._fence: each grad_y load waits for the accumulators
# some columns or one degree back). Without it LLVM hoists the whole row's loads to the top: on sm_90 the backward at
# l_max 10 float64 compiles to 255 registers and 107 spill stores; fenced, m-major duals to 82 registers and none
# (docs/kernel_tuning.md item 13), so wider programs are swept too. High l_max first (SWEEP_LMAXES).


def fence_configs(lmax: int, dtype, direction: str) -> list[dict]:
    current = dict(launch.config(direction, lmax, dtype), current=True)
    if direction == "double_backward":
        return [current, dict(current, current=False, LOAD_FENCE=1)]
    duals = [
        dict(WIDE_IO=False, LADDER=False, M_MAJOR=m, BLOCK=b, num_warps=w, LOAD_FENCE=1)
        for m, sizes in ((True, ((32, 1), (64, 2), (128, 4))), (False, ((32, 1), (128, 4))))
        for b, w in sizes
    ]
    ladder = [dict(WIDE_IO=False, LADDER=True, BLOCK=b, num_warps=w, LOAD_FENCE=1) for b, w in ((32, 1), (64, 2))]
    return [current] + duals + ladder


# --sweep depth: the fenced ladder keeping one or two degrees of grad_y loads in flight (LOAD_FENCE = 1 or 2) against
# the table's config. The fence sweep found the one-degree fence fastest from l_max 8 in float64 (at 71-77% of copy);
# two degrees in flight give each warp twice the loads to wait on, at about the same registers in the sm_90 SASS
# (l_max 10 float64: 168 -> 164; float32: 168 -> 174; no spills either way).


def depth_configs(lmax: int, dtype, direction: str) -> list[dict]:
    current = dict(launch.config(direction, lmax, dtype), current=True)
    if direction == "double_backward":
        return [current] + [dict(current, current=False, LOAD_FENCE=d) for d in (1, 2)]
    ladder = [
        dict(WIDE_IO=False, LADDER=True, BLOCK=b, num_warps=w, LOAD_FENCE=d)
        for d in (1, 2)
        for b, w in ((32, 1), (64, 2))
    ]
    return [current] + ladder


# --sweep fence3: three degrees of grad_y loads in flight (LOAD_FENCE = 3) against the table's config. From l_max 6 the
# float32 backward runs at 61-67% of copy with the float64 kernel's instructions on half its bytes, memory, issue and
# FP64 pipe all under 70% busy at 8-11 warps per SM (docs/performance_notes.md, 2026-12-04, item 6): latency, which
# more loads in flight per row may hide. The table's rows per program, tile and store; the ladder (the fence's depth
# means nothing to the traced duals); 32 / 1 and 64 / 2. H200, 2026-12-04: no gain over 3% at l_max 6-12 (item 22).
def fence3_configs(lmax: int, dtype, direction: str) -> list[dict]:
    current = dict(launch.config(direction, lmax, dtype), current=True)
    base = dict(current, current=False, LADDER=True, LOAD_FENCE=3)
    return [current] + [dict(base, BLOCK=b, num_warps=w) for b, w in ((32, 1), (64, 2))]


# --sweep gytile: the derivative kernels with the grad_y row loaded as one coalesced tile and split into columns
# (GY_TILE) against the table's config. Loaded column by column at one row per thread, a row of 128 bytes (l_max 3
# float64; 64 bytes in float32) puts the 32 lanes of every load on one L1 bank: 16 loads x 32 wavefronts per 32 rows,
# 512 L1 cycles against the ~350 that DRAM needs for the same rows, which predicts the 67% of copy measured at l_max
# 3 in both dtypes (docs/kernel_tuning.md item 15). Odd row widths (l_max 2, 4, 6...) conflict at most 2-way.


def gytile_configs(lmax: int, dtype, direction: str) -> list[dict]:
    current = dict(launch.config(direction, lmax, dtype), current=True)
    rows = [current, dict(current, current=False, GY_TILE=True, LOAD_FENCE=0)]
    bodies = [dict(LADDER=True, BLOCK=b, num_warps=w) for b, w in ((32, 1), (64, 2))]
    if direction == "backward":
        bodies += [dict(LADDER=False, M_MAJOR=m, BLOCK=128, num_warps=4) for m in (True, False)]
    else:  # the ladder double backward's d(grad_y) tiles, as the table holds them
        bodies = [dict(b, WIDE_IO=True, SELECT_TILE=True) for b in bodies]
    return rows + [{"WIDE_IO": False, "GY_TILE": True, **b} for b in bodies]


# --sweep gyhead: rows wider than the widest grad_y tile (l_max >= 8 of 0..l_max) with their head, the 64 columns of
# degrees 0-7, loaded as one coalesced tile (GY_TILE) and the columns past it one by one, fenced as the table's body
# is. At l_max 7 (64 columns: the head alone) the tile made the backward 2.1x (float64) and 2.5x (float32) faster
# (docs/kernel_tuning.md item 15); from l_max 8 the head is 79% (l_max 8) to 38% (l_max 12) of the row.


def gyhead_configs(lmax: int, dtype, direction: str) -> list[dict]:
    current = dict(launch.config(direction, lmax, dtype), current=True)
    rows = [current, dict(current, current=False, GY_TILE=True)]
    tiles = {"WIDE_IO": direction != "backward", "SELECT_TILE": direction != "backward"}  # d(grad_y) as the table
    ladders = [
        dict(LADDER=True, BLOCK=b, num_warps=w, LOAD_FENCE=d, GY_TILE=True, **tiles)
        for d in (1, 2)
        for b, w in ((32, 1), (64, 2))
    ]
    duals = [dict(WIDE_IO=False, LADDER=False, M_MAJOR=True, BLOCK=128, num_warps=4, GY_TILE=True)]
    return rows + ladders + (duals if direction == "backward" else [])


# --sweep sparse: l sets other than 0..l_max take the derivative entry of their l_max (launch.config), tuned on the
# whole set. Their rows are narrow (25-27 columns for [12] and [0, 2, 10]: one grad_y tile however the whole set's
# row is read), so the whole set's best need not be theirs: after the head tile (item 20) an SH run of 2026-12-03
# read the float32 backward of [0, 2, 10] and [12] 7-10% slower and the float64 one of [0, 2, 10] 4% faster
# (docs/kernel_tuning.md item 21). Rows: rows per program x load fence x grad_y tile, and the table's own.
# --write-table keys what it takes by the l set (launch.table_key), which launch.config prefers for that set.
SPARSE_SETS = ([0, 2, 10], [12], [6])


def sparse_configs(ls: list, dtype, direction: str) -> list[dict]:
    _, dim = launch.offsets(ls)
    current = dict(launch.config(direction, max(ls), dtype, whole=False, dim=dim, ls=ls), current=True)
    tiles = {"WIDE_IO": direction != "backward", "SELECT_TILE": direction != "backward"}
    grid = [
        dict(LADDER=True, BLOCK=b, num_warps=w, LOAD_FENCE=d, GY_TILE=t, **tiles)
        for (b, w), d, t in itertools.product(((32, 1), (64, 2)), (1, 2), (False, True))
    ]
    return [dict(c, LS=list(ls)) for c in [current, *grid]]


# --sweep row32: the launch table's config against the same with ROW32 flipped: 64-bit row indices in every address
# and mask, or 32-bit offsets from the program's first row (docs/kernel_tuning.md item 17)
def row32_configs(lmax: int, dtype, direction: str) -> list[dict]:
    current = dict(launch.config(direction, lmax, dtype), current=True)
    return [current, dict(current, ROW32=not current["ROW32"], current=False)]


# --sweep anyrow: the forward's row built by selects as each l is made and stored in chunks of whole l's of at most
# ANY_ROW_CHUNK columns, each chunk once its last l is made (launch.row_chunks), against the table's whole-row tile.
# The whole-row tile holds every value and a tile of up to 128 padded columns at once: at float64 l_max 12 (169
# columns, two chunks of 128 and 64 stored at the end) 255 registers and 6 spill stores in the sm_90 SASS, and 71% of
# copy bandwidth where l_max 10 reaches 92% (docs/kernel_tuning.md item 18). Caps that cut a row the same way as a
# smaller cap are left out.
ANYROW_LMAXES = tuple(int(v) for v in os.environ.get("TUNE_ANYROW_LMAXES", "12,8,6,10").split(","))
ANYROW_CAPS = (0, 16, 32, 49, 64, 128)


def anyrow_configs(lmax: int, dtype) -> list[dict]:
    current = {k: v for k, v in launch.config("forward", lmax, dtype).items() if k != "M_MAJOR"}
    ls = list(range(lmax + 1))
    rows, seen = [dict(current, current=True)], set()
    for cap in ANYROW_CAPS:
        chunks = tuple(map(tuple, launch.row_chunks(ls, cap)))
        widest = max(map(launch.padded_width, launch.chunk_widths(ls, chunks)))
        if chunks in seen or widest > launch.ANY_ROW_MAX:
            continue
        seen.add(chunks)
        base = dict(WIDE_IO=True, FULL_ROW=False, SELECT_TILE=True, ANY_ROW_CHUNK=cap)
        rows += [dict(base, BLOCK=32 * w, num_warps=w) for w in (1, 2, 4)]
    return rows


# --sweep parts: the forward's row cut into ranges of whole l's at PARTS_AT, each range stored by its own programs as
# whole tiles (sh_forward_parts_kernel, docs/kernel_tuning.md item 19), against the table's row; cuts whose later
# ranges fit one ANY_ROW tile (at most 128 padded columns), at 1, 2 and 4 warps
PARTS_LMAXES = tuple(int(v) for v in os.environ.get("TUNE_PARTS_LMAXES", "12,10,8,6").split(","))
PARTS_CUTS = {12: [(11,), (10,), (8, 11), (9, 11)], 10: [(9,), (7, 9)], 8: [(7,), (8,), (5, 7)], 6: [(5,), (6,)]}


def parts_configs(lmax: int, dtype) -> list[dict]:
    current = launch.config("forward", lmax, dtype)
    rows = [dict(current, current=True)]
    base = {k: v for k, v in current.items() if k not in ("FLAT_STORE", "PARTS_AT")}
    for cuts in PARTS_CUTS.get(lmax, []):
        rows += [dict(base, PARTS_AT=cuts, BLOCK=32 * w, num_warps=w) for w in (1, 2, 4)]
    return rows


# the sweeps over SWEEP_LMAXES x DTYPES x SWEEP_DIRECTIONS, by the rows each takes per point
DERIVATIVE_SWEEPS = {
    "ladder": ladder_configs,
    "fence": fence_configs,
    "depth": depth_configs,
    "fence3": fence3_configs,
    "gytile": gytile_configs,
    "gyhead": gyhead_configs,
    "row32": row32_configs,
}


def cases(sweep: str = "all"):
    if sweep in DERIVATIVE_SWEEPS:
        for lmax, dtype, direction in itertools.product(SWEEP_LMAXES, DTYPES, SWEEP_DIRECTIONS):
            for cfg in DERIVATIVE_SWEEPS[sweep](lmax, dtype, direction):
                yield lmax, dtype, direction, cfg
    if sweep == "sparse":
        for ls, dtype, direction in itertools.product(SPARSE_SETS, DTYPES, SWEEP_DIRECTIONS):
            for cfg in sparse_configs(ls, dtype, direction):
                yield max(ls), dtype, direction, cfg
    if sweep == "regs":
        for lmax, dtype, direction in itertools.product(REGS_LMAXES, DTYPES, ("backward", "double_backward")):
            for cfg in regs_configs(lmax, dtype, direction):
                yield lmax, dtype, direction, cfg
    if sweep == "bwd":
        for lmax, dtype in itertools.product(BWD_LMAXES, DTYPES):
            for cfg in bwd_configs(lmax, dtype):
                yield lmax, dtype, "backward", cfg
    if sweep == "dbl":
        for lmax, dtype, (block, warps) in itertools.product(DBL_LMAXES, DTYPES, DBL_CONFIGS):
            yield lmax, dtype, "double_backward", dict(WIDE_IO=False, M_MAJOR=True, BLOCK=block, num_warps=warps)
    if sweep in ("forward", "final"):
        for lmax, dtype, cfg in itertools.product((2, 4, 8, 12), DTYPES, FORWARD_CONFIGS):
            yield lmax, dtype, "forward", cfg
    if sweep == "flat":
        for lmax, dtype in itertools.product(FLAT_LMAXES, DTYPES):
            for cfg in flat_configs(lmax, dtype):
                yield lmax, dtype, "forward", cfg
    if sweep == "anyrow":
        for lmax, dtype in itertools.product(ANYROW_LMAXES, DTYPES):
            for cfg in anyrow_configs(lmax, dtype):
                yield lmax, dtype, "forward", cfg
    if sweep == "parts":
        for lmax, dtype in itertools.product(PARTS_LMAXES, DTYPES):
            for cfg in parts_configs(lmax, dtype):
                yield lmax, dtype, "forward", cfg
    if sweep == "select":
        for lmax, dtype in itertools.product(SELECT_LMAXES, DTYPES):
            for cfg in select_configs(lmax, dtype):
                yield lmax, dtype, "forward", cfg
    if sweep in ("derivatives", "final"):
        for lmax, dtype, direction, cfg in itertools.product(
            (1, 2, 4, 8, 12), DTYPES, ("backward", "double_backward"), DERIVATIVE_CONFIGS
        ):
            yield lmax, dtype, direction, cfg
    if sweep != "all":
        return
    # double backward: only the two 64-row configs (its live state is the largest)
    for lmax, dtype, direction, cfg in itertools.product(
        LMAXES, DTYPES, ("forward", "backward", "double_backward"), CONFIGS
    ):
        if direction == "double_backward" and cfg["BLOCK"] != 64:
            continue
        yield lmax, dtype, direction, cfg


def point_key(rec: dict) -> tuple:
    """A measured point: (l_max, dtype, direction), and the l set where the row names one (--sweep sparse)."""
    return (rec["lmax"], rec["dtype"], rec["direction"], *([tuple(rec["LS"])] if rec.get("LS") else []))


def gains_only(points: list[dict], best: dict, min_gain: float) -> dict:
    """The entries of `best` that beat the launch table's own row (`current`) at the same point by more than
    `min_gain` (a fraction of its time); points without a timed current row keep their best. A table entry then
    changes only where the sweep measured a gain larger than run-to-run spread."""
    current = {point_key(p): p["ms"] for p in points if p.get("current") and p.get("ms") is not None}
    return {k: r for k, r in best.items() if k not in current or r["ms"] < current[k] * (1 - min_gain)}


def write_table(path: str, best: dict, source: str) -> None:
    """Merge measured best configs into the launch table read by equitriton/kernels/launch.py."""
    configs = {}
    for (lmax, dtype, direction, *ls), rec in best.items():
        keys = ("BLOCK", "num_warps", "WIDE_IO", "M_MAJOR", "LADDER", "LOAD_FENCE", "GY_TILE", "ROW32")
        cfg = {k: rec[k] for k in keys if rec.get(k) is not None}
        if "LOAD_FENCE" in cfg:  # a depth (launch.config), whatever the sweep row wrote
            cfg["LOAD_FENCE"] = int(cfg["LOAD_FENCE"])
        cfg["FULL_ROW"] = bool(rec.get("FULL_ROW", False))
        cfg["FLAT_STORE"] = bool(rec.get("FLAT_STORE", False))
        if rec.get("SELECT_TILE"):
            cfg["SELECT_TILE"] = True
            cfg["ROW_CHUNK"] = int(rec.get("ROW_CHUNK", 0))
            if rec.get("ANY_ROW_CHUNK") is not None:
                cfg["ANY_ROW_CHUNK"] = int(rec["ANY_ROW_CHUNK"])
        if rec.get("PARTS_AT"):
            cfg["PARTS_AT"] = [int(c) for c in rec["PARTS_AT"]]
        configs[launch.table_key(direction, lmax, getattr(torch, dtype), *ls)] = cfg
    update_table(path, configs, [source])


def check(lmax, dtype, direction, cfg, dev):
    """Max relative error of the kernel with `cfg` against the float64 torch fallback on 1000 points."""
    ls = l_set(lmax, cfg)
    offs, dim = launch.offsets(ls)
    torch.manual_seed(lmax)
    x = torch.randn(1000, 3, dtype=dtype, device=dev)
    x[0] = 0
    g = torch.randn(1000, dim, dtype=dtype, device=dev)
    w = torch.randn(1000, 3, dtype=dtype, device=dev)
    out = (torch.empty(1000, dim, dtype=dtype, device=dev), torch.empty(1000, 3, dtype=dtype, device=dev))
    with launch.compiling(direction, cfg):  # skips Triton's coalesce pass where it is the identity (compile time)
        kernel_call(direction, x, g, w, out, ls, cfg)()
    xd, gd, wd = x.cpu().double(), g.cpu().double(), w.cpu().double()
    if direction == "forward":
        pairs = [(out[0], torch_fallback.forward(xd, ls, list(offs), dim, True, 1))]
    elif direction == "backward":
        pairs = [(out[1], torch_fallback.backward(xd, gd, ls, list(offs), dim, True, 1))]
    else:
        rgg, rgx = torch_fallback.double_backward(xd, gd, wd, ls, list(offs), dim, True, 1)
        pairs = [(out[0], rgg), (out[1], rgx)]
    return max(((a.cpu().double() - b).abs().max() / b.abs().max()).item() for a, b in pairs)


def nbytes(direction, n, dim, itemsize):
    per_row = {"forward": 3 + dim, "backward": 3 + dim + 3, "double_backward": 3 + dim + 3 + dim + 3}[direction]
    return n * per_row * itemsize


def time_case(lmax, dtype, direction, cfg, dev, pool=2):
    ls = l_set(lmax, cfg)
    _, dim = launch.offsets(ls)
    n = N_BIG
    xs = [torch.randn(n, 3, dtype=dtype, device=dev) for _ in range(pool)]
    gs = (
        [torch.randn(n, dim, dtype=dtype, device=dev) for _ in range(pool)] if direction != "forward" else [None] * pool
    )
    ws = [torch.randn(n, 3, dtype=dtype, device=dev) for _ in range(pool)]
    out = (torch.empty(n, dim, dtype=dtype, device=dev), torch.empty(n, 3, dtype=dtype, device=dev))
    ms = time_calls([kernel_call(direction, xs[i], gs[i], ws[i], out, ls, cfg) for i in range(pool)])
    return ms, nbytes(direction, n, dim, torch.finfo(dtype).bits // 8) / ms / 1e6


def time_calls(calls) -> float:
    """do_bench median (ms) of the launches `calls`, taken in turn (each on its own inputs: a pool larger than L2)."""
    it = itertools.cycle(calls)
    return triton.testing.do_bench(lambda: next(it)(), warmup=10, rep=40, return_mode="median")


def small_case(lmax, dtype, cfgs, dev):
    """N = 2**12: forward + backward (two launches) in microseconds, best config of each direction."""
    ls = list(range(lmax + 1))
    _, dim = launch.offsets(ls)
    n = 2**12
    x = torch.randn(n, 3, dtype=dtype, device=dev)
    g = torch.randn(n, dim, dtype=dtype, device=dev)
    out = (torch.empty(n, dim, dtype=dtype, device=dev), torch.empty(n, 3, dtype=dtype, device=dev))
    f = kernel_call("forward", x, g, x, out, ls, cfgs["forward"])
    b = kernel_call("backward", x, g, x, out, ls, cfgs["backward"])

    def both():
        f()
        b()

    # CUDA graph replay removes Python launch overhead, the way an MD step would run it
    both()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        both()
    eager = triton.testing.do_bench(both, warmup=20, rep=100, return_mode="median") * 1e3
    graphed = triton.testing.do_bench(graph.replay, warmup=20, rep=100, return_mode="median") * 1e3
    return eager, graphed


def copy_bandwidth(dev) -> float:
    """Device-to-device copy of 2 GiB, bytes read + written per second, in GB/s."""
    src = torch.empty(2**28, dtype=torch.float64, device=dev)
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), return_mode="median")
    return 2 * src.numel() * 8 / ms / 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--phase", choices=("compile", "time"), required=True)
    ap.add_argument("--shard", default="0/1")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    sweeps = (
        "all",
        "forward",
        "derivatives",
        "final",
        "flat",
        "dbl",
        "select",
        "anyrow",
        "parts",
        "bwd",
        "regs",
        "sparse",
        *DERIVATIVE_SWEEPS,
    )
    ap.add_argument("--sweep", choices=sweeps, default="all")
    ap.add_argument(
        "--write-table", help="merge the best configs into this launch table (equitriton/kernels/tuned.json)"
    )
    ap.add_argument(
        "--min-gain",
        type=float,
        default=0.0,
        help="with --write-table: change an entry only where the best row beats the table's own by this fraction",
    )
    args = ap.parse_args()
    if args.write_table and args.sweep == "regs":
        # the launch path (launch.meta, ops) passes no register cap: a table entry would name a kernel never measured
        ap.error("--sweep regs measures register caps that the launch path cannot apply; it does not write the table")
    dev = torch.device("cuda")
    allc = list(cases(args.sweep))
    if args.phase == "compile":
        i, k = map(int, args.shard.split("/"))
        for lmax, dtype, direction, cfg in allc[i::k]:
            try:
                check(lmax, dtype, direction, cfg, dev)
            except Exception as e:  # recorded in the timing phase
                print("compile failed", lmax, dtype, direction, cfg, repr(e)[:200], flush=True)
        return
    res = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "N": N_BIG,
        "points": [],
    }
    res["copy_GBps"] = copy_bandwidth(dev)
    print("copy GB/s", res["copy_GBps"], flush=True)
    path = os.path.join(args.out, f"tune_{args.sweep}.json")
    best = {}
    t_start = time.time()
    for lmax, dtype, direction, cfg in allc:
        if time.time() - t_start > DEADLINE_S:
            res["points"].append(dict(lmax=lmax, direction=direction, **cfg, skipped="deadline"))
            continue
        rec = dict(lmax=lmax, dtype=str(dtype).split(".")[-1], direction=direction, **cfg)
        try:
            rec["rel_err"] = check(lmax, dtype, direction, cfg, dev)
            ok = rec["rel_err"] < (1e-12 if dtype == torch.float64 else 1e-6)
            rec["ok"] = ok
            if ok:
                rec["ms"], rec["GBps"] = time_case(lmax, dtype, direction, cfg, dev)
                rec["frac_copy"] = rec["GBps"] / res["copy_GBps"]
                key = point_key(rec)
                if key not in best or rec["ms"] < best[key]["ms"]:
                    best[key] = rec
        except Exception as e:
            rec["error"] = repr(e)[:300]
        res["points"].append(rec)
        print(rec, flush=True)
        with open(path, "w") as f:
            json.dump(res, f, indent=1)
    res["best"] = [dict(v) for v in best.values()]
    if args.write_table:
        kept = gains_only(res["points"], best, args.min_gain)
        res["table_written"] = sorted(launch.table_key(d, lmax, getattr(torch, dt), *ls) for lmax, dt, d, *ls in kept)
        write_table(args.write_table, kept, f"{res['device']} {res['date']}")
    for lmax in LMAXES:
        for dtype in DTYPES:
            dn = str(dtype).split(".")[-1]
            cfgs = {
                d: {k: best[(lmax, dn, d)][k] for k in ("WIDE_IO", "BLOCK", "num_warps")}
                for d in ("forward", "backward")
                if (lmax, dn, d) in best
            }
            if len(cfgs) == 2:
                eager, graphed = small_case(lmax, dtype, cfgs, dev)
                res.setdefault("n4096_fwd_bwd_us", []).append(
                    dict(lmax=lmax, dtype=dn, eager_us=eager, graph_us=graphed)
                )
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    for r in sorted(res["best"], key=lambda r: (r["direction"], r["dtype"], r["lmax"])):
        print(
            f"{r['direction']:16s} {r['dtype']:8s} l<={r['lmax']:2d} {r['ms']:8.3f} ms {r['GBps']:7.0f} GB/s "
            f"{100 * r['frac_copy']:5.1f}%  wide={r['WIDE_IO']} B={r['BLOCK']} w={r['num_warps']} "
            f"full={r.get('FULL_ROW')} flat={r.get('FLAT_STORE')} select={r.get('SELECT_TILE', False)} "
            f"chunk={r.get('ROW_CHUNK', 0)} anyrow={r.get('ANY_ROW_CHUNK', '-')} parts={r.get('PARTS_AT', '-')} "
            f"ladder={r.get('LADDER', False)} tile={r.get('GY_TILE', False)} fence={r.get('LOAD_FENCE', '-')} "
            f"ls={r.get('LS', '-')} "
            f"current={r.get('current', False)}"
        )
    for r in res.get("n4096_fwd_bwd_us", []):
        print("N=4096 fwd+bwd", r)


if __name__ == "__main__":
    main()
