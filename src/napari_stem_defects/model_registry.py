"""Named model versions: the shipped networks plus the ones a user trained, in a user folder.

A model version is ``<user models dir>/<kind>/<name>.pt`` (the
:func:`~napari_stem_defects.network_io.save_weights` format, its metadata
naming the base model, the datasets, the class counts and the held-out
metrics) with its model card ``<name>.md`` beside it. The shipped weights
(``napari_stem_defects/models``) are listed as :data:`SHIPPED` and are never
written to.

The user folder is ``$NAPARI_STEM_DEFECTS_MODELS`` when that is set, else
``platformdirs.user_data_dir("napari-stem-defects") / "models"``.

Examples
--------
>>> list(list_models("cells"))[0]
'shipped'
>>> validate_name("MoS2-low-dose_v2")
'MoS2-low-dose_v2'
"""

from __future__ import annotations

import os
import re
from pathlib import Path

#: What a model does: classify cells ("cells", :mod:`napari_stem_defects.cells.cnn`) or
#: find columns ("columns", :mod:`napari_stem_defects.columns.unet`).
MODEL_KINDS: tuple[str, ...] = ("cells", "columns")
#: Name of the packaged weights of every kind.
SHIPPED = "shipped"
#: Environment variable that moves the user models folder (tests, shared installations).
ENV_VAR = "NAPARI_STEM_DEFECTS_MODELS"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def _check_kind(kind: str) -> str:
    if kind not in MODEL_KINDS:
        raise ValueError(f"model kind must be one of {', '.join(MODEL_KINDS)}, not {kind!r}")
    return kind


def user_models_dir() -> Path:
    """Folder of the user's model versions (it may not exist yet)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("napari-stem-defects")) / "models"


def shipped_path(kind: str) -> Path:
    """Path of the packaged weights of a kind."""
    if _check_kind(kind) == "cells":
        from .cells.cnn import default_weights_path
    else:
        from .columns.unet import default_weights_path
    return default_weights_path()


def validate_name(name: str) -> str:
    """Check a model version name: letters, digits and ``-_.``, starting with a letter or digit,
    at most 100 characters, not :data:`SHIPPED`.

    Raises
    ------
    ValueError
        A bad name (the message says what is allowed).
    """
    name = str(name).strip()
    if name.endswith(".pt"):
        name = name[:-3]
    if not _NAME.match(name) or name.endswith("."):
        raise ValueError(f"model name {name!r} is not allowed: use letters, digits, '-', '_' and '.', "
                         "starting with a letter or digit (at most 100 characters)")
    if name.lower() == SHIPPED:
        raise ValueError(f"{SHIPPED!r} names the packaged model, which is never overwritten; choose another name")
    return name


def list_models(kind: str) -> dict[str, Path]:
    """Model versions of a kind: :data:`SHIPPED` first, then the user's, sorted by name.

    Parameters
    ----------
    kind : {'cells', 'columns'}

    Returns
    -------
    dict of str to Path
        Name to weights file.
    """
    out = {SHIPPED: shipped_path(kind)}
    folder = user_models_dir() / kind
    if folder.is_dir():
        for path in sorted(folder.glob("*.pt"), key=lambda p: p.stem):
            if _NAME.match(path.stem) and path.stem.lower() != SHIPPED and not path.name.startswith("."):
                out[path.stem] = path
    return out


def model_path(kind: str, name: str) -> Path:
    """Weights file of a named model version.

    Raises
    ------
    KeyError
        No such version (the message lists the known ones).
    """
    models = list_models(kind)
    if name not in models:
        raise KeyError(f"no {kind} model named {name!r}; known: {', '.join(models)} "
                       f"(user models live in {user_models_dir() / kind})")
    return models[name]


def new_model_path(kind: str, name: str) -> Path:
    """Where a new model version called ``name`` goes (its folder is created).

    Raises
    ------
    ValueError
        A bad name, or :data:`SHIPPED`.
    FileExistsError
        A version of that name exists already.
    """
    name = validate_name(name)
    folder = user_models_dir() / _check_kind(kind)
    path = folder / f"{name}.pt"
    if path.exists():
        raise FileExistsError(f"a {kind} model named {name!r} exists already ({path}); choose another name")
    folder.mkdir(parents=True, exist_ok=True)
    return path


def model_card_path(weights: str | Path) -> Path:
    """The model card (``.md``) beside a weights file."""
    return Path(weights).with_suffix(".md")


def resolve_model(kind: str, name_or_path: str | Path | None) -> Path:
    """A weights file from a version name or a path (None: the shipped one).

    Raises
    ------
    KeyError
        Neither an existing file nor a known version name.
    """
    if name_or_path is None or str(name_or_path) == SHIPPED:
        return shipped_path(kind)
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    return model_path(kind, str(name_or_path))


__all__ = [
    "ENV_VAR", "MODEL_KINDS", "SHIPPED", "list_models", "model_card_path", "model_path", "new_model_path",
    "resolve_model", "shipped_path", "user_models_dir", "validate_name",
]
