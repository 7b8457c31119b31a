"""equitriton/kernels/launch.py: which store each l set gets, and the overrides (no kernels run here; their results
are checked by tests/test_triton_interpreter.py on CPU and tests/test_cuda.py on a GPU)."""

from __future__ import annotations

import pytest
import torch
import triton

from equitriton.kernels import launch


@pytest.fixture(autouse=True)
def no_overrides(monkeypatch):
    for name in launch._FORCED:
        monkeypatch.delenv(f"EQUITRITON_{name}", raising=False)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("lmax", [0, 1, 2, 5, 7, 9, 11, 12])
def test_whole_rows_are_built_by_selects_one_row_per_thread(lmax, dtype):
    # at an MD-sized row count: from 2^20 rows the table cuts the float64 l_max 12 row into ranges (test_parts_meta)
    cfg, meta, dim = launch.plan("forward", list(range(lmax + 1)), True, 1, dtype, rows=4096)
    assert dim == (lmax + 1) ** 2
    assert meta["FULL_ROW"] and meta["SELECT_TILE"] and not meta["ANY_ROW"]
    assert cfg["BLOCK"] == 32 * cfg["num_warps"]  # one row per thread: the selects fold to register moves
    if meta["ROW_CHUNK"]:
        assert meta["ROW_CHUNK"] < dim  # chunks only where the row is wider


@pytest.mark.parametrize(
    "ls, any_row, pdim",
    [([6], True, 16), ([0, 2, 10], True, 32), ([12], True, 32), ([3, 1, 3, 0], True, 32), ([12] * 6, False, 256)],
)
def test_other_l_sets(ls, any_row, pdim):
    """Any other l set: one select-built row tile up to ANY_ROW_MAX columns, per-l join tiles beyond."""
    cfg, meta, dim = launch.plan("forward", ls, True, 1, torch.float64)
    assert not meta["FULL_ROW"] and meta["PDIM"] == pdim and meta["ANY_ROW"] is any_row
    assert meta["SELECT_TILE"] is any_row and meta["WIDE_IO"]


@pytest.mark.parametrize(
    "ls, cap, chunks",
    [
        (list(range(13)), 128, [list(range(11)), [11, 12]]),  # 121 + 48 columns
        (list(range(9)), 64, [list(range(8)), [8]]),  # 64 + 17
        (list(range(9)), 49, [list(range(7)), [7, 8]]),  # 49 + 32
        (list(range(13)), 16, [[0, 1, 2, 3], [4], [5], [6], [7], [8], [9], [10], [11], [12]]),  # an l wider: alone
        ([0, 2, 10], 16, [[0, 1], [2]]),
        ([2, 2, 5], 5, [[0], [1], [2]]),
        ([3, 1, 3, 0], 16, [[3, 1, 0, 2]]),  # not ascending: one chunk, in the order the kernel makes the l's
        (list(range(13)), 0, [list(range(13))]),
    ],
)
def test_row_chunks(ls, cap, chunks):
    assert launch.row_chunks(ls, cap) == chunks
    assert sum(launch.chunk_widths(ls, chunks)) == launch.offsets(ls)[1]  # every column in exactly one chunk


def test_chunked_row_meta(monkeypatch):
    """0..12 (169 columns) fits ANY_ROW only in chunks: columns 0-120 stored once l = 10 is made (tile of 128), 121-168
    after l = 12 (tile of 64)."""
    monkeypatch.setenv("EQUITRITON_FULL_ROW", "0")
    monkeypatch.setenv("EQUITRITON_SELECT_TILE", "1")
    _, whole, _ = launch.plan("forward", list(range(13)), True, 1, torch.float64, rows=4096)
    assert not whole["ANY_ROW"]  # one 256-wide tile: over ANY_ROW_MAX
    monkeypatch.setenv("EQUITRITON_ANY_ROW_CHUNK", "128")
    _, m, _ = launch.plan("forward", list(range(13)), True, 1, torch.float64, rows=4096)
    assert m["ANY_ROW"] and not m["FULL_ROW"] and m["ROW_FIRST"] == 128
    assert m["ROW_BASE"] == (0,) * 11 + (121, 121) and m["ROW_WIDTH"] == (121,) * 11 + (48, 48)
    assert m["ROW_END"] == (0,) * 10 + (1, 0, 1) and m["ROW_NEXT"] == (0,) * 10 + (64, 0, 0)
    monkeypatch.setenv("EQUITRITON_ANY_ROW_CHUNK", "x")
    with pytest.raises(ValueError, match="EQUITRITON_ANY_ROW_CHUNK takes a whole number"):
        launch.plan("forward", list(range(12)), True, 1, torch.float64)


