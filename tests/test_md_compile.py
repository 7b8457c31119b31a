"""Compiled deployment: ``nequip-compile --modifiers enable_EquiTritonSphericalHarmonics`` artifacts loaded through
``EquiTritonCalculator.from_compiled_model`` give the stock model's numbers.

``nequip-compile`` runs in a fresh process that finds the modifier only through md_plugin's ``nequip.extension``
entry point (``md_nequip_extension_env``). With torch >= 2.10 nequip compiles AOTInductor (``.nequip.pt2``) only
(TorchScript is refused); an AOTInductor CPU build of each tiny model takes 30-70 s on 2 cores. Both run in the default
tier: the export traces equitriton's CPU fallback into the artifact, and a fallback that is right in eager mode can
still export wrong (seen for Allegro: 0.4% energy error and an out-of-bounds gather, with NequIP exact).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.cluster import Icosahedron
from nequip.integrations.ase import NequIPCalculator
from nequip.utils.versions import _TORCH_GE_2_10

from md_plugin import MODIFIER_NAME, EquiTritonCalculator, default_model_path
from md_plugin.calculator import compiled_model_uses_equitriton
from md_plugin.validation import aoti_device_type

PROPS_PERIODIC = ("energy", "free_energy", "energies", "forces", "stress")
PROPS_CLUSTER = ("energy", "free_energy", "energies", "forces")


pytestmark = pytest.mark.usefixtures("float64_default")


def run_nequip_compile(src, out, mode: str, env: dict, modifiers=(MODIFIER_NAME,), device: str = "cpu"):
    """``nequip-compile`` for the ASE target on `device`; returns the finished process."""
    # the console script where it is installed; its module where wheels were unpacked without scripts (GPU machine)
    script = shutil.which("nequip-compile")
    exe = [script] if script else [sys.executable, "-m", "nequip.scripts.compile"]
    cmd = [*exe, str(src), str(out), "--mode", mode, "--device", device, "--target", "ase"]
    if modifiers:
        cmd += ["--modifiers", *modifiers]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)


def nequip_compile(src, out, mode: str, env: dict, modifiers=(MODIFIER_NAME,), device: str = "cpu") -> None:
    """Run ``nequip-compile`` for the ASE target on `device`; a failure shows nequip's output."""
    proc = run_nequip_compile(src, out, mode, env, modifiers, device)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-4000:]
        if "Constraints violated (num_edges)" in tail:
            pytest.xfail(
                "equitriton's CPU fallback branches on the row count (row chunking in equitriton/fallback.py), which "
                "torch.export turns into a num_edges guard: the fallback must not chunk when the count is symbolic"
            )
        pytest.fail(f"nequip-compile failed (exit code {proc.returncode}):\n{tail}")


def _compiled(kind: str, tmp_path_factory, env) -> str:
    out = tmp_path_factory.mktemp(f"compiled_{kind}") / f"{kind}_equitriton.nequip.pt2"
    nequip_compile(default_model_path(kind), out, "aotinductor", env)
    return str(out)


@pytest.fixture(scope="module")
def aoti_nequip(tmp_path_factory, md_nequip_extension_env):
    return _compiled("nequip", tmp_path_factory, md_nequip_extension_env)


def _systems():
    b = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    b.rattle(stdev=0.08, seed=3)
    c = Icosahedron("Cu", noshells=2)
    c.rattle(stdev=0.08, seed=4)
    c.pbc = False
    return [(b, PROPS_PERIODIC), (c, PROPS_CLUSTER)]


def _props(calc, atoms, props):
    a = atoms.copy()
    a.calc = calc
    return {p: np.array(a.calc.get_property(p, a), dtype=np.float64) for p in props}


def _assert_matches_stock(calc, kind: str, rtol: float = 1e-10) -> None:
    stock = NequIPCalculator._from_saved_model(
        str(default_model_path(kind)), device="cpu", chemical_species_to_atom_type_map=True
    )
    for atoms, props in _systems():
        ref, got = _props(stock, atoms, props), _props(calc, atoms, props)
        for key, r in ref.items():
            atol = rtol * max(float(np.abs(r).max()), 1e-3)
            np.testing.assert_allclose(got[key], r, rtol=rtol, atol=atol, err_msg=f"{kind} {key} pbc={atoms.pbc}")


def test_aoti_artifact_carries_equitriton(aoti_nequip):
    assert compiled_model_uses_equitriton(aoti_nequip)
    calc = EquiTritonCalculator.from_compiled_model(aoti_nequip, device="cpu")
    assert calc.sh_backend == "equitriton-torch-fallback"


def test_aoti_matches_stock_calculator(aoti_nequip):
    _assert_matches_stock(EquiTritonCalculator.from_compiled_model(aoti_nequip, device="cpu"), "nequip")


