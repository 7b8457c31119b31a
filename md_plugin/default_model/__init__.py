"""The tiny EMT-copper models shipped as package data, and the script that makes them (``train.py``)."""

from __future__ import annotations

import pathlib

DATA_DIR = pathlib.Path(__file__).resolve().parent.parent / "data"
DEFAULT_MODEL_FILES = {"nequip": "nequip_cu_emt.nequip.zip", "allegro": "allegro_cu_emt.nequip.zip"}


def default_model_path(kind: str = "nequip") -> pathlib.Path:
    """Path of a shipped packaged model (``.nequip.zip``; float64, l_max 2, Cu, r_max 4 Å).

    Args:
        kind: ``"nequip"`` (the default model) or ``"allegro"``.
    """
    if kind not in DEFAULT_MODEL_FILES:
        raise ValueError(f"kind must be one of {sorted(DEFAULT_MODEL_FILES)}, got {kind!r}")
    path = DATA_DIR / DEFAULT_MODEL_FILES[kind]
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing; rebuild it with `python -m md_plugin.default_model.train --model {kind} --out {path}`"
        )
    return path