def test_part_ranges():
    assert launch.part_ranges(12, (11,)) == [list(range(11)), [11, 12]]
    assert launch.part_ranges(12, (11, 8, 8)) == [list(range(8)), [8, 9, 10], [11, 12]]  # sorted, repeats merged
    assert launch.part_ranges(4, ()) == [list(range(5))]
    with pytest.raises(ValueError, match="PARTS_AT takes l's in 1..4"):
        launch.part_ranges(4, (5,))
    with pytest.raises(ValueError, match="PARTS_AT takes l's in 1..4"):
        launch.part_ranges(4, (0,))
    with pytest.raises(ValueError, match="at most 3 ranges"):
        launch.part_ranges(12, (3, 6, 9))


def test_table_parts_apply_from_2_20_rows():
    """The table cuts the float64 l_max 12 forward's row (PARTS_AT) only where that was measured faster: from
    PARTS_MIN_ROWS rows, or with no size given (the table as measured); a symbolic row count keeps one range."""
    ls = list(range(13))
    assert launch.plan("forward", ls, True, 1, torch.float64)[1]["PARTS"] == 2
    assert launch.plan("forward", ls, True, 1, torch.float64, rows=launch.PARTS_MIN_ROWS)[1]["PARTS"] == 2
    small_cfg, small, _ = launch.plan("forward", ls, True, 1, torch.float64, rows=launch.PARTS_MIN_ROWS - 1)
    assert small["PARTS"] == 1 and small_cfg["PARTS_AT"] == () and small["FULL_ROW"] and small["ROW_CHUNK"] == 128
    assert launch.grid(1000, small_cfg) == (triton.cdiv(1000, small_cfg["BLOCK"]),)
    assert not launch.parts_apply(torch.SymInt) and not launch.parts_apply(4096)
    assert launch.plan("forward", ls, True, 1, torch.float32, rows=2**22)[1]["PARTS"] == 1  # no float32 entry


def test_parts_meta(monkeypatch):
    """PARTS_AT = 11 on 0..12: l = 0..10 stored as its whole-row tile, l = 11..12 as one 64-wide tile at column 121,
    both with the whole row's stride; two programs per block of rows. Ignored by the derivative kernels and by l
    sets other than 0..l_max."""
    monkeypatch.setenv("EQUITRITON_PARTS_AT", "11")
    cfg, m, dim = launch.plan("forward", list(range(13)), True, 1, torch.float64)
    assert cfg["PARTS_AT"] == (11,) and m["PARTS"] == 2 and m["DIM"] == dim == 169
    assert m["LS_0"] == tuple(range(11)) and m["LS_1"] == (11, 12) and m["OFFS_1"] == (121, 144)
    assert m["FULL_ROW_0"] and not m["FULL_ROW_1"] and m["ANY_ROW_1"] and not m["ANY_ROW_0"] and not m["FLAT_STORE"]
    assert m["ROW_BASE_1"] == (121, 121) and m["ROW_WIDTH_1"] == (48, 48) and m["ROW_FIRST_1"] == 64
    assert m["ROW_END_1"] == (0, 1) and (m["LMAX_0"], m["LMAX_1"]) == (10, 12)
    assert m["LS_2"] == m["LS_0"]  # a range past PARTS: a placeholder, its branch is not generated
    assert launch.forward_kernel(m) is launch.kernels.sh_forward_parts_kernel
    assert launch.grid(1000, cfg) == (2 * triton.cdiv(1000, cfg["BLOCK"]),)
    # every compile-time argument of the generated parts kernel, and no other
    assert set(m) - {"num_warps"} == set(launch.kernels.sh_forward_parts_kernel.arg_names[5:])
    assert set(launch.meta([0, 1], (0, 1), 4, True, 1, torch.float64, dict(cfg, PARTS_AT=()))) - {"num_warps"} == set(
        launch.kernels.sh_forward_kernel.arg_names[5:]
    )
    for direction in ("backward", "double_backward"):
        dcfg, dm, _ = launch.plan(direction, list(range(13)), True, 1, torch.float64)
        assert dcfg["PARTS_AT"] == () and dm["PARTS"] == 1
    scfg, sm, _ = launch.plan("forward", [0, 2, 10], True, 1, torch.float64)
    assert scfg["PARTS_AT"] == () and sm["PARTS"] == 1 and launch.forward_kernel(sm) is launch.kernels.sh_forward_kernel
    monkeypatch.setenv("EQUITRITON_PARTS_AT", "")
    cfg, m, _ = launch.plan("forward", list(range(13)), True, 1, torch.float64)
    assert cfg["PARTS_AT"] == () and m["PARTS"] == 1 and launch.grid(1000, cfg) == (triton.cdiv(1000, cfg["BLOCK"]),)
    monkeypatch.setenv("EQUITRITON_PARTS_AT", "ten")
    with pytest.raises(ValueError, match="EQUITRITON_PARTS_AT takes l's separated by commas"):
        launch.plan("forward", list(range(12)), True, 1, torch.float64)
    monkeypatch.setenv("EQUITRITON_PARTS_AT", "2")  # l = 2..12: 165 columns, wider than one ANY_ROW tile
    with pytest.raises(ValueError, match="l = 2..12 is over 128 columns"):
        launch.plan("forward", list(range(13)), True, 1, torch.float64)


