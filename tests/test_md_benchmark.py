"""benchmarks/md_step.py --quick on CPU: the JSON schema, and the report built from it (no timings checked)."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

import pytest
import torch

pytest.importorskip("vesin_torch")

BENCH = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    md_step = _load("md_step")
    out = tmp_path_factory.mktemp("md_step")
    old = torch.get_default_dtype()
    try:
        rc = md_step.main(
            [
                "--quick",
                "--device",
                "cpu",
                "--out",
                str(out),
                "--models",
                "nequip",
                "--modes",
                "nequip-matscipy,ours-fast,ours-compile",
                "--compile-backend",
                "no-such-backend",  # a mode that fails must be recorded, not abort the run
                "--budget-s",
                "300",
                "-q",
            ]
        )
    finally:
        torch.set_default_dtype(old)
    assert rc == 0
    return out / "md_step.json"


def test_json_schema(quick_run):
    doc = json.loads(quick_run.read_text())
    assert doc["schema"] == "equitriton-md/md_step/1" and doc["complete"] is True
    meta = doc["meta"]
    for key in ("date_utc", "device", "versions", "modes", "headline", "timestep_fs", "model_dtype"):
        assert key in meta, key
    assert meta["device"]["type"] == "cpu"
    assert meta["versions"]["torch"] == torch.__version__
    cases = doc["cases"]
    assert {(c["mode"], c["patched"]) for c in cases} >= {
        ("nequip-matscipy", False),
        ("nequip-matscipy", True),
        ("ours-fast", False),
        ("ours-fast", True),
    }
    for c in cases:
        assert c["status"] in ("ok", "failed", "skipped")
        assert {"model", "l_max", "n_atoms", "mode", "patched", "group"} <= c.keys()
        if c["status"] == "ok":
            assert c["ms_median"] > 0 and c["repeats"] >= 2 and c["ns_per_day"] > 0
            assert c["n_edges"] > 0
            assert c["sh_backend"] == ("equitriton-torch-fallback" if c["patched"] else "e3nn")
            assert c["sh_fuse_lmax"] == (0 if c["patched"] else None)  # NequIP: the op under compile
            # every mode and variant computes the same energy and forces
            assert c["rel_diff_vs_reference"] < 1e-10
    compile_cases = [c for c in cases if c["mode"] == "ours-compile"]
    assert compile_cases and all(c["status"] == "failed" for c in compile_cases)
    assert "no-such-backend" in compile_cases[0]["error"]
    ok = [c for c in cases if c["status"] == "ok"]
    assert len(ok) >= 4
    # stock and patched of one case are timed together (interleaved), each pair next to each other
    for c in ok:
        if c["mode"] in ("nequip-matscipy", "ours-fast"):
            assert c["interleaved_with"] == 1
    prof = doc["profiles"]
    assert prof and prof[0]["wall_ms_per_step"] > 0 and prof[0]["gpu_busy_fraction"] is None
    assert "model (launch + device work)" in prof[0]["phases_ms_per_step"]
    assert prof[0]["top_host_ops"]


def test_pair_beyond_the_budget_is_skipped_with_what_its_setup_needs(tmp_path):
    """A compiled pair whose setup prior does not fit the time left is skipped, both twins, and the reason names the
    budget, the time left and the setup it needed (so that the next run can be given enough)."""
    md_step = _load("md_step")
    old = torch.get_default_dtype()
    argv = ["--device", "cpu", "--out", str(tmp_path), "--models", "nequip", "--modes", "ours-compile"]
    argv += ["--lmax", "", "--sizes", "", "--compiled-sizes", "none", "--compiled-lmax", "1", "--budget-s", "5", "-q"]
    try:
        assert md_step.main(argv) == 0
    finally:
        torch.set_default_dtype(old)
    cases = json.loads((tmp_path / "md_step.json").read_text())["cases"]
    assert [(c["mode"], c["l_max"], c["patched"], c["status"]) for c in cases] == [
        ("ours-compile", 1, False, "skipped"),
        ("ours-compile", 1, True, "skipped"),
    ]
    need = md_step.SETUP_COST_S["ours-compile"] * 2 + 1
    assert all(c["reason"].startswith("time budget (5 s) left ") for c in cases)
    assert all(c["reason"].endswith(f"setup needs {need:.0f} s") for c in cases), cases[0]["reason"]


def test_report_from_json(quick_run, tmp_path):
    report = _load("report_md")
    out = tmp_path / "md_performance.md"
    report.main([str(quick_run), "-o", str(out)])
    text = out.read_text()
    assert text.startswith("# MD step performance")
    assert "do not edit by hand" in text
    assert "`ours-fast`" in text and "Where the time goes" in text
    assert "no-such-backend" in text  # failures are listed
    assert "stock and patched timed in alternating calls" in text


def test_ns_per_day():
    md_step = _load("md_step")
    # 1 call per 2 fs step, 10 ms per call: 8.64e6 steps/day * 2e-6 ns
    assert md_step.ns_per_day(0.010) == pytest.approx(17.28)
    assert md_step.size_for(2048) == 2048 and md_step.size_for(10000) == 10976 and md_step.size_for(100) == 108


def test_report_merges_runs_newest_wins(quick_run, tmp_path):
    """Several JSON files: ordered by run date (not by argument order), a case of the newest run wins, a newer skip
    does not hide an older measurement, and every number carries its run's tag."""
    report = _load("report_md")
    doc = json.loads(quick_run.read_text())
    ok = [c for c in doc["cases"] if c["status"] == "ok"]
    first, second = ok[0], ok[1]
    old, new = json.loads(json.dumps(doc)), json.loads(json.dumps(doc))
    old["meta"]["date_utc"] = "2000-01-01T00:00:00+00:00"
    new["meta"]["date_utc"] = "2100-01-01T00:00:00+00:00"
    key = lambda c: (c["model"], c["l_max"], c["n_atoms"], c["mode"], c["patched"])  # noqa: E731
    for c in old["cases"]:
        if key(c) == key(first):
            c["ms_median"] = 111.0
        if key(c) == key(second):
            c["ms_median"] = 222.0
    for c in new["cases"]:
        if key(c) == key(first):
            c["ms_median"] = 333.0
        if key(c) == key(second):
            c.update(status="skipped", reason="time budget", ms_median=None)
    p_old, p_new = tmp_path / "old.json", tmp_path / "new.json"
    p_old.write_text(json.dumps(old))
    p_new.write_text(json.dumps(new))
    metas, cases, _ = report.load([str(p_new), str(p_old)])
    assert [m["_tag"] for m in metas] == ["a", "b"] and metas[0]["_path"] == str(p_old)
    assert cases[key(first)]["ms_median"] == 333.0 and cases[key(first)]["_tag"] == "b"
    assert cases[key(second)]["ms_median"] == 222.0 and cases[key(second)]["_tag"] == "a"
    text = report.render([str(p_new), str(p_old)])
    assert "[a] `old.json`" in text and "[b] `new.json`" in text
    assert "333.0" in text and "222.0" in text and "111.0" not in text
    assert "Issue-4 targets" in text
    # --drop FILE=GROUP: that run's cases of the group are not merged (the older run's show), and the page says so
    group = first["group"]
    out = tmp_path / "dropped.md"
    report.main([str(p_new), str(p_old), "-o", str(out), "--drop", f"{p_new}={group}"])
    dropped = out.read_text()
    assert "333.0" not in dropped and "111.0" in dropped
    assert f"its `{group}` cases not merged: `--drop`" in dropped
    # the profiles of the dropped cases go with them (a stock-only run must not put its profile beside another
    # run's patched one)
    in_group = {key(c) for c in new["cases"] if c["group"] == group}
    assert any(key(p) in in_group for p in new["profiles"])
    _, _, profiles = report.load([str(p_new), str(p_old)], {"new.json": [group]})
    assert all(p["_tag"] == "a" for p in profiles if key(p) in in_group)
    with pytest.raises(SystemExit, match="FILE=GROUP"):
        report.main([str(p_new), "-o", str(out), "--drop", "new.json"])


