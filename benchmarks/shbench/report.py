"""Markdown tables, target checks and plots, all computed from a results document (the JSON of sh_bench.py).

Nothing here measures or types a number: the summary written next to the JSON and docs/performance.md are both built
by these functions, so the docs always match the data they cite.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from .points import BYTES_MODEL, OURS, lset_label
from .results import point_key

DIR_TITLE = {
    "forward": "forward",
    "backward": "backward (op alone)",
    "forward_backward": "forward + backward (autograd, public API)",
    "forward_backward_graph": "forward + backward ops (one CUDA graph)",
    "double_backward": "double backward (op alone)",
    "training": "forward + backward + double backward (autograd, public API)",
}
SHORT = {"unsupported": "n/a", "skipped": "skip", "error": "ERR", "wrong": "WRONG"}


class Index:
    """Points of a document by (impl, direction, lset, dtype, n), with the l sets, impls and N in plan order."""

    def __init__(self, doc: dict) -> None:
        self.doc = doc
        self.meta = doc["meta"]
        self.by = {point_key(p): p for p in doc["points"]}
        self.lsets = list(dict.fromkeys(lset_label(p["ls"]) for p in sorted(doc["points"], key=_lset_order)))
        self.impls = list(dict.fromkeys(p["impl"] for p in doc["points"]))
        self.ns = sorted({p["n"] for p in doc["points"]})
        self.dtypes = [d for d in ("float64", "float32") if any(p["dtype"] == d for p in doc["points"])]

    def get(self, impl, direction, lset, dtype, n) -> dict | None:
        return self.by.get((impl, direction, lset, dtype, n))

    def ok(self, *key) -> dict | None:
        p = self.get(*key)
        return p if p is not None and p["status"] == "ok" else None

    def peers(self) -> list[str]:
        return [i for i in self.impls if i != OURS]

    def label(self, impl: str) -> str:
        return self.meta.get("impls", {}).get(impl, {}).get("label", impl)


def _lset_order(p: dict):
    ls = p["ls"]
    dense = ls == list(range(max(ls) + 1))
    return (0 if dense else 1, max(ls), len(ls))


def fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "—"
    if ms < 1:
        return f"{ms * 1e3:.1f} µs"
    return f"{ms:.2f} ms" if ms < 100 else f"{ms:.0f} ms"


def fmt_n(n: int) -> str:
    return f"2^{n.bit_length() - 1}" if n & (n - 1) == 0 else str(n)


def _cell(p: dict | None) -> str:
    if p is None:
        return ""
    text = fmt_ms(p["ms"]) if p["status"] == "ok" else SHORT[p["status"]]
    return text + (f" [{p['run']}]" if "run" in p else "")  # the run of a merged document (results.merge)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def headline_table(ix: Index, direction: str, dtype: str, n: int) -> str:
    """One row per l set: our time, GB/s and share of copy bandwidth; each peer's time and how many times slower."""
    peers = [i for i in ix.peers() if any(ix.get(i, direction, ls, dtype, n) for ls in ix.lsets)]
    gpu = any("device_ms" in (ix.get(OURS, direction, ls, dtype, n) or {}) for ls in ix.lsets)
    header = ["l set", "ours", "GB/s", "% of copy"] + (["GPU time", "GPU % of copy"] if gpu else [])
    header += [f"{ix.label(i)} (×ours)" for i in peers]
    rows = []
    for ls in ix.lsets:
        o = ix.get(OURS, direction, ls, dtype, n)
        if o is None:
            continue
        row = [ls, _cell(o)]
        row += [f"{o['gbps']:.0f}", f"{100 * o['frac_copy']:.0f}%"] if o["status"] == "ok" else ["", ""]
        if gpu:
            has = o["status"] == "ok" and "device_ms" in o
            row += [fmt_ms(o["device_ms"]), f"{100 * o['device_frac_copy']:.0f}%"] if has else ["", ""]
        for i in peers:
            p = ix.get(i, direction, ls, dtype, n)
            c = _cell(p)
            if p is not None and p["status"] == "ok" and o["status"] == "ok":
                c += f" ({p['ms'] / o['ms']:.1f}×)"
            row.append(c)
        rows.append(row)
    return _table(header, rows)


