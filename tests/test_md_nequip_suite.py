"""nequip's own model test suite (``nequip.utils.unittests``) on NequIP and Allegro models patched by md_plugin.

Every model the mixins build goes through ``md_plugin.patch_model`` (``make_model`` is overridden), so nequip's
checks -- equivariance, batching, periodic images, large separation, numeric gradients, partial forces, smoothness at
the cutoff, isolated-atom energies -- run on models whose spherical harmonics are equitriton's.

``ASEIntegrationMixin.test_ase_compile`` runs with ``EquiTritonCalculator`` as the calculator class: a model trained
by ``nequip-train`` is loaded through ``EquiTritonCalculator._from_saved_model`` (patched eager) and through
``EquiTritonCalculator.from_compiled_model`` on a ``nequip-compile --modifiers enable_EquiTritonSphericalHarmonics``
artifact (the ``nequip-train`` / ``nequip-compile`` subprocesses find the modifier through md_plugin's
``nequip.extension`` entry point). With torch >= 2.10 nequip compiles AOTInductor only; that takes about a minute per
model on a 2-core CPU, so those tests are marked ``slow``.

nequip's fixtures are re-declared here with module scope (its conftest declares them per session and would leave the
default dtype at float64 and its irreps-debug hooks on for every later test file).
"""

from __future__ import annotations

import pytest
import torch
from nequip.utils.global_state import set_global_state
from nequip.utils.test import set_irreps_debug
from nequip.utils.unittests import conftest as _nq
from nequip.utils.unittests.model_tests_ase_integration import ASEIntegrationMixin
from nequip.utils.unittests.model_tests_basic import BasicModelTestsMixin

from md_plugin import MODIFIER_NAME, EquiTritonCalculator, patch_model
from md_plugin.hook import is_e3nn_sh, is_equitriton_sh

set_irreps_debug(False)  # importing nequip's conftest switched it on for the whole process; see the fixture below


def _module_scoped(name: str, autouse: bool = False):
    return pytest.fixture(scope="module", name=name, autouse=autouse)(getattr(_nq, name).__wrapped__)


@pytest.fixture(scope="module", autouse=True)
def default_dtype():
    """float64 default dtype, TF32 off (as nequip's conftest; its version relies on being the first to set nequip's
    global state, which sets the dtype only once per process)."""
    old = torch.get_default_dtype()
    set_global_state(allow_tf32=False)
    torch.set_default_dtype(torch.float64)
    yield torch.float64
    torch.set_default_dtype(old)


temp_data = _module_scoped("temp_data")
Cu_bulk = _module_scoped("Cu_bulk")
molecules = _module_scoped("molecules")
nequip_dataset = _module_scoped("nequip_dataset")
atomic_batch = _module_scoped("atomic_batch")
diamond_carbon = _module_scoped("diamond_carbon")
CH3CHO = _nq.CH3CHO
CH3CHO_no_typemap = _nq.CH3CHO_no_typemap


@pytest.fixture(scope="module", params=["float32", "float64"])
def model_dtype(request, default_dtype):
    return request.param


@pytest.fixture(scope="module", autouse=True)
def irreps_debug():
    """nequip's data-irreps consistency hooks, on for this module only (as nequip's own conftest does)."""
    set_irreps_debug(True)
    yield
    set_irreps_debug(False)


BASIC_INFO = {
    "seed": 123,
    "type_names": ["H", "C", "O"],
    "r_max": 4.0,
    "avg_num_neighbors": 20,
    "per_type_energy_shifts": {"H": 3.45, "C": 5.67, "O": 7.89},
}
NEQUIP_CONFIG = {
    "_target_": "nequip.model.NequIPGNNModel",
    "l_max": 2,
    "parity": True,
    "num_features": 8,
    "num_layers": 2,
    "radial_mlp_depth": 1,
    "radial_mlp_width": 8,
    **BASIC_INFO,
}
ALLEGRO_CONFIG = {
    "_target_": "allegro.model.AllegroModel",
    **BASIC_INFO,
    "avg_num_neighbors": 5.0,
    "l_max": 2,
    "parity": True,
    "radial_chemical_embed": {"_target_": "allegro.nn.TwoBodyBesselScalarEmbed", "num_bessels": 4},
    "radial_chemical_embed_dim": 8,
    "scalar_embed_mlp_hidden_layers_depth": 1,
    "scalar_embed_mlp_hidden_layers_width": 16,
    "num_layers": 2,
    "num_scalar_features": 16,
    "num_tensor_features": 4,
    "allegro_mlp_hidden_layers_depth": 1,
    "allegro_mlp_hidden_layers_width": 16,
    "readout_mlp_hidden_layers_depth": 1,
    "readout_mlp_hidden_layers_width": 8,
}


class _PatchedModelTests(ASEIntegrationMixin):
    """nequip's basic + energy + ASE-integration mixins, with every built model patched."""

    @staticmethod
    def make_model(model_config, device):
        model = BasicModelTestsMixin.make_model(model_config, device)
        replaced = patch_model(model)
        assert replaced, "patch_model replaced nothing"
        assert not any(is_e3nn_sh(m) for m in model.modules())
        return model

    @pytest.fixture(scope="class")
    def conffile(self):
        """One training config (nequip's EMT toy data) instead of two: the subject here is the SH swap."""
        return "minimal_toy_emt.yaml"

    @pytest.fixture(scope="class")
    def model_source(self):
        return "fresh"

    @pytest.fixture(scope="class")
    def ase_calculator_cls(self):
        return EquiTritonCalculator

    @pytest.fixture(scope="class")
    def ase_compile_modifiers(self):
        def modifiers(mode, device, model_dtype):
            return [MODIFIER_NAME]

        return modifiers

    @pytest.fixture(scope="class")
    def ase_properties_to_compare(self):
        return ["energy", "forces", "energies"]

    @pytest.fixture(scope="class", autouse=True)
    def _extension_env(self, md_nequip_extension_env):
        """nequip-train / nequip-compile subprocesses (env copied from os.environ) load md_plugin's extension."""
        return md_nequip_extension_env

    def test_model_is_patched(self, model):
        instance, _, _ = model
        assert any(is_equitriton_sh(m) for m in instance.modules())

    @pytest.mark.slow
    def test_ase_compile(
        self, device, ase_integration_tol, ase_properties_to_compare, ase_calculator_cls, ase_compiled_model
    ):
        _, output_path, _ = ase_compiled_model
        super().test_ase_compile(
            device, ase_integration_tol, ase_properties_to_compare, ase_calculator_cls, ase_compiled_model
        )
        calc = EquiTritonCalculator.from_compiled_model(output_path, device=device)
        assert calc.sh_backend.startswith("equitriton-")


class TestPatchedNequIP(_PatchedModelTests):
    @pytest.fixture
    def strict_locality(self):
        return False

    @pytest.fixture(scope="class")
    def equivariance_tol(self, model_dtype):
        return {"float32": 5e-5, "float64": 1e-7}[model_dtype]

    @pytest.fixture(scope="class")
    def config(self):
        return dict(NEQUIP_CONFIG)


class TestPatchedAllegro(_PatchedModelTests):
    @pytest.fixture
    def strict_locality(self):
        return True

    @pytest.fixture(scope="class")
    def config(self):
        return dict(ALLEGRO_CONFIG)


def test_make_model_patches_both_architectures():
    for config in (NEQUIP_CONFIG, ALLEGRO_CONFIG):
        model = _PatchedModelTests.make_model({**config, "model_dtype": "float64"}, "cpu")
        assert sum(is_equitriton_sh(m) for m in model.modules()) == 1
