"""md_plugin.hook: patch_model replaces e3nn SphericalHarmonics in NequIP / Allegro / arbitrary models."""

from __future__ import annotations

import pytest
import torch
from e3nn import o3

import equitriton
from md_plugin import default_model_path, patch_model
from md_plugin.hook import default_fuse_lmax, is_e3nn_sh, is_equitriton_sh, iter_sh_modules, sh_backend_of


class _Toy(torch.nn.Module):
    """Two e3nn SH with different settings, nested, plus a parameter (float64)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 3, dtype=torch.float64)
        self.block = torch.nn.ModuleDict(
            {
                "sh_a": o3.SphericalHarmonics("1x0e+1x1o+1x2e+1x3o", normalize=True, normalization="component"),
                "sh_b": o3.SphericalHarmonics([1, 2, 4], normalize=False, normalization="norm"),
            }
        )
        self.sh_c = o3.SphericalHarmonics("1x0e+1x1e+1x2e", normalize=True, irreps_in="1x1e")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x)
        return torch.cat([self.block["sh_a"](y), self.block["sh_b"](y), self.sh_c(y)], dim=-1)


def _load(kind: str) -> torch.nn.Module:
    from nequip.model.saved_models.load_utils import load_saved_model

    return load_saved_model(str(default_model_path(kind))).eval()


def test_toy_model_replaced_with_same_settings_and_outputs():
    torch.manual_seed(0)
    model = _Toy()
    # a twin, not a deepcopy: once nequip has set e3nn's optimization defaults, e3nn SH hold ScriptFunctions
    stock = _Toy()
    stock.load_state_dict(model.state_dict())
    old = {n: m for n, m in model.named_modules() if is_e3nn_sh(m)}
    replaced = patch_model(model)
    assert [n for n, _ in replaced] == ["block.sh_a", "block.sh_b", "sh_c"]
    for name, old_module in replaced:
        assert old_module is old[name]
        new = model.get_submodule(name)
        assert is_equitriton_sh(new) and isinstance(new, equitriton.SphericalHarmonics)
        assert str(new.irreps_out) == str(old_module.irreps_out)
        assert str(new.irreps_in) == str(old_module.irreps_in)
        assert new.normalize == old_module.normalize
        assert new.normalization == old_module.normalization
    x = torch.randn(50, 3, dtype=torch.float64, requires_grad=True)
    y_ref, y = stock(x), model(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    # first and second derivatives (forces and force training go through these)
    (g_ref,) = torch.autograd.grad(y_ref.square().sum(), x, create_graph=True)
    (g,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-10)
    (h_ref,) = torch.autograd.grad(g_ref.sum(), x)
    (h,) = torch.autograd.grad(g.sum(), x)
    torch.testing.assert_close(h, h_ref, rtol=1e-9, atol=1e-9)


def test_idempotent_second_call_replaces_nothing():
    model = _Toy()
    assert len(patch_model(model)) == 3
    assert patch_model(model) == []
    assert sum(1 for _ in iter_sh_modules(model)) == 3


@pytest.mark.parametrize(
    "kind, expected_name, owner_cls",
    [
        ("nequip", "model.func.spharm.sh", "SphericalHarmonicEdgeAttrs"),
        ("allegro", "model.func.tensor_embed.sh", "TwoBodySphericalHarmonicTensorEmbed"),
    ],
)
def test_packaged_models_patched(kind, expected_name, owner_cls):
    model = _load(kind)
    assert sh_backend_of(model) == "e3nn"
    replaced = patch_model(model)
    assert [n for n, _ in replaced] == [expected_name]
    owner = model.get_submodule(expected_name.rsplit(".", 1)[0])
    assert type(owner).__name__ == owner_cls
    assert is_equitriton_sh(owner.sh)
    # the module left no e3nn SH behind and reports the CPU fallback backend
    assert not any(is_e3nn_sh(m) for m in model.modules())
    assert sh_backend_of(model, "cpu") == "equitriton-torch-fallback"
    assert owner.sh._nequip_custom_ops_libs == ("equitriton",)
    assert patch_model(model) == []


@pytest.mark.parametrize(
    "kind, l_max, default", [("nequip", 1, 0), ("nequip", 2, 0), ("allegro", 1, 0), ("allegro", 2, 2)]
)
def test_default_fuse_lmax_fuses_allegro_l_max_2_only(kind, l_max, default, md_fresh_model):
    """The shipped policy: the op for l_max 1 (both models) and for NequIP, fusable ops for Allegro's l_max 2."""
    model = md_fresh_model(kind, "float64", l_max=l_max)
    patch_model(model)
    assert [m.fuse_lmax for _, m in iter_sh_modules(model)] == [default]
    assert default_fuse_lmax(kind == "allegro", l_max) == default
    assert default_fuse_lmax(True, 4) == 2  # l_max 3 and 4 run the op under fuse_lmax 2


