"""EquiTriton-MD: equitriton spherical harmonics inside NequIP / Allegro models, for ASE MD.

* ``patch_model(model)``: swap e3nn ``SphericalHarmonics`` submodules for equitriton's (in place).
* ``EquiTritonCalculator``: ASE calculator (``from_saved_model``, ``from_compiled_model``, ``from_model``).
* ``default_model_path()``: the shipped tiny NequIP model for EMT copper.

Importing this package registers the nequip model modifier ``enable_EquiTritonSphericalHarmonics``
(``md_plugin.modifier``). The calculator is imported lazily, so that nequip can load
``md_plugin.nequip_extension`` while it is itself being imported.
"""

from __future__ import annotations

from typing import Any

from .default_model import default_model_path
from .hook import patch_model
from .modifier import MODIFIER_NAME, register_when_ready

register_when_ready()

__all__ = ["EquiTritonCalculator", "patch_model", "default_model_path", "MODIFIER_NAME"]


def __getattr__(name: str) -> Any:
    if name == "EquiTritonCalculator":
        from .calculator import EquiTritonCalculator

        return EquiTritonCalculator
    raise AttributeError(f"module 'md_plugin' has no attribute {name!r}")