def test_report_names_a_run_whose_cases_are_all_superseded(quick_run, tmp_path):
    """A run every case of which a newer run re-measured is listed as superseded, not described by a timing method
    read off cases it no longer shows."""
    report = _load("report_md")
    doc = json.loads(quick_run.read_text())
    old, new = json.loads(json.dumps(doc)), json.loads(json.dumps(doc))
    old["meta"]["date_utc"] = "2000-01-01T00:00:00+00:00"
    new["meta"]["date_utc"] = "2100-01-01T00:00:00+00:00"
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "new.json").write_text(json.dumps(new))
    text = report.render([str(tmp_path / "new.json"), str(tmp_path / "old.json")])
    old_line = next(ln for ln in text.splitlines() if ln.startswith("- [a] `old.json`"))
    new_line = next(ln for ln in text.splitlines() if ln.startswith("- [b] `new.json`"))
    assert "0 of its cases shown" in old_line and old_line.endswith("every case superseded by a newer run.")
    assert new_line.endswith("stock and patched timed in alternating calls.")


def test_time_interleaved_alternates_abba():
    """Single calls alternate between the calculators in ABBA order after each one's warm-up; every one gets at least
    min_reps timings."""
    md_step = _load("md_step")
    calls = []

    class FakeAtoms:
        def __init__(self, name):
            self.name = name

        def set_positions(self, pos):
            pass

        def get_forces(self):
            calls.append(self.name)

        def get_potential_energy(self):
            return 0.0

    class Pool:
        def next(self):
            return None

    items = [(FakeAtoms("A"), Pool(), 2), (FakeAtoms("B"), Pool(), 1)]
    out = md_step.time_interleaved(items, torch.device("cpu"), min_reps=3, max_reps=3, min_time_s=0.0)
    assert calls[:3] == ["A", "A", "B"]  # warm-ups first
    assert calls[3:] == ["A", "B", "B", "A", "A", "B"]
    assert [len(t) for t, _ in out] == [3, 3] and all(first is not None for _, first in out)


