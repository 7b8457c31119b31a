"""Grid, block size and compile-time arguments for the generated Triton kernels.

The number of points N is a run-time argument (never specialised), so a kernel compiles once per
(l set, normalize, normalization, dtype, direction) and is reused for every N.
"""

from __future__ import annotations

import torch
import triton

from ..generated import triton_kernels as kernels

# Rows per program and warps, per direction; measured on the H100 (docs/performance.md).
_BLOCK = {"forward": 128, "backward": 128, "double_backward": 64}


def config(direction: str, lmax: int, dtype: torch.dtype) -> dict:
    block = _BLOCK[direction]
    if lmax >= 8 and dtype == torch.float64:
        block = max(32, block // 2)  # the high-l recurrences hold many live registers
    return {"BLOCK": block, "num_warps": 4}


def grid(n: int, cfg: dict) -> tuple[int]:
    return (triton.cdiv(n, cfg["BLOCK"]),)


def meta(ls, offs, dim: int, normalize: bool, normalization: int, dtype: torch.dtype, cfg: dict) -> dict:
    return dict(
        LS=tuple(ls), OFFS=tuple(offs), DIM=dim, LMAX=max(ls), NORMALIZE=bool(normalize),
        NORMALIZATION=int(normalization), IS_F64=dtype == torch.float64, BLOCK=cfg["BLOCK"],
        num_warps=cfg["num_warps"],
    )


__all__ = ["kernels", "config", "grid", "meta"]