def test_aoti_with_fast_step_matches_stock_calculator(aoti_nequip):
    calc = EquiTritonCalculator.from_compiled_model(aoti_nequip, device="cpu", fast_step=True)
    assert calc._fast is not None
    _assert_matches_stock(calc, "nequip")


@pytest.mark.parametrize("fast_step", [False, True])
def test_aoti_float64_artifact_under_a_float32_default(aoti_nequip, fast_step):
    """nequip sets torch's default dtype to float64 once per process and builds its model input in the default
    dtype; with the default set back to float32 since, a float64 AOTInductor artifact (which checks no input dtype)
    gave NaN forces. The calculator casts the input to the artifact's model_dtype (its metadata)."""
    reference = EquiTritonCalculator.from_compiled_model(aoti_nequip, device="cpu", fast_step=fast_step)
    assert reference.model_dtype == torch.float64
    want = [_props(reference, atoms, props) for atoms, props in _systems()]
    torch.set_default_dtype(torch.float32)  # the autouse fixture restores it
    calc = EquiTritonCalculator.from_compiled_model(aoti_nequip, device="cpu", fast_step=fast_step)
    assert calc.model_dtype == torch.float64
    for (atoms, props), ref in zip(_systems(), want):
        got = _props(calc, atoms, props)
        for key in props:
            np.testing.assert_allclose(got[key], ref[key], rtol=1e-12, atol=1e-12, err_msg=f"{key} pbc={atoms.pbc}")


def test_compiled_artifact_validation(aoti_nequip, tmp_path):
    renamed = tmp_path / "model.nequip.pth"
    renamed.write_bytes(open(aoti_nequip, "rb").read())
    with pytest.raises(ValueError, match=r"holds a nequip-compile AOTInductor model; name it \*\.nequip\.pt2"):
        EquiTritonCalculator.from_compiled_model(renamed)
    with pytest.raises(ValueError, match="use EquiTritonCalculator.from_compiled_model"):
        EquiTritonCalculator.from_saved_model(aoti_nequip)


def test_aoti_package_runs_only_on_the_device_type_it_was_compiled_for(aoti_nequip, tmp_path):
    """The device type comes from the package's own metadata; a package built for CUDA is refused on the CPU with
    a message naming both device types and the fix, before anything of it is loaded."""
    assert aoti_device_type(aoti_nequip) == "cpu"
    cuda_built = tmp_path / "gpu.nequip.pt2"
    with zipfile.ZipFile(aoti_nequip) as src, zipfile.ZipFile(cuda_built, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name.endswith("wrapper_metadata.json"):
                data = data.replace(b'"AOTI_DEVICE_KEY": "cpu"', b'"AOTI_DEVICE_KEY": "cuda"')
            dst.writestr(name, data)
    assert aoti_device_type(cuda_built) == "cuda"
    with pytest.raises(ValueError, match=r"compiled for 'cuda'; it cannot run on 'cpu'.*--device cpu.*device='cuda'"):
        EquiTritonCalculator.from_compiled_model(cuda_built, device="cpu")


def test_compiled_model_uses_equitriton_reads_metadata(tmp_path):
    with_ours = tmp_path / "a.nequip.pt2"
    with zipfile.ZipFile(with_ours, "w") as zf:
        zf.writestr("a.nequip/data/aotinductor/model/x.so", b"")
        zf.writestr("nequip_custom_ops_libs.txt", "equitriton")
    stock = tmp_path / "b.nequip.pth"
    with zipfile.ZipFile(stock, "w") as zf:
        zf.writestr("b/code/__torch__/m.py", "")
        zf.writestr("b/extra/nequip_custom_ops_libs", "")
    assert compiled_model_uses_equitriton(with_ours)
    assert not compiled_model_uses_equitriton(stock)


@pytest.mark.skipif(_TORCH_GE_2_10, reason="nequip-compile refuses TorchScript with torch >= 2.10")
def test_torchscript_matches_stock_calculator(tmp_path, md_nequip_extension_env):  # pragma: no cover - torch < 2.10
    out = tmp_path / "nequip_equitriton.nequip.pth"
    nequip_compile(default_model_path("nequip"), out, "torchscript", md_nequip_extension_env)
    calc = EquiTritonCalculator.from_compiled_model(out, device="cpu")
    assert compiled_model_uses_equitriton(out) and calc.sh_backend == "equitriton-torch-fallback"
    _assert_matches_stock(calc, "nequip")


def test_aoti_allegro_matches_stock_calculator(tmp_path_factory, md_nequip_extension_env):
    path = _compiled("allegro", tmp_path_factory, md_nequip_extension_env)
    calc = EquiTritonCalculator.from_compiled_model(path, device="cpu")
    assert calc.sh_backend == "equitriton-torch-fallback"
    _assert_matches_stock(calc, "allegro")
