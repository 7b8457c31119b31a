"""benchmarks/tune_kernels.py: every sweep's configurations are launchable (meta builds, the knobs reach the kernel
call) before any GPU time is spent on them. Nothing here runs a kernel."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))  # tune_kernels' sibling imports

SWEEPS = (
    "forward",
    "derivatives",
    "flat",
    "dbl",
    "select",
    "anyrow",
    "bwd",
    "ladder",
    "regs",
    "fence",
    "depth",
    "fence3",
    "gytile",
    "gyhead",
    "row32",
    "sparse",
)


@pytest.fixture
def tune(monkeypatch):
    for name in ("TUNE_LMAXES", "TUNE_DIRECTIONS", "TUNE_LADDER_DUAL", "TUNE_SELECT_ROWS"):
        monkeypatch.delenv(name, raising=False)
    from benchmarks import tune_kernels

    return importlib.reload(tune_kernels)


@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_case_builds_its_launch_meta(tune, sweep):
    from equitriton.kernels import launch

    cases = list(tune.cases(sweep))
    assert cases, sweep
    for lmax, dtype, _direction, cfg in cases:
        ls = tune.l_set(lmax, cfg)
        offs, dim = launch.offsets(ls)
        meta = launch.meta(ls, offs, dim, True, 1, dtype, {k: v for k, v in cfg.items() if k != "LS"})
        assert meta["BLOCK"] == cfg["BLOCK"] and meta["LOAD_FENCE"] == int(cfg.get("LOAD_FENCE", 0))


def test_fence_sweep_rows(tune):
    rows = tune.fence_configs(10, torch.float64, "backward")
    assert rows[0]["current"] and all(r["LOAD_FENCE"] for r in rows[1:])
    assert {r["LADDER"] for r in rows[1:]} == {True, False}
    dbl = tune.fence_configs(10, torch.float64, "double_backward")
    assert [bool(r.get("LOAD_FENCE")) for r in dbl] == [False, True]


def test_depth_sweep_rows(tune):
    rows = tune.depth_configs(10, torch.float32, "backward")
    assert rows[0]["current"] and {r["LOAD_FENCE"] for r in rows[1:]} == {1, 2} and all(r["LADDER"] for r in rows[1:])
    dbl = tune.depth_configs(10, torch.float32, "double_backward")
    assert [r.get("LOAD_FENCE") for r in dbl[1:]] == [1, 2] and all(r["LADDER"] for r in dbl)


def test_fence3_sweep_rows(tune):
    """The table's config, then the ladder with three degrees of loads in flight at 32 / 1 and 64 / 2, keeping the
    table's grad_y tile; each such row is a config launch accepts."""
    from equitriton.kernels import launch

    for direction in ("backward", "double_backward"):
        rows = tune.fence3_configs(12, torch.float32, direction)
        current = launch.config(direction, 12, torch.float32)
        assert rows[0]["current"] and len(rows) == 3
        assert all(r["LOAD_FENCE"] == 3 and r["LADDER"] and r["GY_TILE"] == current["GY_TILE"] for r in rows[1:])
        assert {(r["BLOCK"], r["num_warps"]) for r in rows[1:]} == {(32, 1), (64, 2)}


def test_gytile_sweep_rows_and_table_entry(tune, tmp_path):
    """The table's config, then the same and four bodies with the grad_y tile (no fence: the tile is one load); a
    measured GY_TILE row reaches the launch table as such."""
    from equitriton.kernels import launch

    rows = tune.gytile_configs(2, torch.float64, "backward")  # a point whose table entry has no tile
    assert rows[0]["current"] and not rows[0]["GY_TILE"] and all(r["GY_TILE"] for r in rows[1:])
    assert rows[1]["LOAD_FENCE"] == 0 and {r["LADDER"] for r in rows[2:]} == {True, False}
    dbl = tune.gytile_configs(2, torch.float32, "double_backward")
    assert all(r["LADDER"] and r["WIDE_IO"] and r["SELECT_TILE"] for r in dbl)
    for r in rows + dbl:
        meta = launch.meta([0, 1, 2, 3], (0, 1, 4, 9), 16, True, 1, torch.float64, r)
        assert meta["GY_TILE"] is bool(r["GY_TILE"])
    path = tmp_path / "tuned.json"
    path.write_text('{"configs": {}, "source": []}')
    tune.write_table(str(path), {(3, "float64", "backward"): dict(rows[2], ms=0.2)}, "test")
    import json

    assert json.loads(path.read_text())["configs"]["backward/3/float64"]["GY_TILE"] is True


