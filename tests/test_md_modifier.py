"""md_plugin.modifier: the nequip model modifier ``enable_EquiTritonSphericalHarmonics`` and its registration."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from md_plugin import MODIFIER_NAME, default_model_path
from md_plugin.hook import is_e3nn_sh, is_equitriton_sh
from md_plugin.modifier import is_registered


def _sh_kinds(model):
    return {"e3nn": sum(map(is_e3nn_sh, model.modules())), "equitriton": sum(map(is_equitriton_sh, model.modules()))}


def test_registered_on_import():
    import nequip.model.saved_models.load_utils  # noqa: F401  (registration completes once this is imported)

    assert is_registered()


@pytest.mark.parametrize("kind", ["nequip", "allegro"])
def test_modify_finds_and_applies_modifier_on_packaged_models(kind):
    from nequip.model.modify_utils import get_all_modifiers, modify
    from nequip.model.saved_models.load_utils import load_saved_model

    model = load_saved_model(str(default_model_path(kind)))
    assert MODIFIER_NAME in get_all_modifiers(model)
    assert _sh_kinds(model) == {"e3nn": 1, "equitriton": 0}
    out = modify(model, [{"modifier": MODIFIER_NAME}])
    assert _sh_kinds(out) == {"e3nn": 0, "equitriton": 1}
    # the patched model still offers the modifier (on equitriton's SH class), and applying it again changes nothing,
    # not even a fuse_lmax set before (what nequip-compile does to a model patched in memory)
    assert MODIFIER_NAME in get_all_modifiers(out)
    (sh,) = [m for m in out.modules() if is_equitriton_sh(m)]
    sh.fuse_lmax = 3
    again = modify(out, [{"modifier": MODIFIER_NAME}])
    assert _sh_kinds(again) == {"e3nn": 0, "equitriton": 1}
    assert [m for m in again.modules() if is_equitriton_sh(m)][0].fuse_lmax == 3


def test_modifier_on_freshly_built_model(md_fresh_model):
    from nequip.model.modify_utils import get_all_modifiers, modify

    model = md_fresh_model("nequip", "float64", l_max=3)
    assert MODIFIER_NAME in get_all_modifiers(model)
    modify(model, [{"modifier": MODIFIER_NAME}])
    assert _sh_kinds(model) == {"e3nn": 0, "equitriton": 1}


@pytest.mark.parametrize("kind, fuse_lmax", [("nequip", 0), ("allegro", 1)])
def test_modifier_applies_the_export_policy(kind, fuse_lmax, md_fresh_model):
    """The modifier patches for export (nequip-compile): Allegro's l_max 1 SH traced as e3nn's ops, NequIP's as the
    op (md_plugin.hook.default_fuse_lmax)."""
    from nequip.model.modify_utils import modify

    model = modify(md_fresh_model(kind, "float64", l_max=1), [{"modifier": MODIFIER_NAME}])
    assert [m.fuse_lmax for m in model.modules() if is_equitriton_sh(m)] == [fuse_lmax]


def test_modifier_is_not_persistent():
    """An acceleration, not a change of the model: nequip-package leaves it out of packages."""
    from nequip.model.modify_utils import get_all_modifiers
    from nequip.model.saved_models.load_utils import load_saved_model
    from nequip.nn.model_modifier_utils import is_persistent_model_modifier

    modifiers = get_all_modifiers(load_saved_model(str(default_model_path())))
    assert not is_persistent_model_modifier(modifiers[MODIFIER_NAME])


def test_fresh_process_finds_modifier_through_entry_point(md_nequip_extension_env):
    """What nequip-compile sees: `import nequip` loads md_plugin's extension; md_plugin itself is never imported."""
    code = textwrap.dedent(
        f"""
        import sys
        import nequip
        from nequip.model.modify_utils import get_all_modifiers, modify
        from nequip.model.saved_models.load_utils import load_saved_model
        assert "md_plugin.nequip_extension" in sys.modules, "extension not loaded"
        assert "md_plugin.calculator" not in sys.modules and "equitriton" not in sys.modules
        model = load_saved_model({str(default_model_path())!r})
        assert {MODIFIER_NAME!r} in get_all_modifiers(model), sorted(get_all_modifiers(model))
        model = modify(model, [{{"modifier": {MODIFIER_NAME!r}}}])
        print(sorted({{type(m).__module__.split(".")[0] for m in model.modules()
                      if type(m).__name__ == "SphericalHarmonics"}}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=md_nequip_extension_env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "['equitriton']"