def test_cpu_step_ab_smoke(tmp_path):
    """benchmarks/cpu_step_ab.py end to end with a few calls: both variants timed, the SH module found and timed in
    the model and alone (no timing asserted)."""
    cpu_ab = _load("cpu_step_ab")
    old, old_dtype = torch.get_num_threads(), torch.get_default_dtype()
    try:
        assert cpu_ab.main(["--calls", "4", "--out", str(tmp_path / "ab.json")]) == 0
    finally:
        torch.set_num_threads(old)
        torch.set_default_dtype(old_dtype)
    res = json.loads((tmp_path / "ab.json").read_text())
    assert res["n_atoms"] == 32 and res["n_edges"] > 0
    assert set(res["step_ms_median"]) == {"stock", "patched"} and res["patched_over_stock_step"] > 0
    assert all(v > 0 for v in res["sh_forward_in_model_us"].values())
    assert all(r["warm_us"] > 0 and r["cold_us"] > 0 for r in res["sh_forward_alone_us"].values())
    assert len(res["ours_forward_by_layer_us"]) == 4


def test_md_ab_smoke_times_the_patched_model_with_the_fuse_lmax_given(tmp_path):
    """benchmarks/md_ab.py end to end on CPU with a few calls: --fuse-lmax reaches the patched model it times (the
    op-vs-fusion A/B of docs/md_performance_notes.md) and is recorded; both variants timed (no timing asserted)."""
    md_ab = _load("md_ab")
    old_dtype = torch.get_default_dtype()
    argv = ["--out", str(tmp_path), "--mode", "ours-fast", "--model", "allegro", "--l-max", "1", "--atoms", "32"]
    try:
        extra = ["--also-fuse-lmax", "3", "--also-fuse-lmax", "0"]
        assert md_ab.main(argv + ["--rounds", "3", "--calls", "2", "--fuse-lmax", "1", "--device", "cpu"] + extra) == 0
    finally:
        torch.set_default_dtype(old_dtype)
    res = json.loads((tmp_path / "md_ab.json").read_text())
    assert res["patched_fuse_lmax"] == 1  # the shipped policy gives Allegro l_max 1 0
    # each extra variant is its own patched model with its own fuse_lmax, timed in the same rounds
    assert res["fuse_lmax"] == {"stock": None, "patched": 1, "patched_fuse3": 3, "patched_fuse0": 0}
    assert res["case"] == {"mode": "ours-fast", "model": "allegro", "l_max": 1, "n_atoms": 32}
    assert all(len(res["round_medians_ms"][v]) == 3 for v in res["fuse_lmax"])
    assert res["patched_over_stock"] == res["over_stock"]["patched"]
    assert set(res["over_stock"]) == {"patched", "patched_fuse3", "patched_fuse0"}
    assert all(r["min"] <= r["median"] <= r["max"] for r in res["over_stock"].values())


