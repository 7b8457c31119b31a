"""Grid, block size and compile-time arguments for the generated Triton kernels.

The number of points N is a run-time argument (never specialised), so a kernel compiles once per
(l set, normalize, normalization, dtype, direction) and is reused for every N.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import threading

import torch

from ..generated import triton_kernels as kernels

try:  # the pieces of Triton's launch path that run_cached calls directly (triton >= 3.3)
    from triton import knobs as _knobs
    from triton.runtime.driver import driver as _driver
except ImportError:  # pragma: no cover - older Triton: every launch goes through kernel[grid]
    _knobs = _driver = None

# float32 data is evaluated in float64 and rounded once at the store: the three-term l-recurrences lose ~l^2 ulps
# in float32 (2-5x e3nn's float32 error at l >= 7). The op is memory-bound, so on cards with full-rate FP64 (H100,
# Intel Max) this costs little; EQUITRITON_FLOAT32_COMPUTE=float32 selects the native float32 path (consumer GPUs).
FLOAT32_COMPUTE = os.environ.get("EQUITRITON_FLOAT32_COMPUTE", "float64")
if FLOAT32_COMPUTE not in ("float64", "float32"):
    raise ValueError(f"EQUITRITON_FLOAT32_COMPUTE must be 'float64' or 'float32', got {FLOAT32_COMPUTE!r}")


# Up to l_max 1 there is no recurrence (Y_0 is a constant, Y_1 = c u), and float32 evaluated natively is as accurate
# as e3nn's float32 (max relative error over 1e5 points, measured 2026-11-29: Y 0.55-0.97x e3nn's, dY/dx 0.5-1.0x), so
# float32 l sets with l_max <= NATIVE_F32_MAX_L are evaluated in float32 (half the bytes of the float64 temporaries).
NATIVE_F32_MAX_L = 1


def compute_f64(dtype: torch.dtype, lmax: int | None = None) -> bool:
    """Whether data of `dtype` is evaluated in float64 (for an l set of this l_max, where given)."""
    if dtype == torch.float64:
        return True
    return FLOAT32_COMPUTE == "float64" and (lmax is None or lmax > NATIVE_F32_MAX_L)


# Measured best configurations (benchmarks/tune_kernels.py --write-table), keyed "direction/lmax/dtype", and for
# l sets other than 0..l_max that were measured on their own (--sweep sparse) "direction/[l,l,...]/dtype"
# (table_key); the heuristics below apply where the table has no entry. EQUITRITON_TUNING=path points at another table.
_TABLE_PATH = os.environ.get("EQUITRITON_TUNING", os.path.join(os.path.dirname(__file__), "tuned.json"))
_TABLE: dict = {}
if os.path.exists(_TABLE_PATH):
    with open(_TABLE_PATH) as _f:
        _TABLE = json.load(_f)["configs"]


def table_key(direction: str, lmax: int, dtype: torch.dtype, ls=None) -> str:
    """The launch table's key: by l_max for 0..l_max (ls None), by the l set itself for any other set."""
    which = str(lmax) if ls is None else "[" + ",".join(str(l) for l in ls) + "]"  # [12] is not 0..12
    return f"{direction}/{which}/{str(dtype).split('.')[-1]}"


def _full_row_block(lmax: int) -> int:
    # one (BLOCK, P) output tile per program, P = next power of two >= (lmax + 1)**2: ~32 values per thread
    p = 1 << ((lmax + 1) ** 2 - 1).bit_length()
    return 64 if p <= 64 else 32


# the switches of `config` that EQUITRITON_<NAME> = 0/1 can force, and the two that take a count (_COUNTS: ROW_CHUNK
# columns, LOAD_FENCE degrees); part of `plan`'s cache key
_FORCED = (
    "WIDE_IO",
    "FULL_ROW",
    "FLAT_STORE",
    "M_MAJOR",
    "SELECT_TILE",
    "ROW_CHUNK",
    "LADDER",
    "LOAD_FENCE",
    "GY_TILE",
    "ROW32",
    "ANY_ROW_CHUNK",
    "PARTS_AT",
)
_COUNTS = ("ROW_CHUNK", "LOAD_FENCE", "ANY_ROW_CHUNK")