@pytest.mark.parametrize("direction", ["backward", "double_backward"])
def test_derivative_kernels_select_only_on_the_ladder_double_backward(direction, monkeypatch):
    """Only the ladder double backward stores a row segment (d(grad_y)) as a tile; every other derivative kernel
    stores column by column whatever is forced, and none builds the forward's row tile (ANY_ROW)."""
    monkeypatch.setenv("EQUITRITON_SELECT_TILE", "1")
    monkeypatch.setenv("EQUITRITON_WIDE_IO", "1")
    for ladder in ("0", "1"):
        monkeypatch.setenv("EQUITRITON_LADDER", ladder)
        for ls in ([0, 1, 2], [6], [12] * 6):
            _, meta, _ = launch.plan(direction, ls, True, 1, torch.float64)
            tiles = direction == "double_backward" and ladder == "1"
            assert meta["SELECT_TILE"] == meta["WIDE_IO"] == tiles and meta["LADDER"] == (ladder == "1")
            assert not meta["ANY_ROW"]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("lmax", [2, 5, 6, 7, 9, 11, 12])
def test_double_backward_runs_on_the_ladder_with_tiles(lmax, dtype):
    """The ladder double backward, d(grad_y) stored as per-degree select tiles one row per thread, measured fastest
    at every swept l_max from 2 (kernel_tuning.md item 11); also where the launch table has no entry (9, 11) and at
    l_max 5 and 7, whose entries came from the grad_y tile sweep (item 15)."""
    cfg, meta, _ = launch.plan("double_backward", list(range(lmax + 1)), True, 1, dtype)
    assert meta["LADDER"] and meta["WIDE_IO"] and meta["SELECT_TILE"]
    assert cfg["BLOCK"] == 32 * cfg["num_warps"]


def test_load_fence_in_the_table_and_never_on_the_forward(monkeypatch):
    """LOAD_FENCE (render._fence) where the fence sweeps measured a gain over 5% (kernel_tuning.md item 13): the
    backward on the ladder at float64 l_max 8, 10, 12 and float32 l_max 10, on m-major duals at float32 l_max 4; the
    forward has no grad_y loads, so a forced fence does not reach its kernel."""
    for lmax, dtype in ((8, torch.float64), (10, torch.float64), (12, torch.float64), (10, torch.float32)):
        ladder = launch.config("backward", lmax, dtype)
        assert ladder["LOAD_FENCE"] and ladder["LADDER"], (lmax, dtype)
    duals = launch.config("backward", 4, torch.float32)
    assert duals["LOAD_FENCE"] and not duals["LADDER"] and duals["M_MAJOR"]
    assert not launch.config("backward", 2, torch.float64)["LOAD_FENCE"]
    monkeypatch.setenv("EQUITRITON_LOAD_FENCE", "1")
    _, fwd, _ = launch.plan("forward", list(range(5)), True, 1, torch.float64)
    _, bwd, _ = launch.plan("backward", list(range(5)), True, 1, torch.float64)
    assert not fwd["LOAD_FENCE"] and bwd["LOAD_FENCE"]


