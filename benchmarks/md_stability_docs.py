"""Copy NVE stability results into docs/ and (re)generate their sections of docs/stability.md from the JSON.

    python benchmarks/md_stability_docs.py OUT/nequip OUT/allegro --dest docs/stability_h100 --section h100
    python benchmarks/md_stability_docs.py runs/cpu_ci --dest docs/stability_cpu --section cpu
    python benchmarks/md_stability_docs.py --check        # every generated section matches its report.json files

Each SRC is a study directory written by ``equitriton-md nve`` or ``benchmarks/md_stability_gpu.py``; its
``report.json`` and ``energy.png`` are copied to DEST/<basename of SRC>/ (plus SRC/../plan.json and gpu.txt to DEST/ if
present). The doc holds each section between ``<!-- stability:begin SECTION dest=DEST -->`` and
``<!-- stability:end SECTION -->``; the text between is rendered only from DEST/*/report.json, so the numbers in the
doc are never typed by hand and ``--check`` can prove it.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "stability.md"
_BEGIN = re.compile(r"<!-- stability:begin (?P<section>[\w-]+) dest=(?P<dest>\S+) -->")
_MODEL_NAMES = {"nequip": "NequIP", "allegro": "Allegro"}
_VERSIONS = ("torch", "triton", "e3nn", "nequip", "nequip-allegro", "ase", "python")


def _study_title(name: str, report: dict) -> str:
    model = Path(str(report["metadata"].get("model", ""))).name
    return f"{_MODEL_NAMES.get(name, name)} — `{model}`"


def render_study(name: str, report: dict, image: str) -> str:
    """Markdown for one study: set-up line, per-run table, agreement table, plot."""
    meta = report["metadata"]
    system = meta["system"]
    size = system.get("size")
    size_txt = "x".join(map(str, size)) if isinstance(size, list) else str(size)
    versions = meta.get("versions", {})
    lines = [
        f"#### {_study_title(name, report)}",
        "",
        f"{system['n_atoms']:,} atoms ({system['name']} {size_txt}, {system['formula']}), "
        f"{meta['steps']:,} steps x {meta['timestep_fs']:g} fs = {meta['simulated_time_ps']:g} ps, "
        f"{meta['initial_temperature_K']:g} K initial (seed {meta['seed']}), positions "
        + ("every step" if meta["record_interval"] == 1 else f"every {meta['record_interval']} steps")
        + f", energies every step, {meta.get('warmup_steps', 0)} untimed warm-up steps per run.",
        "",
        f"Device: {meta.get('device_name', meta.get('device'))}; calculator path: "
        f"{meta.get('calculator_path', 'on-device (fast_step)' if meta.get('fast_step') else 'nequip data path')}; "
        f"torch threads: {meta.get('torch_num_threads')}; date (UTC): {meta.get('date_utc')}; "
        f"git: `{meta.get('git_revision')}`.",
        "Versions: " + ", ".join(f"{k} {versions.get(k)}" for k in _VERSIONS if versions.get(k)) + ".",
        f"Command: `{meta.get('command', 'n/a')}`.",
        "",
        "| run | SH backend | drift [meV/atom/ps] | fluctuation [meV/atom] | max abs(E-E0) [meV/atom] "
        "| T mean ± std [K] | steps/s | ns/day |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label in report["run_labels"]:
        r = report[label]
        lines.append(
            f"| {label} | {r.get('sh_backend', '')} | {r['drift_meV_per_atom_per_ps']:+.3e} | "
            f"{r['fluctuation_meV_per_atom']:.3e} | {r['max_abs_dE_meV_per_atom']:.3e} | "
            f"{r['temperature_mean_K']:.0f} ± {r['temperature_std_K']:.0f} | {r['steps_per_s']:.1f} | "
            f"{r['ns_per_day']:.2f} |"
        )
    comparisons = report.get("comparisons", {})
    if comparisons:
        lines += [
            "",
            "| vs stock | max position deviation [Å] | final [Å] | first > 1e-12 Å | first > 1e-8 Å | first > 1e-4 Å "
            "| first > 0.1 Å | steps/s ratio |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for label, c in comparisons.items():
            first = c.get("deviation_first_exceeds_ps", {})
            levels = ("1e-12", "1e-08", "0.0001", "0.1")
            cells = [("never" if first.get(k) is None else f"{first[k]:g} ps") for k in levels]
            lines.append(
                f"| {label} | {c['max_position_deviation_A']:.2e} | {c['final_position_deviation_A']:.2e} | "
                + " | ".join(cells)
                + f" | {c['speedup_over_stock']:.3f}x |"
            )
    lines += ["", f"![NVE energies and position deviation, {name}]({image})", ""]
    return "\n".join(lines)


def render_section(dest: Path, doc: Path) -> str:
    """The generated text for every DEST/*/report.json, in name order (nequip before allegro)."""
    studies = sorted(
        (p.parent for p in dest.glob("*/report.json")),
        key=lambda d: (list(_MODEL_NAMES).index(d.name) if d.name in _MODEL_NAMES else 99, d.name),
    )
    if not studies:
        return "\n_No results recorded yet._\n"
    parts = [""]
    tests = dest / "pytest_cuda.txt"
    if tests.is_file():
        summary = [ln for ln in tests.read_text().splitlines() if ln.strip()][-1:]
        parts.append(f"Device-matrix tests on this machine (`{tests.name}`): `{summary[0] if summary else 'empty'}`.\n")
    for study in studies:
        report = json.loads((study / "report.json").read_text())
        image = (study / "energy.png").resolve().relative_to(doc.resolve().parent).as_posix()
        parts.append(render_study(study.name, report, image))
    return "\n".join(parts)


