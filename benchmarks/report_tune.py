"""docs/kernel_tuning.md from the launch-config sweep JSON of benchmarks/tune_kernels.py (no hand-typed numbers).

python benchmarks/report_tune.py docs/data/tune_h100_2026-11-25.json > docs/kernel_tuning_table.md
"""

from __future__ import annotations

import json
import sys


def table(res: dict) -> str:
    rows = [p for p in res["points"] if "ms" in p]
    keyed = {}
    for p in rows:
        keyed.setdefault((p["direction"], p["dtype"], p["lmax"]), []).append(p)
    out = [
        f"Device: {res['device']}; torch {res['torch']}; triton {res['triton']}; {res['date']}; N = {res['N']}; "
        f"device-to-device copy {res['copy_GBps']:.0f} GB/s.",
        "",
        "| direction | dtype | l_max | best ms | GB/s | % of copy | best config | per-column (narrow) best ms | "
        "2D-tile (wide) best ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (direction, dtype, lmax), ps in sorted(keyed.items()):
        best = min(ps, key=lambda p: p["ms"])
        narrow = [p["ms"] for p in ps if not p["WIDE_IO"]]
        wide = [p["ms"] for p in ps if p["WIDE_IO"]]
        io = "full-row tile" if best.get("FULL_ROW") else ("per-l tiles" if best["WIDE_IO"] else "per column")
        order = "" if direction == "forward" else (" m-major" if res.get("m_major") else " l-major")
        cfg = f"{io}{order} BLOCK={best['BLOCK']} warps={best['num_warps']}"
        out.append(
            f"| {direction} | {dtype} | {lmax} | {best['ms']:.3f} | {best['GBps']:.0f} | "
            f"{100 * best['frac_copy']:.0f} | {cfg} | {min(narrow) if narrow else float('nan'):.3f} | "
            f"{min(wide) if wide else float('nan'):.3f} |"
        )
    small = res.get("n4096_fwd_bwd_us", [])
    if small:
        out += [
            "",
            "N = 4096, forward + backward (two launches), microseconds:",
            "",
            "| dtype | l_max | eager launches | CUDA graph replay |",
            "| --- | --- | --- | --- |",
        ]
        out += [f"| {r['dtype']} | {r['lmax']} | {r['eager_us']:.1f} | {r['graph_us']:.1f} |" for r in small]
    skipped = [p for p in res["points"] if "skipped" in p]
    if skipped:
        out += [
            "",
            f"{len(skipped)} configurations were not timed (sweep deadline): "
            + ", ".join(sorted({f"{p['direction']} l_max={p['lmax']}" for p in skipped})),
        ]
    return "\n".join(out) + "\n"


def ladder_table(results: list[dict]) -> str:
    """`--sweep ladder` runs, merged: per (direction, dtype, l_max), the traced-dual row against the best ladder row.
    A point measured in several runs comes from the last one given."""
    rows = {}
    for res in results:
        for p in res["points"]:
            if "ms" in p:
                key = (p["direction"], p["dtype"], p["lmax"], bool(p.get("LADDER")))
                if key not in rows or p["ms"] < rows[key][0]["ms"] or rows[key][1] is not res:
                    rows[key] = (p, res)
    out = [
        "| direction | dtype | l_max | traced duals ms (config) | ladder ms (config) | duals / ladder "
        "| ladder % of copy |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]

    def cfg(p):
        io = ", d(grad_y) select tiles" if p.get("SELECT_TILE") else ""
        io += f" in pieces of <= {p['ROW_CHUNK']}" if p.get("SELECT_TILE") and p.get("ROW_CHUNK") else ""
        return f"{p['BLOCK']} / {p['num_warps']}{io}"

    for direction, dtype, lmax in sorted({k[:3] for k in rows}):
        dual, ladder = rows.get((direction, dtype, lmax, False)), rows.get((direction, dtype, lmax, True))
        if dual is None or ladder is None:
            continue
        (d, _), (lad, res) = dual, ladder
        out.append(
            f"| {direction} | {dtype} | {lmax} | {d['ms']:.3f} ({cfg(d)}) | {lad['ms']:.3f} ({cfg(lad)}) | "
            f"{d['ms'] / lad['ms']:.2f} | {100 * lad['frac_copy']:.0f} |"
        )
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    # usage: report_tune.py SWEEP.json[:m-major] ...   (the derivative kernels' order is not in the first sweep's JSON)
    #        report_tune.py --ladder LADDER_SWEEP.json ...   (one table: traced duals against the ladder)
    if sys.argv[1:2] == ["--ladder"]:
        loaded = []
        for path in sys.argv[2:]:
            with open(path) as f:
                loaded.append(json.load(f))
        sys.stdout.write(ladder_table(loaded))
        sys.exit(0)
    for arg in sys.argv[1:]:
        path, _, tag = arg.partition(":")
        with open(path) as f:
            res = json.load(f)
        res["m_major"] = tag == "m-major"
        sys.stdout.write(f"\n### {path}\n\n" + table(res))
