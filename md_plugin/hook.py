"""Put equitriton's spherical harmonics into loaded NequIP / Allegro (or any e3nn) models.

``patch_model(model)`` walks the module tree and replaces every e3nn ``SphericalHarmonics``
submodule (nequip's ``SphericalHarmonicEdgeAttrs.sh``, allegro's
``TwoBodySphericalHarmonicTensorEmbed.sh``, and any other) by
``equitriton.SphericalHarmonics.from_e3nn(old)``, which keeps ``irreps_out``, ``irreps_in``,
``normalize`` and ``normalization``; the new module is moved to the device (and floating dtype,
where the old one held tensors) of the model. The replacement uses nequip's own
``replace_submodules``. Outputs are unchanged up to float rounding; the model is modified in place.

The NequIP model modifier
-------------------------
nequip finds model modifiers by walking a model's module tree and collecting every
``@classmethod`` decorated with ``nequip.nn.model_modifier`` on the modules' classes
(``nequip.model.modify_utils.get_all_modifiers``); ``nequip-compile --modifiers NAME`` and
``nequip.model.modify_utils.modify`` then call ``NAME(model)``. Every model we patch contains an
e3nn ``SphericalHarmonics``, so our modifier, ``enable_EquiTritonSphericalHarmonics``
(non-persistent: an acceleration, not a change of the model), is attached as a classmethod to that
class:

* ``register_modifier()`` attaches it to the installed ``e3nn.o3.SphericalHarmonics`` (models built
  from checkpoints or configs use this class) and wraps nequip's package loader so that models
  loaded from ``.nequip.zip`` files, whose e3nn classes are private copies made by
  ``torch.package``, get it too (``register_modifier_on(model)`` does that for one loaded model).
* ``import md_plugin`` calls ``register_modifier()``. For a fresh ``nequip-compile`` process to see
  it, md_plugin is registered as a nequip extension, which nequip imports on ``import nequip``::

      [project.entry-points."nequip.extension"]
      init_always = "md_plugin.nequip_extension"

Once a model is patched there is no e3nn ``SphericalHarmonics`` left and so no modifier to find;
applying it through ``modify`` on such a model raises nequip's "not a registered model modifier",
while ``patch_model`` on it returns ``[]`` (idempotent).
"""

from __future__ import annotations

import functools
from typing import Callable, Iterator, List, Optional, Tuple

import torch

MODIFIER_NAME = "enable_EquiTritonSphericalHarmonics"
_E3NN_SH_MODULE_SUFFIX = "e3nn.o3._spherical_harmonics"


def is_e3nn_sh(module: torch.nn.Module) -> bool:
    """True if ``module`` is an e3nn ``SphericalHarmonics`` (installed class or a ``torch.package`` copy)."""
    cls = type(module)
    return cls.__name__ == "SphericalHarmonics" and cls.__module__.endswith(_E3NN_SH_MODULE_SUFFIX)


def is_equitriton_sh(module: torch.nn.Module) -> bool:
    """True if ``module`` is an ``equitriton.SphericalHarmonics``."""
    cls = type(module)
    return cls.__name__ == "SphericalHarmonics" and cls.__module__.split(".")[0] == "equitriton"


def iter_sh_modules(model: torch.nn.Module) -> Iterator[Tuple[str, torch.nn.Module]]:
    """Yield ``(qualified_name, module)`` for every e3nn or equitriton SH submodule of ``model``."""
    for name, module in model.named_modules():
        if is_e3nn_sh(module) or is_equitriton_sh(module):
            yield name, module


def _check_patchable(model: torch.nn.Module) -> None:
    if isinstance(model, torch.jit.ScriptModule):
        raise ValueError(
            f"{type(model).__name__}: a TorchScript (compiled) model cannot be patched; patch the eager model "
            f"before compiling (nequip-compile --modifiers {MODIFIER_NAME})"
        )
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"patch_model expects a torch.nn.Module, got {type(model).__name__}")
    if is_e3nn_sh(model):
        raise ValueError(
            "patch_model replaces SphericalHarmonics *inside* a model; for a bare e3nn SphericalHarmonics "
            "use equitriton.SphericalHarmonics.from_e3nn(module)"
        )


def _model_placement(model: torch.nn.Module) -> Tuple[Optional[torch.device], Optional[torch.dtype]]:
    """Device of the model's first tensor and dtype of its first floating tensor (None where it has none)."""
    device, dtype = None, None
    for t in list(model.parameters()) + list(model.buffers()):
        if device is None:
            device = t.device
        if dtype is None and t.is_floating_point():
            dtype = t.dtype
        if device is not None and dtype is not None:
            break
    return device, dtype


def _as_installed_e3nn(old: torch.nn.Module) -> torch.nn.Module:
    """``old`` itself if it is the installed e3nn class; else an installed-e3nn twin built from its irreps strings.

    Models loaded from ``.nequip.zip`` files hold e3nn classes (and ``Irreps``) copied by
    ``torch.package``, which ``isinstance`` checks against the installed e3nn do not recognise.
    """
    from e3nn.o3 import SphericalHarmonics

    if type(old) is SphericalHarmonics:
        return old
    return SphericalHarmonics(
        str(old.irreps_out), bool(old.normalize), str(old.normalization), irreps_in=str(old.irreps_in)
    )