def test_gyhead_sweep_rows_tile_the_head_of_wide_rows(tune):
    """The table's config, the same with the tile, then fenced ladders and (backward) the m-major duals with it; at
    l_max 10 (121 columns) every tiled row gets the 64-column head; the double backward keeps its d(grad_y) tiles."""
    from equitriton.kernels import launch

    for direction in ("backward", "double_backward"):
        rows = tune.gyhead_configs(10, torch.float64, direction)
        assert rows[0]["current"] and rows[0] == dict(launch.config(direction, 10, torch.float64), current=True)
        assert all(r["GY_TILE"] for r in rows[1:])
        assert {r["LOAD_FENCE"] for r in rows[2:] if r["LADDER"]} == {1, 2}
        assert any(not r["LADDER"] for r in rows) is (direction == "backward")
        if direction == "double_backward":
            assert all(r["WIDE_IO"] and r["SELECT_TILE"] for r in rows[2:])
        ls = list(range(11))
        offs, dim = launch.offsets(ls)
        for r in rows[1:]:
            meta = launch.meta(ls, offs, dim, True, 1, torch.float64, r)
            assert meta["GY_TILE"] and meta["PDIM"] == 64 < dim


def test_sparse_sweep_rows_run_their_own_l_set(tune, monkeypatch, tmp_path):
    import json

    """The sparse sweep times l sets other than 0..l_max: the table's config for that set (launch.config with
    whole=False) and 8 fenced ladders with and without the grad_y tile, each row carrying its l set to the check, the
    timing and the kernel call; what it writes to the launch table is keyed by the set."""
    from equitriton.kernels import launch

    rows = tune.sparse_configs([0, 2, 10], torch.float32, "backward")
    offs, dim = launch.offsets([0, 2, 10])
    assert rows[0]["current"] and {k: v for k, v in rows[0].items() if k not in ("current", "LS")} == launch.config(
        "backward", 10, torch.float32, whole=False, dim=dim, ls=[0, 2, 10]
    )
    assert len(rows) == 9 and all(r["LS"] == [0, 2, 10] for r in rows)
    assert {(r["BLOCK"], r["LOAD_FENCE"], r["GY_TILE"]) for r in rows[1:]} == {
        (b, d, t) for b in (32, 64) for d in (1, 2) for t in (False, True)
    }
    assert tune.l_set(10, rows[3]) == [0, 2, 10] and tune.l_set(3, {}) == [0, 1, 2, 3]
    for r in rows[1:]:  # a 27-column row: the tile is the whole row, padded to 32
        meta = launch.meta([0, 2, 10], offs, dim, True, 1, torch.float32, {k: v for k, v in r.items() if k != "LS"})
        assert meta["GY_TILE"] is r["GY_TILE"]
        if r["GY_TILE"]:
            assert meta["PDIM"] == 32
    dbl = tune.sparse_configs([12], torch.float64, "double_backward")
    assert all(r["WIDE_IO"] and r["SELECT_TILE"] for r in dbl[1:])
    cases = list(tune.cases("sparse"))
    assert {tuple(c[3]["LS"]) for c in cases} == {(0, 2, 10), (12,), (6,)}
    assert all(c[0] == max(c[3]["LS"]) for c in cases)
    # a measured gain reaches the launch table under the set's own key, which launch.config then prefers for that
    # set (and only for it: 0..12 keeps its l_max entry)
    path = tmp_path / "tuned.json"
    path.write_text('{"configs": {}, "source": []}')
    points = [
        dict(r, lmax=12, dtype="float64", direction="double_backward", ms=1.0 if r.get("current") else 0.5) for r in dbl
    ]
    best = {tune.point_key(points[1]): points[1]}
    kept = tune.gains_only(points, best, 0.03)
    assert list(kept) == [(12, "float64", "double_backward", (12,))]
    tune.write_table(str(path), kept, "test")
    table = json.loads(path.read_text())["configs"]
    assert list(table) == ["double_backward/[12]/float64"]
    monkeypatch.setattr(launch, "_TABLE", table)
    cfg = launch.config("double_backward", 12, torch.float64, whole=False, dim=25, ls=[12])
    assert (cfg["BLOCK"], cfg["LOAD_FENCE"], cfg["GY_TILE"]) == (points[1]["BLOCK"], 1, False)
    assert launch.config("double_backward", 12, torch.float64, whole=True, dim=169, ls=list(range(13))) != cfg


