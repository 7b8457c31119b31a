"""EquiTriton-MD: equitriton spherical harmonics inside NequIP / Allegro models, for ASE MD.

* ``patch_model(model)``: swap e3nn ``SphericalHarmonics`` submodules for equitriton's (in place).
* ``EquiTritonCalculator``: ASE calculator (``from_saved_model``, ``from_compiled_model``, ``from_model``).
* ``default_model_path()``: the shipped tiny NequIP model for EMT copper.

Importing this package registers the nequip model modifier ``enable_EquiTritonSphericalHarmonics``.
"""

from .calculator import EquiTritonCalculator
from .default_model import default_model_path
from .hook import MODIFIER_NAME, patch_model, register_modifier

register_modifier()

__all__ = ["EquiTritonCalculator", "patch_model", "default_model_path", "register_modifier", "MODIFIER_NAME"]
