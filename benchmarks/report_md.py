"""Write docs/md_performance.md from benchmarks/md_step.py results (no number in it is typed by hand).

    python benchmarks/report_md.py RESULTS/md_step.json [MORE.json ...] -o docs/md_performance.md

Several JSON files (e.g. a main run and a later compiled-modes run on the same machine) are merged case by case
(model, l_max, atoms, mode, variant): the files are ordered by their run date (``meta.date_utc``, then command-line
order) and a case present in more than one file is taken from the newest, except that a newer skip or failure never
hides an older measurement. Every file gets a tag ([a], [b], ... oldest first) and every number in the report carries
the tag of the file it comes from; ratios between cases of different files say so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple

SCHEMA = "equitriton-md/md_step/1"
MODE_ORDER = ["nequip-matscipy", "nequip-vesin", "ours-eager", "ours-fast", "ours-compile", "ours-graph", "ours-aoti"]
BASELINE_MODE = "nequip-matscipy"
TARGET_MS = 10.0
TARGET_SPEEDUP = 5.0
TARGET_BUSY = 0.70
SLOWER_TOLERANCE = 1.05  # patched/stock above this (same mode) is reported as slower


def _tag_of(i: int) -> str:
    """a, b, ..., z, aa, ab, ...: the run tags, oldest first."""
    return chr(ord("a") + i) if i < 26 else _tag_of(i // 26 - 1) + chr(ord("a") + i % 26)


def load(
    paths: Sequence[str], drop: Optional[Dict[str, List[str]]] = None
) -> Tuple[List[Dict[str, Any]], OrderedDict[Tuple, Dict], List[Dict[str, Any]]]:
    """Metas (oldest run first, each with ``_tag``), merged cases and merged profiles (newest wins), each case and
    profile carrying ``_path``, ``_date`` and ``_tag`` of its file. ``drop``: file basename -> plan groups of that
    file not merged (a run's cases known to be disturbed; its meta lists them as ``_dropped``)."""
    drop = drop or {}
    docs = []
    for order, path in enumerate(paths):
        with open(path) as f:
            doc = json.load(f)
        if doc.get("schema") != SCHEMA:
            raise SystemExit(f"{path}: schema {doc.get('schema')!r}, expected {SCHEMA!r}")
        docs.append((doc["meta"].get("date_utc") or "", order, path, doc))
    docs.sort(key=lambda t: (t[0], t[1]))
    metas, cases, profiles = [], OrderedDict(), OrderedDict()
    for i, (date, _, path, doc) in enumerate(docs):
        src = {"_path": path, "_date": date, "_tag": _tag_of(i)}
        dropped = drop.get(os.path.basename(path), [])
        metas.append(
            {
                **doc["meta"],
                **src,
                "_complete": doc.get("complete"),
                "_total_s": doc.get("total_s"),
                "_dropped": dropped,
            }
        )
        dropped_keys = set()  # profiles carry no group: they go with the cases they were taken from
        for c in doc["cases"]:
            key = (c["model"], c["l_max"], c["n_atoms"], c["mode"], c["patched"])
            if c.get("group") in dropped:
                dropped_keys.add(key)
                continue
            if key in cases and c["status"] != "ok" and cases[key]["status"] == "ok":
                continue  # a later skip or failure does not hide an earlier measurement
            cases.pop(key, None)
            cases[key] = {**c, **src}
        for p in doc.get("profiles", []):
            key = (p["model"], p["l_max"], p["n_atoms"], p["mode"], p["patched"])
            if key in dropped_keys:
                continue
            profiles.pop(key, None)
            profiles[key] = {**p, **src}
    return metas, cases, list(profiles.values())


COMPILED_MODES = ("ours-compile", "ours-graph", "ours-aoti")


def _policy(model: str, l_max: int, mode: str = "") -> int:
    """The fuse_lmax the shipped code gives this model's SH (ours-aoti: the modifier's policy, for export)."""
    from md_plugin.hook import default_fuse_lmax

    return default_fuse_lmax(model.startswith("allegro"), l_max, export=mode == "ours-aoti")


def _traced_fused(metas: List[Dict[str, Any]], c: Dict[str, Any], mode: str) -> int:
    """The l_max up to which this measurement traced fusable ops: its run's sh_fuse_lmax (recorded since 2026-12-01;
    1 before) where the mode's tracer saw it (torch.export always; make_fx, which traces ours-compile and ours-graph,
    only since sh_fusion_in_make_fx), else none (-1)."""
    if mode != "ours-aoti" and not any(m["_tag"] == c["_tag"] and m.get("sh_fusion_in_make_fx") for m in metas):
        return -1
    fused_to = c.get("sh_fuse_lmax")
    return 1 if fused_to is None else fused_to


def traced_unlike_shipped(metas: List[Dict[str, Any]], cases: OrderedDict, key: Tuple) -> bool:
    """Whether a patched compiled cell was traced otherwise than the shipped code traces it (the op where it now
    fuses, or fused where it now runs the op): its figure does not describe the shipped code."""
    model, l_max, _, mode, patched = key
    if not patched or mode not in COMPILED_MODES:
        return False
    to, policy = _traced_fused(metas, cases[key], mode), _policy(model, l_max, mode)
    return to < l_max <= policy or policy < l_max <= to


def fuse_section(metas: List[Dict[str, Any]], cases: OrderedDict) -> List[str]:
    """The patched compiled-mode cells measured fused and those whose tracing differs from what ``patch_model``
    now does: measured with the custom op where it traces fusable ops, or fused where it runs the op."""
    # (cell, model, l_max, mode, fused up to) of every patched compiled measurement
    measured = [
        (f"{k[0]} l_max {k[1]}, {k[2]:,} atoms, `{k[3]}`{tag(c)}", k[0], k[1], k[3], _traced_fused(metas, c, k[3]))
        for k, c in cases.items()
        if k[3] in COMPILED_MODES and k[4] and c.get("status") == "ok"
    ]
    fused = [cell for cell, m, l_max, mode, to in measured if l_max <= min(to, _policy(m, l_max, mode))]
    op_not_fused = [cell for cell, m, l_max, mode, to in measured if to < l_max <= _policy(m, l_max, mode)]
    fused_not_op = [cell for cell, m, l_max, mode, to in measured if _policy(m, l_max, mode) < l_max <= to]
    if not fused and not op_not_fused and not fused_not_op:
        return []
    models = sorted({k[0] for k in cases})
    lmaxes = sorted({k[1] for k in cases})
    lines = [
        "## SH traced as fusable ops under torch.compile / export",
        "",
        "`md_plugin.patch_model` traces a module's SH of l_max up to its `fuse_lmax` as plain elementwise ops that "
        "Inductor fuses into their consumers, the rest as the custom op (`md_plugin.hook.default_fuse_lmax`); "
        "fused now: "
        + (
            ", ".join(f"{m} l_max {l}" for m in models for l in lmaxes if l <= _policy(m, l))
            or "none of the models and l_max here"
        )
        + "; in exported models (`ours-aoti`, the modifier's policy) also: "
        + (
            ", ".join(
                f"{m} l_max {l}" for m in models for l in lmaxes if _policy(m, l) < l <= _policy(m, l, "ours-aoti")
            )
            or "none"
        )
        + ". torch.export (`ours-aoti`) has traced them so since 2026-11-30 (l_max 1) and 2026-12-01 (Allegro l_max 2);"
        " nequip's make_fx, which traces `ours-compile` and `ours-graph`, only since the runs that record "
        "`sh_fusion_in_make_fx` (2026-12-01). Since 2026-12-02 (fifteenth session) l_max 1 runs the op again, "
        "except in exported Allegro models, where since the seventeenth session it is traced as e3nn's own ops "
        "(the stock graph, op for op). Eager modes run the kernels.",
        "",
    ]
    if fused:
        lines += ["Patched compiled cells measured fused: " + "; ".join(fused) + ".", ""]
    if op_not_fused:
        lines += [
            "Patched compiled cells measured **with the custom op** where the shipped code traces fusable ops: "
            + "; ".join(op_not_fused)
            + ". They do not describe the shipped code; not re-measured yet.",
            "",
        ]
    if fused_not_op:
        lines += [
            "Patched compiled cells measured **fused** where the shipped code runs the custom op: "
            + "; ".join(fused_not_op)
            + ". They do not describe the shipped code; not re-measured yet.",
            "",
        ]
    return lines


def tag(c: Optional[Dict[str, Any]]) -> str:
    return f" [{c['_tag']}]" if c and c.get("_tag") else ""


COMPILE_NOTE = (
    "`ours-compile` patched vs stock: checked on CPU (`tests/test_md_fast_step.py::"
    "test_compiled_step_one_graph_across_edge_counts`, and `TORCH_LOGS=recompiles,graph_breaks` with inductor on the "
    "embedded model while the edge count changes): one graph, no recompilation when the edge count changes "
    "(the edge dimension stays symbolic), no graph breaks; the SH forward and its force backward are two nodes "
    "(`equitriton.sh_forward`, `equitriton.sh_backward`) of the one traced energy+force graph, so the backward is "
    "compiled too, not run by autograd at call time. None of these explains the gap. What differs on the GPU: "
    "inductor fuses e3nn's polynomial SH (9 components at l_max 2) into neighbouring kernels, while our ops reach it "
    "as user-defined Triton kernels (`triton_op`), which it launches as they are, unfused. Not measured on the GPU "
    "yet; note also the gap in the minimum times, which is much smaller than in the medians."
)


def allegro_oom_note(metas, cases, bad) -> Optional[str]:
    """Which allegro tensor the allegro out-of-memory failures asked for, from the failure text and the edge count."""
    import re

    fails = [
        c
        for c in bad
        if c["model"] == "allegro" and "out of memory" in (c.get("error") or "") and "Tried to allocate" in c["error"]
    ]
    if not fails:
        return None
    c = max(fails, key=lambda c: float(re.search(r"allocate ([0-9.]+) GiB", c["error"]).group(1)))
    gib = float(re.search(r"allocate ([0-9.]+) GiB", c["error"]).group(1))
    edges = next((o.get("n_edges") for k, o in cases.items() if k[2] == c["n_atoms"] and o.get("n_edges")), None)
    desc = next((m["models"].get("allegro", "") for m in reversed(metas) if m.get("models")), "")
    mul = re.search(r"(\d+) tensor features", desc)
    if edges is None or mul is None:
        return None
    mul, dim = int(mul.group(1)), (c["l_max"] + 1) ** 2
    want = edges * mul * dim**3 * 8 / 2**30
    outer = edges * mul * dim**2 * 8 / 2**30
    small = sorted(
        {
            float(re.search(r"allocate ([0-9.]+) GiB", f["error"]).group(1))
            for f in fails
            if abs(float(re.search(r"allocate ([0-9.]+) GiB", f["error"]).group(1)) - outer) < 0.01 * outer
        }
    )
    also = (
        f" The {', '.join(f'{g:.2f}' for g in small)} GiB failures are the (edges, channels, d, d) = {outer:.2f} GiB "
        "`outer` tensor of the same function, asked for while the large one was still held."
        if small
        else ""
    )
    return (
        f"Allegro l_max={c['l_max']} out of memory: the {gib:.2f} GiB allocation is one float64 tensor of shape "
        f"(edges, channels, d, d, d) = ({edges:,}, {mul}, {dim}, {dim}, {dim}) = {want:.2f} GiB (edge count of the "
        "same system in the other cases). It is allegro's own tensor product, "
        "`allegro/nn/_strided/_contract.py` `Contracter._contract_conv` with `path_channel_coupling=True` (the "
        "AllegroModel default), which forms `outer.unsqueeze(-1) * ww3j` before summing over (i, j); the stock "
        "model fails the same way, and the patched model's SH (shape (edges, d)) is not involved. At l_max "
        f"{c['l_max'] - 1} the same tensor is ({edges:,}, {mul}, {c['l_max'] ** 2}, {c['l_max'] ** 2}, "
        f"{c['l_max'] ** 2}) = {edges * mul * c['l_max'] ** 6 * 8 / 2**30:.2f} GiB, the likely reason allegro is "
        "several times slower there than at lower l_max. allegro's Triton "
        "`enable_TritonContracter` modifier (for AOTInductor builds) or `tp_path_channel_coupling=False` avoid it."
        + also
    )


def fmt(v: Optional[float], nd: int = 2) -> str:
    if v is None:
        return "–"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.1f}"
    return f"{v:.{nd}f}"