def test_load_fence_is_a_depth(monkeypatch):
    """EQUITRITON_LOAD_FENCE names how many degrees of loads the ladder keeps in flight: 2 reaches the kernel as 2
    (not as True), and a depth the kernels do not build is refused by name."""
    monkeypatch.setenv("EQUITRITON_LOAD_FENCE", "2")
    _, bwd, _ = launch.plan("backward", list(range(5)), True, 1, torch.float64)
    assert bwd["LOAD_FENCE"] == 2 and type(bwd["LOAD_FENCE"]) is int
    monkeypatch.setenv("EQUITRITON_LOAD_FENCE", "3")
    assert launch.config("backward", 4, torch.float64)["LOAD_FENCE"] == 3
    monkeypatch.setenv("EQUITRITON_LOAD_FENCE", "4")
    with pytest.raises(ValueError, match="LOAD_FENCE"):
        launch.config("backward", 4, torch.float64)
    monkeypatch.setenv("EQUITRITON_LOAD_FENCE", "yes")
    with pytest.raises(ValueError, match="EQUITRITON_LOAD_FENCE takes a whole number"):
        launch.config("backward", 4, torch.float64)
    # the table stores depths, not flags
    fences = [c["LOAD_FENCE"] for c in launch._TABLE.values() if "LOAD_FENCE" in c]
    assert fences and all(type(v) is int and 0 <= v <= 3 for v in fences)


def test_gy_tile_reaches_the_derivative_kernels_up_to_its_width(monkeypatch):
    """EQUITRITON_GY_TILE=1 loads grad_y as one tile in the derivative kernels only: the whole row where it has up to
    GY_TILE_MAX padded columns (l_max 3: 16; [12, 5]: 36 -> 64), the head of a wider one (l_max 8: the first 64 of
    81 columns; [10, 11, 12]: 64 of 69). A kernel with the tile runs Triton's coalesce pass (it vectorizes the tile's
    loads); one without keeps the skip."""
    monkeypatch.setenv("EQUITRITON_GY_TILE", "1")
    for direction in ("backward", "double_backward"):
        for ls, pdim in ((list(range(4)), 16), ([12, 5], 64), (list(range(9)), 64), ([10, 11, 12], 64)):
            cfg, meta, _ = launch.plan(direction, ls, True, 1, torch.float64)
            assert meta["GY_TILE"] and cfg["GY_TILE"] and meta["PDIM"] == pdim, (direction, ls)
            # the double backward's d(grad_y) tiles (WIDE_IO) keep the pass whatever GY_TILE is
            assert not launch.coalesce_is_identity(direction, cfg)
    # without the tile the forward's padded row width stays (l_max 8: 128)
    monkeypatch.setenv("EQUITRITON_GY_TILE", "0")
    assert launch.plan("backward", list(range(9)), True, 1, torch.float64)[1]["PDIM"] == 128
    monkeypatch.setenv("EQUITRITON_GY_TILE", "1")
    _, fwd, _ = launch.plan("forward", list(range(4)), True, 1, torch.float64)
    assert not fwd["GY_TILE"]
    monkeypatch.delenv("EQUITRITON_GY_TILE")
    # the table (H200 gytile sweep): the tile wherever the row stride is a multiple of 64 or 128 bytes
    for key in ("backward/3/float64", "backward/3/float32", "backward/7/float32", "double_backward/3/float64"):
        assert launch._TABLE[key]["GY_TILE"], key
    # ... and its head on the wider rows (gyhead sweep, kernel_tuning.md item 20): the backward at l_max 8-12
    for lmax in (8, 10, 12):
        for dtype in (torch.float64, torch.float32):
            _, meta, dim = launch.plan("backward", list(range(lmax + 1)), True, 1, dtype)
            assert meta["GY_TILE"] and meta["LADDER"] and meta["PDIM"] == 64 < dim, (lmax, dtype)
    assert not launch.config("backward", 2, torch.float64)["GY_TILE"]
    # l = 0 alone has one column: nothing to tile
    assert not launch.plan("backward", [0], True, 1, torch.float64)[1]["GY_TILE"]
    monkeypatch.setenv("EQUITRITON_GY_TILE", "0")
    cfg, meta, _ = launch.plan("backward", list(range(4)), True, 1, torch.float64)
    assert not meta["GY_TILE"]