def small_n_table(ix: Index, n: int = 2**12) -> str:
    """Ours at an MD-sized N: every direction, both dtypes."""
    dirs = ["forward", "backward", "forward_backward", "forward_backward_graph", "double_backward", "training"]
    header = ["l set", "dtype"] + [DIR_TITLE[d] for d in dirs]
    rows = []
    for ls in ix.lsets:
        for dt in ix.dtypes:
            cells = [_cell(ix.get(OURS, d, ls, dt, n)) for d in dirs]
            if any(cells):
                rows.append([ls, dt] + cells)
    return _table(header, rows)


def _dense(ls_label: str) -> bool:
    return ls_label.startswith("l<=")


def targets(ix: Index, n_big: int = 2**22, n_small: int = 2**12) -> list[dict]:
    """Issue 3's targets, each with the figure reached (from the points) and whether it is met (None: no data)."""
    out = []
    for dt, floor in (("float64", 0.80), ("float32", 0.75)):
        for d in ("forward", "backward"):
            fr = {ls: ix.ok(OURS, d, ls, dt, n_big) for ls in ix.lsets if _dense(ls)}
            got = {ls: p["frac_copy"] for ls, p in fr.items() if p}
            missing = [ls for ls, p in fr.items() if not p]
            worst = min(got, key=got.get) if got else None
            fig = f"min {100 * got[worst]:.0f}% ({worst})" if worst else "no data"
            if missing:
                fig += f"; not measured: {', '.join(missing)}"
            met = (min(got.values()) >= floor and not missing) if got else None
            out.append(
                {
                    "target": f"{dt} {d} ≥ {floor:.0%} of copy BW, N={fmt_n(n_big)}, every l_max",
                    "figure": fig,
                    "met": met,
                }
            )
            # the same from the GPU time alone (timing.device_times), where measured: the kernels' own bandwidth
            dev = {ls: p["device_frac_copy"] for ls, p in fr.items() if p and "device_frac_copy" in p}
            if dev:
                worst = min(dev, key=dev.get)
                out.append(
                    {
                        "target": f"{dt} {d} ≥ {floor:.0%} of copy BW, N={fmt_n(n_big)}, every l_max (GPU time)",
                        "figure": f"min {100 * dev[worst]:.0f}% ({worst})",
                        "met": min(dev.values()) >= floor and len(dev) == len(fr),
                    }
                )
    ratios = []  # (our time / the peer's, impl, direction, l set, dtype, N)
    for (impl, d, ls, dt, n), p in ix.by.items():
        if impl == OURS or n < 2**14 or p["status"] != "ok":
            continue
        o = ix.ok(OURS, d, ls, dt, n)
        if o is not None:
            ratios.append((o["ms"] / p["ms"], impl, d, ls, dt, n))
    slower = [r for r in ratios if r[0] > 1]
    fig = f"{len(ratios)} peer points compared, ours slower at {len(slower)}"
    if ratios:
        r, impl, d, ls, dt, n = max(ratios)
        fig += f"; {'worst' if slower else 'closest'} {r:.2f}× vs {ix.label(impl)} ({d}, {ls}, {dt}, N={fmt_n(n)})"
    out.append(
        {
            "target": "faster than every peer at every measured N ≥ 2^14",
            "figure": fig,
            "met": (not slower) if ratios else None,
        }
    )
    for d in ("forward_backward_graph", "forward_backward"):
        got = {(ls, dt): p["ms"] * 1e3 for ls in ix.lsets for dt in ix.dtypes if (p := ix.ok(OURS, d, ls, dt, n_small))}
        if got:
            k = max(got, key=got.get)
            fig = f"max {got[k]:.1f} µs ({k[0]}, {k[1]})"
        else:
            fig = "no data"
        out.append(
            {
                "target": f"N={fmt_n(n_small)} {DIR_TITLE[d]} ≤ 20 µs",
                "figure": fig,
                "met": (max(got.values()) <= 20) if got else None,
            }
        )
    launches = [r for r in ix.meta.get("launches", []) if "kernels" in r and r["direction"] in ("forward", "backward")]
    if launches:
        worst = max(r["kernels"] for r in launches)
        out.append(
            {
                "target": "one kernel launch per direction (forward op, backward op)",
                "figure": f"max {worst} kernels per call",
                "met": worst == 1,
            }
        )
    ratios = {}
    for ls in ix.lsets:
        for dt in ix.dtypes:
            b, dd = ix.ok(OURS, "backward", ls, dt, n_big), ix.ok(OURS, "double_backward", ls, dt, n_big)
            if b and dd:
                ratios[(ls, dt)] = dd["ms"] / b["ms"]
    if ratios:
        k = max(ratios, key=ratios.get)
        out.append(
            {
                "target": f"double backward ≤ 2× backward, N={fmt_n(n_big)}",
                "figure": f"max {ratios[k]:.2f}× ({k[0]}, {k[1]})",
                "met": ratios[k] <= 2,
            }
        )
    return out