# The forward's row cut into ranges (PARTS_AT) doubles the programs per block of rows: measured faster from 2^20 rows
# on (float64 l_max 12, H200: 0.389 against 0.483 ms at 2^20, 1.55 against 1.91 ms at 2^22) and 2-2.5x slower at
# 2^16-2^18 (0.28 against 0.10-0.13 ms; docs/kernel_tuning.md item 19), so the table's PARTS_AT applies from here on
PARTS_MIN_ROWS = 2**20


def parts_apply(rows) -> bool:
    """Whether the table's PARTS_AT applies to a call on `rows` rows: None (size not given: the table as measured, at
    N = 2^22) or a concrete row count of at least PARTS_MIN_ROWS; a symbolic count (torch.compile with dynamic
    shapes) takes the one-range row, so no guard is put on the size."""
    return rows is None or (isinstance(rows, int) and rows >= PARTS_MIN_ROWS)


def config(
    direction: str,
    lmax: int,
    dtype: torch.dtype,
    whole: bool = True,
    dim: int | None = None,
    parts: bool = True,
    ls=None,
) -> dict:
    """Launch configuration, chosen from the H100 and H200 sweeps of benchmarks/tune_kernels.py
    (docs/kernel_tuning.md). `whole`: the l set is 0..l_max in order; `dim`: its row width; `parts`: whether the
    table's PARTS_AT (the forward's row cut into ranges of l's) applies (parts_apply); `ls`: the l set, whose own
    entry a derivative kernel of a set other than 0..l_max takes where the table has one (a narrow row such as
    [12] or [0, 2, 10] may want other rows per program, fence and grad_y tile than 0..l_max: item 21), else the
    entry of its l_max.

    WIDE_IO loads/stores each l's row segment as one 2D tile instead of column by column; FULL_ROW (forward, when
    the l set is 0..l_max in order) stores the whole output row as one tile, and FLAT_STORE with it stores that tile
    through a flat index of the program's contiguous output range (no lanes masked for padding columns, vector stores
    whatever DIM is); SELECT_TILE builds the forward's tiles by selects from values held one row per thread (one
    shared-memory round trip per tile; with FULL_ROW the fastest forward at every l_max, in ROW_CHUNK-column pieces
    for wide rows (64 or 128; 16: power-of-two pieces of at most 16 columns, measured slower), and for other l
    sets the whole row as each l is made, meta's ANY_ROW; ANY_ROW_CHUNK stores that row in chunks of whole l's as
    they are made, measured slower at every point: docs/kernel_tuning.md item 18). Measured at N = 2**22:
    per-l tiles make the forward 2-7x faster than per-column stores from l_max 2 up (8-byte stores at a stride of
    DIM leave memory sectors partially written), but the backward read g faster column by column (the rows stay in
    L1), so the derivative kernels are generated column by column, in m-major order (codegen.harmonics), and ignore
    WIDE_IO/FULL_ROW/SELECT_TILE. LADDER picks the derivative kernels' body: the derivative ladder
    (codegen/ladder.py: derivatives from the values of the degree below) instead of traced forward-mode duals; the
    ladder double backward alone honours WIDE_IO (+ SELECT_TILE, and ROW_CHUNK 2 or 4: each degree's tile in
    power-of-two pieces of at most that many columns) for its d(grad_y) output.
    """
    key = table_key(direction, lmax, dtype)
    if not whole and ls is not None and table_key(direction, lmax, dtype, ls) in _TABLE:
        key = table_key(direction, lmax, dtype, ls)
    f64 = dtype == torch.float64
    if direction == "forward" and not whole:
        # an l set other than 0..l_max in order: the row built by selects as each l is made (meta's ANY_ROW, rows
        # of up to ANY_ROW_MAX columns), else per-l join tiles (per-l tiles built by selects measured slower,
        # docs/kernel_tuning.md item 8)
        if dim is not None and padded_width(dim) <= ANY_ROW_MAX:
            cfg = {"BLOCK": 64, "num_warps": 2, "WIDE_IO": True, "SELECT_TILE": True}
        else:
            cfg = {"BLOCK": 64, "num_warps": 4, "WIDE_IO": lmax >= 2}
    elif key in _TABLE:
        cfg = {k: v for k, v in _TABLE[key].items() if k != "ms"}
        if not parts:  # the table's row cut does not apply at this size (parts_apply)
            cfg.pop("PARTS_AT", None)
    elif direction == "forward":
        # measured (H200, docs/kernel_tuning.md item 8): the whole row built by selects, one row per thread, at
        # 87-91% of copy bandwidth from l_max 1 to 10; rows wider than 128 columns in two chunks
        cfg = {"BLOCK": 64, "num_warps": 2, "WIDE_IO": True, "FULL_ROW": True, "SELECT_TILE": True}
        cfg["ROW_CHUNK"] = 128 if (lmax + 1) ** 2 > 128 else 0
    elif direction == "backward":
        # measured: l-major order wins the float64 backward at mid l, m-major everywhere else
        cfg = {"BLOCK": 128 if lmax <= 10 or not f64 else 64, "num_warps": 4, "M_MAJOR": not (f64 and lmax <= 10)}
    else:
        # measured (H200, docs/kernel_tuning.md item 11): the ladder double backward with d(grad_y) as per-degree
        # tiles built by selects, one row per thread, fastest at every l_max from 1 to 12 in both dtypes
        cfg = {"BLOCK": 32, "num_warps": 1, "LADDER": True, "WIDE_IO": True, "SELECT_TILE": True}
    cfg.setdefault("WIDE_IO", False)
    cfg.setdefault("FULL_ROW", False)
    cfg.setdefault("M_MAJOR", True)
    cfg.setdefault("FLAT_STORE", False)
    cfg.setdefault("SELECT_TILE", False)
    # LADDER (derivative kernels): derivatives from the values of the degrees below (codegen/ladder.py) instead of
    # forward-mode duals traced through the recurrence. Measured at N = 2^22 (H200, 2026-11-30, docs/kernel_tuning.md
    # item 11): the double backward 2.3-4x faster from l_max 2 up; the backward faster only at float64 l_max 2, 3 and
    # 12 (3.81 -> 2.20 ms), slower at l_max 6-10, so the backward keeps the duals unless the table says otherwise
    cfg.setdefault("LADDER", False)
    # LOAD_FENCE (derivative kernels): each grad_y load waits for the accumulators a few columns (traced duals) or
    # LOAD_FENCE degrees (ladder: 1 to 3) back, so LLVM cannot hoist the whole row's loads to the top (render._fence)
    cfg.setdefault("LOAD_FENCE", 0)
    # GY_TILE (derivative kernels): the grad_y row loaded as one coalesced tile and split into columns in registers,
    # instead of one load per column at one row per thread, whose lanes all hit one L1 bank when the row stride is a
    # multiple of 128 bytes (docs/kernel_tuning.md item 15); rows of at most GY_TILE_MAX (padded) columns
    cfg.setdefault("GY_TILE", False)
    # ROW32: the rows as 32-bit offsets from the program's first row (render.program_rows), instead of 64-bit row
    # indices in every address and mask; on where the table says (over 3% faster at 9 of 48 measured points, over
    # 3% slower at 10: docs/kernel_tuning.md item 17)
    cfg.setdefault("ROW32", False)
    # ANY_ROW_CHUNK (forward, ANY_ROW): the row's tile in chunks of whole l's of at most this many columns, each
    # stored once its last l is made (row_chunks); 0: the whole row in one tile
    cfg.setdefault("ANY_ROW_CHUNK", 0)
    # PARTS_AT (forward, 0..l_max): the row cut into ranges of whole l's starting at these l's, each range stored by
    # its own programs as whole tiles (sh_forward_parts_kernel; docs/kernel_tuning.md item 19); (): one range
    cfg["PARTS_AT"] = tuple(cfg.get("PARTS_AT", ()))
    forced_parts = os.environ.get("EQUITRITON_PARTS_AT")
    if forced_parts is not None:
        try:
            cfg["PARTS_AT"] = tuple(int(v) for v in forced_parts.replace(",", " ").split())
        except ValueError:
            raise ValueError(f"EQUITRITON_PARTS_AT takes l's separated by commas, got {forced_parts!r}") from None
    # EQUITRITON_<NAME> = 0/1 forces one choice, EQUITRITON_ROW_CHUNK a column count and EQUITRITON_LOAD_FENCE a
    # depth (measurements, tests)
    for name in _FORCED:
        if name == "PARTS_AT":  # a list of l's, read above
            continue
        forced = os.environ.get(f"EQUITRITON_{name}")
        if forced is not None:
            if name in _COUNTS and not forced.isdigit():
                raise ValueError(f"EQUITRITON_{name} takes a whole number, got {forced!r}")
            cfg[name] = int(forced) if name in _COUNTS else forced == "1"
    if not 0 <= int(cfg["LOAD_FENCE"]) <= 3:
        raise ValueError(f"LOAD_FENCE is a depth of 0 to 3 degrees, got {cfg['LOAD_FENCE']!r}")
    if direction == "forward":
        cfg["LADDER"], cfg["LOAD_FENCE"], cfg["GY_TILE"] = False, 0, False
    elif not (direction == "double_backward" and cfg["LADDER"]):
        # the derivative kernels store column by column, except the ladder double backward's d(grad_y) (WIDE_IO)
        cfg["SELECT_TILE"] = cfg["WIDE_IO"] = False
    if direction != "forward" or not whole:
        cfg["PARTS_AT"] = ()  # only the forward of a 0..l_max set is cut into ranges
    return cfg


