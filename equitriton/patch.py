"""`import equitriton.patch` makes every e3nn spherical-harmonics call in the process use equitriton.

The patch replaces `forward` on e3nn's `SphericalHarmonics` class itself. Every reference to the class
(`from e3nn.o3._spherical_harmonics import SphericalHarmonics` in nequip and allegro, made before or after
this import), every existing instance, and `e3nn.o3.spherical_harmonics` (which builds that class) then run
our kernels. Instances stay e3nn objects: they pickle, round-trip their state_dict and script as before.

    import equitriton.patch                 # patched from here on
    equitriton.patch.unpatch()             # e3nn exactly as shipped
    with equitriton.patch.patched(): ...   # scoped
    equitriton.patch.is_patched()
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch
from e3nn.o3 import _spherical_harmonics as _e3nn_sh

from .harmonics import sh

# Our replacement carries e3nn's own forward under this name, so that a second copy of this module (importlib.reload,
# an import under another name) that finds the class already patched still restores e3nn's function, not ours.
_ORIGINAL = "__equitriton_e3nn_forward__"
_E3NN_FORWARD = getattr(_e3nn_sh.SphericalHarmonics.forward, _ORIGINAL, _e3nn_sh.SphericalHarmonics.forward)
_lock = threading.Lock()


def _equitriton_forward(self, x: torch.Tensor) -> torch.Tensor:
    """e3nn's SphericalHarmonics.forward, computed by equitriton."""
    return sh(x, self._ls_list, self.normalize, self.normalization)


setattr(_equitriton_forward, _ORIGINAL, _E3NN_FORWARD)


def patch() -> None:
    """Route e3nn's spherical harmonics through equitriton (idempotent)."""
    with _lock:
        _e3nn_sh.SphericalHarmonics.forward = _equitriton_forward


def unpatch() -> None:
    """Restore e3nn's own implementation exactly."""
    with _lock:
        _e3nn_sh.SphericalHarmonics.forward = _E3NN_FORWARD


def is_patched() -> bool:
    """True while e3nn's spherical harmonics run through equitriton."""
    return hasattr(_e3nn_sh.SphericalHarmonics.forward, _ORIGINAL)


@contextlib.contextmanager
def patched() -> Iterator[None]:
    """Patch inside the block; restore the previous state (patched or not) after it."""
    was = is_patched()
    patch()
    try:
        yield
    finally:
        if not was:
            unpatch()


patch()