def targets_table(ix: Index) -> str:
    mark = {True: "met", False: "**not met**", None: "no data"}
    return _table(["target", "reached", ""], [[t["target"], t["figure"], mark[t["met"]]] for t in targets(ix)])


def not_measured(ix: Index) -> str:
    """Points without a time, grouped by implementation, status and reason."""
    groups: Counter = Counter()
    for p in ix.doc["points"]:
        if p["status"] != "ok":
            groups[(p["impl"], p["status"], p["reason"])] += 1
    rows = [[ix.label(i), s, str(c), (r or "").replace("|", "/")] for (i, s, r), c in sorted(groups.items(), key=str)]
    return (
        _table(["implementation", "status", "points", "reason"], rows) if rows else "Every planned point was measured."
    )


def error_table(ix: Index) -> str:
    """Largest relative error vs the float64 reference over each implementation's timed points, per dtype (a point
    that failed its check is listed with its error under "Points not measured", not here)."""
    worst: dict = {}
    for p in ix.doc["points"]:
        if p["rel_err"] is not None and p["status"] == "ok":
            k = (p["impl"], p["dtype"])
            worst[k] = max(worst.get(k, 0.0), p["rel_err"])
    rows = [[ix.label(i)] + [f"{worst[(i, dt)]:.1e}" if (i, dt) in worst else "" for dt in ix.dtypes] for i in ix.impls]
    return _table(["implementation"] + [f"max rel. error, {dt}" for dt in ix.dtypes], rows)


def compile_table(ix: Index, top: int = 12) -> str:
    """The slowest compile-phase jobs and the ones that did not finish."""
    jobs = ix.meta.get("warm", {}).get("jobs", [])
    done = sorted((j for j in jobs if j.get("ok")), key=lambda j: -(j.get("seconds") or 0))[:top]
    rows = [[j["id"], f"{j['seconds']:.1f} s", "compiled"] for j in done]
    rows += [[j["id"], "", (j.get("error") or "")[:100]] for j in jobs if j.get("ok") is False]
    return _table(["compile job", "time", "outcome"], rows) if rows else "No compile jobs."


def impls_table(ix: Index) -> str:
    rows = []
    for name, m in ix.meta.get("impls", {}).items():
        state = f"yes ({m.get('version')})" if m.get("available") else f"**no**: {m.get('reason')}"
        rows.append([m.get("label", name), state, m.get("convention", ""), m.get("notes", "")])
    return _table(["implementation", "available", "convention", "notes"], rows)


