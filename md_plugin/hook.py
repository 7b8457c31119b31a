"""Put equitriton's spherical harmonics into loaded NequIP / Allegro (or any e3nn) models.

``patch_model(model)`` walks the module tree and replaces every e3nn ``SphericalHarmonics``
submodule (nequip's ``SphericalHarmonicEdgeAttrs.sh``, allegro's
``TwoBodySphericalHarmonicTensorEmbed.sh``, and any other) by
``equitriton.SphericalHarmonics.from_e3nn(old)``, which keeps ``irreps_out``, ``irreps_in``,
``normalize`` and ``normalization``; the new module is moved to the device (and floating dtype,
where the old one held tensors) of the model. The replacement uses nequip's own
``replace_submodules``. Outputs are unchanged up to float rounding; the model is modified in place.

The nequip model modifier that calls this (``nequip-compile --modifiers
enable_EquiTritonSphericalHarmonics``) and how it is registered: see ``md_plugin.modifier``.
"""

from __future__ import annotations

from typing import Callable, Iterator, List, Optional, Tuple

import torch

_E3NN_SH_MODULE_SUFFIX = "e3nn.o3._spherical_harmonics"
EQUITRITON_LIB = "equitriton"


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
            "before compiling (nequip-compile --modifiers enable_EquiTritonSphericalHarmonics)"
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
        # nequip records these libraries in compiled artifacts and imports them before loading one
        # (`nequip_custom_ops_libs`); our SH forward is the custom op `torch.ops.equitriton.sh_forward`.
        new._nequip_custom_ops_libs = (EQUITRITON_LIB,)
        return new

    return factory


# Allegro's SH feed one elementwise product with the radial embedding, into which Inductor fuses polynomial SH: there
# the compiled step is faster with l_max 2 traced as fusable ops than with the custom op (uncoupled Allegro, 2,048
# and 10,976 Cu atoms on the H200: 2.5-5% slower with the op; docs/md_performance_notes.md). NequIP's SH feed a
# tensor product, where the op is faster (AOTInductor, l_max 2: 8-10%).
ALLEGRO_FUSE_LMAX = 2
# l_max 1 (normalize, then l = 1 is the unit vector scaled), NequIP and Allegro alike: the op. In one-process A/Bs of
# op and fusion on the H200 (2,048 Cu atoms, 2026-12-02), the CUDA-graph step spent less GPU time with the op in
# all four (Allegro 3.10 / 3.15 and 2.85 / 3.00 ms, NequIP 2.83 / 2.95 and 2.87 / 2.89 ms, op / fused) and the fused
# Allegro step read up to 5.6% slower than stock; docs/md_performance_notes.md, fifteenth session.
PATCHED_FUSE_LMAX = 0
# Exported (nequip-compile's modifier: AOTInductor artifacts), Allegro's l_max 1 SH are traced as e3nn's own ops
# (equitriton.ops._l1_traced_as_e3nn), which makes the patched graph the stock graph op for op: with the op that
# artifact was 4% slower than stock's in A/Bs over two builds each, while two stock builds differed by 0.5% (H200,
# 2,048 Cu atoms, 2026-12-02; docs/md_performance_notes.md, seventeenth session). In-process compiled steps keep
# the op, which was faster there (CUDA graphs: 0.97x stock).
ALLEGRO_EXPORT_L1_FUSE_LMAX = 1


def default_fuse_lmax(allegro: bool, l_max: int, export: bool = False) -> int:
    """The ``fuse_lmax`` ``patch_model`` gives an SH module of ``l_max`` (in an Allegro module or not; ``export``:
    for a model nequip-compile exports)."""
    if allegro and l_max >= 2:
        return ALLEGRO_FUSE_LMAX
    if allegro and export and l_max == 1:
        return ALLEGRO_EXPORT_L1_FUSE_LMAX
    return PATCHED_FUSE_LMAX


def _is_allegro(module: torch.nn.Module) -> bool:
    """A class of the allegro package, installed or copied by ``torch.package`` (``<torch_package_0>.allegro...``)."""
    parts = type(module).__module__.split(".")
    return parts[1 if parts[0].startswith("<torch_package") else 0] == "allegro"


