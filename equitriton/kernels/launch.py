"""Grid, block size and compile-time arguments for the generated Triton kernels.

The number of points N is a run-time argument (never specialised), so a kernel compiles once per
(l set, normalize, normalization, dtype, direction) and is reused for every N.
"""

from __future__ import annotations

import json
import os

import torch
import triton

from ..generated import triton_kernels as kernels

# float32 data is evaluated in float64 and rounded once at the store: the three-term l-recurrences lose ~l^2 ulps
# in float32 (2-5x e3nn's float32 error at l >= 7). The op is memory-bound, so on cards with full-rate FP64 (H100,
# Intel Max) this costs little; EQUITRITON_FLOAT32_COMPUTE=float32 selects the native float32 path (consumer GPUs).
FLOAT32_COMPUTE = os.environ.get("EQUITRITON_FLOAT32_COMPUTE", "float64")
if FLOAT32_COMPUTE not in ("float64", "float32"):
    raise ValueError(f"EQUITRITON_FLOAT32_COMPUTE must be 'float64' or 'float32', got {FLOAT32_COMPUTE!r}")


def compute_f64(dtype: torch.dtype) -> bool:
    """Whether data of `dtype` is evaluated in float64."""
    return dtype == torch.float64 or FLOAT32_COMPUTE == "float64"


# Measured best configurations (benchmarks/tune_kernels.py --write-table), keyed "direction/lmax/dtype"; the
# heuristics below apply where the table has no entry. EQUITRITON_TUNING=path points at another table.
_TABLE_PATH = os.environ.get("EQUITRITON_TUNING", os.path.join(os.path.dirname(__file__), "tuned.json"))
_TABLE: dict = {}
if os.path.exists(_TABLE_PATH):
    with open(_TABLE_PATH) as _f:
        _TABLE = json.load(_f)["configs"]


def _full_row_block(lmax: int) -> int:
    # one (BLOCK, P) output tile per program, P = next power of two >= (lmax + 1)**2: ~32 values per thread
    p = 1 << ((lmax + 1) ** 2 - 1).bit_length()
    return 64 if p <= 64 else 32


def config(direction: str, lmax: int, dtype: torch.dtype) -> dict:
    """Launch configuration, chosen from the H100 sweep of benchmarks/tune_kernels.py (docs/kernel_tuning.md).

    WIDE_IO loads/stores each l's row segment as one 2D tile instead of column by column; FULL_ROW (forward, when
    the l set is 0..l_max in order) stores the whole output row as one tile. Measured at N = 2**22: per-l tiles
    make the forward 2-7x faster from l_max 2 up (per-column 8-byte stores at a stride of DIM leave memory sectors
    partially written), but the backward read g faster column by column (the rows stay in L1), so the derivative
    kernels are generated column by column, in m-major order (codegen.harmonics), and ignore WIDE_IO/FULL_ROW.
    """
    key = f"{direction}/{lmax}/{str(dtype).split('.')[-1]}"
    f64 = dtype == torch.float64
    if key in _TABLE:
        cfg = {k: v for k, v in _TABLE[key].items() if k != "ms"}
    elif direction == "forward":
        # measured: the whole-row tile wins in float64 up to l_max 4 (P <= 32 columns), per-l tiles above
        cfg = {"BLOCK": 64, "num_warps": 4, "WIDE_IO": lmax >= 2, "FULL_ROW": f64 and 2 <= lmax <= 5}
    elif direction == "backward":
        # measured: l-major order wins the float64 backward at mid l, m-major everywhere else
        cfg = {"BLOCK": 128 if lmax <= 10 or not f64 else 64, "num_warps": 4, "M_MAJOR": not (f64 and lmax <= 10)}
    else:
        cfg = {"BLOCK": 64, "num_warps": 4, "M_MAJOR": True}
    cfg.setdefault("WIDE_IO", False)
    cfg.setdefault("FULL_ROW", False)
    cfg.setdefault("M_MAJOR", True)
    for name in ("WIDE_IO", "FULL_ROW", "M_MAJOR"):  # EQUITRITON_<NAME> = 0/1 forces one choice (measurements)
        forced = os.environ.get(f"EQUITRITON_{name}")
        if forced is not None:
            cfg[name] = forced == "1"
    return cfg


def grid(n: int, cfg: dict) -> tuple[int]:
    return (triton.cdiv(n, cfg["BLOCK"]),)


def meta(ls, offs, dim: int, normalize: bool, normalization: int, dtype: torch.dtype, cfg: dict) -> dict:
    return dict(
        LS=tuple(ls),
        OFFS=tuple(offs),
        DIM=dim,
        LMAX=max(ls),
        NORMALIZE=bool(normalize),
        NORMALIZATION=int(normalization),
        IS_F64=compute_f64(dtype),
        WIDE_IO=cfg["WIDE_IO"],
        # the full-row store needs the columns in l = 0..l_max order
        FULL_ROW=bool(cfg.get("FULL_ROW", False)) and list(ls) == list(range(max(ls) + 1)),
        M_MAJOR=bool(cfg.get("M_MAJOR", True)),
        BLOCK=cfg["BLOCK"],
        num_warps=cfg["num_warps"],
    )


__all__ = ["kernels", "config", "grid", "meta"]
