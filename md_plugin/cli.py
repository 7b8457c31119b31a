"""``equitriton-md`` command line: NVE energy-conservation runs, stock vs EquiTriton-patched.

Examples::

    equitriton-md nve                                   # embedded Cu model, 32-atom fcc cell, patched run
    equitriton-md nve --compare --steps 2000 --out runs/cu
    equitriton-md nve --model my.nequip.zip --system POSCAR --compare --max-drift 0.5
    python -m md_plugin nve --system cu-cluster --size 3 --device cpu

Exit codes: 0 success, 1 error, 2 bad command line, 3 a ``--max-*`` threshold was exceeded.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_THRESHOLD = 3


def _species_map(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        sym, _, name = item.partition("=")
        if not name.strip():
            raise argparse.ArgumentTypeError(f"expected SYMBOL=TYPE_NAME, got {item!r}")
        out[sym.strip()] = name.strip()
    return out


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _size(text: str) -> int | tuple[int, int, int]:
    from md_plugin.stability.systems import parse_size

    try:
        return parse_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _fast_step_mode(text: str) -> str:
    if text not in ("compile", "graph"):
        raise argparse.ArgumentTypeError(f"--fast-step takes 'compile' or 'graph' (CUDA), got {text!r}")
    return text


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``equitriton-md`` argument parser."""
    from md_plugin.stability.systems import PRESETS

    parser = argparse.ArgumentParser(
        prog="equitriton-md",
        description="Molecular-dynamics tools for NequIP/Allegro models with EquiTriton spherical harmonics.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    nve = sub.add_parser(
        "nve",
        help="NVE energy-conservation run (stock vs patched with --compare)",
        description=(
            "Run velocity-Verlet NVE dynamics and report energy drift/fluctuation, temperature and throughput. "
            "Writes OUT/report.json, OUT/<run>.traj and OUT/energy.png. Exit code 3 if a --max-* threshold "
            "is exceeded."
        ),
    )
    g = nve.add_argument_group("model and system")
    g.add_argument(
        "--model",
        default=None,
        help="NequIP/Allegro model: .nequip.zip package or compiled .nequip.pth/.pt2 file; 'emt' for ASE's EMT "
        "(tooling check). Default: the embedded tiny Cu NequIP model",
    )
    g.add_argument(
        "--system",
        default="cu-fcc",
        help="preset (" + "; ".join(f"{k}: {v}" for k, v in PRESETS.items()) + ") or any structure file ASE reads",
    )
    g.add_argument(
        "--size",
        "--supercell",
        dest="size",
        type=_size,
        default=None,
        help="preset size: fcc repeats per axis, N or AxBxC (default 2 -> 32 atoms; 7x6x6 -> 1008) or cluster "
        "shells (default 3 -> 55 atoms); for a periodic file, repeat it N or AxBxC times",
    )
    g.add_argument(
        "--species-map",
        type=_species_map,
        default=None,
        help="chemical symbol to model type name, e.g. 'Cu=Cu,O=Ox' (default: the model's type names are symbols)",
    )
    g.add_argument(
        "--stock-model",
        default=None,
        help="model for the stock run with --compare/--stock (default: --model loaded without patching); needed "
        "when --model is a compiled file, which cannot be unpatched",
    )
    g.add_argument(
        "--fast-step",
        nargs="?",
        const=True,
        default=False,
        type=_fast_step_mode,
        metavar="compile|graph",
        help="keep the whole force call on the model's device (EquiTritonCalculator(fast_step=True)); "
        "'--fast-step compile' also runs the energy+force graph through torch.compile (compiled on the first call); "
        "'--fast-step graph' (CUDA) replays that graph from CUDA graphs on padded inputs",
    )
    g = nve.add_argument_group("dynamics")
    g.add_argument("--steps", type=_positive_int, default=500, help="number of MD steps (default: %(default)s)")
    g.add_argument("--timestep-fs", type=_positive_float, default=2.0, help="time step in fs (default: %(default)s)")
    g.add_argument(
        "--temperature",
        type=float,
        default=300.0,
        help="initial Maxwell-Boltzmann temperature in K (default: %(default)s)",
    )
    g.add_argument("--seed", type=int, default=0, help="seed of the initial velocities (default: %(default)s)")
    g.add_argument(
        "--warmup-steps",
        type=int,
        default=10,
        help="untimed steps of a throw-away copy before each run, so compilation and warm-up stay out of steps/s "
        "(default: %(default)s)",
    )
    g.add_argument("--device", default="auto", help="auto, cpu, cuda[:i] or xpu[:i] (default: %(default)s)")
    mode = g.add_mutually_exclusive_group()
    mode.add_argument("--compare", action="store_true", help="run stock and patched from identical initial conditions")
    mode.add_argument("--stock", action="store_true", help="run only the stock (unpatched) model")
    g.add_argument(
        "--repeat-stock",
        action="store_true",
        help="with --compare: also rerun the stock model (label stock_repeat) as a control of how far two runs of "
        "the same model drift apart (chaos amplifying rounding, nondeterministic GPU reductions)",
    )
    g = nve.add_argument_group("output")
    g.add_argument(
        "--out", type=Path, default=Path("equitriton-md-nve"), help="output directory (default: %(default)s)"
    )
    g.add_argument(
        "--record-interval",
        type=_positive_int,
        default=1,
        help="keep positions and write a trajectory frame every this many steps; energies are recorded every "
        "step (default: %(default)s)",
    )
    g.add_argument("--no-plot", action="store_true", help="do not write energy.png")
    bar = g.add_mutually_exclusive_group()
    bar.add_argument(
        "--progress", dest="progress", action="store_true", default=None, help="always show a progress bar"
    )
    bar.add_argument("--no-progress", dest="progress", action="store_false", help="never show a progress bar")
    g.add_argument("--quiet", action="store_true", help="print nothing but violations")
    g = nve.add_argument_group("thresholds (exit code 3 when exceeded)")
    g.add_argument("--max-drift", type=float, default=None, help="max |energy drift| in meV/atom/ps, every run")
    g.add_argument(
        "--max-fluctuation", type=float, default=None, help="max RMS total-energy fluctuation in meV/atom, every run"
    )
    g.add_argument("--max-abs-de", type=float, default=None, help="max |E(t)-E(0)| in meV/atom, every run")
    g.add_argument(
        "--max-position-deviation",
        type=float,
        default=None,
        help="max patched-vs-stock position deviation in Å (needs --compare)",
    )

    info = sub.add_parser("info", help="print versions, available devices and the embedded model path")
    info.set_defaults(command="info")
    return parser


