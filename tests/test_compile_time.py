"""The EQUITRITON_SKIP_COALESCE switch (equitriton.kernels.launch.compiling): skipping Triton's coalesce pass must give
the same compiled kernel, and must only apply where the pass is the identity. Compiled for sm_90 without a GPU through
benchmarks/compile_time.py (ptxas ships in the triton wheel)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from equitriton.kernels import launch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import compile_time  # noqa: E402


def test_skip_applies_only_to_one_row_per_thread_derivative_kernels():
    for direction in ("backward", "double_backward"):
        # column-by-column I/O (1-D tensors): the pass is the identity at up to one row per thread
        for block, warps in ((32, 1), (64, 2), (64, 4), (128, 4)):
            cfg = dict(
                launch.config(direction, 4, torch.float64), WIDE_IO=False, GY_TILE=False, BLOCK=block, num_warps=warps
            )
            assert launch.coalesce_is_identity(direction, cfg)
            assert not launch.coalesce_is_identity(direction, dict(cfg, BLOCK=64 * warps))
            # the grad_y row as one tile (GY_TILE) is 2-D: the pass vectorizes its loads
            assert not launch.coalesce_is_identity(direction, dict(cfg, GY_TILE=True))
    # the ladder double backward's d(grad_y) tiles (WIDE_IO) are 2-D: the pass chooses their layout
    tiles = dict(launch.config("double_backward", 12, torch.float64), BLOCK=32, num_warps=1)
    assert tiles["LADDER"] and tiles["WIDE_IO"] and not launch.coalesce_is_identity("double_backward", tiles)
    assert not launch.coalesce_is_identity("forward", launch.config("forward", 4, torch.float64))


def test_switch_is_scoped_to_the_derivative_launch():
    cfg = {"BLOCK": 32, "num_warps": 1}
    with launch.compiling("backward", cfg, enabled=False):
        assert not launch._SKIPPING.get()
    with launch.compiling("forward", cfg, enabled=True):
        assert not launch._SKIPPING.get()
    with launch.compiling("backward", cfg, enabled=True):
        assert launch._SKIPPING.get() == launch._install_hook()
    assert not launch._SKIPPING.get()


@pytest.mark.parametrize("ladder", ["0", "1"], ids=["duals", "ladder"])
@pytest.mark.parametrize("direction", ["backward", "double_backward"])
def test_skipping_the_pass_gives_the_same_cubin(direction, ladder, monkeypatch):
    """For both bodies of the derivative kernels (traced duals, the derivative ladder; forced in the children)."""
    monkeypatch.setenv("EQUITRITON_LADDER", ladder)
    plain = compile_time.run_one(direction, "0-2", "float64", True, 1, timeout=600)
    skipped = compile_time.run_one(direction, "0-2", "float64", True, 1, timeout=600, skip_coalesce=True)
    assert launch._install_hook(), "this triton lacks the hook the switch needs"
    assert not plain["timed_out"] and not skipped["timed_out"]
    assert plain.get("cubin_sha256") and plain["cubin_sha256"] == skipped["cubin_sha256"]
    assert plain["cfg"]["LADDER"] == (ladder == "1")
