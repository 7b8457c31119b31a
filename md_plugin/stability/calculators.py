"""Calculator factories for stability runs: the embedded model, a saved/compiled NequIP or Allegro model, or EMT.

A *factory* is a zero-argument callable returning a fresh ASE calculator; stock and patched runs each
build their own calculator (and load their own copy of the model), so nothing is shared between them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .nve import CalculatorFactory

#: model name selecting ASE's classical EMT potential (no neural network; patching is a no-op).
EMT_MODEL = "emt"

#: file suffixes of compiled (TorchScript / AOT Inductor) NequIP models
COMPILED_SUFFIXES = (".nequip.pth", ".nequip.pt2", ".pth", ".pt2")


def resolve_device(device: str = "auto") -> str:
    """Resolve ``"auto"`` to ``"cuda"``, then ``"xpu"``, then ``"cpu"`` (first available) and return it as a string.

    Explicit ``cuda``/``xpu`` where none is available raise ``RuntimeError``
    (see :func:`md_plugin.device.resolve_device`).
    """
    from md_plugin.device import resolve_device as _resolve

    return str(_resolve(device))


def default_model() -> str:
    """Path of the tiny Cu NequIP model shipped with the package (:func:`md_plugin.default_model_path`)."""
    from md_plugin import default_model_path

    return str(default_model_path())


def is_compiled_model(path: str | Path) -> bool:
    """True if ``path`` names a compiled model (``.nequip.pth`` / ``.nequip.pt2``), not a ``.nequip.zip``/``.ckpt``."""
    return str(path).lower().endswith(COMPILED_SUFFIXES)


def is_emt(model: str | Path | None) -> bool:
    """True if ``model`` selects ASE's EMT potential."""
    return model is not None and str(model).lower() == EMT_MODEL


def model_factory(
    model: str | Path | None,
    *,
    patch: bool,
    device: str,
    species_map: Mapping[str, str] | None = None,
    fast_step: bool | str = False,
) -> CalculatorFactory:
    """Factory building an :class:`md_plugin.EquiTritonCalculator` for ``model`` (``None``: the embedded model).

    Args:
        model: ``.nequip.zip`` package or ``.ckpt`` checkpoint (eager; can be patched), compiled
            ``.nequip.pth``/``.nequip.pt2`` file (runs with whatever SH it was compiled with; ``patch`` must be
            ``False`` unless it was compiled with the EquiTriton modifier), ``None`` (the embedded model) or
            ``"emt"`` (ASE EMT, for testing the tooling without a neural network).
        patch: ``True`` for EquiTriton kernels, ``False`` for the stock e3nn model.
        device: torch device string.
        species_map: optional chemical symbol -> model type name map.
        fast_step: ``True``: the calculator's on-device path (``EquiTritonCalculator(fast_step=True)``);
            ``"compile"``: the same with the energy+force graph through ``torch.compile``; ``"graph"`` (CUDA): that
            graph replayed from CUDA graphs.
    """
    if is_emt(model):
        from ase.calculators.emt import EMT

        return EMT
    path = default_model() if model is None else str(model)
    if not Path(path).is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    kwargs: dict = {"device": device}
    if species_map:
        kwargs["chemical_species_to_atom_type_map"] = dict(species_map)
    if fast_step:
        kwargs["fast_step"] = fast_step
    compiled = is_compiled_model(path)

    def factory():
        from md_plugin import EquiTritonCalculator

        if compiled:
            return EquiTritonCalculator.from_compiled_model(path, **kwargs)
        return EquiTritonCalculator.from_saved_model(path, patch=patch, **kwargs)

    return factory
