"""Train and package the tiny EMT-copper default models (NequIP and Allegro, float64, CPU, minutes).

The data is nequip's own ``EMTTestDataset`` (ASE's EMT copper, generated on the fly; nothing is
downloaded). Training runs ``nequip-train`` on ``base.yaml`` with the model block taken from
``nequip_model.yaml`` or ``allegro_model.yaml``; packaging runs ``nequip-package build``.

Usage (from the repository root)::

    python -m md_plugin.default_model.train --model nequip --out md_plugin/data/nequip_cu_emt.nequip.zip
    python -m md_plugin.default_model.train --model allegro --out /tmp/allegro_cu_emt.nequip.zip

The shipped file ``md_plugin/data/nequip_cu_emt.nequip.zip`` is made by the first command.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import yaml

HERE = pathlib.Path(__file__).resolve().parent
MODEL_CONFIGS = {"nequip": HERE / "nequip_model.yaml", "allegro": HERE / "allegro_model.yaml"}


def build_config(model: str, max_epochs: int) -> dict:
    """Merge ``base.yaml`` with the model block for ``model`` ("nequip" or "allegro")."""
    if model not in MODEL_CONFIGS:
        raise ValueError(f"model must be one of {sorted(MODEL_CONFIGS)}, got {model!r}")
    config = yaml.safe_load((HERE / "base.yaml").read_text())
    config["model"] = yaml.safe_load(MODEL_CONFIGS[model].read_text())
    config["max_epochs"] = int(max_epochs)
    return config


def _run(cmd: list[str], cwd: pathlib.Path) -> None:
    env = dict(os.environ)
    env.setdefault("CUDA_VISIBLE_DEVICES", "")  # CPU training, reproducible on any machine
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(cmd)}` failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )


def train_and_package(
    model: str,
    out: str | os.PathLike,
    max_epochs: int = 20,
    workdir: str | os.PathLike | None = None,
) -> pathlib.Path:
    """Train the tiny ``model`` on EMT copper and write the ``nequip-package`` file ``out``.

    Args:
        model: "nequip" or "allegro".
        out: output path; must end in ``.nequip.zip``.
        max_epochs: training epochs (20 takes about a minute on 2 CPU cores for NequIP).
        workdir: where the training run and its ``best.ckpt`` go (a temporary directory if None;
            it is deleted afterwards unless given).

    Returns:
        The path of the package file.
    """
    out = pathlib.Path(out).resolve()
    if not out.name.endswith(".nequip.zip"):
        raise ValueError(f"output must end in .nequip.zip, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    if workdir is None:
        tmp = tempfile.mkdtemp(prefix=f"equitriton_{model}_")
        workdir = tmp
    workdir = pathlib.Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        cfg_dir = workdir / "config"
        cfg_dir.mkdir(exist_ok=True)
        (cfg_dir / "train.yaml").write_text(yaml.safe_dump(build_config(model, max_epochs), sort_keys=False))
        run_dir = workdir / "run"
        _run(
            [
                shutil.which("nequip-train") or "nequip-train",
                "-cp",
                str(cfg_dir),
                "-cn",
                "train.yaml",
                f"hydra.run.dir={run_dir}",
            ],
            cwd=workdir,
        )
        ckpt = run_dir / "best.ckpt"
        if not ckpt.exists():
            raise RuntimeError(f"training finished without writing {ckpt}")
        _run([shutil.which("nequip-package") or "nequip-package", "build", str(ckpt), str(out)], cwd=workdir)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODEL_CONFIGS), default="nequip")
    parser.add_argument("--out", required=True, help="output .nequip.zip path")
    parser.add_argument("--max-epochs", type=int, default=20)
    parser.add_argument("--workdir", default=None, help="keep the training run (with best.ckpt) here")
    args = parser.parse_args(argv)
    path = train_and_package(args.model, args.out, max_epochs=args.max_epochs, workdir=args.workdir)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
