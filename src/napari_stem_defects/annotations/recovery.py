"""Read what can be read from a damaged annotation file.

:func:`recover_annotations` is what the reader falls back on when
:func:`~.store.load_annotations` refuses a file (and what a person can call on
a file kept aside as ``.damaged-<time>``). It keeps every part that passes
the format's rules (:mod:`.schema`) and drops the rest, saying what it
dropped:

* a file **cut short** (a full disk, a copy interrupted) is closed after its
  last complete value, so everything written before the cut is read;
* a layer whose data or features cannot be decoded, or break a rule, is
  **salvaged**: columns that cannot be decoded or hold invalid values are
  dropped (the positions and the classes a person set are kept when they are
  valid), items at non-finite or far-away positions are dropped, metadata
  entries of the wrong type are dropped;
* a damaged ``image`` entry is replaced by the reference of the image being
  opened, when the caller gives one.

What cannot be trusted is never guessed: a layer without valid positions, or
a cells layer without valid classes, is not recovered.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import schema
from .strict_json import max_file_bytes, parse_json
from .store import FORMAT, KINDS, VERSION, Annotations, ImageReference, LayerAnnotation
from .tables import decode_array, decode_table

__all__ = ["close_truncated_json", "recover_annotations"]

_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*("|\Z)|[\[\]{},]', re.S)


def close_truncated_json(text: str) -> str | None:
    """JSON text cut short, closed after its last complete value; None when there is nothing to close.

    Examples
    --------
    >>> close_truncated_json('{"a": [1, 2, 3], "b": {"c": [4, 5')
    '{"a": [1, 2, 3], "b": {"c": [4]}}'
    """
    stack: list[str] = []
    last: tuple[int, str] | None = None
    for m in _TOKENS.finditer(text):
        token = m.group(0)
        if token.startswith('"'):
            if not m.group(1):  # an unterminated string: the cut is inside it
                break
            continue
        if token in "[{":
            stack.append("]" if token == "[" else "}")
        elif token in "]}":
            if not stack:
                return None
            stack.pop()
        elif stack:  # a comma: everything before it is complete
            last = (m.start(), "".join(reversed(stack)))
    if last is None:
        return None
    return text[: last[0]] + last[1]


def _parse(raw: bytes, notes: list[str]) -> Any:
    try:
        return parse_json(raw)
    except ValueError as exc:
        first = str(exc)
    try:
        text = raw.decode("utf-8", errors="replace")
        doc = json.loads(text)  # duplicated keys: the last one, as any JSON reader would take
        notes.append(f"read with a lenient parser ({first})")
        return doc
    except (ValueError, RecursionError):
        pass
    closed = close_truncated_json(raw.decode("utf-8", errors="replace"))
    if closed is None:
        return None
    try:
        doc = json.loads(closed)
    except (ValueError, RecursionError):
        return None
    notes.append("the file is cut short; what was written before the cut is read")
    return doc


def _salvage_table(entry: Any, n_rows: int, kind: str, notes: list[str]) -> pd.DataFrame | None:
    """The columns of a table entry that decode to ``n_rows`` values (the others dropped, with a note)."""
    if not isinstance(entry, dict):
        return None
    columns, dtypes, values = entry.get("columns"), entry.get("dtypes"), entry.get("values")
    if not (isinstance(columns, list) and isinstance(dtypes, list) and isinstance(values, list)):
        return None
    kept: dict[str, Any] = {}
    lost = []
    for k, name in enumerate(columns):
        if not isinstance(name, str) or name in kept or k >= len(dtypes) or k >= len(values):
            lost.append(str(name))
            continue
        one = {"n_rows": n_rows, "columns": [name], "dtypes": [dtypes[k]], "values": [values[k]],
               "categories": {name: (entry.get("categories") or {}).get(name)} if dtypes[k] == "category" else {}}
        try:
            kept[name] = decode_table(one)[name]
        except Exception:  # noqa: BLE001 - this column is lost, the others may not be
            lost.append(name)
    if lost:
        notes.append(f"{kind}: column(s) {', '.join(lost)} could not be read and were dropped")
    return pd.DataFrame(kept, index=pd.RangeIndex(n_rows))


def _salvage_layer(entry: Any, kind: str, shape: tuple[int, ...] | None, notes: list[str]) -> LayerAnnotation | None:
    """A layer from a damaged entry: valid positions and columns, or None."""
    if not isinstance(entry, dict):
        return None
    try:
        data = decode_array(entry["data"])
    except Exception:  # noqa: BLE001
        notes.append(f"{kind}: the positions could not be read; the layer is lost")
        return None
    if data.dtype.kind != "f" or data.ndim != (2 if kind == "sites" else 3):
        notes.append(f"{kind}: the positions are not float {'points' if kind == 'sites' else 'polygons'}; "
                     "the layer is lost")
        return None
    features = _salvage_table(entry.get("features"), len(data), kind, notes)
    if features is None:
        notes.append(f"{kind}: the table could not be read; the layer is lost")
        return None
    metadata = entry.get("metadata") if isinstance(entry.get("metadata"), dict) else {}
    for key in list(metadata):
        try:
            schema._check_metadata({key: metadata[key]}, kind)
        except ValueError:
            notes.append(f"{kind}: metadata entry {key!r} is invalid and was dropped")
            del metadata[key]
    name = entry.get("name") if isinstance(entry.get("name"), str) else kind
    layer = LayerAnnotation(kind, name, data, features, metadata)
    for _ in range(len(features.columns) + 2):
        try:
            schema.check_layer(layer, shape)
            return layer
        except ValueError as exc:
            message = str(exc)
        if "position" in message or "NaN or infinite" in message or "frame coordinates" in message:
            keep = _valid_rows(layer.data, shape)
            notes.append(f"{kind}: {int((~keep).sum())} item(s) at invalid positions were dropped")
            layer = LayerAnnotation(kind, name, layer.data[keep], layer.features[keep].reset_index(drop=True),
                                    metadata)
            continue
        repeated = re.search(r"repeat a (site_id|cell_id)", message)
        if repeated:
            features, n = schema.unique_ids(layer.features, repeated.group(1))
            notes.append(f"{kind}: {n} repeated {repeated.group(1)}(s) set to -1")
            layer = LayerAnnotation(kind, name, layer.data, features, metadata)
            continue
        column = re.search(r"column '([^']+)'", message)
        if column and column.group(1) == "class" and "class" in layer.features:
            ok = layer.features["class"].astype(object).isin(schema.CELL_CLASSES).to_numpy()
            if ok.any() and not ok.all():
                notes.append(f"{kind}: {int((~ok).sum())} cell(s) of an unknown class were dropped")
                layer = LayerAnnotation(kind, name, layer.data[ok], layer.features[ok].reset_index(drop=True),
                                        metadata)
                continue
        if column and column.group(1) in layer.features and column.group(1) != "class":
            notes.append(f"{kind}: column {column.group(1)!r} dropped ({message.split(': ', 1)[-1]})")
            layer = LayerAnnotation(kind, name, layer.data, layer.features.drop(columns=[column.group(1)]), metadata)
            continue
        notes.append(f"{kind}: {message}; the layer is lost")
        return None
    return None


def _valid_rows(data: np.ndarray, shape: tuple[int, ...] | None) -> np.ndarray:
    flat = data.reshape(len(data), -1)
    keep = np.isfinite(flat).all(axis=1)
    if shape is not None and len(data):
        size = np.asarray(shape[-2:], float)
        yx = data[..., -2:].reshape(len(data), -1, 2)
        lo, hi = -schema.POSITION_MARGIN * size, (schema.POSITION_MARGIN + 1) * size
        with np.errstate(invalid="ignore"):
            keep &= ((yx >= lo) & (yx <= hi)).all(axis=(1, 2))
            if len(shape) == 3 and data.shape[-1] == 3:
                t = data[..., 0].reshape(len(data), -1)
                keep &= ((t > -0.5) & (t < shape[0] - 0.5)).all(axis=1)
    return keep


def recover_annotations(path: str | os.PathLike, image: ImageReference | None = None
                        ) -> tuple[Annotations | None, list[str]]:
    """What can be read from a damaged annotation file, and notes on what could not.

    Parameters
    ----------
    path : str or Path
        The annotation file (or a copy kept aside as ``.damaged-<time>``).
    image : ImageReference, optional
        The image being opened: used when the file's own image entry is
        damaged (positions are then taken as pixels of this image).

    Returns
    -------
    annotations : Annotations or None
        The parts that pass the format's rules; None when nothing could be
        recovered (not an annotation file, no usable image reference or layer).
    notes : list of str
        What was dropped or repaired, one sentence each.
    """
    notes: list[str] = []
    p = Path(path)
    try:
        if p.stat().st_size > max_file_bytes():
            return None, ["the file is too large to be an annotation file"]
        raw = p.read_bytes()
    except OSError as exc:
        return None, [f"the file cannot be read ({exc})"]
    doc = _parse(raw, notes)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        return None, notes + ["not a napari-stem-defects annotation file"]
    version = doc.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > VERSION:
        return None, notes + [f"written by a newer version (file version {version}); update the plugin"]
    ref = None
    try:
        schema.check_image_entry(doc.get("image"))
        ref = ImageReference.from_dict(doc["image"])
        ref.file = None if ref.file is None else os.path.abspath(p.parent / ref.file)
    except Exception as exc:  # noqa: BLE001
        if image is None:
            return None, notes + [f"the image entry is damaged ({exc})"]
        notes.append(f"the image entry is damaged ({exc}); the layers are placed on the opened image")
        ref = image
    material = doc.get("material")
    if material is not None:
        try:
            schema.check_annotations(Annotations(ref, material, None, None))
        except (ValueError, TypeError):
            notes.append(f"the material {material!r:.40} is not valid and was dropped")
            material = None
    layers: dict[str, LayerAnnotation | None] = {}
    for kind in KINDS:
        entry = doc.get(kind)
        layers[kind] = None
        if entry is None:
            continue
        try:
            schema.check_layer_entry(entry, kind)
            layer = LayerAnnotation.from_dict(entry)
            schema.check_layer(layer, tuple(ref.shape))
            layers[kind] = layer
        except Exception as exc:  # noqa: BLE001 - salvage what can be
            notes.append(f"{kind}: {exc}")
            layers[kind] = _salvage_layer(entry, kind, tuple(ref.shape), notes)
    if layers["sites"] is None and layers["cells"] is None:
        return None, notes + ["no layer could be recovered"]
    saved = {k: doc.get(k) if isinstance(doc.get(k), str) else None for k in ("saved_at", "saved_by", "software")}
    return Annotations(ref, material, layers["sites"], layers["cells"], **saved), notes