def plot(doc: dict, outdir: Path, prefix: str = "sh") -> list[Path]:
    """Achieved GB/s vs N, one figure per (direction, dtype), one panel per l set, ours and every peer; the dashed line
    is the measured copy bandwidth. Returns the PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ix = Index(doc)
    outdir.mkdir(parents=True, exist_ok=True)
    copy = ix.meta.get("copy_gbps")
    paths = []
    series = defaultdict(list)
    for p in doc["points"]:
        if p["status"] == "ok":
            series[(p["direction"], p["dtype"], p["lset"], p["impl"])].append((p["n"], p["gbps"]))
    for d in DIR_TITLE:
        for dt in ix.dtypes:
            panels = [ls for ls in ix.lsets if any(k[:3] == (d, dt, ls) for k in series)]
            if not panels:
                continue
            cols = min(4, len(panels))
            rows = -(-len(panels) // cols)
            fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False, sharex=True)
            for ax, ls in zip(axes.flat, panels):
                for impl in ix.impls:
                    pts = sorted(series.get((d, dt, ls, impl), []))
                    if pts:
                        color = "k" if impl == OURS else f"C{ix.impls.index(impl) % 10}"
                        style = dict(lw=2.2 if impl == OURS else 1.2, color=color)
                        ax.plot(
                            [n for n, _ in pts], [g for _, g in pts], marker="o", ms=3, label=ix.label(impl), **style
                        )
                if copy:
                    ax.axhline(copy, ls="--", color="grey", lw=1)
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                ax.set_title(ls, fontsize=10)
                ax.grid(True, which="both", alpha=0.3)
            for ax in axes.flat[len(panels) :]:
                ax.set_visible(False)
            for ax in axes[-1]:
                ax.set_xlabel("N (points)")
            for ax in axes[:, 0]:
                ax.set_ylabel("GB/s")
            handles = {}
            for ax in axes.flat:
                for h, lab in zip(*ax.get_legend_handles_labels()):
                    handles.setdefault(lab, h)
            fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(6, len(handles)), fontsize=9)
            fig.suptitle(f"{DIR_TITLE[d]}, {dt}: achieved GB/s (dashed: device copy {copy:.0f} GB/s)" if copy else d)
            fig.tight_layout(rect=(0, 0.06, 1, 0.96))
            path = outdir / f"{prefix}_{d}_{dt}.png"
            fig.savefig(path, dpi=90)
            plt.close(fig)
            paths.append(path)
    return paths


def _meta_lines(ix: Index) -> list[str]:
    m = ix.meta
    dev, v, git = m.get("device", {}), m.get("versions", {}), m.get("git", {})
    versions = ", ".join(f"{k} {val}" for k, val in v.items() if val)
    return [
        f"- device: {dev.get('name')} (compute capability {dev.get('capability')}, {dev.get('sm_count')} SMs, "
        f"L2 {(dev.get('l2_bytes') or 0) / 2**20:.0f} MiB), driver {dev.get('driver')}, "
        f"CUDA runtime {dev.get('cuda_runtime')}",
        f"- software: {versions}",
        f"- date: {m.get('date_utc')}; commit {git.get('commit')}"
        + (" (uncommitted changes)" if git.get("dirty") else ""),
        f"- command: `{m.get('command')}`" + (" (quick subset)" if m.get("quick") else ""),
        # (a merged page says it run by run, _runs_lines: its runs need not have had the same rounds)
        *(
            [f"- every point measured in {rounds} rounds, its median round kept (shbench.results.merge_rounds)"]
            if (rounds := (m.get("timing") or {}).get("rounds") or 1) > 1 and not m.get("runs")
            else []
        ),
        f"- device-to-device copy bandwidth, same run: **{m.get('copy_gbps', 0):.0f} GB/s** (bytes read + written)",
        f"- run finished: {ix.doc.get('finished')}; wall time {m.get('elapsed_s')} s",
    ] + _runs_lines(m)


def _runs_lines(m: dict) -> list[str]:
    """For a merged document (results.merge): one line per run; a table cell comes from the newest run that
    measured it (each point's `run` index, as [i])."""
    runs = m.get("runs") or []
    if len(runs) < 2:
        return []
    out = [
        "- merged from these runs (a point measured in several comes from the newest; the lines above are the "
        "newest run's):"
    ]
    for i, r in enumerate(runs):
        out.append(
            f"  - [{i}] {r.get('date_utc')}, {r.get('device')}, copy {r.get('copy_gbps') or 0:.0f} GB/s, "
            f"{r.get('elapsed_s')} s, finished {r.get('finished')}: `{r.get('command')}`"
            + (f"; each point the median of {r['rounds']} rounds" if (r.get("rounds") or 1) > 1 else "")
            + (f"; only these points taken: `{r['only']}`" if r.get("only") else "")
        )
    return out


def _headlines(ix: Index, n: int) -> list[str]:
    out = []
    for d in DIR_TITLE:
        for dt in ix.dtypes:
            if any(ix.get(OURS, d, ls, dt, n) for ls in ix.lsets):
                out += [f"### {DIR_TITLE[d]}, {dt}, N = {fmt_n(n)}", "", headline_table(ix, d, dt, n), ""]
    return out


def summary_markdown(doc: dict) -> str:
    """The short report written next to the JSON."""
    ix = Index(doc)
    n_big = 2**22 if 2**22 in ix.ns else max(ix.ns)
    lines = ["# Spherical-harmonics benchmark", ""] + _meta_lines(ix) + ["", "## Targets", "", targets_table(ix), ""]
    lines += ["## Headline tables", ""] + _headlines(ix, n_big)
    if 2**12 in ix.ns:
        lines += [f"## Ours at N = {fmt_n(2**12)}", "", small_n_table(ix), ""]
    lines += ["## Not measured", "", not_measured(ix), ""]
    return "\n".join(lines)


def performance_markdown(
    doc: dict, images: list[Path], img_rel: str, json_rel: str, reproduce: str, notes_rel: str | None = None
) -> str:
    """docs/performance.md: everything from `doc`; `images` are the plot files, linked as img_rel/<name>;
    `notes_rel`, if given, links hand-written optimisation notes."""
    ix = Index(doc)
    n_big = 2**22 if 2**22 in ix.ns else max(ix.ns)
    m = ix.meta
    t = m.get("timing", {})
    lines = [
        "# Performance: spherical harmonics",
        "",
        f"<!-- generated by benchmarks/report_sh.py from {json_rel}; edit the generator, not this file -->",
        "",
        "Spherical-harmonics evaluation is memory-bound, so each time is also shown as achieved bandwidth (bytes a "
        "call must move / time) and as a share of the device-to-device copy bandwidth measured in the same run.",
        "",
        '"ours" is triton.testing.do_bench\'s median, host launch cost included. "GPU time" (from N = 2^20) is '
        "the kernels' own time: where a point records `event_ms` (runs from 2026-12-04 14:56 UTC on) the "
        "smaller of two upper bounds on it, the CUPTI "
        "durations of 10 back-to-back calls (torch.profiler; the profiler can slow a kernel) and the median of "
        "CUDA events between them (a host gap enters it); in earlier runs the CUPTI durations alone "
        "(shbench/timing.py device_times).",
        "",
        "## Run",
        "",
        *_meta_lines(ix),
        f"- raw data: [{Path(json_rel).name}]({json_rel})",
        "",
        "Reproduce on the GPU machine (one command, about 8 minutes on an H100):",
        "",
        "```bash",
        reproduce,
        "```",
        "",
        "## Method",
        "",
        f"- times: {t.get('method')}; warm-up {t.get('warmup_ms')} ms, repetitions {t.get('rep_ms')} ms per point",
        f"- inputs: {t.get('rotation')}",
        f"- correctness: {t.get('check')}",
        "- bytes per call (numerator of GB/s, the same for ours and every peer):",
        *[f"  - {d}: {s}" for d, s in (m.get("bytes_model") or BYTES_MODEL).items()],
        f"- budgets: {t.get('budgets')}",
        "",
        "## Implementations and conventions",
        "",
        impls_table(ix),
        "",
        "Largest relative error against the float64 reference (over the checked rows of every timed point; points"
        " that failed the check are under [Points not measured](#points-not-measured)):",
        "",
        error_table(ix),
        "",
    ]
    manifest = m.get("peers_manifest")
    if manifest:
        lines += ["Peer packages carried to the GPU machine (`benchmarks/get_peers.py`):", ""]
        lines += [f"- {e}" for e in manifest.get("notes", [])]
        lines += [""]
    lines += ["## Targets (issue 3)", "", targets_table(ix), ""]
    if notes_rel:
        lines += [f"Optimisation notes, predicted vs measured: [{Path(notes_rel).name}]({notes_rel}).", ""]
    lines += ["## Tables", ""] + _headlines(ix, n_big)
    if 2**12 in ix.ns:
        lines += [f"### Ours at N = {fmt_n(2**12)} (an MD-sized batch of edges)", "", small_n_table(ix), ""]
    launches = [r for r in m.get("launches", []) if "kernels" in r]
    if launches:
        rows = [[lset_label(r["ls"]), r["direction"], str(r["kernels"]), ", ".join(r["names"])[:120]] for r in launches]
        lines += [
            "### Kernel launches per call (ours, N = 2^12)",
            "",
            _table(["l set", "call", "kernels", "names"], rows),
            "",
        ]
    lines += ["## Plots", ""]
    for p in images:
        lines += [f"![{p.stem}]({img_rel}/{p.name})", ""]
    lines += ["## Compile phase", "", compile_table(ix), "", "## Points not measured", "", not_measured(ix), ""]
    return "\n".join(lines)
