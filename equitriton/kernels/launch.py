"""Grid, block size and compile-time arguments for the generated Triton kernels.

The number of points N is a run-time argument (never specialised), so a kernel compiles once per
(l set, normalize, normalization, dtype, direction) and is reused for every N.
"""

from __future__ import annotations

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


def config(direction: str, lmax: int, dtype: torch.dtype) -> dict:
    """Launch configuration, chosen from the H100 sweep of benchmarks/tune_kernels.py (docs/performance.md).

    WIDE_IO loads/stores each l's row segment as one 2D tile instead of column by column. Measured at N = 2**22:
    it makes the forward 2-7x faster from l_max 2 up (per-column 8-byte stores at a stride of DIM leave memory
    sectors partially written), but the backward reads g faster column by column (the rows stay in L1), and in the
    double backward the tile split adds live registers that spill from l_max 6 up.
    EQUITRITON_WIDE_IO=0/1 forces one choice everywhere (for measurements).
    """
    if direction == "forward":
        cfg = {"BLOCK": 64, "num_warps": 4, "WIDE_IO": lmax >= 2} if lmax >= 2 else {"BLOCK": 128, "num_warps": 4}
    elif direction == "backward":
        cfg = {"BLOCK": 128, "num_warps": 4, "WIDE_IO": False}
    else:
        cfg = {"BLOCK": 64, "num_warps": 4, "WIDE_IO": 3 <= lmax <= 5}
    cfg.setdefault("WIDE_IO", False)
    forced = os.environ.get("EQUITRITON_WIDE_IO")
    if forced is not None:
        cfg["WIDE_IO"] = forced == "1"
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
        BLOCK=cfg["BLOCK"],
        num_warps=cfg["num_warps"],
    )


__all__ = ["kernels", "config", "grid", "meta"]