def _summary(report: dict) -> str:
    cols = [
        ("drift_meV_per_atom_per_ps", "drift meV/atom/ps", "{:+.3e}"),
        ("fluctuation_meV_per_atom", "fluct. meV/atom", "{:.3e}"),
        ("max_abs_dE_meV_per_atom", "max|dE| meV/atom", "{:.3e}"),
        ("temperature_mean_K", "T mean K", "{:.1f}"),
        ("temperature_std_K", "T std K", "{:.1f}"),
        ("steps_per_s", "steps/s", "{:.2f}"),
        ("ns_per_day", "ns/day", "{:.3f}"),
    ]
    width = max(len(c[1]) for c in cols) + 2
    lines = ["run".ljust(10) + "".join(c[1].rjust(width) for c in cols)]
    for label in report["run_labels"]:
        entry = report[label]
        lines.append(label.ljust(10) + "".join(fmt.format(entry[key]).rjust(width) for key, _, fmt in cols))
    for label, cmp in report.get("comparisons", {}).items():
        lines.append(
            f"max position deviation {label} vs stock: {cmp['max_position_deviation_A']:.3e} Å; "
            f"speed-up {label}/stock: {cmp['speedup_over_stock']:.3f}x"
        )
    return "\n".join(lines)


def _cmd_info() -> int:
    import torch

    from md_plugin.stability.calculators import resolve_device
    from md_plugin.stability.report import collect_versions, device_description

    for name, version in collect_versions().items():
        print(f"{name:16s} {version}")
    print(f"{'cuda':16s} {torch.cuda.is_available()}")
    print(f"{'xpu':16s} {hasattr(torch, 'xpu') and torch.xpu.is_available()}")
    print(f"{'auto device':16s} {device_description(resolve_device('auto'))}")
    try:
        from md_plugin.stability.calculators import default_model

        print(f"{'embedded model':16s} {default_model()}")
    except Exception as exc:  # the embedded model ships with md_plugin; report rather than crash
        print(f"{'embedded model':16s} unavailable ({exc})")
    return EXIT_OK