def test_md_ab_aoti_builds_each_variant_with_its_fuse_lmax(tmp_path, monkeypatch):
    """ours-aoti builds one artifact per variant: --fuse-lmax / --also-fuse-lmax must reach the model nequip-compile
    patches (its modifier keeps a patched model's setting), and md_ab records what each artifact was built with (until
    2026-12-02 it recorded the cached model's fuse_lmax while the artifact ran the modifier's policy). nequip-compile
    is replaced by the modifier alone and the artifact by the in-memory model (an AOTInductor build takes minutes)."""
    md_ab = _load("md_ab")
    from nequip.model.modify_utils import modify

    from md_plugin import MODIFIER_NAME, EquiTritonCalculator

    built = {}

    def fake_compile(model, data, device, path, patched):
        if patched:  # what `nequip-compile --modifiers ...` runs (on a model already patched for fuse_lmax too)
            model = modify(model, [{"modifier": MODIFIER_NAME}])
        built[path] = model

    def fake_load(path, device=None, fast_step=False):
        return EquiTritonCalculator.from_model(built[path], device=device, patch=False, fast_step=fast_step)

    monkeypatch.setattr(md_ab.M, "aoti_compile", fake_compile)
    monkeypatch.setattr(EquiTritonCalculator, "from_compiled_model", staticmethod(fake_load))
    old_dtype = torch.get_default_dtype()
    argv = ["--out", str(tmp_path), "--mode", "ours-aoti", "--model", "allegro", "--l-max", "1", "--atoms", "32"]
    try:
        assert md_ab.main(argv + ["--rounds", "2", "--calls", "1", "--also-fuse-lmax", "0", "--device", "cpu"]) == 0
    finally:
        torch.set_default_dtype(old_dtype)
    res = json.loads((tmp_path / "md_ab.json").read_text())
    # patched: the export policy's 1 (the modifier); --also-fuse-lmax 0: the op, built as its own artifact
    assert res["fuse_lmax"] == {"stock": None, "patched": 1, "patched_fuse0": 0}
    assert sorted(pathlib.Path(p).name for p in built) == [
        "allegro_l1_patched.nequip.pt2",
        "allegro_l1_patched_fuse0.nequip.pt2",
        "allegro_l1_stock.nequip.pt2",
    ]


