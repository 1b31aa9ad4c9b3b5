"""Named model versions in the user's folder, next to the shipped ones."""

from __future__ import annotations

import pytest

from napari_stem_defects import model_registry as reg


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(reg.ENV_VAR, str(tmp_path / "models"))
    return tmp_path / "models"


def test_user_dir_follows_the_environment_or_platformdirs(models_dir, monkeypatch):
    assert reg.user_models_dir() == models_dir
    monkeypatch.delenv(reg.ENV_VAR)
    default = reg.user_models_dir()
    assert default.name == "models" and "napari-stem-defects" in str(default)


def test_shipped_first_then_user_versions_sorted(models_dir):
    for kind in reg.MODEL_KINDS:
        models = reg.list_models(kind)
        assert list(models) == [reg.SHIPPED] and models[reg.SHIPPED].is_file()
    assert reg.list_models("cells")[reg.SHIPPED].name == "cell_cnn.pt"
    assert reg.list_models("columns")[reg.SHIPPED].name == "column_unet.pt"
    for name in ("zeta", "MoS2-low-dose", "alpha.v2"):
        path = reg.new_model_path("cells", name)
        assert path == models_dir / "cells" / f"{name}.pt" and path.parent.is_dir() and not path.exists()
        path.write_bytes(b"x")
    (models_dir / "cells" / "notes.md").write_text("not a model")
    assert list(reg.list_models("cells")) == ["shipped", "MoS2-low-dose", "alpha.v2", "zeta"]
    assert list(reg.list_models("columns")) == ["shipped"]
    assert reg.model_path("cells", "zeta") == models_dir / "cells" / "zeta.pt"
    assert reg.model_card_path(reg.model_path("cells", "zeta")).name == "zeta.md"
    assert reg.resolve_model("cells", "zeta") == models_dir / "cells" / "zeta.pt"
    assert reg.resolve_model("cells", None) == reg.shipped_path("cells")
    assert reg.resolve_model("cells", str(models_dir / "cells" / "alpha.v2.pt")).name == "alpha.v2.pt"


def test_bad_unknown_and_existing_names(models_dir):
    with pytest.raises(KeyError, match="no cells model named 'nope'.*shipped"):
        reg.model_path("cells", "nope")
    with pytest.raises(KeyError):
        reg.resolve_model("cells", "nope")
    for bad in ("", "a b", "../up", "x/y", "-lead", "é"):
        with pytest.raises(ValueError, match="not allowed"):
            reg.new_model_path("cells", bad)
    for shipped in ("shipped", "Shipped"):
        with pytest.raises(ValueError, match="never overwritten"):
            reg.new_model_path("cells", shipped)
    reg.new_model_path("cells", "mine").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="exists already"):
        reg.new_model_path("cells", "mine")
    with pytest.raises(ValueError, match="kind"):
        reg.list_models("heatmaps")
