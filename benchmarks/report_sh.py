"""Build docs/performance.md and its plots from the JSON of benchmarks/sh_bench.py (numbers are never typed by hand).

    python benchmarks/report_sh.py --json OUT/sh/sh_bench.json [--json LATER.json ...] [--docs docs]

Several --json (oldest first) are merged point by point, the newest measurement winning (shbench.results.merge):
for a run whose peers were cut by the time limit plus a later run of the missing points. Copies the (merged) JSON
to DOCS/data/sh_bench.json (the data the page cites), writes the PNGs to DOCS/img/ and the page to
DOCS/performance.md. Hand-written optimisation notes, if DOCS/performance_notes.md exists, are linked from the page.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from shbench import report, results  # noqa: E402

REPRODUCE = """\
# here (once): python benchmarks/get_peers.py --equitriton-src <clone of github.com/IntelLabs/EquiTriton>
# on the GPU machine, with .peers carried:
. benchmarks/device_setup.sh && timeout 540 python benchmarks/sh_bench.py --out $OUT/sh --peers-dir .peers  # ~8 min
# here, with the returned JSON:
python benchmarks/report_sh.py --json <returned>/sh/sh_bench.json"""


def build(json_paths: list[Path] | Path, docs: Path, only: dict | None = None) -> Path:
    """Write DOCS/performance.md, DOCS/img/sh_*.png and DOCS/data/sh_bench.json; returns the page's path. `only`
    maps a path to the (dtype, l set) pairs kept from it (results.subset)."""
    paths = [json_paths] if isinstance(json_paths, Path) else list(json_paths)
    loaded = []
    for path in paths:
        doc = json.loads(path.read_text())
        problems = results.validate(doc)
        if problems:
            raise SystemExit(f"{path}: not a valid sh_bench result: " + "; ".join(problems[:5]))
        if only and path in only:
            doc = results.subset(doc, only[path])
        loaded.append(doc)
    doc = results.merge(loaded)
    data = docs / "data" / "sh_bench.json"
    data.parent.mkdir(parents=True, exist_ok=True)
    if len(paths) > 1:
        data.write_text(json.dumps(doc, indent=1))
    elif paths[0].resolve() != data.resolve():
        shutil.copyfile(paths[0], data)
    images = report.plot(doc, docs / "img", prefix="sh")
    notes = docs / "performance_notes.md"
    page = report.performance_markdown(
        doc, images, "img", "data/sh_bench.json", REPRODUCE, notes.name if notes.exists() else None
    )
    out = docs / "performance.md"
    out.write_text(page)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--json", type=Path, action="append", required=True, help="sh_bench.json of benchmarks/sh_bench.py (repeatable)"
    )
    ap.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="FILE=SPEC",
        help="keep only these (dtype, l set) pairs of the run in FILE: 'run.json=float64:l<=6 [0,2,10];float32:l<=10'",
    )
    ap.add_argument("--docs", type=Path, default=Path(__file__).resolve().parents[1] / "docs")
    args = ap.parse_args(argv)
    only = {}
    for item in args.only:
        path, sep, spec = item.partition("=")
        if not sep or Path(path) not in args.json:
            ap.error(f"--only {item!r}: give FILE=SPEC with FILE one of the --json files")
        only[Path(path)] = spec
    print(f"wrote {build(args.json, args.docs, only)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
