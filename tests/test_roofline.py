"""benchmarks/roofline.py: the operation and byte counts on cases checked by hand, the SASS and layout parsers on
small inputs, and docs/roofline.md current with the script's output."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import roofline  # noqa: E402


def test_forward_lmax1_by_hand():
    # normalisation: r = sqrt(x*x + y*y + z*z) (3 mul, 2 add, 1 sqrt) and x, y, z / max(r, eps) (3 div);
    # Y_00 is a constant (no op); Y_1m = K_1 * (z, x, y)[...]: one multiply each (Q_11 = 1 and Q_10 = Z cost nothing)
    ops = roofline.ops_per_row("forward", 1)
    assert {k: v for k, v in ops.items() if v} == {"mul": 6, "add": 2, "sqrt": 1, "div": 3}
    assert roofline.flops(ops) == 12
    # reads x, y, z; writes 1 + 3 columns
    assert roofline.bytes_per_row("forward", 1, "float64") == 7 * 8
    assert roofline.bytes_per_row("forward", 1, "float32") == 7 * 4


def test_backward_lmax1_by_hand():
    # the l = 1 derivatives are constants (K_1), so the traced program adds nothing; each of the 3 columns has one
    # nonzero partial derivative: v_a += g * K_1 (1 mul + 1 add = one FMA = 2 FLOPs); plus the fixed code:
    # prologue 3 mul 2 add 1 sqrt 3 div, epilogue uv = u.v (3 mul 2 add), v - u uv (3 mul 3 sub), / d (3 div)
    ops = roofline.ops_per_row("backward", 1)
    assert {k: v for k, v in ops.items() if v} == {"mul": 12, "add": 10, "sqrt": 1, "div": 6}
    assert roofline.flops(ops) == 29
    assert roofline.bytes_per_row("backward", 1, "float64") == (3 + 4 + 3) * 8


def test_bytes_and_orders():
    assert roofline.bytes_per_row("double_backward", 12, "float64") == (3 + 169 + 3 + 169 + 3) * 8
    # the same math in m-major and l-major order (common subexpressions shared either way)
    for d in ("backward", "double_backward"):
        assert roofline.flops(roofline.ops_per_row(d, 4, True)) == roofline.flops(roofline.ops_per_row(d, 4, False))
    # more l, more work, in every direction
    for d in roofline.DIRECTIONS:
        f = [roofline.flops(roofline.ops_per_row(d, l)) for l in (1, 2, 4)]
        assert f == sorted(f) and len(set(f)) == 3


SASS = """
        /*0000*/                   LDC R1, c[0x0][0x28] ;                                  /* 0x00000a00ff017b82 */
        /*0010*/              @!P0 LDG.E.64 R20, desc[UR8][R8.64] ;                        /* 0x0000000808148981 */
        /*0020*/                   DMUL R4, R20, R20 ;                                     /* 0x0000001414047228 */
        /*0030*/                   DFMA R4, R2, R2, R4 ;                                   /* 0x000000020204722b */
        /*0040*/                   STL.64 [R1], R4 ;                                       /* 0x0000000401007387 */
        /*0050*/                   LDL.64 R6, [R1] ;                                       /* 0x0000000001067983 */
        /*0060*/                   MUFU.RSQ64H R9, R5 ;                                    /* 0x0000000500097308 */
        /*0070*/               @P0 EXIT ;                                                  /* 0x000000000000094d */
        /*0080*/                   STG.E.64 desc[UR8][R2.64], R4 ;                         /* 0x0000000402007986 */
        /*0090*/                   EXIT ;                                                  /* 0x000000000000794d */
        /*00a0*/                   DFMA R4, R2, R2, R4 ;                                   /* 0x000000020204722b */
"""


def test_sass_summary_counts_the_main_path():
    s = roofline.sass_summary(SASS)
    assert s["all"] == 10 and s["fp64"] == 2 and s["DFMA"] == 1 and s["DMUL"] == 1
    assert s["LDL_bytes"] == 8 and s["STL_bytes"] == 8 and s["mufu"] == 1 and s["LDG"] == 1 and s["STG"] == 1


def test_threads_per_row_from_the_layout():
    ttgir = (
        "#blocked = #ttg.blocked<{sizePerThread = [1], threadsPerWarp = [32], warpsPerCTA = [4], order = [0]}>\n"
        "    %r = math.sqrt %a : tensor<64xf64, #blocked> loc(#loc1)\n"
    )
    assert roofline._threads_per_row(ttgir, 64, 4) == 2
    assert roofline._threads_per_row(ttgir.replace("64xf64", "128xf64"), 128, 4) == 1
    assert roofline._threads_per_row(ttgir.replace("64xf64", "256xf64"), 256, 4) == 1


def test_doc_is_current():
    current, fresh = roofline.regenerate(str(ROOT))
    assert current == fresh, "docs/roofline.md is stale: run python benchmarks/roofline.py --markdown docs/roofline.md"


def test_counts_agree_with_the_compiled_kernels():
    # the op-mix bound (max(mul, add) + 8 per division/sqrt) is a lower bound on the FP64 instructions ptxas emits
    pts, _ = roofline.all_points(str(ROOT))
    compiled = [p for p in pts if "sass_fp64" in p]
    assert len(compiled) == 3 * 2 * 12
    for p in compiled:
        assert p["mix_instr"] <= p["sass_fp64"] <= 1.25 * p["mix_instr"], (p["direction"], p["lmax"], p["dtype"])
