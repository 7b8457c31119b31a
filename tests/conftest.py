"""Shared fixtures. The md_plugin ones are kept here only where several tests/test_md_*.py files need them."""

from __future__ import annotations

import os
import pathlib
import sys
from importlib.metadata import entry_points

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent

# Console scripts of the running interpreter's environment (nequip-train, nequip-compile, equitriton-md) must be
# found by the tests' subprocesses even when that environment is not activated (CI runs .venv/bin/python -m pytest).
_BIN = str(pathlib.Path(sys.executable).parent)
if _BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = os.pathsep.join([_BIN, os.environ.get("PATH", "")])
_MD_EXTENSION = "md_plugin.nequip_extension"


@pytest.fixture(scope="session")
def md_trained_nequip_run(tmp_path_factory):
    """A 2-epoch run of md_plugin's tiny NequIP training: ``(best.ckpt, package .nequip.zip)``."""
    from md_plugin.default_model.train import train_and_package

    work = tmp_path_factory.mktemp("md_train")
    pkg = train_and_package("nequip", work / "nequip_2ep.nequip.zip", max_epochs=2, workdir=work)
    return work / "run" / "best.ckpt", pkg


@pytest.fixture(scope="session")
def md_nequip_extension_env(tmp_path_factory):
    """Environment for ``nequip-*`` subprocesses that load md_plugin as a nequip extension.

    If the ``nequip.extension`` entry point of md_plugin is not installed (e.g. the repo is used from a
    checkout), a minimal ``.dist-info`` declaring it is put on ``PYTHONPATH`` together with the repo root,
    which is exactly how an installed distribution declares it. ``os.environ`` is updated for the session
    (nequip's test helpers copy it for their subprocesses) and restored afterwards.
    """
    old = os.environ.get("PYTHONPATH")
    paths = [str(REPO_ROOT)]
    installed = any(ep.value == _MD_EXTENSION for ep in entry_points(group="nequip.extension"))
    if not installed:
        site = tmp_path_factory.mktemp("md_ext_site")
        info = site / "equitriton_md_nequip_extension-0.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: equitriton-md-nequip-extension\nVersion: 0.0\n")
        (info / "entry_points.txt").write_text(f"[nequip.extension]\ninit_always = {_MD_EXTENSION}\n")
        paths.insert(0, str(site))
    if old:
        paths.append(old)
    os.environ["PYTHONPATH"] = os.pathsep.join(paths)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    env["PATH"] = os.pathsep.join([str(pathlib.Path(sys.executable).parent), env.get("PATH", "")])
    yield env
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


def _fresh_model(kind: str, model_dtype: str, l_max: int = 2):
    from nequip.utils.global_state import set_global_state

    set_global_state(allow_tf32=False)
    common = dict(
        seed=11,
        model_dtype=model_dtype,
        type_names=["Cu"],
        r_max=4.0,
        l_max=l_max,
        avg_num_neighbors=20.0,
        per_type_energy_shifts={"Cu": -1.0},
        per_type_energy_scales={"Cu": 0.5},
    )
    if kind == "nequip":
        from nequip.model import NequIPGNNModel

        return NequIPGNNModel(num_layers=2, num_features=8, radial_mlp_depth=1, radial_mlp_width=8, **common)
    from allegro.model import AllegroModel

    return AllegroModel(
        radial_chemical_embed={"_target_": "allegro.nn.TwoBodyBesselScalarEmbed", "num_bessels": 8},
        radial_chemical_embed_dim=8,
        num_layers=2,
        num_scalar_features=8,
        num_tensor_features=4,
        allegro_mlp_hidden_layers_width=8,
        readout_mlp_hidden_layers_width=8,
        **common,
    )


@pytest.fixture(scope="session")
def md_fresh_model():
    """Builder of small untrained NequIP / Allegro models from nequip's builders:
    ``build(kind, model_dtype, l_max=2)``."""
    return _fresh_model


@pytest.fixture
def float64_default():
    """torch's default dtype set to float64 for the test: nequip's from_ase builds positions in the default dtype, and
    the md tests' models are float64 ones."""
    import torch

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
