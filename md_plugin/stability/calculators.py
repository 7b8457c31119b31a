"""Calculator factories for stability runs: the embedded model, a saved/compiled NequIP or Allegro model, or EMT.

A *factory* is a zero-argument callable returning a fresh ASE calculator; stock and patched runs each
build their own calculator so that nothing is shared between them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .nve import CalculatorFactory

#: model name selecting ASE's classical EMT potential (no neural network; patching is a no-op).
EMT_MODEL = "emt"

#: file suffixes of compiled (TorchScript / AOT Inductor) NequIP models
_COMPILED_SUFFIXES = (".nequip.pth", ".nequip.pt2", ".pth", ".pt2")


def resolve_device(device: str = "auto") -> str:
    """Resolve ``"auto"`` to ``"cuda"``, then ``"xpu"``, then ``"cpu"``, whichever is available first.

    Explicit devices are checked: asking for ``cuda``/``xpu`` where none is available raises ``RuntimeError``.
    """
    import torch

    dev = device.strip().lower()
    has_cuda = torch.cuda.is_available()
    has_xpu = hasattr(torch, "xpu") and torch.xpu.is_available()
    if dev == "auto":
        return "cuda" if has_cuda else "xpu" if has_xpu else "cpu"
    kind = dev.split(":")[0]
    if kind == "cuda" and not has_cuda:
        raise RuntimeError("device 'cuda' requested but torch.cuda.is_available() is False")
    if kind == "xpu" and not has_xpu:
        raise RuntimeError("device 'xpu' requested but torch.xpu.is_available() is False")
    if kind not in ("cpu", "cuda", "xpu"):
        raise ValueError(f"unknown device {device!r} (use auto, cpu, cuda[:i] or xpu[:i])")
    return dev


def default_model() -> str:
    """Path of the tiny Cu NequIP model shipped with the package (:func:`md_plugin.default_model_path`)."""
    from md_plugin import default_model_path

    return str(default_model_path())


def is_compiled_model(path: str | Path) -> bool:
    """True if ``path`` looks like a compiled model (``.nequip.pth`` / ``.nequip.pt2``), not a ``.nequip.zip``."""
    name = str(path).lower()
    return name.endswith(_COMPILED_SUFFIXES)


def model_factory(
    model: str | Path | None,
    *,
    patch: bool,
    device: str,
    species_map: Mapping[str, int] | None = None,
) -> CalculatorFactory:
    """Factory building an ``EquiTritonCalculator`` for ``model`` (``None``: the embedded model).

    Args:
        model: ``.nequip.zip`` package, compiled ``.nequip.pth``/``.pt2`` file, ``None`` (embedded model)
            or ``"emt"`` (ASE EMT, for testing the tooling without a neural network).
        patch: ``True`` for EquiTriton kernels, ``False`` for the stock e3nn model.
        device: resolved torch device string.
        species_map: optional chemical symbol -> model atom-type index map.
    """
    if model is not None and str(model).lower() == EMT_MODEL:
        from ase.calculators.emt import EMT

        return EMT
    path = default_model() if model is None else str(model)
    if not Path(path).is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    kwargs: dict = {"device": device, "patch": patch}
    if species_map:
        kwargs["chemical_species_to_atom_type_map"] = dict(species_map)

    def factory():
        from md_plugin import EquiTritonCalculator

        if is_compiled_model(path):
            return EquiTritonCalculator.from_compiled_model(path, **kwargs)
        return EquiTritonCalculator.from_saved_model(path, **kwargs)

    return factory
