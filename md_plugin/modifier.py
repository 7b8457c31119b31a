"""The nequip model modifier ``enable_EquiTritonSphericalHarmonics`` and its registration.

How nequip finds modifiers
--------------------------
``nequip.model.modify_utils.get_all_modifiers`` walks a model's module tree and collects every
``@classmethod`` of the modules' classes marked by ``nequip.nn.model_modifier``;
``nequip-compile --modifiers NAME`` and ``modify(model, [{"modifier": NAME}])`` then call
``NAME(model)``. Modifiers therefore live on classes present in the model.

How ours is registered
----------------------
Every model we can patch contains an e3nn ``SphericalHarmonics``, so the modifier (non-persistent:
an acceleration, not a change of the model; it calls ``md_plugin.patch_model``) is attached as a
classmethod to that class:

* ``register_modifier()`` attaches it to the installed ``e3nn.o3.SphericalHarmonics`` (models built
  from checkpoints or configs use that class) and wraps nequip's package loader
  (``nequip.model.saved_models.load_utils.ModelFromPackage``) so that models loaded from
  ``.nequip.zip`` files, whose e3nn classes are private copies made by ``torch.package``, get it too
  (``register_modifier_on(model)`` does the same for any one loaded model).
* A fresh ``nequip-compile`` process learns about it through nequip's extension entry point, which
  ``import nequip`` loads::

      [project.entry-points."nequip.extension"]
      init_always = "md_plugin.nequip_extension"

  nequip loads extensions while it is itself half-imported, so ``md_plugin.nequip_extension`` only
  calls ``register_when_ready()``: that registers at once if nequip's loader module is already
  imported, and otherwise installs a one-shot import hook that registers right after
  ``nequip.model.saved_models.load_utils`` has been executed (before any model can be loaded).
* ``import md_plugin`` also calls ``register_when_ready()``.

* ``patch_model`` attaches it to equitriton's SH class as well, so a patched model still offers it and
  applying it again (``modify``, ``nequip-compile --modifiers ...`` on a model patched in memory) changes
  nothing, as ``patch_model`` on it returns ``[]``; the SH keep their ``fuse_lmax``.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.util
import sys
from typing import Callable, Optional

import torch

from .hook import is_e3nn_sh, patch_model

MODIFIER_NAME = "enable_EquiTritonSphericalHarmonics"
_LOADER_MODULE = "nequip.model.saved_models.load_utils"


def _modifier_impl(cls, model: torch.nn.Module) -> torch.nn.Module:
    """Replace the model's e3nn spherical harmonics by equitriton's (``md_plugin.patch_model``), in place, with the
    policy for a model that is exported (``nequip-compile``)."""
    patch_model(model, export=True)
    return model


_MODIFIER: Optional[classmethod] = None


def modifier() -> classmethod:
    """The ``@model_modifier``-marked classmethod (built once, on first use)."""
    global _MODIFIER
    if _MODIFIER is None:
        from nequip.nn.model_modifier_utils import model_modifier

        func = functools.wraps(_modifier_impl)(lambda cls, model: _modifier_impl(cls, model))
        func.__name__ = MODIFIER_NAME
        func.__qualname__ = MODIFIER_NAME
        _MODIFIER = model_modifier(persistent=False, private=False)(classmethod(func))
    return _MODIFIER


def attach_modifier(cls: type) -> None:
    """Attach ``enable_EquiTritonSphericalHarmonics`` to ``cls`` (an e3nn or equitriton ``SphericalHarmonics``
    class)."""
    if cls.__dict__.get(MODIFIER_NAME) is not modifier():
        setattr(cls, MODIFIER_NAME, modifier())


def register_modifier_on(model: torch.nn.Module) -> torch.nn.Module:
    """Make the modifier discoverable on ``model`` (attach it to the classes of its e3nn SH modules)."""
    for cls in {type(m) for m in model.modules() if is_e3nn_sh(m)}:
        attach_modifier(cls)
    return model


def _wrap_package_loader() -> None:
    load_utils = importlib.import_module(_LOADER_MODULE)
    original = load_utils.ModelFromPackage
    if getattr(original, "_equitriton_wrapped", False):
        return

    @functools.wraps(original)
    def model_from_package(*args, **kwargs):
        return register_modifier_on(original(*args, **kwargs))

    model_from_package._equitriton_wrapped = True
    load_utils.ModelFromPackage = model_from_package


def register_modifier() -> None:
    """Register the modifier now (idempotent). Needs nequip fully importable."""
    from e3nn.o3 import SphericalHarmonics

    attach_modifier(SphericalHarmonics)
    _wrap_package_loader()


def is_registered() -> bool:
    """True once the modifier is attached to the installed e3nn class and the package loader is wrapped."""
    from e3nn.o3 import SphericalHarmonics

    load_utils = sys.modules.get(_LOADER_MODULE)
    return (
        _MODIFIER is not None
        and SphericalHarmonics.__dict__.get(MODIFIER_NAME) is _MODIFIER
        and load_utils is not None
        and getattr(load_utils.ModelFromPackage, "_equitriton_wrapped", False)
    )


class _AfterImport(importlib.abc.MetaPathFinder):
    """One-shot import hook: run ``callback`` right after module ``name`` has been executed."""

    def __init__(self, name: str, callback: Callable[[], None]) -> None:
        self.name = name
        self.callback = callback

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module
        callback = self.callback

        def exec_then_register(module):
            exec_module(module)
            callback()

        spec.loader.exec_module = exec_then_register
        return spec


def register_when_ready() -> None:
    """Register now if nequip's loader module is imported, else right after it gets imported."""
    if _LOADER_MODULE in sys.modules:
        register_modifier()
    elif not any(isinstance(f, _AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(_LOADER_MODULE, register_modifier))