@pytest.mark.parametrize(
    "kind, l_max, default", [("nequip", 1, 0), ("nequip", 2, 0), ("allegro", 1, 1), ("allegro", 2, 2)]
)
def test_export_policy_traces_allegro_l_max_1_as_e3nn(kind, l_max, default, md_fresh_model):
    """patch_model(export=True), the modifier's policy for nequip-compile: also Allegro's l_max 1 SH are traced as
    fusable ops (e3nn's own, equitriton.ops._l1_traced_as_e3nn); NequIP's keep the op."""
    model = md_fresh_model(kind, "float64", l_max=l_max)
    patch_model(model, export=True)
    assert [m.fuse_lmax for _, m in iter_sh_modules(model)] == [default]
    assert default_fuse_lmax(kind == "allegro", l_max, export=True) == default


@pytest.mark.parametrize("kind, default", [("nequip", 0), ("allegro", 2)])
def test_fuse_lmax_is_2_for_allegro_0_otherwise_and_can_be_set(kind, default):
    """Under torch.compile, the shipped Allegro's SH (l_max 2) are traced as fusable ops, NequIP's run the op
    (default_fuse_lmax); patch_model(fuse_lmax=k) sets every module, also on an already patched model."""
    model = _load(kind)
    patch_model(model)
    assert [m.fuse_lmax for _, m in iter_sh_modules(model)] == [default]
    assert patch_model(model, fuse_lmax=0) == []
    assert [m.fuse_lmax for _, m in iter_sh_modules(model)] == [0]
    assert patch_model(model) == []  # a second plain call keeps the setting
    assert [m.fuse_lmax for _, m in iter_sh_modules(model)] == [0]
    toy = _Toy()
    patch_model(toy, fuse_lmax=3)
    assert {m.fuse_lmax for _, m in iter_sh_modules(toy)} == {3}
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="fuse_lmax must be a non-negative int"):
            patch_model(_Toy(), fuse_lmax=bad)


def test_placement_follows_model_dtype_and_device():
    model = _Toy()
    patch_model(model)
    new = model.get_submodule("sh_c")
    for t in list(new.parameters()) + list(new.buffers()):
        assert t.device == torch.device("cpu")
    out = model(torch.randn(4, 3, dtype=torch.float64))
    assert out.dtype == torch.float64


def test_model_without_sh_raises_naming_the_class():
    class NoSH(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(3, 3)

    with pytest.raises(ValueError, match="NoSH has no e3nn SphericalHarmonics"):
        patch_model(NoSH())


def test_torchscript_and_bare_sh_rejected():
    scripted = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(3, 3)))
    with pytest.raises(ValueError, match="TorchScript"):
        patch_model(scripted)
    with pytest.raises(ValueError, match="from_e3nn"):
        patch_model(o3.SphericalHarmonics(2, normalize=True))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        patch_model("not a model")  # type: ignore[arg-type]