def test_md_ab_aoti_builds_each_artifact_as_often_as_asked(tmp_path, monkeypatch):
    """--builds 2: every variant's artifact is built twice, each to its own file, with Inductor's caches off only
    while md_ab runs, and the builds of a variant are pooled against stock's (nequip-compile and the artifact are
    replaced as in the test above)."""
    md_ab = _load("md_ab")
    import torch._inductor.config as inductor_config
    from nequip.model.modify_utils import modify

    from md_plugin import MODIFIER_NAME, EquiTritonCalculator

    built, caches_off = {}, []

    def fake_compile(model, data, device, path, patched):
        caches_off.append(inductor_config.force_disable_caches)
        built[path] = modify(model, [{"modifier": MODIFIER_NAME}]) if patched else model

    def fake_load(path, device=None, fast_step=False):
        return EquiTritonCalculator.from_model(built[path], device=device, patch=False, fast_step=fast_step)

    monkeypatch.setattr(md_ab.M, "aoti_compile", fake_compile)
    monkeypatch.setattr(EquiTritonCalculator, "from_compiled_model", staticmethod(fake_load))
    was = inductor_config.force_disable_caches
    old_dtype = torch.get_default_dtype()
    argv = ["--out", str(tmp_path), "--mode", "ours-aoti", "--model", "allegro", "--l-max", "1", "--atoms", "32"]
    try:
        core = min(os.sched_getaffinity(0))
        affinity = os.sched_getaffinity(0)
        assert (
            md_ab.main(
                argv
                + ["--rounds", "2", "--calls", "1", "--builds", "2", "--device", "cpu", "--dump-code"]
                + ["--pin-cpu", str(core)]
            )
            == 0
        )
    finally:
        torch.set_default_dtype(old_dtype)
    assert os.sched_getaffinity(0) == affinity  # the timing pinned the thread, and md_ab gave it back
    res = json.loads((tmp_path / "md_ab.json").read_text())
    assert res["pinned_cpu"] == core
    assert caches_off == [True] * 4 and inductor_config.force_disable_caches == was
    assert len({pathlib.Path(p).parent for p in built}) == 2 and len(built) == 4
    assert set(res["round_medians_ms"]) == {"stock", "patched", "stock#1", "patched#1"}
    assert set(res["over_stock"]) == {"patched", "stock#1", "patched#1"}
    pooled = res["pooled_median_ms"]
    assert set(pooled) == {"stock", "patched"} and set(res["pooled_over_stock"]) == {"patched"}
    assert res["pooled_over_stock"]["patched"] == pytest.approx(pooled["patched"] / pooled["stock"])
    # the fake build compiles nothing: each variant's code list is there and empty
    assert res["code_files"] == {"stock": [], "patched": [], "stock#1": [], "patched#1": []}


def test_generated_code_is_gathered_flat_per_variant(tmp_path, monkeypatch):
    """md_ab --dump-code: a compile inside generated_code_to writes its kernels to a fresh Inductor cache directory,
    and they come out as one flat file per variant (here C++, torch.compile on CPU); the caller's cache directory is
    back afterwards."""
    md_ab = _load("md_ab")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "callers_cache"))
    files = {}

    def scaled_softplus_sum(x):  # a function of its own: no kernel of an earlier compile to reuse
        return (torch.nn.functional.softplus(x) * 1.2345).sum(dim=1)

    with md_ab.generated_code_to(tmp_path / "code", "stock#1", files):
        compiled = torch.compile(scaled_softplus_sum, backend="inductor")
        x = torch.randn(8, 5, dtype=torch.float64)
        torch.testing.assert_close(compiled(x), scaled_softplus_sum(x))
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "callers_cache")
    assert files == {"stock#1": [str(tmp_path / "code" / "stock_b1.wrapper.py")]}  # on CPU the kernels are in it
    code = (tmp_path / "code" / "stock_b1.wrapper.py").read_text()
    assert "cpp_fused" in code and "1.2345" in code
    with md_ab.generated_code_to(None, "patched", files):  # no destination: nothing gathered
        pass
    assert set(files) == {"stock#1"}