def _make_factory(model_device: Optional[torch.device]) -> Callable[[torch.nn.Module], torch.nn.Module]:
    import equitriton

    def factory(old: torch.nn.Module) -> torch.nn.Module:
        new = equitriton.SphericalHarmonics.from_e3nn(_as_installed_e3nn(old))
        old_device, old_dtype = _model_placement(old)
        device = old_device if old_device is not None else model_device
        if device is not None:
            new = new.to(device=device)
        if old_dtype is not None:
            new = new.to(dtype=old_dtype)
        new.train(old.training)
        return new

    return factory


def patch_model(model: torch.nn.Module) -> List[Tuple[str, torch.nn.Module]]:
    """Replace every e3nn ``SphericalHarmonics`` submodule of ``model`` by equitriton's, in place.

    Args:
        model: an eager ``torch.nn.Module`` (a nequip ``GraphModel``, a ``ModuleDict`` of them, or
            any module tree containing e3nn ``SphericalHarmonics``).

    Returns:
        ``[(qualified_name, replaced_e3nn_module), ...]`` in module-tree order. ``[]`` if the model
        is already patched (idempotent: a second call replaces nothing).

    Raises:
        ValueError: if the model holds neither e3nn nor equitriton spherical harmonics (the message
            names the model class), or is a TorchScript module.
    """
    _check_patchable(model)
    targets = [(n, m) for n, m in model.named_modules() if is_e3nn_sh(m)]
    if not targets:
        if any(is_equitriton_sh(m) for m in model.modules()):
            return []
        raise ValueError(
            f"{type(model).__name__} has no e3nn SphericalHarmonics submodule to replace "
            "(expected e.g. nequip's SphericalHarmonicEdgeAttrs.sh or allegro's tensor embedding .sh)"
        )
    from nequip.nn.model_modifier_utils import replace_submodules

    model_device, _ = _model_placement(model)
    factory = _make_factory(model_device)
    # every class object of e3nn SH present (the installed one and/or torch.package copies)
    for cls in {type(m) for _, m in targets}:
        replace_submodules(model, cls, factory)
    return targets


def sh_backend_of(model: torch.nn.Module, device: Optional[torch.device | str] = None) -> str:
    """Which spherical-harmonics implementation ``model`` runs on ``device``.

    Returns:
        ``"equitriton-triton"`` or ``"equitriton-torch-fallback"`` if it holds equitriton SH (per
        ``equitriton.backend_for(device)``), ``"e3nn"`` if it holds only e3nn SH, ``"none"`` if
        neither is visible (e.g. a TorchScript or AOTInductor artifact; see the calculator).
    """
    kinds = {("equitriton" if is_equitriton_sh(m) else "e3nn") for _, m in iter_sh_modules(model)}
    if "equitriton" in kinds:
        import equitriton

        if device is None:
            device, _ = _model_placement(model)
        device = torch.device(device if device is not None else "cpu")
        return "equitriton-triton" if equitriton.backend_for(device) == "triton" else "equitriton-torch-fallback"
    if "e3nn" in kinds:
        return "e3nn"
    return "none"


# ---------------------------------------------------------------------------------------------
# nequip model modifier
# ---------------------------------------------------------------------------------------------


def _modifier_impl(cls, model: torch.nn.Module) -> torch.nn.Module:
    """Replace e3nn spherical harmonics by equitriton's (``md_plugin.patch_model``)."""
    patch_model(model)
    return model


def _build_modifier() -> classmethod:
    from nequip.nn.model_modifier_utils import model_modifier

    return model_modifier(persistent=False, private=False)(classmethod(_modifier_impl))


_MODIFIER: Optional[classmethod] = None


def _modifier() -> classmethod:
    global _MODIFIER
    if _MODIFIER is None:
        _MODIFIER = _build_modifier()
    return _MODIFIER


def attach_modifier(cls: type) -> None:
    """Attach ``enable_EquiTritonSphericalHarmonics`` to ``cls`` (an e3nn ``SphericalHarmonics`` class)."""
    if getattr(cls, MODIFIER_NAME, None) is None or cls.__dict__.get(MODIFIER_NAME) is not _modifier():
        setattr(cls, MODIFIER_NAME, _modifier())


def register_modifier_on(model: torch.nn.Module) -> torch.nn.Module:
    """Make the modifier discoverable on ``model`` (attach it to the classes of its e3nn SH modules)."""
    for cls in {type(m) for m in model.modules() if is_e3nn_sh(m)}:
        attach_modifier(cls)
    return model


def _wrap_package_loader() -> None:
    from nequip.model.saved_models import load_utils

    original = load_utils.ModelFromPackage
    if getattr(original, "_equitriton_wrapped", False):
        return

    @functools.wraps(original)
    def model_from_package(*args, **kwargs):
        return register_modifier_on(original(*args, **kwargs))

    model_from_package._equitriton_wrapped = True
    load_utils.ModelFromPackage = model_from_package


def register_modifier() -> None:
    """Register ``enable_EquiTritonSphericalHarmonics`` with nequip (idempotent; see module docstring)."""
    from e3nn.o3 import SphericalHarmonics

    attach_modifier(SphericalHarmonics)
    _wrap_package_loader()