def offsets(ls) -> tuple[tuple[int, ...], int]:
    """The first output column of each l in `ls`, and the row width DIM = sum(2l + 1)."""
    offs, o = [], 0
    for l in ls:
        offs.append(o)
        o += 2 * l + 1
    return tuple(offs), o


_I32_MAX = 2**31 - 1


def rows_within_int32(t: torch.Tensor, cfg: dict) -> torch.Tensor:
    """`t` (rows, width), or a contiguous copy of it where ROW32's 32-bit offsets of a program's rows (up to BLOCK x
    stride(0) elements) would wrap: only for views whose rows lie more than 2**31 / BLOCK elements apart."""
    if cfg.get("ROW32", False) and t.stride(0) * cfg["BLOCK"] > _I32_MAX:
        return t.contiguous()
    return t


def grid(n: int, cfg: dict) -> tuple[int]:
    # PARTS_AT (forward): one program per range of l's and block of rows. (Plain integer arithmetic, which also
    # takes torch.compile's symbolic n: triton.cdiv is a ConstexprFunction, ~2 us a call on the host.)
    block = cfg["BLOCK"]
    return ((n + block - 1) // block * (len(cfg.get("PARTS_AT", ())) + 1),)


# widest row (padded to a power of two) stored as one select-built tile for an l set other than 0..l_max (ANY_ROW)
ANY_ROW_MAX = 128
# widest grad_y tile (padded) that GY_TILE loads (2 x 64 registers per thread in float64): a wider row has its first
# GY_TILE_MAX columns in the tile (the head, degrees 0-7 of 0..l_max) and the rest loaded column by column as the body
# reaches them; the one column of l = 0 alone has no tile. The generator builds the column splits (_row_columns_P) for
# P = 2 .. GY_TILE_MAX (codegen.render.ROW_COLUMN_WIDTHS)
GY_TILE_MAX = 64


def padded_width(dim: int) -> int:
    """A row of DIM columns as a tile: the next power of two (Triton's tensor shapes are powers of two)."""
    return 1 << (dim - 1).bit_length()


def row_chunks(ls, cap: int) -> list[list[int]]:
    """The indices into `ls` of each chunk of ANY_ROW's row tile, in the order the kernel makes them (ascending l,
    then index). With `cap` and `ls` in ascending order (so the columns come in the order they are made), whole l's
    are packed into chunks of at most `cap` columns (an l wider than `cap` alone); otherwise one chunk."""
    order = sorted(range(len(ls)), key=lambda i: (ls[i], i))
    if not cap or order != list(range(len(ls))):
        return [order]
    chunks, width = [], 0
    for i in order:
        w = 2 * ls[i] + 1
        if chunks and width + w <= cap:
            chunks[-1].append(i)
            width += w
        else:
            chunks.append([i])
            width = w
    return chunks


def chunk_widths(ls, chunks) -> list[int]:
    """The columns of each chunk of `row_chunks` (an l of degree l has 2l + 1)."""
    return [sum(2 * ls[i] + 1 for i in chunk) for chunk in chunks]


def _row_chunk_meta(ls, offs, dim: int, cap: int) -> tuple[dict, int]:
    """ANY_ROW's compile-time tuples, one entry per index of `ls`: the first column and the width of its chunk,
    whether its l is the chunk's last, the padded width of the chunk after (0: none); and the first chunk's padded
    width. With them, the widest padded chunk (the tile ANY_ROW_MAX bounds)."""
    chunks = row_chunks(ls, cap)
    widths = chunk_widths(ls, chunks)
    pads = [padded_width(w) for w in widths]
    base, width, end, nxt = [0] * len(ls), [dim] * len(ls), [0] * len(ls), [0] * len(ls)
    for k, chunk in enumerate(chunks):
        for i in chunk:
            base[i], width[i] = (0 if len(chunks) == 1 else offs[chunk[0]]), widths[k]
        end[chunk[-1]] = 1
        nxt[chunk[-1]] = pads[k + 1] if k + 1 < len(chunks) else 0
    tuples = dict(
        ROW_BASE=tuple(base), ROW_WIDTH=tuple(width), ROW_END=tuple(end), ROW_NEXT=tuple(nxt), ROW_FIRST=pads[0]
    )
    return tuples, max(pads)


def part_ranges(lmax: int, cuts) -> list[list[int]]:
    """0..l_max cut into ranges of whole l's, a new range starting at each l of `cuts` (PARTS_AT)."""
    bounds = [0, *sorted(set(cuts)), lmax + 1]
    if not all(0 < c <= lmax for c in cuts):
        raise ValueError(f"PARTS_AT takes l's in 1..{lmax} where a range of the row starts, got {list(cuts)}")
    if len(bounds) - 1 > kernels.MAX_PARTS:
        raise ValueError(f"PARTS_AT cuts the row into at most {kernels.MAX_PARTS} ranges, got {list(cuts)}")
    return [list(range(a, b)) for a, b in zip(bounds, bounds[1:])]


def _parts_meta(lmax: int, dim: int, normalize: bool, normalization: int, dtype: torch.dtype, cfg: dict) -> dict:
    """sh_forward_parts_kernel's compile-time arguments: 0..l_max cut at PARTS_AT into ranges of whole l's, each
    the forward of its own l's writing its columns of the whole row (row stride DIM). The first range is stored as
    the whole-row tile of its l's (FULL_ROW as configured), every other one as one select-built tile (ANY_ROW)
    starting at its first column. FLAT_STORE needs the program's rows contiguous, so it is off."""
    parts = []
    for r in part_ranges(lmax, cfg["PARTS_AT"]):
        offs_r, width = tuple(l * l for l in r), sum(2 * l + 1 for l in r)
        head = r[0] == 0
        pcfg = dict(cfg, PARTS_AT=(), FLAT_STORE=False, ANY_ROW_CHUNK=0)
        if not head:
            pcfg.update(FULL_ROW=False, SELECT_TILE=True)
        m = meta(r, offs_r, width, normalize, normalization, dtype, pcfg)
        if not head:
            if padded_width(width) > ANY_ROW_MAX:
                raise ValueError(f"PARTS_AT {list(cfg['PARTS_AT'])}: l = {r[0]}..{r[-1]} is over {ANY_ROW_MAX} columns")
            m.update(ROW_BASE=(offs_r[0],) * len(r), ROW_WIDTH=(width,) * len(r), ROW_FIRST=padded_width(width))
        m["DIM"] = dim
        parts.append(m)
    out = {k: v for k, v in parts[0].items() if k not in kernels.PART_KEYS}
    out["PARTS"] = len(parts)
    # one argument per key and range (the generated PART_ARGS); a range past PARTS repeats the first (its branch is
    # never generated)
    for p, names in enumerate(kernels.PART_ARGS):
        out.update({name: parts[p if p < len(parts) else 0][k] for k, name in zip(kernels.PART_KEYS, names)})
    return out


def forward_kernel(meta_: dict):
    """The generated forward that a meta from `meta` is for: one range of l's, or the row cut into PARTS ranges."""
    return kernels.sh_forward_parts_kernel if meta_["PARTS"] > 1 else kernels.sh_forward_kernel


def meta(ls, offs, dim: int, normalize: bool, normalization: int, dtype: torch.dtype, cfg: dict) -> dict:
    whole = list(ls) == list(range(max(ls) + 1))
    if cfg.get("PARTS_AT") and whole:
        return _parts_meta(max(ls), dim, normalize, normalization, dtype, cfg)
    full_row = bool(cfg.get("FULL_ROW", False)) and whole
    pdim = padded_width(dim)
    select = bool(cfg.get("SELECT_TILE", False))
    gy_tile = bool(cfg.get("GY_TILE", False)) and dim >= 2
    chunked, widest = _row_chunk_meta(ls, offs, dim, int(cfg.get("ANY_ROW_CHUNK", 0)))
    return dict(
        LS=tuple(ls),
        OFFS=tuple(offs),
        DIM=dim,
        LMAX=max(ls),
        NORMALIZE=bool(normalize),
        NORMALIZATION=int(normalization),
        IS_F64=compute_f64(dtype, max(ls)),
        WIDE_IO=cfg["WIDE_IO"],
        # the full-row store needs the columns in l = 0..l_max order
        FULL_ROW=full_row,
        # the whole-row tile stored through a flat index (generated _store_rows_flat; forward, FULL_ROW only)
        FLAT_STORE=bool(cfg.get("FLAT_STORE", False)),
        M_MAJOR=bool(cfg.get("M_MAJOR", True)),
        # forward tiles built by selects from one-row-per-thread values (codegen.render._select_tile)
        SELECT_TILE=select,
        # with FULL_ROW and SELECT_TILE: the row stored in tiles of this many columns (0: one tile)
        ROW_CHUNK=int(cfg.get("ROW_CHUNK", 0)),
        # SELECT_TILE on any other l set, or on 0..l_max without FULL_ROW: the row as select-built tiles (one per
        # chunk of l's, _row_chunk_meta), where each is at most ANY_ROW_MAX wide
        ANY_ROW=select and not full_row and widest <= ANY_ROW_MAX and not cfg.get("LADDER", False),
        # the width of a row tile: the forward's padded row; with GY_TILE that of the derivative kernels' grad_y tile
        PDIM=min(pdim, GY_TILE_MAX) if gy_tile else pdim,
        **chunked,
        LADDER=bool(cfg.get("LADDER", False)),
        # 0 (off) or how many degrees of grad_y loads the ladder keeps in flight; any depth gives the duals 16 columns
        LOAD_FENCE=int(cfg.get("LOAD_FENCE", 0)),
        # the grad_y row (or its head) as one tile split into columns (generated _row_columns_P); no fence on them
        GY_TILE=gy_tile,
        ROW32=bool(cfg.get("ROW32", False)),
        BLOCK=cfg["BLOCK"],
        # programs per block of rows: 1 here; sh_forward_parts_kernel (_parts_meta) gives each range of l's its own
        PARTS=1,
        num_warps=cfg["num_warps"],
    )


# ------------------------------------------------------------------------------------------------------ eager launches
_PLANS: dict = {}
# The EQUITRITON_<NAME> overrides are read on every call (tests and sweeps set them at run time), and os.environ.get
# costs ~0.7 us a name (it encodes the key and decodes the value): 9 us of the ~30 us host cost of an eager call.
# CPython's os.environ keeps its bytes mapping in `_data`; where it has one, the raw values serve as the plan key.
_ENV_DATA = getattr(os.environ, "_data", None)
_FORCED_KEYS = tuple(os.environ.encodekey("EQUITRITON_" + n) for n in _FORCED) if _ENV_DATA is not None else ()


def _forced_settings() -> tuple:
    """The EQUITRITON_<NAME> overrides set now (raw values, or None where unset), in _FORCED order."""
    if _ENV_DATA is None:
        return tuple(os.environ.get("EQUITRITON_" + n) for n in _FORCED)
    return tuple(map(_ENV_DATA.get, _FORCED_KEYS))


def plan(
    direction: str, ls, normalize: bool, normalization: int, dtype: torch.dtype, rows=None
) -> tuple[dict, dict, int]:
    """(cfg, meta, DIM) of a launch, worked out once per l set and settings (config + meta cost ~10 us a call); the
    EQUITRITON_<NAME> overrides of `config`, FLOAT32_COMPUTE and, for the forward, whether the table's PARTS_AT
    applies at `rows` rows (parts_apply) are part of the key."""
    forced = _forced_settings()
    parts = direction == "forward" and parts_apply(rows)
    key = (direction, tuple(ls), normalize, normalization, dtype, FLOAT32_COMPUTE, parts, *forced)
    found = _PLANS.get(key)
    if found is None:
        offs, dim = offsets(ls)
        whole = list(ls) == list(range(max(ls) + 1))
        cfg = config(direction, max(ls), dtype, whole=whole, dim=dim, parts=parts, ls=list(ls))
        m = meta(ls, offs, dim, normalize, normalization, dtype, cfg)
        # the tile the kernel is built with: a row too wide for GY_TILE has none, so the coalesce skip still applies
        cfg["GY_TILE"] = m["GY_TILE"]
        found = _PLANS[key] = (cfg, m, dim)
    return found


# kernel[grid](...) costs tens of microseconds of host time per call (Triton's JITFunction.run binds every argument,
# builds the specialisation key and looks the kernel up); an MD step's SH call on ~1e4 edges takes less GPU time than
# that. Eager calls on CUDA therefore launch the CompiledKernel that their first launch returned, keyed on all that
# Triton specialises on for these kernels: the kernel, its compile-time arguments (one `meta` dict per plan), the
# device, each pointer's 16-byte alignment and whether each integer needs 64 bits (N and the strides are never
# specialised on their values). EQUITRITON_FAST_LAUNCH=0 sends every launch through kernel[grid].
FAST_LAUNCH = os.environ.get("EQUITRITON_FAST_LAUNCH", "1") == "1"
_COMPILED: dict = {}


def _launch_key(kernel, meta_: dict, args) -> tuple:
    return (kernel, id(meta_), args[0].device.index) + tuple(
        a.data_ptr() % 16 == 0 if isinstance(a, torch.Tensor) else a > _I32_MAX for a in args
    )


def run_cached(kernel, direction: str, cfg: dict, meta_: dict, grid_: tuple, args: tuple) -> None:
    """kernel[grid_](*args, **meta_) for an eager call on the current device: the first launch compiles (or loads)
    and records the CompiledKernel, later ones launch it directly. `meta_` must be the cached dict from `plan`."""
    key = _launch_key(kernel, meta_, args)
    hit = _COMPILED.get(key)
    if hit is not None:
        ck, consts = hit
        stream = _driver.active.get_current_stream(args[0].device.index)
        full = args + consts
        enter = _knobs.runtime.launch_enter_hook
        md = ck.launch_metadata(grid_, stream, *full) if enter is not None else None
        ck.run(
            grid_[0], 1, 1, stream, ck.function, ck.packed_metadata, md, enter, _knobs.runtime.launch_exit_hook, *full
        )
        return
    with compiling(direction, cfg):
        ck = kernel[grid_](*args, **meta_)
    names = list(getattr(kernel, "arg_names", ()))
    # the launcher takes every parameter in signature order: the run-time arguments, then the constexprs
    if (
        FAST_LAUNCH
        and _driver is not None
        and args[0].device.type == "cuda"
        and all(hasattr(ck, a) for a in ("run", "function", "packed_metadata", "launch_metadata"))
        and all(name in meta_ for name in names[len(args) :])
    ):
        _COMPILED[key] = (ck, tuple(meta_[name] for name in names[len(args) :]))


# ---------------------------------------------------------------------------------------------------- compile time
# Triton's TritonGPUCoalesce pass computes, for every load and store, the whole connected slice of the kernel, and the
# slice walk itself visits every op's backward and forward slice: its cost is (memory ops) x (sum of all slice sizes),
# 97-99% of the compile time of the derivative kernels (l = 0..12 double backward: ~290 s of ~295 s on one CPU core;
# docs/compile_time.md, benchmarks/compile_time.py). For these kernels the pass is the identity: every tensor is 1-D
# with BLOCK <= 32 * num_warps rows, so it can only choose sizePerThread = 1, the layout the tensors already have
# (the TTGIR has one #blocked layout and no convert_layout, and the cubin is byte-identical with the pass skipped).
# The pass is skipped while equitriton compiles a backward / double backward kernel: on by default since the H200 run
# of 2026-11-29 (triton 3.6: every CUDA test passed with it, the l = 0..12 kernels compiled in seconds, NVE runs gave
# the same trajectories with and without it); EQUITRITON_SKIP_COALESCE=0 restores Triton's full pipeline. The cubin
# identity was checked without a GPU for triton 3.6 and 3.9 (docs/compile_time.md).
SKIP_COALESCE = os.environ.get("EQUITRITON_SKIP_COALESCE", "1") == "1"
_SKIPPING = contextvars.ContextVar("equitriton_skip_coalesce", default=False)
_HOOK_LOCK = threading.Lock()
_HOOK_STATE: dict = {}


def coalesce_is_identity(direction: str, cfg: dict) -> bool:
    """Whether TritonGPUCoalesce cannot change the kernel: 1-D tensors only (no 2D tiles: the derivative kernels
    load and store column by column unless WIDE_IO, which only the ladder double backward keeps, or GY_TILE, whose
    grad_y tile the pass vectorizes) and at most one row per thread."""
    tiles = cfg.get("WIDE_IO") or cfg.get("GY_TILE")
    return direction != "forward" and not tiles and cfg["BLOCK"] <= 32 * cfg["num_warps"]


def _install_hook() -> bool:
    """Wrap Triton's TTGIR stage once per process (chaining any hook already set) so that, while `_SKIPPING` is set,
    it runs without the coalesce pass. Any missing piece of Triton's API leaves compilation as it was."""
    if "ok" in _HOOK_STATE:
        return _HOOK_STATE["ok"]
    try:
        from triton import knobs
        from triton._C.libtriton import passes

        if not callable(getattr(passes.ttgpuir, "add_coalesce", None)):
            raise AttributeError("triton has no passes.ttgpuir.add_coalesce")
        prev = knobs.runtime.add_stages_inspection_hook

        def hook(*args):
            if not args:  # cache-key part: the compiled kernel is the same with or without the pass
                return prev() if prev is not None else ("", "")
            if prev is not None:
                prev(*args)
            stages = args[1]
            if "ttgir" not in stages:
                return
            make_ttgir = stages["ttgir"]

            def ttgir(src, metadata):
                with _HOOK_LOCK:  # the pass table is process-wide: no other TTGIR stage runs while it is patched
                    if not _SKIPPING.get():
                        return make_ttgir(src, metadata)
                    add_coalesce = passes.ttgpuir.add_coalesce
                    passes.ttgpuir.add_coalesce = lambda pm: None
                    try:
                        return make_ttgir(src, metadata)
                    finally:
                        passes.ttgpuir.add_coalesce = add_coalesce

            stages["ttgir"] = ttgir

        knobs.runtime.add_stages_inspection_hook = hook
        _HOOK_STATE["ok"] = True
    except Exception:  # an older/newer Triton without these names: compile as usual
        _HOOK_STATE["ok"] = False
    return _HOOK_STATE["ok"]


@contextlib.contextmanager
def compiling(direction: str, cfg: dict, enabled: bool | None = None):
    """Context for a kernel launch: skips the coalesce pass if a compile happens inside it and that is safe."""
    if (SKIP_COALESCE if enabled is None else enabled) and coalesce_is_identity(direction, cfg) and _install_hook():
        token = _SKIPPING.set(True)
        try:
            yield
        finally:
            _SKIPPING.reset(token)
    else:
        yield


__all__ = [
    "kernels",
    "config",
    "grid",
    "meta",
    "offsets",
    "plan",
    "row_chunks",
    "chunk_widths",
    "part_ranges",
    "parts_apply",
    "forward_kernel",
    "run_cached",
    "compiling",
]