_BUILD_BOTH = """
import pathlib, sys, torch
sys.path.insert(0, sys.argv[2])
import md_ab, md_step
from md_plugin import EquiTritonCalculator

out, device, files = sys.argv[1], torch.device("cpu"), {}
for variant in ("stock", "patched"):
    model = md_step.build_model("allegro", 1, device, patched=False)  # the modifier patches the patched one
    probe = EquiTritonCalculator.from_model(model, device=device, patch=False, fast_step=True)
    example = probe._fast.data_from_atoms(md_step.fcc_cu(32, seed=3))
    with md_ab.generated_code_to(pathlib.Path(out), variant, files):
        md_step.aoti_compile(model, example, device, f"{out}/{variant}.nequip.pt2", variant == "patched")
    print("FUSE_LMAX", variant, md_step._fuse_lmax(model))  # (nequip-compile logs to stdout too)
"""


@pytest.mark.slow
def test_exported_allegro_l1_artifact_is_stocks_code(tmp_path):
    """nequip-compile with our modifier (AOTInductor, CPU) on an Allegro l_max 1 model writes the very code the
    stock model's artifact has (the export policy traces its SH as e3nn's ops), so the artifact cannot be slower
    than stock's; on the H200 it was 4% slower with the op (docs/md_performance_notes.md, seventeenth session).
    In a process of its own: the builds load their artifacts, which the test process has no use for."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", _BUILD_BOTH, str(tmp_path), str(BENCH)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    fuse = [line.split()[1:] for line in proc.stdout.splitlines() if line.startswith("FUSE_LMAX ")]
    assert fuse == [["stock", "None"], ["patched", "1"]]  # the artifact's SH fuse_lmax: the export policy's 1

    def code(variant):  # the build's own cache directory and file hashes are the only differences allowed
        own = re.escape(tempfile.gettempdir()) + r"/inductor_\w+/+|\b[a-z0-9]{40,}\b"
        return re.sub(own, "", (tmp_path / f"{variant}.cpp").read_text())

    assert "cpp_fused" in code("stock")
    assert code("patched") == code("stock")


def test_md_ab_refuses_builds_outside_aoti(tmp_path):
    with pytest.raises(SystemExit):
        _load("md_ab").main(["--out", str(tmp_path), "--mode", "ours-fast", "--builds", "2", "--device", "cpu"])


def test_make_calculator_refuses_fuse_lmax_outside_a_patched_aoti_build(tmp_path):
    md_step = _load("md_step")
    with pytest.raises(ValueError, match="fuse_lmax is for a patched ours-aoti"):
        md_step.make_calculator(
            "ours-compile", ("allegro", 1, True), torch.device("cpu"), None, str(tmp_path), fuse_lmax=1
        )


def _plan_args(**given):
    """md_step's command-line arguments that make_plan reads: the defaults of a full run, then `given`."""
    from types import SimpleNamespace

    base = dict(modes=None, models=None, quick=False, compiled_sizes=None, compiled_lmax=None, lmax=None, sizes=None)
    return SimpleNamespace(**{**base, **given})


def test_plan_compiled_modes_headline_first_then_sizes_then_lmax_sweep():
    md_step = _load("md_step")
    args = _plan_args(
        modes="ours-fast,ours-graph",
        models="nequip,allegro",
        compiled_lmax="1,2,3",
        lmax="1,2,3,4",
        sizes="108,500,2048,10976",
    )
    cases = md_step.make_plan(args).cases
    compiled = [(c.model, c.l_max, c.n_atoms, c.patched) for c in cases if c.group == "compiled"]
    head = md_step.size_for(2048)
    assert compiled[:2] == [("nequip", 2, head, False), ("nequip", 2, head, True)]  # headline, stock/patched twins
    lmax_part = [c for c in compiled if c[1] != 2]
    assert {(m, l) for m, l, n, _ in lmax_part} == {(m, l) for m in ("nequip", "allegro") for l in (1, 3)}
    assert all(n == head for _, _, n, _ in lmax_part)
    first_lmax = compiled.index(lmax_part[0])
    assert all(c[1] == 2 for c in compiled[:first_lmax])  # every l_max 2 case (sizes) before the sweep
    assert {c[2] for c in compiled[:first_lmax]} == {md_step.size_for(n) for n in (108, 2048, 10976)}
    assert len(compiled) == len(set(compiled))
    without = _plan_args(**{**vars(args), "compiled_lmax": None})
    assert all(c.l_max == 2 for c in md_step.make_plan(without).cases if c.group == "compiled")


