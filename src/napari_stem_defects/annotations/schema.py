"""The rules an annotation file must follow, checked when it is read and before it is written.

:mod:`.store` reads and writes annotation files; this module says whether
their content makes sense, so that a damaged or hand-edited file is refused
with a message instead of being applied (a NaN translate, points at 1e308, a
class "banana") or crashing the reader (``n_rows: 1e400``, arrays nested
100000 deep, a 5000-digit version). Every function raises ``ValueError``
with a message that says what is wrong and where; :mod:`.store` adds the
file name.

Three layers of checks:

1. :func:`~.strict_json.parse_json` (in :mod:`.strict_json`): strict JSON: UTF-8, no key twice in one object (the
   last one would win in silence), no nesting deeper than the format needs,
   no number too long to convert.
2. :func:`check_document`: the file's structure before anything is decoded:
   types of every entry, integer counts, finite positive scales, the shapes
   of arrays and the lengths of table columns.
3. :func:`check_annotations`: the decoded annotations against the format's
   own rules: positions finite and near the image, float positions (integer
   ones would have truncated sub-pixel positions), four corners per cell,
   unique column names and ids, known classes, sublattices and species,
   probabilities in [0, 1], a material the plugin can parse, and metadata
   the layers are drawn from (lattice vectors, thresholds) of the right type.

Unknown extra columns and metadata keys are allowed (later versions add
them); known ones must be right.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..simulate.defects import CELL_CLASSES, SITE_DEFECTS
from ..vocabulary import INCOMPLETE, PHASES

__all__ = ["check_annotations", "check_document", "check_header", "check_layer", "unique_ids"]

#: Positions may lie this many image sizes outside the image (points added off the image).
POSITION_MARGIN = 4
#: Site sublattices.
SUBLATTICES = ("M", "X", "H")
#: Species labels that are not formulas.
SPECIAL_SPECIES = ("", "empty", "adatom")
#: Feature columns that hold probabilities.
PROBABILITY_COLUMNS = ("probability", "confidence")

_ELEMENTS = frozenset((
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr Rb Sr Y "
    "Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu Hf Ta W Re "
    "Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md No Lr Rf Db Sg Bh Hs Mt Ds Rg "
    "Cn Nh Fl Mc Lv Ts Og").split())
_FORMULA = re.compile(r"(?:[A-Z][a-z]?\d*(?:\.\d+)?)+")
_PLACEHOLDER = re.compile(r"[MXH]\d+")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_FLOAT_DTYPES = ("float32", "float64")


def check_header(doc: Any, fmt: str, version: int) -> None:
    """The ``format`` and ``version`` entries: this format, a version this plugin reads.

    Examples
    --------
    >>> check_header({"format": "x", "version": 2}, "x", 1)
    Traceback (most recent call last):
    ...
    ValueError: written by a newer napari-stem-defects (file version 2; this one reads up to version 1); update the plugin to open it
    """
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ValueError(f"not a napari-stem-defects annotation file (format {found!r:.60}, expected {fmt!r})")
    found = doc.get("version")
    if not _is_int(found) or found < 1:
        raise ValueError(f"unknown annotation file version {found!r:.40}")
    if found > version:
        raise ValueError(f"written by a newer napari-stem-defects (file version {found}; this one reads up to "
                         f"version {version}); update the plugin to open it")


# --------------------------------------------------------------------------- the document


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _need(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


def _check_vector(value: Any, name: str, n: int, *, positive: bool = False) -> None:
    _need(isinstance(value, list) and len(value) == n, f"image.{name} must be a list of {n} numbers, not {value!r:.80}")
    for v in value:
        _need(_is_number(v) and math.isfinite(v), f"image.{name} holds {v!r:.40}, not a finite number")
        if positive:
            _need(v > 0, f"image.{name} holds {v!r}: a scale must be positive (a zero or negative scale "
                         "would collapse or flip the image)")


def check_image_entry(image: Any) -> None:
    """The ``image`` entry: types, a 2D or 3D positive shape, a numeric dtype, finite positive scales."""
    _need(isinstance(image, dict), f"the 'image' entry must be an object, not {type(image).__name__}")
    for key in ("file", "name", "shape", "dtype", "sha256", "scale", "units", "translate"):
        _need(key in image, f"missing entry 'image.{key}'")
    _need(image["file"] is None or isinstance(image["file"], str), "image.file must be a path or null")
    _need(isinstance(image["name"], str), "image.name must be text")
    shape = image["shape"]
    _need(isinstance(shape, list) and len(shape) in (2, 3) and all(_is_int(s) and 1 <= s < 2**31 for s in shape),
          f"image.shape must be 2 or 3 positive whole numbers, not {shape!r:.80}")
    try:
        dtype = np.dtype(image["dtype"]) if isinstance(image["dtype"], str) else None
    except (TypeError, ValueError):
        dtype = None
    _need(dtype is not None and dtype.kind in "biuf", f"image.dtype {image['dtype']!r:.40} is not a numeric dtype")
    _need(isinstance(image["sha256"], str) and bool(_HEX64.fullmatch(image["sha256"])),
          "image.sha256 must be 64 hexadecimal digits")
    n = len(shape)
    _check_vector(image["scale"], "scale", n, positive=True)
    _check_vector(image["translate"], "translate", n)
    units = image["units"]
    _need(isinstance(units, list) and len(units) == n and all(isinstance(u, str) for u in units),
          f"image.units must be a list of {n} texts")


def _check_array_entry(entry: Any, where: str, ndim: int) -> None:
    _need(isinstance(entry, dict), f"{where} must be an array object")
    for key in ("dtype", "shape", "values"):
        _need(key in entry, f"{where} has no '{key}'")
    _need(entry["dtype"] in _FLOAT_DTYPES, f"{where} has dtype {entry['dtype']!r:.40}; positions are floats "
                                           f"({' or '.join(_FLOAT_DTYPES)}): whole-number positions would lose "
                                           "the sub-pixel part")
    shape = entry["shape"]
    _need(isinstance(shape, list) and len(shape) == ndim and all(_is_int(s) and 0 <= s < 2**31 for s in shape),
          f"{where} must have a shape of {ndim} whole numbers, not {shape!r:.80}")
    _need(isinstance(entry["values"], list), f"{where} values must be a list")


def _check_table_entry(entry: Any, where: str) -> int:
    _need(isinstance(entry, dict), f"{where} must be a table object")
    for key in ("n_rows", "columns", "dtypes", "values"):
        _need(key in entry, f"{where} has no '{key}'")
    n_rows = entry["n_rows"]
    _need(_is_int(n_rows) and 0 <= n_rows < 2**31, f"{where}.n_rows must be a whole number, not {n_rows!r:.40}")
    columns, dtypes, values = entry["columns"], entry["dtypes"], entry["values"]
    _need(isinstance(columns, list) and all(isinstance(c, str) for c in columns),
          f"{where}.columns must be a list of names")
    duplicated = sorted({c for c in columns if columns.count(c) > 1}) if len(set(columns)) < len(columns) else []
    _need(not duplicated, f"{where} has the column(s) {', '.join(map(repr, duplicated))} twice")
    _need(isinstance(dtypes, list) and len(dtypes) == len(columns) and all(isinstance(d, str) for d in dtypes),
          f"{where}.dtypes must name one dtype per column")
    _need(isinstance(values, list) and len(values) == len(columns), f"{where}.values must hold one list per column")
    for name, vals in zip(columns, values):
        _need(isinstance(vals, list) and len(vals) == n_rows,
              f"{where}: column {name!r} has {len(vals) if isinstance(vals, list) else 'no'} values for "
              f"{n_rows} rows")
    _need(isinstance(entry.get("categories", {}), dict), f"{where}.categories must be an object")
    return n_rows


def check_layer_entry(entry: Any, kind: str) -> None:
    """One ``sites``/``cells`` entry before decoding: kind, name, data array, features table, metadata object."""
    where = kind
    _need(isinstance(entry, dict), f"the {kind!r} entry must be an object or null")
    for key in ("kind", "name", "data", "features"):
        _need(key in entry, f"missing entry '{kind}.{key}'")
    _need(entry["kind"] == kind, f"the {kind!r} entry holds a {entry['kind']!r:.40} layer")
    _need(isinstance(entry["name"], str), f"{where}.name must be text")
    _check_array_entry(entry["data"], f"{where}.data", 2 if kind == "sites" else 3)
    n_rows = _check_table_entry(entry["features"], f"{where}.features")
    n_data = entry["data"]["shape"][0]
    _need(n_data == n_rows, f"{where}: {n_data} items in data but {n_rows} rows of features")
    _need(entry.get("metadata") is None or isinstance(entry.get("metadata"), dict), f"{where}.metadata must be an object")


def check_document(doc: Any) -> None:
    """An annotation file's parsed JSON before decoding (everything but ``format`` and ``version``).

    Raises
    ------
    ValueError
        A missing or mistyped entry; the message says which.
    """
    for key in ("image", "material", "sites", "cells"):
        _need(key in doc, f"missing entry {key!r}")
    check_image_entry(doc["image"])
    material = doc["material"]
    _need(material is None or isinstance(material, str), f"material must be a name like 'MoS2' or null, not "
                                                         f"{material!r:.40}")
    for key in ("saved_at", "saved_by", "software"):
        _need(doc.get(key) is None or isinstance(doc.get(key), str), f"{key} must be text or null")
    for kind in ("sites", "cells"):
        if doc[kind] is not None:
            check_layer_entry(doc[kind], kind)


# --------------------------------------------------------------------------- decoded annotations


def _valid_species(value: str) -> bool:
    if value in SPECIAL_SPECIES or _PLACEHOLDER.fullmatch(value):
        return True
    if not _FORMULA.fullmatch(value):
        return False
    return all(symbol in _ELEMENTS for symbol in re.findall(r"[A-Z][a-z]?", value))


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _check_labels(column: pd.Series, name: str, allowed: Any, where: str, *, missing_ok: bool = True) -> None:
    bad = []
    for v in pd.unique(column.astype(object)):
        if _missing(v):
            if not missing_ok:
                bad.append(v)
        elif not isinstance(v, str) or not allowed(v):
            bad.append(v)
    if bad:
        shown = ", ".join(repr(b) for b in bad[:5])
        raise ValueError(f"{where}: column {name!r} holds {shown}, not a valid value")


def _numeric(column: pd.Series, name: str, where: str) -> np.ndarray:
    try:
        return pd.to_numeric(column, errors="raise").to_numpy(dtype=float, na_value=np.nan)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: column {name!r} must hold numbers") from None


def _repeated(features: pd.DataFrame, name: str) -> np.ndarray:
    """Rows whose non-negative id (per frame, when there is a ``frame`` column) an earlier row has."""
    keys = pd.DataFrame({"id": features[name].to_numpy()})
    if "frame" in features:
        keys["frame"] = features["frame"].to_numpy()
    return (keys["id"].to_numpy() >= 0) & keys.duplicated().to_numpy()


def unique_ids(features: pd.DataFrame, name: str) -> tuple[pd.DataFrame, int]:
    """``features`` with ids that repeat an earlier row's set to -1 (items a person added, e.g. pasted).

    Returns
    -------
    features : DataFrame
        A copy when something changed.
    n : int
        How many ids were set to -1.

    Examples
    --------
    >>> out, n = unique_ids(pd.DataFrame({"site_id": [0, 1, 1, -1, -1]}), "site_id")
    >>> out["site_id"].tolist(), n
    ([0, 1, -1, -1, -1], 1)
    """
    if name not in features or features[name].dtype.kind not in "iu":
        return features, 0
    repeated = _repeated(features, name)
    if not repeated.any():
        return features, 0
    out = features.copy()
    out.loc[repeated, name] = -1
    return out, int(repeated.sum())


def _check_ids(features: pd.DataFrame, name: str, where: str) -> None:
    ids = features[name]
    _need(ids.dtype.kind in "iu", f"{where}: column {name!r} must hold whole numbers, not {ids.dtype}")
    dup = _repeated(features, name)  # -1: an item a person added
    if dup.any():
        raise ValueError(f"{where}: {int(dup.sum())} row(s) repeat a {name} (e.g. {int(ids[dup].iloc[0])}); each "
                         "site or cell is saved once")


def _check_features(features: pd.DataFrame, kind: str, where: str, n_frames: int | None) -> None:
    columns = list(features.columns)
    _need(all(isinstance(c, str) for c in columns), f"{where}: column names must be text")
    _need(len(set(columns)) == len(columns), f"{where}: a column name appears twice")
    cols = set(columns)
    if kind == "sites" and cols & {"species", "sublattice"}:
        lost = {"species", "sublattice"} - cols
        _need(not lost, f"{where}: a sites table with species or sublattices needs both; "
                        f"{', '.join(sorted(lost))} is missing (renamed?)")
    if kind == "cells" and columns:
        _need("class" in cols, f"{where}: a cells table needs a 'class' column (renamed or lost?)")
    if "class" in cols:
        _check_labels(features["class"], "class", lambda v: v in CELL_CLASSES or v == INCOMPLETE, where,
                      missing_ok=False)
    if "sublattice" in cols:
        _check_labels(features["sublattice"], "sublattice", lambda v: v in SUBLATTICES, where)
    if "defect" in cols:
        _check_labels(features["defect"], "defect", lambda v: v in SITE_DEFECTS or v == "", where)
    if "phase" in cols:
        _check_labels(features["phase"], "phase", lambda v: v in PHASES, where)
    for name in ("species", "m_species", "x_species", "x2_species"):
        if name in cols:
            _check_labels(features[name], name, _valid_species, where)
    for name in [c for c in columns if c in PROBABILITY_COLUMNS or c.startswith("p_")]:
        values = _numeric(features[name], name, where)
        bad = ~np.isnan(values) & ~((values >= 0) & (values <= 1))
        if bad.any():
            raise ValueError(f"{where}: column {name!r} holds {values[bad][0]!r}, not a probability in [0, 1]")
    for name in ("verified", "detected", "complete", "adatom", "boundary"):
        if name in cols:
            _need(features[name].dtype.kind == "b" or all(isinstance(v, (bool, np.bool_)) for v in features[name]),
                  f"{where}: column {name!r} must hold true/false")
    if "frame" in cols:
        frames = features["frame"]
        _need(frames.dtype.kind in "iu", f"{where}: column 'frame' must hold whole numbers")
        if len(frames) and n_frames is not None:
            _need(0 <= int(frames.min()) and int(frames.max()) < n_frames,
                  f"{where}: frames {int(frames.min())}..{int(frames.max())} lie outside the image's {n_frames}")
    for name in ("site_id", "cell_id"):
        if name in cols:
            _check_ids(features, name, where)


def _check_metadata(metadata: Mapping[str, Any], where: str) -> None:
    """The metadata entries the layers are drawn from: lattice vectors, spacing, confidence threshold."""
    def finite_vector(value: Any, key: str) -> None:
        ok = isinstance(value, (list, tuple)) and 2 <= len(value) <= 3 and all(
            _is_number(v) and math.isfinite(v) for v in value)
        _need(ok, f"{where}.metadata.{key} must be 2 or 3 finite numbers, not {value!r:.60}")

    for key in ("a1_px", "a2_px"):
        if metadata.get(key) is not None:
            finite_vector(metadata[key], key)
    low = metadata.get("low_confidence")
    if low is not None:
        _need(isinstance(low, Mapping), f"{where}.metadata.low_confidence must be an object")
        t = low.get("threshold", 0.8)
        _need(_is_number(t) and 0 <= t <= 1, f"{where}.metadata.low_confidence.threshold must be a number in "
                                             f"[0, 1], not {t!r:.40}")
    params = metadata.get("parameters")
    if params is not None:
        _need(isinstance(params, Mapping), f"{where}.metadata.parameters must be an object")
        nn = params.get("nn_px")
        _need(nn is None or (_is_number(nn) and math.isfinite(nn) and nn > 0),
              f"{where}.metadata.parameters.nn_px must be a positive number, not {nn!r:.40}")
        for key in ("a1_px", "a2_px"):
            if params.get(key) is not None:
                finite_vector(params[key], f"parameters.{key}")
        frames = params.get("frames")
        _need(frames is None or isinstance(frames, Mapping), f"{where}.metadata.parameters.frames must be an object")
        for key, frame in (frames or {}).items():
            nn = frame.get("nn_px") if isinstance(frame, Mapping) else None
            _need(nn is None or (_is_number(nn) and math.isfinite(nn) and nn > 0),
                  f"{where}.metadata.parameters.frames.{key}.nn_px must be a positive number, not {nn!r:.40}")


def check_layer(layer: Any, image_shape: Sequence[int] | None) -> None:
    """One decoded layer (:class:`~.store.LayerAnnotation`) against the format's rules.

    Parameters
    ----------
    layer : LayerAnnotation
        Sites (points) or cells (polygons).
    image_shape : sequence of int, optional
        The annotated image's shape (positions are checked against it).

    Raises
    ------
    ValueError
    """
    where = layer.kind
    data = np.asarray(layer.data)
    _need(data.dtype.kind == "f", f"{where}: positions must be floats, not {data.dtype} (whole-number positions "
                                  "would lose the sub-pixel part)")
    if layer.kind == "sites":
        _need(data.ndim == 2 and data.shape[1] in (2, 3), f"{where}: points must be (N, 2) or (N, 3), not {data.shape}")
    else:
        _need(data.ndim == 3 and data.shape[1] == 4 and data.shape[2] in (2, 3),
              f"{where}: cells must be polygons of 4 corners, (N, 4, 2) or (N, 4, 3), not {data.shape}")
    _need(len(data) == len(layer.features), f"{where}: {len(data)} items in data but {len(layer.features)} rows")
    if data.size:
        bad = ~np.isfinite(data)
        if bad.any():
            raise ValueError(f"{where}: {int(bad.any(axis=tuple(range(1, data.ndim))).sum())} item(s) at "
                             "NaN or infinite positions")
    n_frames = None
    if image_shape is not None and data.size:
        size = np.asarray(image_shape[-2:], dtype=float)
        yx = data[..., -2:].reshape(-1, 2)
        lo, hi = -POSITION_MARGIN * size, (POSITION_MARGIN + 1) * size
        far = ((yx < lo) | (yx > hi)).any(axis=1)
        if far.any():
            raise ValueError(f"{where}: {int(far.sum())} position(s) lie far outside the {int(size[0])} x "
                             f"{int(size[1])} image (e.g. {tuple(float(v) for v in yx[far][0])})")
        if len(image_shape) == 3:
            n_frames = int(image_shape[0])
            if data.shape[-1] == 3:
                t = data[..., 0]
                _need(bool(((t > -0.5) & (t < n_frames - 0.5)).all()),
                      f"{where}: frame coordinates outside the image's {n_frames} frames")
    _check_features(layer.features, layer.kind, where, n_frames)
    _need(isinstance(layer.metadata, Mapping), f"{where}.metadata must be an object")
    from .json_text import jsonable  # what is written: numpy values as plain ones

    _check_metadata(jsonable(dict(layer.metadata)), where)


def check_annotations(ann: Any) -> None:
    """Decoded annotations (:class:`~.store.Annotations`) against the format's rules.

    Raises
    ------
    ValueError
        The first rule broken; the message says which and where.
    """
    from ..materials import parse_material

    ref = ann.image
    shape = tuple(ref.shape)
    _need(len(shape) in (2, 3) and all(int(s) >= 1 for s in shape), f"image.shape {shape} is not an image's shape")
    n = len(shape)
    for name, values, positive in (("scale", ref.scale, True), ("translate", ref.translate, False)):
        _need(len(values) == n, f"image.{name} has {len(values)} values for a {n}D image")
        for v in values:
            _need(math.isfinite(float(v)) and (float(v) > 0 or not positive),
                  f"image.{name} holds {v!r}, not a finite{' positive' if positive else ''} number")
    _need(len(ref.units) == n, f"image.units has {len(ref.units)} values for a {n}D image")
    if ann.material is not None:
        _need(isinstance(ann.material, str), f"material {ann.material!r} is not a material name")
        try:
            parse_material(ann.material)
        except Exception as exc:  # noqa: BLE001 - any parse failure means "not a material"
            raise ValueError(f"material {ann.material!r:.40} is not a material this plugin knows ({exc})") from None
    for layer in ann.layers():
        check_layer(layer, shape)
