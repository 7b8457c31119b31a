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


# Rows per program and warps, per direction; measured on the H100 (docs/performance.md).
_BLOCK = {"forward": 128, "backward": 128, "double_backward": 64}


def config(direction: str, lmax: int, dtype: torch.dtype) -> dict:
    block = _BLOCK[direction]
    if lmax >= 8 and compute_f64(dtype):
        block = max(32, block // 2)  # the high-l recurrences hold many live registers
    return {"BLOCK": block, "num_warps": 4}


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
        BLOCK=cfg["BLOCK"],
        num_warps=cfg["num_warps"],
    )


__all__ = ["kernels", "config", "grid", "meta"]