def regenerate(doc: Path = DOC) -> tuple[str, str]:
    """(current text, text with every generated section re-rendered)."""
    text = doc.read_text()
    out, pos = [], 0
    for m in _BEGIN.finditer(text):
        end_marker = f"<!-- stability:end {m['section']} -->"
        end = text.find(end_marker, m.end())
        if end < 0:
            raise ValueError(f"{doc}: no {end_marker!r} after {m.group(0)!r}")
        out += [text[pos : m.end()], render_section(ROOT / m["dest"], doc)]
        pos = end
    out.append(text[pos:])
    return text, "".join(out)


def copy_results(sources: list[Path], dest: Path) -> list[Path]:
    """Copy report.json and energy.png of each study, and the run's plan.json / gpu.txt, into ``dest``."""
    copied = []
    for src in sources:
        if not (src / "report.json").is_file():
            raise FileNotFoundError(f"{src}/report.json not found")
        target = dest / src.name
        target.mkdir(parents=True, exist_ok=True)
        for name in ("report.json", "energy.png"):
            if (src / name).is_file():
                shutil.copyfile(src / name, target / name)
                copied.append(target / name)
        for extra in ("plan.json", "gpu.txt", "pytest_cuda.txt"):
            if (src.parent / extra).is_file():
                shutil.copyfile(src.parent / extra, dest / extra)
                copied.append(dest / extra)
    return copied


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sources", nargs="*", type=Path, help="study directories (with report.json, energy.png)")
    p.add_argument("--dest", type=Path, help="docs folder for the copies, e.g. docs/stability_h100")
    p.add_argument("--section", help="section name in the doc (its begin marker names --dest)")
    p.add_argument("--doc", type=Path, default=DOC)
    p.add_argument("--check", action="store_true", help="only check that the doc matches the JSON; exit 1 if not")
    args = p.parse_args(argv)
    if args.check:
        current, fresh = regenerate(args.doc)
        if current != fresh:
            print(f"{args.doc} is out of date: run python benchmarks/md_stability_docs.py", file=sys.stderr)
            return 1
        print(f"{args.doc}: generated sections match their report.json files")
        return 0
    if args.sources:
        if args.dest is None or args.section is None:
            p.error("copying needs --dest and --section")
        for path in copy_results(args.sources, args.dest):
            print(f"copied {path}")
        text = args.doc.read_text()
        dest_rel = args.dest.resolve().relative_to(ROOT).as_posix()
        marker = f"<!-- stability:begin {args.section} dest={dest_rel} -->"
        existing = re.compile(rf"<!-- stability:begin {re.escape(args.section)} dest=\S+ -->")
        if existing.search(text):
            text = existing.sub(marker, text)
        else:
            text += f"\n{marker}\n<!-- stability:end {args.section} -->\n"
        args.doc.write_text(text)
    _, fresh = regenerate(args.doc)
    args.doc.write_text(fresh)
    print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
