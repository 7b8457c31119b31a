"""md_plugin.device: device="auto" | "cuda" | "xpu" | "cpu"."""

from __future__ import annotations

import pytest
import torch

from md_plugin.device import resolve_device, xpu_available


def test_auto_prefers_cuda_then_xpu_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("md_plugin.device.xpu_available", lambda: True)
    assert resolve_device("auto") == torch.device("xpu")
    monkeypatch.setattr("md_plugin.device.xpu_available", lambda: False)
    assert resolve_device("AUTO") == torch.device("cpu")


def test_explicit_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="device='cuda' requested but torch sees no CUDA GPU"):
            resolve_device("cuda")
    if not xpu_available():
        with pytest.raises(RuntimeError, match="device='xpu' requested"):
            resolve_device("xpu")


def test_bad_device_values():
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    with pytest.raises(TypeError, match="str or torch.device"):
        resolve_device(3)  # type: ignore[arg-type]
