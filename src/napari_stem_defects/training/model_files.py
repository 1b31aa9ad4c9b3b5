"""Writing a fine-tuned model: where it may go, what its metadata records, and its card's shared parts.

Every fine-tuned model (:mod:`napari_stem_defects.training.finetune`,
:mod:`napari_stem_defects.training.finetune_columns`) is written the same way:
never into the packaged models folder nor over an existing file unless asked
(:func:`check_out`), weights and model card atomically (:func:`write_model`),
with the provenance of :func:`base_provenance` and a card that starts with
:func:`card_provenance_lines` and lists its training sets with
:func:`card_dataset_lines`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..io.atomic import atomic_write, atomic_write_text, json_default
from ..provenance import provenance


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def plain(obj: Any) -> Any:
    """Plain python (for a weights_only-loadable file and JSON): numpy values become python ones."""
    return json.loads(json.dumps(obj, default=json_default))


def check_out(out: Path, overwrite: bool = False) -> Path:
    """The weights file to write (``.pt`` added if missing), checked before any training.

    Raises
    ------
    ValueError
        The path is inside the packaged models folder (the shipped models are never overwritten).
    FileExistsError
        The file exists and ``overwrite`` is False.
    """
    from ..network_io import packaged_weights_path

    shipped_dir = packaged_weights_path("x").parent.resolve()
    target = out.expanduser()
    if target.suffix != ".pt":
        target = target.with_suffix(".pt") if target.suffix == "" else target.with_name(target.name + ".pt")
    if target.resolve().parent == shipped_dir:
        raise ValueError(f"{target} is inside the packaged models folder; the shipped models are never "
                         "overwritten. Choose another path, or a model name (--name)")
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists already; a trained model is never replaced without asking. "
                              "Choose another path, or give --overwrite to replace it")
    return target


def base_provenance(kind: str, name: str | None, target: Path, base_meta: dict[str, Any], base_path: Path,
                    command: str | None) -> dict[str, Any]:
    """Metadata entries every fine-tuned model carries: what it is, what it started from, who made it."""
    return {
        "kind": kind,
        "name": name or target.stem,
        "base_model": "shipped",
        "base_file": base_path.name,
        "base_sha256": file_sha256(base_path),
        "base_metadata": {k: v for k, v in base_meta.items() if k not in ("history",)},
        **provenance(),
        "command": command,
    }


def write_model(model: Any, target: Path, meta: dict[str, Any], card_text: str) -> Path:
    """Write the model card (``.md``) and the weights atomically; return the card's path.

    Raises
    ------
    ValueError
        The weights hold NaN or infinite values (the training diverged); nothing is written.
    """
    from ..network_io import save_weights

    import torch

    bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"the trained weights hold NaN or infinite values ({', '.join(bad[:3])}...): the training "
                         "diverged (check the training set and the learning rate); nothing was written")
    card = target.with_suffix(".md")
    atomic_write_text(card, card_text)
    atomic_write(target, lambda tmp: save_weights(model, tmp, meta))
    return card


#: Per-image manifest entries a cell model's card records of each training set.
CELL_IMAGE_KEYS = ("name", "source_file", "sha256", "material", "pixel_size_A", "n_exported", "n_verified")


def dataset_summary(manifest: dict[str, Any], image_keys: Sequence[str] = CELL_IMAGE_KEYS,
                    totals: bool = True) -> dict[str, Any]:
    """What a fine-tuned model's card records of one training set: where and when it was made, by
    whom, the ``image_keys`` entries of each image and (with ``totals``) the set's totals."""
    out = {
        "path": manifest.get("path"),
        "created": manifest.get("created"),
        "created_by": manifest.get("created_by"),
        "images": [{k: e.get(k) for k in image_keys} for e in manifest.get("images", [])],
    }
    if totals:
        out["totals"] = manifest.get("totals")
    return out


def card_provenance_lines(meta: dict[str, Any]) -> list[str]:
    """The model card's base model, creation and command lines (markdown list items)."""
    return [
        f"- **Base model**: the shipped `{meta['base_file']}` (sha256 `{meta['base_sha256'][:16]}...`); "
        "fine-tuning always starts from it, never from an earlier fine-tuned model.",
        f"- **Created**: {meta['created']} by {meta.get('created_by') or 'unknown'} with {meta['software']}",
        f"- **Command**: `{meta['command']}`" if meta.get("command") else "- **Command**: (not recorded)",
    ]


def card_dataset_lines(meta: dict[str, Any], image_line: Callable[[dict[str, Any]], str]) -> list[str]:
    """The model card's list of training sets, each with one ``image_line(image)`` per image."""
    lines = []
    for d in meta["datasets"]:
        lines.append(f"- `{d['path']}` (created {d.get('created')} by {d.get('created_by')})")
        lines += [f"  - {image_line(img)}" for img in d["images"]]
    return lines