def test_row32_sweep_flips_the_table_entry_and_writes_it(tune, tmp_path):
    """The table's config, then the same with ROW32 flipped (on at the table's float32 l_max 2 forward, off at its
    float64 l_max 12 forward); a measured row reaches the launch table with its ROW32."""
    import json

    for direction, lmax, dtype, on in (("forward", 2, torch.float32, True), ("forward", 12, torch.float64, False)):
        rows = tune.row32_configs(lmax, dtype, direction)
        assert rows[0]["current"] and rows[0]["ROW32"] is on and rows[1]["ROW32"] is not on
        assert {k: v for k, v in rows[0].items() if k not in ("ROW32", "current")} == {
            k: v for k, v in rows[1].items() if k not in ("ROW32", "current")
        }
    path = tmp_path / "tuned.json"
    path.write_text('{"configs": {}, "source": []}')
    rows = tune.row32_configs(6, torch.float64, "double_backward")
    tune.write_table(str(path), {(6, "float64", "double_backward"): dict(rows[1], ms=1.0)}, "test")
    assert json.loads(path.read_text())["configs"]["double_backward/6/float64"]["ROW32"] is rows[1]["ROW32"]


def test_direction_and_row_knobs(tune, monkeypatch):
    monkeypatch.setenv("TUNE_DIRECTIONS", "backward")
    monkeypatch.setenv("TUNE_LMAXES", "8")
    monkeypatch.setenv("TUNE_SELECT_ROWS", "pieces")
    tune = importlib.reload(tune)
    assert {(c[0], c[2]) for c in tune.cases("fence")} == {(8, "backward")}
    assert {c[2] for c in tune.cases("ladder")} == {"backward"}
    select = list(tune.cases("select"))
    assert all(c[3].get("current") or c[3].get("ROW_CHUNK") == 16 for c in select)


def test_register_cap_reaches_the_kernel_call(tune, monkeypatch):
    captured = {}

    class FakeKernel:
        def __getitem__(self, grid):
            def launch_(*args, **meta):
                captured.update(meta)

            return launch_

    from equitriton.kernels import launch

    monkeypatch.setattr(launch.kernels, "sh_backward_kernel", FakeKernel())
    x = torch.zeros(4, 3, dtype=torch.float64)
    g = torch.zeros(4, 9, dtype=torch.float64)
    cfg = dict(BLOCK=32, num_warps=1, WIDE_IO=False, MAXNREG=168)
    tune.kernel_call("backward", x, g, x, (g, x), [0, 1, 2], cfg)()
    assert captured["maxnreg"] == 168 and captured["num_warps"] == 1
    captured.clear()
    tune.kernel_call("backward", x, g, x, (g, x), [0, 1, 2], dict(cfg, MAXNREG=0))()
    assert "maxnreg" not in captured


def test_register_cap_sweep_never_writes_the_launch_table(tune, monkeypatch, tmp_path):
    """The launch path passes no register cap, so a table entry from --sweep regs would name an unmeasured kernel."""
    table = tmp_path / "tuned.json"
    argv = ["tune_kernels.py", "--phase", "time", "--sweep", "regs", "--write-table", str(table)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit):
        tune.main()
    assert not table.exists()


def test_anyrow_sweep_rows(tune):
    """--sweep anyrow: the table's row, then each distinct cut of the row into chunks (caps that cut it as a smaller
    cap does are left out) at 1, 2 and 4 warps; the single 256-wide tile of 0..12 is over ANY_ROW_MAX."""
    rows = tune.anyrow_configs(12, torch.float64)
    assert rows[0]["current"] and all(not r["FULL_ROW"] and r["SELECT_TILE"] for r in rows[1:])
    assert sorted({r["ANY_ROW_CHUNK"] for r in rows[1:]}) == [16, 32, 49, 64, 128]
    assert [r["ANY_ROW_CHUNK"] for r in tune.anyrow_configs(6, torch.float32)[1::3]] == [0, 16, 32]


def test_min_gain_keeps_only_gains_over_the_table_row(tune, tmp_path):
    cur = dict(lmax=12, dtype="float64", direction="forward", current=True, ms=1.0)
    new = dict(cur, current=False, ANY_ROW_CHUNK=128, FULL_ROW=False, SELECT_TILE=True, WIDE_IO=True)
    points = [cur, dict(new, ms=0.8), dict(cur, lmax=8, ms=1.0), dict(new, lmax=8, ms=0.99)]
    best = {(12, "float64", "forward"): dict(new, ms=0.8, BLOCK=64, num_warps=2)}
    best[(8, "float64", "forward")] = dict(new, lmax=8, ms=0.99, BLOCK=32, num_warps=1)
    kept = tune.gains_only(points, best, 0.03)
    assert list(kept) == [(12, "float64", "forward")]
    path = tmp_path / "t.json"
    tune.write_table(str(path), kept, "test")
    import json

    entry = json.loads(path.read_text())["configs"]["forward/12/float64"]
    assert entry["ANY_ROW_CHUNK"] == 128 and not entry["FULL_ROW"] and entry["SELECT_TILE"]
