"""nequip extension hook: imported by ``import nequip`` through the ``nequip.extension`` entry point.

Registers the ``enable_EquiTritonSphericalHarmonics`` model modifier (see ``md_plugin.hook``) so that
``nequip-compile --modifiers enable_EquiTritonSphericalHarmonics`` finds it in a fresh process. Kept
free of equitriton imports: equitriton is imported only when a model is actually patched.
"""

from .hook import register_modifier

register_modifier()