def _set_fuse_lmax(
    model: torch.nn.Module, fuse_lmax: Optional[int], only: Optional[List[torch.nn.Module]], export: bool
) -> None:
    """``fuse_lmax`` of the equitriton SH modules (of those in ``only`` where given): ``fuse_lmax`` where given, else
    ``default_fuse_lmax`` of the module."""
    for _, parent in model.named_modules():
        for child in parent.children():
            if is_equitriton_sh(child) and (only is None or any(child is m for m in only)):
                default = default_fuse_lmax(_is_allegro(parent), child.irreps_out.lmax, export)
                child.fuse_lmax = int(fuse_lmax) if fuse_lmax is not None else default


def patch_model(
    model: torch.nn.Module, fuse_lmax: Optional[int] = None, export: bool = False
) -> List[Tuple[str, torch.nn.Module]]:
    """Replace every e3nn ``SphericalHarmonics`` submodule of ``model`` by equitriton's, in place.

    Args:
        model: an eager ``torch.nn.Module`` (a nequip ``GraphModel``, a ``ModuleDict`` of them, or
            any module tree containing e3nn ``SphericalHarmonics``).
        fuse_lmax: under ``torch.compile`` / ``torch.export`` / make_fx (``nequip-compile``, the calculator's
            compiled fast steps), SH of l_max up to this
            are traced as plain elementwise ops that Inductor fuses into their consumers, the others run
            equitriton's kernels; eager calls always run the kernels. ``None``: ``default_fuse_lmax``, 2 for
            Allegro's SH of l_max >= 2, else 0 (the op; ``ALLEGRO_FUSE_LMAX``, ``PATCHED_FUSE_LMAX``: measured,
            see there).
        export: the model is patched to be exported (the nequip modifier, for ``nequip-compile``'s
            AOTInductor): the default policy then also traces Allegro's l_max 1 SH as e3nn's own ops
            (``ALLEGRO_EXPORT_L1_FUSE_LMAX``).

    Returns:
        ``[(qualified_name, replaced_e3nn_module), ...]`` in module-tree order. ``[]`` if the model
        is already patched (idempotent: a second call replaces nothing).

    Raises:
        ValueError: if the model holds neither e3nn nor equitriton spherical harmonics (the message
            names the model class), or is a TorchScript module.
    """
    _check_patchable(model)
    if fuse_lmax is not None and (isinstance(fuse_lmax, bool) or not isinstance(fuse_lmax, int) or fuse_lmax < 0):
        raise ValueError(f"fuse_lmax must be a non-negative int or None, got {fuse_lmax!r}")
    targets = [(n, m) for n, m in model.named_modules() if is_e3nn_sh(m)]
    if not targets:
        if any(is_equitriton_sh(m) for m in model.modules()):
            if fuse_lmax is not None:  # an already patched model keeps its setting unless one is given
                _set_fuse_lmax(model, fuse_lmax, None, export)
            return []
        raise ValueError(
            f"{type(model).__name__} has no e3nn SphericalHarmonics submodule to replace "
            "(expected e.g. nequip's SphericalHarmonicEdgeAttrs.sh or allegro's tensor embedding .sh)"
        )
    from nequip.nn.model_modifier_utils import replace_submodules

    model_device, _ = _model_placement(model)
    make = _make_factory(model_device)
    created: List[torch.nn.Module] = []

    def factory(old: torch.nn.Module) -> torch.nn.Module:
        created.append(make(old))
        return created[-1]

    # every class object of e3nn SH present (the installed one and/or torch.package copies)
    for cls in {type(m) for _, m in targets}:
        replace_submodules(model, cls, factory)
    # the new modules get the policy; equitriton modules already there keep theirs unless fuse_lmax is given
    _set_fuse_lmax(model, fuse_lmax, None if fuse_lmax is not None else created, export)
    # the modifier stays discoverable on the patched model (on our SH class), so that `nequip-compile --modifiers
    # enable_EquiTritonSphericalHarmonics` on a model patched in memory is the no-op patch_model is, not an error
    from .modifier import attach_modifier

    for cls in {type(m) for m in created}:
        attach_modifier(cls)
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