def test_sparse_sets_take_their_own_table_entry(monkeypatch):
    """An l set other than 0..l_max takes the launch table's entry for that set where it has one (--sweep sparse,
    docs/kernel_tuning.md item 21), else its l_max's; 0..l_max and the forward keep the l_max entry, and [12]'s entry
    is not 0..12's."""
    for direction, ls, dtype in (
        ("backward", [0, 2, 10], torch.float32),
        ("backward", [12], torch.float64),
        ("double_backward", [12], torch.float64),
        ("double_backward", [6], torch.float32),
    ):
        key = launch.table_key(direction, max(ls), dtype, ls)
        assert key.split("/")[1] == "[" + ",".join(map(str, ls)) + "]" and key in launch._TABLE
        cfg, meta, _ = launch.plan(direction, ls, True, 1, dtype)
        entry = launch._TABLE[key]
        assert (cfg["BLOCK"], cfg["num_warps"], cfg["LOAD_FENCE"]) == (
            entry["BLOCK"],
            entry["num_warps"],
            entry["LOAD_FENCE"],
        )
        assert meta["GY_TILE"] is entry["GY_TILE"], key
    # [0, 2, 10] float32 loads column by column, where its l_max's entry (0..10) tiles the head
    assert not launch.plan("backward", [0, 2, 10], True, 1, torch.float32)[1]["GY_TILE"]
    assert launch.plan("backward", list(range(11)), True, 1, torch.float32)[1]["GY_TILE"]
    # a set without an entry of its own, and the same l's in another order, take the l_max entry
    for ls in ([0, 2, 8], [10, 2, 0]):
        cfg = launch.config("backward", max(ls), torch.float32, whole=False, dim=launch.offsets(ls)[1], ls=ls)
        assert cfg == launch.config("backward", max(ls), torch.float32)
    # the forward of a sparse set keeps its select-built row
    assert launch.config("forward", 12, torch.float64, whole=False, dim=25, ls=[12])["SELECT_TILE"]


def test_every_tile_width_launch_allows_has_its_generated_split():
    from equitriton.codegen.render import ROW_COLUMN_WIDTHS

    assert max(ROW_COLUMN_WIDTHS) == launch.GY_TILE_MAX
    assert all(hasattr(launch.kernels, f"_row_columns_{p}") for p in ROW_COLUMN_WIDTHS)


def test_overrides_reach_the_plan(monkeypatch):
    ls = list(range(13))
    _, base, _ = launch.plan("forward", ls, True, 1, torch.float64, rows=4096)
    monkeypatch.setenv("EQUITRITON_ROW_CHUNK", "64")
    monkeypatch.setenv("EQUITRITON_SELECT_TILE", "0")
    _, forced, _ = launch.plan("forward", ls, True, 1, torch.float64, rows=4096)
    assert forced["ROW_CHUNK"] == 64 and not forced["SELECT_TILE"] and forced is not base
    assert launch.config("forward", 12, torch.float64)["ROW_CHUNK"] == 64


def test_row32_where_the_table_says_and_forced_by_the_environment(monkeypatch):
    ls, offs = [0, 1, 2, 3, 4], [0, 1, 4, 9, 16]
    on = [("forward", 2, torch.float32), ("double_backward", 6, torch.float64), ("double_backward", 12, torch.float32)]
    off = [("forward", 12, torch.float64), ("double_backward", 10, torch.float64), ("backward", 4, torch.float64)]
    for direction, lmax, dtype in on + off:
        cfg = launch.config(direction, lmax, dtype, parts=False)  # meta on l = 0..4 below: no row cut at l = 10
        assert cfg["ROW32"] is ((direction, lmax, dtype) in on), (direction, lmax, dtype)
        assert launch.meta(ls, offs, 25, True, 1, dtype, cfg)["ROW32"] is cfg["ROW32"]
    assert launch.config("forward", 7, torch.float64)["ROW32"] is False  # no table entry: off
    monkeypatch.setenv("EQUITRITON_ROW32", "1")
    assert launch.config("forward", 12, torch.float64)["ROW32"] is True
    monkeypatch.setenv("EQUITRITON_ROW32", "0")
    assert launch.config("forward", 2, torch.float32)["ROW32"] is False


def test_rows_too_far_apart_for_32_bit_offsets_are_copied_first():
    # ROW32 addresses row r of a program as r * stride(0) in 32 bits, r < BLOCK: a view whose rows lie 2**31 / BLOCK
    # elements apart or more would wrap, so it is made contiguous first (meta tensors: no storage needed)
    cfg = {"BLOCK": 64, "ROW32": True}
    near = torch.empty_strided((5, 3), (4, 1), device="meta")
    assert launch.rows_within_int32(near, cfg) is near
    far = torch.empty_strided((5, 3), (2**31 // 64, 1), device="meta")
    assert launch.rows_within_int32(far, cfg).stride() == (3, 1)
    just_below = torch.empty_strided((5, 3), ((2**31 - 1) // 64, 1), device="meta")
    assert launch.rows_within_int32(just_below, cfg) is just_below
    assert launch.rows_within_int32(far, dict(cfg, ROW32=False)) is far  # 64-bit row indices need no copy
