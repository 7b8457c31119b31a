"""Device selection for the MD plugin: ``"auto" | "cuda" | "xpu" | "cpu"`` (or any ``torch.device``)."""

from __future__ import annotations

from typing import Union

import torch

DeviceLike = Union[str, torch.device]


def xpu_available() -> bool:
    """True if this torch build sees an Intel XPU."""
    xpu = getattr(torch, "xpu", None)
    return bool(xpu is not None and xpu.is_available())


def resolve_device(device: DeviceLike = "auto") -> torch.device:
    """Turn ``device`` into a ``torch.device``.

    ``"auto"`` picks CUDA if available, else XPU if available, else CPU. Asking for ``"cuda"`` or
    ``"xpu"`` on a machine without one raises ``RuntimeError`` naming the device (rather than failing
    later inside the model).
    """
    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, str):
        name = device.strip().lower()
        if name == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda")
            if xpu_available():
                return torch.device("xpu")
            return torch.device("cpu")
        try:
            dev = torch.device(name)
        except RuntimeError as err:
            raise ValueError(f"unknown device {device!r}; use 'auto', 'cuda', 'xpu' or 'cpu'") from err
    else:
        raise TypeError(f"device must be a str or torch.device, got {type(device).__name__}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' requested but torch sees no CUDA GPU (use device='auto' or 'cpu')")
    if dev.type == "xpu" and not xpu_available():
        raise RuntimeError("device='xpu' requested but torch sees no Intel XPU (use device='auto' or 'cpu')")
    return dev
