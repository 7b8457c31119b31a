"""nequip extension hook, imported by ``import nequip`` through the ``nequip.extension`` entry point.

Registers the ``enable_EquiTritonSphericalHarmonics`` model modifier so that ``nequip-compile
--modifiers enable_EquiTritonSphericalHarmonics`` finds it in a fresh process (see
``md_plugin.modifier``). nequip imports extensions while half-initialised, so this only defers the
registration until nequip's model loader is imported; it imports neither equitriton nor the calculator.
"""

from .modifier import register_when_ready

register_when_ready()