def test_plan_takes_the_lmax_and_size_sweeps_given_and_the_uncoupled_allegro():
    """--lmax and --sizes choose the sweeps (a targeted re-measurement: allegro l_max 4 without the size sweep), and
    allegro-uncoupled is allegro with path weights shared across channels, the form whose tensor product fits l_max 4
    in memory."""

    md_step = _load("md_step")
    args = _plan_args(modes="nequip-matscipy,ours-fast", models="allegro-uncoupled", lmax="4", sizes="")
    plan = md_step.make_plan(args)
    assert {(c.group, c.l_max, c.n_atoms) for c in plan.cases} == {("headline", 2, 2048), ("l_max", 4, 2048)}
    assert {c.model for c in plan.cases} == {"allegro-uncoupled"}
    couplings = {}
    for kind in ("allegro", "allegro-uncoupled"):
        model = md_step.build_model(kind, 1, torch.device("cpu"), patched=False)
        couplings[kind] = {m.path_channel_coupling for m in model.modules() if hasattr(m, "path_channel_coupling")}
    assert couplings == {"allegro": {True}, "allegro-uncoupled": {False}}


def test_plan_compiled_sizes_none_is_the_lmax_sweep_alone():
    """--compiled-sizes none: only the compiled l_max sweep (no l_max 2 model compiled that was not asked for)."""
    md_step = _load("md_step")
    args = _plan_args(
        modes="ours-compile,ours-graph",
        models="allegro-uncoupled",
        compiled_sizes="none",
        compiled_lmax="1",
        lmax="",
        sizes="",
    )
    compiled = [(c.mode, c.l_max, c.n_atoms) for c in md_step.make_plan(args).cases if c.group == "compiled"]
    head = md_step.size_for(2048)
    assert compiled == [(m, 1, head) for m in ("ours-compile", "ours-compile", "ours-graph", "ours-graph")]
    assert not any(c.profile for c in md_step.make_plan(args).cases if c.group == "compiled")
    sized = _plan_args(**{**vars(args), "compiled_sizes": "500,2048"})
    sized_cases = [c for c in md_step.make_plan(sized).cases if c.group == "compiled"]
    assert {c.l_max for c in sized_cases} == {1, 2}
    # the reference system (l_max 2, 2,048 atoms) is profiled in every compiled mode, nothing else is
    assert {(c.mode, c.l_max, c.n_atoms) for c in sized_cases if c.profile} == {
        (m, 2, head) for m in ("ours-compile", "ours-graph")
    }