def _cmd_nve(args: argparse.Namespace) -> int:
    from md_plugin.stability.calculators import default_model, is_compiled_model, is_emt, model_factory, resolve_device
    from md_plugin.stability.report import device_description, git_revision
    from md_plugin.stability.runner import PLOT_NAME, REPORT_NAME, energy_log_name, run_study, trajectory_name
    from md_plugin.stability.systems import build_system

    device = resolve_device(args.device)
    atoms, spec = build_system(args.system, args.size)
    emt = is_emt(args.model)
    model_path = args.model if args.model is not None else default_model()
    stock_path = args.stock_model if args.stock_model is not None else model_path
    if args.repeat_stock and not args.compare:
        raise ValueError("--repeat-stock needs --compare")
    labels = ["stock", "patched"] if args.compare else ["stock"] if args.stock else ["patched"]
    if args.repeat_stock:
        labels.append("stock_repeat")
    if "stock" in labels and args.stock_model is None and not emt and is_compiled_model(model_path):
        raise ValueError(
            "a compiled model runs with the spherical harmonics it was compiled with and cannot be unpatched: "
            "pass the stock model with --stock-model (or use the .nequip.zip package)"
        )
    factories = {
        label: model_factory(
            model_path if label == "patched" else stock_path,
            patch=(label == "patched"),
            device=device,
            species_map=args.species_map,
            fast_step=args.fast_step,
        )
        for label in labels
    }
    thresholds = {
        "max_drift": args.max_drift,
        "max_fluctuation": args.max_fluctuation,
        "max_abs_dE": args.max_abs_de,
        "max_position_deviation": args.max_position_deviation,
    }
    metadata = {
        "command": "equitriton-md " + " ".join(args.argv),
        "model": "emt" if emt else str(Path(model_path).resolve()),
        "model_is_default": args.model is None,
        "stock_model": None if "stock" not in labels else "emt" if emt else str(Path(stock_path).resolve()),
        "fast_step": args.fast_step,
        "system": spec.to_dict(),
        "device": device,
        "device_name": device_description(device),
        "git_revision": git_revision(),
    }
    report, _ = run_study(
        atoms,
        factories,
        steps=args.steps,
        timestep_fs=args.timestep_fs,
        temperature_K=args.temperature,
        seed=args.seed,
        out_dir=args.out,
        metadata=metadata,
        thresholds=thresholds,
        record_interval=args.record_interval,
        progress=args.progress,
        plot=not args.no_plot,
        warmup_steps=args.warmup_steps,
    )
    if not args.quiet:
        print(
            f"{spec.name}: {spec.n_atoms} atoms, {args.steps} steps x {args.timestep_fs} fs on {device}, "
            f"model {metadata['model']}"
        )
        print(_summary(report))
        written = [args.out / REPORT_NAME]
        written += [args.out / name(label) for label in labels for name in (trajectory_name, energy_log_name)]
        if not args.no_plot:
            written.append(args.out / PLOT_NAME)
        print("wrote " + ", ".join(str(p) for p in written))
    if report["violations"]:
        for line in report["violations"]:
            print(f"THRESHOLD EXCEEDED: {line}", file=sys.stderr)
        return EXIT_THRESHOLD
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``equitriton-md`` / ``python -m md_plugin``; returns the process exit code."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        if args.command == "info":
            return _cmd_info()
        return _cmd_nve(args)
    except (FileNotFoundError, ValueError, RuntimeError, ImportError, NotImplementedError) as exc:
        print(f"equitriton-md: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