def ms(cases, model, l_max, n, mode, patched) -> Optional[float]:
    c = cases.get((model, l_max, n, mode, patched))
    return c["ms_median"] if c and c["status"] == "ok" else None


def cell(cases, model, l_max, n, mode, patched) -> str:
    c = cases.get((model, l_max, n, mode, patched))
    if c is None:
        return ""
    if c["status"] == "ok":
        return fmt(c["ms_median"])
    return "failed" if c["status"] == "failed" else "skipped"


def pair(cases, model, l_max, n, mode) -> str:
    """``stock / patched [tag]`` (one tag when both come from the same file)."""
    cs, cp = cases.get((model, l_max, n, mode, False)), cases.get((model, l_max, n, mode, True))
    s, p = cell(cases, model, l_max, n, mode, False), cell(cases, model, l_max, n, mode, True)
    if not (s or p):
        return ""
    if cs and cp and cs["_tag"] != cp["_tag"]:
        return f"{s}{tag(cs)} / {p}{tag(cp)}"
    return f"{s} / {p}{tag(cs or cp)}"


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b not in (None, 0) else None


def table(header: List[str], rows: List[List[str]]) -> List[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out + [""]


def render(paths: Sequence[str], drop: Optional[Dict[str, List[str]]] = None) -> str:
    metas, cases, profiles = load(paths, drop)
    newest = metas[-1]
    head = newest["headline"]
    hm, hl, hn = head["model"], head["l_max"], head["n_atoms"]
    devices = sorted({m["device"].get("name") or m["device"]["type"] for m in metas})
    dev = " / ".join(devices)
    lines = [
        "# MD step performance: EquiTriton-MD vs stock nequip",
        "",
        f"_Generated by `benchmarks/report_md.py` from {', '.join(f'`{os.path.basename(p)}`' for p in paths)} "
        "(written by `benchmarks/md_step.py`); do not edit by hand._",
        "",
        "Time per energy+forces call (median wall time; every call moves the atoms, rebuilds the neighbor list and "
        'brings the results to the host), float64, untrained models, rattled fcc Cu. "stock" is the model as nequip '
        'builds it (e3nn spherical harmonics), "patched" the same weights after `md_plugin.patch_model`. '
        "ns/day assumes one call per 2 fs step.",
        "",
        "Runs merged here, oldest first; a case measured in several runs is taken from the newest, and every number "
        "carries the tag of the run it comes from:",
        "",
    ]
    for m in metas:
        v = m["versions"]
        d = m["device"]
        merged = [c for c in cases.values() if c["_path"] == m["_path"]]  # this run's cases that the page shows
        n_ok = sum(1 for c in merged if c["status"] == "ok")
        if not n_ok:
            timing = "every case superseded by a newer run."
        elif any(c.get("interleaved_with") for c in merged):
            timing = "stock and patched timed in alternating calls."
        else:
            timing = "stock and patched timed one after the other (drift between them enters patched/stock)."
        lines += [
            f"- [{m['_tag']}] `{os.path.basename(m['_path'])}`: {m['date_utc']}, {d.get('name')} ({d['type']}), "
            f"torch {v.get('torch')}, triton {v.get('triton')}, e3nn {v.get('e3nn')}, nequip {v.get('nequip')}, "
            f"allegro {v.get('nequip-allegro')}, vesin {v.get('vesin')} / vesin-torch {v.get('vesin-torch')}, "
            f"matscipy {v.get('matscipy')}, ase {v.get('ase')}, CUDA {v.get('cuda')}; commit `{m.get('git_commit')}`; "
            f"`{' '.join(m.get('argv') or [])}`; budget {m.get('budget_s')} s, "
            f"{'complete' if m['_complete'] else 'INCOMPLETE'} in {fmt(m['_total_s'], 0)} s"
            f"{' (--quick)' if m.get('quick') else ''}; {n_ok} of its cases shown"
            + "".join(f" (its `{g}` cases not merged: `--drop`)" for g in m["_dropped"])
            + (f" (annotation: {m['annotation']})" if m.get("annotation") else "")
            + f"; {timing}"
        ]
    if len(devices) > 1:
        lines += ["", f"**The runs were made on different devices ({dev}): compare numbers of one tag only.**"]
    lines += ["", "Modes:", ""]
    lines += [f"- `{k}`: {v}" for k, v in newest["modes"].items()]
    lines += [""]

    # ---------------------------------------------------------------- headline
    base_case = cases.get((hm, hl, hn, BASELINE_MODE, False))
    base = ms(cases, hm, hl, hn, BASELINE_MODE, False)
    busy = {
        (p["mode"], p["patched"]): p
        for p in profiles
        if (p["model"], p["l_max"], p["n_atoms"]) == (hm, hl, hn) and p.get("gpu_busy_fraction") is not None
    }

    def busy_cell(mode: str, patched: bool) -> str:
        p = busy.get((mode, patched))
        return f"{100 * p['gpu_busy_fraction']:.0f}%{tag(p)}" if p else "not profiled"

    def min_cell(mode: str) -> str:
        got = [cases.get((hm, hl, hn, mode, v)) for v in (False, True)]
        return " / ".join(fmt(c.get("ms_min")) if c and c["status"] == "ok" else "–" for c in got)

    rows = []
    for mode in MODE_ORDER:
        s, p = ms(cases, hm, hl, hn, mode, False), ms(cases, hm, hl, hn, mode, True)
        if (hm, hl, hn, mode, False) not in cases and (hm, hl, hn, mode, True) not in cases:
            continue
        pc = cases.get((hm, hl, hn, mode, True), {})
        rows.append(
            [
                f"`{mode}`",
                pair(cases, hm, hl, hn, mode),
                min_cell(mode),
                fmt(ratio(p, s)),
                fmt(pc.get("ns_per_day")),
                f"{fmt(ratio(base, s), 1)} / {fmt(ratio(base, p), 1)}",
                f"{busy_cell(mode, False)} / {busy_cell(mode, True)}",
            ]
        )
    lines += [f"## {hm} l_max={hl}, {hn:,} atoms ({dev})", ""]
    lines += table(
        [
            "mode",
            "stock / patched ms (median)",
            "stock / patched ms (min)",
            "patched/stock",
            "ns/day (patched)",
            f"speedup vs `{BASELINE_MODE}` stock{tag(base_case)} (stock / patched)",
            "GPU busy (stock / patched)",
        ],
        rows,
    )

    # ---------------------------------------------------------------- issue-4 targets
    if base is not None:
        lines += [
            f"### Issue-4 targets on this system: ≤ {TARGET_MS:g} ms per call and ≥ {TARGET_SPEEDUP:g}× nequip's "
            f"stock calculator (`{BASELINE_MODE}` stock: {fmt(base)} ms{tag(base_case)}), GPU busy ≥ "
            f"{100 * TARGET_BUSY:.0f}%",
            "",
        ]
        rows, met, not_met = [], [], []
        for mode in MODE_ORDER:
            if not mode.startswith("ours-"):
                continue
            for patched in (False, True):
                c = cases.get((hm, hl, hn, mode, patched))
                if c is None or c["status"] != "ok":
                    continue
                t, r = c["ms_median"], ratio(base, c["ms_median"])
                ok = t <= TARGET_MS and r >= TARGET_SPEEDUP
                label = f"`{mode}` {'patched' if patched else 'stock'}: {fmt(t)} ms{tag(c)}, {fmt(r, 1)}×"
                (met if ok else not_met).append(label)
                p = busy.get((mode, patched))
                rows.append(
                    [
                        f"`{mode}`",
                        "patched" if patched else "stock",
                        f"{fmt(t)}{tag(c)}",
                        "met" if t <= TARGET_MS else "not met",
                        f"{fmt(r, 1)}×",
                        "met" if r >= TARGET_SPEEDUP else "not met",
                        busy_cell(mode, patched),
                        ("met" if p["gpu_busy_fraction"] >= TARGET_BUSY else "not met") if p else "not measured",
                    ]
                )
        lines += table(
            [
                "mode",
                "variant",
                "ms per call",
                f"≤ {TARGET_MS:g} ms",
                "speedup",
                f"≥ {TARGET_SPEEDUP:g}×",
                "GPU busy",
                f"≥ {100 * TARGET_BUSY:.0f}%",
            ],
            rows,
        )
        lines += [
            "Time and speedup targets met by: "
            + ("; ".join(met) if met else "no mode")
            + ". Not met by: "
            + ("; ".join(not_met) if not_met else "none")
            + "."
        ]
        if any(c_tag != base_case["_tag"] for c_tag in {cases[k]["_tag"] for k in cases if k[:3] == (hm, hl, hn)}):
            lines += [
                "",
                f"Speedups divide the baseline of run [{base_case['_tag']}] by times of other runs where the tags "
                "differ (same device type, different processes).",
            ]
        lines += [""]

    # ---------------------------------------------------------------- l_max sweep
    models = sorted({k[0] for k in cases}, key=lambda m: (m != "nequip", m))
    lmax_keys = sorted({k[1] for k in cases if k[2] == hn})
    modes_present = [m for m in MODE_ORDER if any(k[3] == m for k in cases)]
    if len(lmax_keys) > 1:
        lines += [f"## l_max sweep, {hn:,} atoms (ms per call, stock / patched)", ""]
        for model in models:
            rows = []
            for l_max in lmax_keys:
                row = [str(l_max)]
                for mode in modes_present:
                    row.append(pair(cases, model, l_max, hn, mode))
                rows.append(row)
            if any(any(r[1:]) for r in rows):
                lines += [f"**{model}**", ""] + table(["l_max"] + [f"`{m}`" for m in modes_present], rows)

    # ---------------------------------------------------------------- size sweep
    sizes = sorted({k[2] for k in cases if k[1] == hl})
    if len(sizes) > 1:
        lines += [f"## System size, l_max={hl} (ms per call, stock / patched; ns/day of the patched run)", ""]
        for model in models:
            rows = []
            for n in sizes:
                edges = next(
                    (
                        c.get("n_edges")
                        for k, c in cases.items()
                        if k[0] == model and k[1] == hl and k[2] == n and c.get("n_edges")
                    ),
                    None,
                )
                row = [f"{n:,}", f"{edges:,}" if edges else "–"]
                for mode in modes_present:
                    pc = cases.get((model, hl, n, mode, True), {})
                    nsd = f" ({fmt(pc.get('ns_per_day'))} ns/day)" if pc.get("status") == "ok" else ""
                    got = pair(cases, model, hl, n, mode)
                    row.append(f"{got}{nsd}" if got else "")
                rows.append(row)
            if any(any(r[2:]) for r in rows):
                lines += [f"**{model}**", ""] + table(["atoms", "edges"] + [f"`{m}`" for m in modes_present], rows)

    # ---------------------------------------------------------------- compiled modes: one-off costs
    setup_rows = []
    for k, c in cases.items():
        compiled = k[3] in ("ours-compile", "ours-graph", "ours-aoti")
        if compiled and c.get("status") == "ok" and c.get("setup_s") is not None:
            setup_rows.append(
                [
                    k[0],
                    str(k[1]),
                    f"`{k[3]}`",
                    "patched" if k[4] else "stock",
                    fmt(c["setup_s"], 1),
                    fmt((c.get("first_call_ms") or 0) / 1e3, 1),
                    f"[{c['_tag']}]",
                ]
            )
    if setup_rows:
        lines += ["## Compiled modes: one-off cost (s)", ""]
        lines += table(
            ["model", "l_max", "mode", "variant", "build", "first call (trace + compile)", "run"], setup_rows
        )

    # ---------------------------------------------------------------- profiles
    if profiles:
        lines += [
            "## Where the time goes (torch.profiler)",
            "",
            "Per step: wall time, host-side phases (the data phase is ASE → graph, neighbor list and host→device "
            "copies; the model phase is the model call as seen from the host, launches included; the rest is results "
            "to host and ASE bookkeeping), GPU time (union of kernel and copy intervals), GPU busy = GPU time / wall.",
            "",
        ]
        rows = []
        for p in profiles:
            ph = p["phases_ms_per_step"]
            rows.append(
                [
                    f"{p['model']} l{p['l_max']} N={p['n_atoms']:,}",
                    f"`{p['mode']}`",
                    "patched" if p["patched"] else "stock",
                    fmt(p["wall_ms_per_step"]),
                    fmt(ph.get("host: ASE->graph + neighbor list + H2D")),
                    fmt(ph.get("model (launch + device work)")),
                    fmt(ph.get("results to host + ASE bookkeeping")),
                    fmt(p.get("device_busy_ms_per_step")),
                    f"{100 * p['gpu_busy_fraction']:.0f}%" if p.get("gpu_busy_fraction") is not None else "–",
                    f"[{p['_tag']}]",
                ]
            )
        lines += table(
            ["system", "mode", "variant", "wall ms", "data ms", "model ms", "rest ms", "GPU ms", "GPU busy", "run"],
            rows,
        )
        for p in profiles:
            if not (p["mode"] in ("nequip-matscipy", "ours-fast", "ours-compile", "ours-graph") and p["patched"]):
                continue
            lines += [
                f"Top operations, `{p['mode']}` patched, {p['model']} N={p['n_atoms']:,} (ms per step){tag(p)}:",
                "",
            ]
            rows = [
                [
                    f"`{r['name']}`",
                    f"{r['calls_per_step']:g}",
                    fmt(r["self_cpu_ms_per_step"], 3),
                    fmt(r["self_device_ms_per_step"], 3),
                ]
                for r in (p.get("top_device_ops") or [])[:8] + (p.get("top_host_ops") or [])[:8]
            ]
            lines += table(["op", "calls", "host self ms", "GPU self ms"], rows)

    # ---------------------------------------------------------------- patched never slower
    slower = []
    for k, c in cases.items():
        if not k[4] or c["status"] != "ok":
            continue
        s = ms(cases, k[0], k[1], k[2], k[3], False)
        r = ratio(c["ms_median"], s)
        if r is not None and r > SLOWER_TOLERANCE:
            sc = cases[(k[0], k[1], k[2], k[3], False)]
            mins = (
                f"; min {fmt(c['ms_min'])} vs {fmt(sc['ms_min'])} ms"
                if c.get("ms_min") is not None and sc.get("ms_min") is not None
                else ""
            )
            stale = (
                " — traced otherwise than the shipped code traces it now (next section): not the shipped code's figure"
                if traced_unlike_shipped(metas, cases, k)
                else ""
            )
            slower.append(
                f"- {k[0]} l_max={k[1]} N={k[2]:,} `{k[3]}`: patched {fmt(c['ms_median'])} ms{tag(c)} vs stock "
                f"{fmt(s)} ms{tag(sc)} ({fmt(r)}×{mins}){stale}"
            )
    lines += [f"## Patched slower than stock in the same mode (by more than {100 * (SLOWER_TOLERANCE - 1):.0f}%)", ""]
    lines += slower or ["None."]
    lines += [""]
    if any("`ours-compile`" in line for line in slower):
        lines += [COMPILE_NOTE, ""]
    lines += fuse_section(metas, cases)

    # ---------------------------------------------------------------- numbers check
    diffs = [c.get("rel_diff_vs_reference") for c in cases.values() if c.get("rel_diff_vs_reference") is not None]
    if diffs:
        lines += [
            "## Same numbers in every mode",
            "",
            f"Largest relative energy/force difference between any mode or variant and the first one run on the same "
            f"system, same positions: {max(diffs):.1e} over {len(diffs)} cases.",
            "",
        ]

    # ---------------------------------------------------------------- failures
    bad = [c for c in cases.values() if c["status"] != "ok"]
    lines += ["## Failed or skipped cases", ""]
    if not bad:
        lines += ["None."]
    oom = allegro_oom_note(metas, cases, bad)
    for c in bad:
        why = c.get("error") or c.get("reason") or ""
        lines.append(
            f"- {c['model']} l_max={c['l_max']} N={c['n_atoms']:,} `{c['mode']}` "
            f"{'patched' if c['patched'] else 'stock'}{tag(c)}: {c['status']} — "
            f"{why.splitlines()[0][:300] if why else ''}"
        )
    if oom:
        lines += ["", oom]
    lines += [""]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("json", nargs="+", help="md_step.json file(s)")
    p.add_argument("-o", "--output", default="docs/md_performance.md")
    p.add_argument(
        "--drop",
        action="append",
        default=[],
        metavar="FILE=GROUP",
        help="do not merge the cases of plan group GROUP (headline, l_max, size, compiled) of the run FILE (its "
        "basename); the page says so; repeatable",
    )
    args = p.parse_args(argv)
    drop: Dict[str, List[str]] = {}
    for spec in args.drop:
        name, sep, group = spec.partition("=")
        if not sep or not group:
            raise SystemExit(f"--drop takes FILE=GROUP, got {spec!r}")
        drop.setdefault(os.path.basename(name), []).append(group)
    text = render(args.json, drop)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        f.write(text)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