def test_fuse_section_tells_op_from_fused_cells():
    """A patched compiled cell counts as fused up to its run's sh_fuse_lmax where the mode's tracer honoured it:
    torch.export (ours-aoti) always, make_fx (ours-compile, ours-graph) only in runs recording sh_fusion_in_make_fx.
    A cell measured with the op where patch_model now fuses, or fused where it now runs the op (l_max 1 since
    2026-12-02), is listed as not describing the shipped code."""
    from collections import OrderedDict

    report = _load("report_md")
    metas = [{"_tag": "a"}, {"_tag": "b", "sh_fusion_in_make_fx": True}]

    def case(model, mode, run, l_max=2, fuse=2):
        return (model, l_max, 2048, mode, True), {"status": "ok", "sh_fuse_lmax": fuse, "_tag": run}

    cases = OrderedDict(
        [
            case("allegro", "ours-graph", "a"),  # make_fx before the fix: the op
            case("allegro-uncoupled", "ours-graph", "b"),  # make_fx after it: fused
            case("allegro-uncoupled", "ours-aoti", "a"),  # torch.export: fused
            case("nequip", "ours-graph", "b", fuse=1),  # NequIP keeps the op at l_max 2 (its policy): neither list
            case("allegro", "ours-compile", "b", l_max=1),  # l_max 1 fused: now the op
            case("nequip", "ours-aoti", "a", l_max=1, fuse=1),  # the same for NequIP
            case("nequip", "ours-graph", "b", l_max=1, fuse=0),  # l_max 1 with the op: shipped, neither list
            # exported Allegro l_max 1 (the modifier's policy since 2026-12-02): fused as e3nn's ops
            case("allegro", "ours-aoti", "a", l_max=1, fuse=0),  # with the op: no longer shipped
            case("allegro-uncoupled", "ours-aoti", "b", l_max=1, fuse=1),  # fused: shipped
        ]
    )
    text = "\n".join(report.fuse_section(metas, cases))
    head, rest = text.split("Patched compiled cells measured fused:")
    assert "fused now: allegro l_max 2, allegro-uncoupled l_max 2;" in head
    assert "in exported models (`ours-aoti`, the modifier's policy) also: allegro l_max 1, allegro-uncoupled" in head
    fused, rest = rest.split("with the custom op")
    op_not_fused, fused_not_op = rest.split("measured **fused** where")
    assert "allegro-uncoupled l_max 2, 2,048 atoms, `ours-graph` [b]" in fused
    assert "allegro-uncoupled l_max 2, 2,048 atoms, `ours-aoti` [a]" in fused
    assert "allegro l_max 1" not in fused and "nequip" not in fused  # (exported allegro-uncoupled l_max 1 is)
    assert "allegro l_max 2, 2,048 atoms, `ours-graph` [a]" in op_not_fused and "nequip" not in op_not_fused
    assert "allegro l_max 1, 2,048 atoms, `ours-compile` [b]" in fused_not_op
    assert "nequip l_max 1, 2,048 atoms, `ours-aoti` [a]" in fused_not_op and "ours-graph" not in fused_not_op
    assert "allegro l_max 1, 2,048 atoms, `ours-aoti` [a]" in op_not_fused
    assert "allegro-uncoupled l_max 1, 2,048 atoms, `ours-aoti` [b]" in fused
    # the same verdict per cell, which the "patched slower" list attaches to a cell it names
    stale = {k for k in cases if report.traced_unlike_shipped(metas, cases, k)}
    assert stale == {
        ("allegro", 2, 2048, "ours-graph", True),
        ("allegro", 1, 2048, "ours-compile", True),
        ("nequip", 1, 2048, "ours-aoti", True),
        ("allegro", 1, 2048, "ours-aoti", True),
    }


def test_setup_need_decides_for_the_pair():
    """The time budget is checked once for a stock/patched pair, with the setups both still need: a mode's prior,
    or the slowest setup of that mode already measured in the run, whichever is larger (a stock AOTInductor
    build that took 113 s must not be followed by a patched one skipped for want of time)."""
    md_step = _load("md_step")
    Case = md_step.Case
    prior = md_step.SETUP_COST_S["ours-aoti"]
    pair = [Case("allegro", 2, 2048, "ours-aoti", p, "compiled") for p in (False, True)]
    assert md_step.setup_need(pair, [], {}) == 2 * prior
    stock_key = ("ours-aoti", "allegro", 2, False)
    assert md_step.setup_need(pair, [stock_key], {}) == prior
    slow = {("ours-aoti", "nequip", 2, True): prior + 23.0, ("ours-graph", "nequip", 2, True): 500.0}
    assert md_step.setup_need(pair, [], slow) == 2 * (prior + 23.0)
    cheap = [Case("allegro", 2, 2048, "ours-fast", p, "size") for p in (False, True)]
    assert md_step.setup_need(cheap, [], slow) == 0.0
