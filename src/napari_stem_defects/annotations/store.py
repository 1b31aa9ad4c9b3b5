"""Save and load a person's annotations of one image: one versioned, readable JSON file.

The file sits next to the image, named after it (:func:`sidecar_path`:
``scan.dm4`` -> ``scan.dm4.annotations.json``), and is written atomically (a
temporary file renamed over the old one), so a crash mid-save leaves the
previous file as it was; a file that could not be read is never overwritten
but kept aside (:mod:`.safekeeping`). Layout (version 1)::

    {
     "format": "napari-stem-defects annotations",
     "version": 1,
     "saved_at": "2025-01-31T12:00:00+00:00", "saved_by": "alice",
     "software": "napari-stem-defects 0.1.0",
     "image": {"file": "scan.dm4", "name": ..., "shape": [512, 512], "dtype": "float32",
               "sha256": ..., "scale": [0.12, 0.12], "units": ["angstrom", "angstrom"],
               "translate": [0.0, 0.0]},
     "material": "MoS2",
     "sites": {"kind": "sites", "name": ..., "data": ARRAY, "features": TABLE, "metadata": {...}},
     "cells": {"kind": "cells", "name": ..., "data": ARRAY, "features": TABLE, "metadata": {...}}
    }

``ARRAY`` and ``TABLE`` are the lossless encodings of :mod:`.tables` (points
in pixels, (N, 2) or (frame, y, x); cell polygons (N, 4, 2) in pixels);
what may be in them is checked on reading and before writing (:mod:`.schema`);
``sites`` or ``cells`` may be ``null``. ``image.file`` is relative to the
annotation file's folder when the image lies in it (or below it), else
absolute; :func:`load_annotations` returns it as an absolute path. Metadata is
kept where it is JSON-able (numpy values as plain numbers, paths as strings);
other values are dropped.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..io.atomic import atomic_write_text
from ..provenance import current_user, now_iso, software
from .json_text import dumps_document, jsonable, same_json
from .schema import check_annotations, check_document, check_header
from .strict_json import check_size, parse_json
from .tables import decode_array, decode_table, encode_array, encode_table

__all__ = [
    "FORMAT", "SIDECAR_SUFFIX", "VERSION", "AnnotationFileError", "Annotations", "ImageReference",
    "LayerAnnotation", "image_sha256", "load_annotations", "save_annotations", "sidecar_path",
]

#: The ``format`` entry of every annotation file.
FORMAT = "napari-stem-defects annotations"
#: Version of the layout written; files of a higher version are refused.
VERSION = 1
#: Appended to the image file's name to name its annotation file.
SIDECAR_SUFFIX = ".annotations.json"
#: Layer kinds an annotation file holds.
KINDS = ("sites", "cells")


class AnnotationFileError(ValueError):
    """An annotation file cannot be read: not JSON, another format, a newer version, or missing parts.

    The message names the file and says why.
    """


@dataclass
class ImageReference:
    """Which image the annotations belong to, and its calibration.

    Parameters
    ----------
    file : str or None
        The image file (on disk: relative to the annotation file's folder
        when inside it, else absolute; after loading: absolute). None for an
        image without a file.
    name : str
        Layer name of the image.
    shape : tuple of int
        Image shape.
    dtype : str
        Image dtype (numpy name).
    sha256 : str
        :func:`image_sha256` of the image.
    scale, units, translate : tuple
        The image layer's calibration, one entry per axis.
    """

    file: str | None
    name: str
    shape: tuple[int, ...]
    dtype: str
    sha256: str
    scale: tuple[float, ...]
    units: tuple[str, ...]
    translate: tuple[float, ...]

    @classmethod
    def from_array(
        cls,
        image: np.ndarray,
        *,
        name: str,
        file: str | os.PathLike | None = None,
        scale: tuple[float, ...] | None = None,
        units: tuple[str, ...] | None = None,
        translate: tuple[float, ...] | None = None,
    ) -> ImageReference:
        """A reference to ``image``: shape, dtype and hash from the array, calibration as given.

        Missing ``scale``/``units``/``translate`` default to 1, ``"pixel"`` and 0 per axis.
        """
        arr = np.asarray(image)
        n = arr.ndim
        return cls(
            file=None if file is None else str(file),
            name=str(name),
            shape=tuple(int(s) for s in arr.shape),
            dtype=str(arr.dtype),
            sha256=image_sha256(arr),
            scale=tuple(float(s) for s in (scale if scale is not None else (1.0,) * n)),
            units=tuple(str(u) for u in (units if units is not None else ("pixel",) * n)),
            translate=tuple(float(t) for t in (translate if translate is not None else (0.0,) * n)),
        )

    def to_dict(self) -> dict[str, Any]:
        """The reference as JSON values."""
        return {"file": self.file, "name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                "sha256": self.sha256, "scale": list(self.scale), "units": list(self.units),
                "translate": list(self.translate)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImageReference:
        """Inverse of :meth:`to_dict`."""
        return cls(
            file=None if d["file"] is None else str(d["file"]),
            name=str(d["name"]),
            shape=tuple(int(s) for s in d["shape"]),
            dtype=str(d["dtype"]),
            sha256=str(d["sha256"]),
            scale=tuple(float(s) for s in d["scale"]),
            units=tuple(str(u) for u in d["units"]),
            translate=tuple(float(t) for t in d["translate"]),
        )

    @property
    def calibrated(self) -> bool:
        """True when the spatial axes have a physical unit (not ``"pixel"``)."""
        return bool(self.units) and all(u not in ("pixel", "px", "") for u in self.units[-2:])


@dataclass
class LayerAnnotation:
    """One annotated layer: sites (Points) or cells (Shapes).

    Parameters
    ----------
    kind : {'sites', 'cells'}
        What the layer holds.
    name : str
        Layer name.
    data : ndarray
        Points (N, 2) or (N, 3) in pixels, or cell polygons (N, 4, 2) in pixels.
    features : DataFrame
        One row per point or cell.
    metadata : dict
        The layer's metadata (JSON-able parts are saved).
    """

    kind: str
    name: str
    data: np.ndarray
    features: pd.DataFrame
    metadata: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """Raise ValueError when the kind is unknown or data and features disagree in length."""
        if self.kind not in KINDS:
            raise ValueError(f"layer kind must be one of {KINDS}, not {self.kind!r}")
        if len(self.data) != len(self.features):
            raise ValueError(f"{self.kind} layer {self.name!r}: {len(self.data)} items in data but "
                             f"{len(self.features)} rows of features")

    def to_dict(self) -> dict[str, Any]:
        """The layer as JSON values (lossless data and features)."""
        self.check()
        return {"kind": self.kind, "name": str(self.name), "data": encode_array(np.asarray(self.data)),
                "features": encode_table(self.features), "metadata": jsonable(dict(self.metadata))}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LayerAnnotation:
        """Inverse of :meth:`to_dict`."""
        layer = cls(kind=str(d["kind"]), name=str(d["name"]), data=decode_array(d["data"]),
                    features=decode_table(d["features"]), metadata=dict(d.get("metadata") or {}))
        layer.check()
        return layer

    def equals(self, other: LayerAnnotation | None) -> bool:
        """Exactly equal: kind, name, data (dtype and shape too), features (dtypes too), JSON-able metadata."""
        if other is None:
            return False
        if (self.kind, self.name) != (other.kind, other.name):
            return False
        a, b = np.asarray(self.data), np.asarray(other.data)
        if a.dtype != b.dtype or a.shape != b.shape or not np.array_equal(a, b, equal_nan=a.dtype.kind == "f"):
            return False
        try:
            pd.testing.assert_frame_equal(self.features.reset_index(drop=True),
                                          other.features.reset_index(drop=True), check_exact=True)
        except AssertionError:
            return False
        return same_json(self.metadata, other.metadata)


@dataclass
class Annotations:
    """Everything saved for one image: its reference, material, sites and cells, and provenance.

    Parameters
    ----------
    image : ImageReference
        The image annotated.
    material : str or None
        Host material (``"MoS2"``...).
    sites, cells : LayerAnnotation or None
        The sites (Points) and cells (Shapes) layers.
    saved_at : str, optional
        ISO 8601 time of the last save.
    saved_by : str, optional
        User name of the last save.
    software : str, optional
        ``"napari-stem-defects <version>"`` that saved it.
    """

    image: ImageReference
    material: str | None
    sites: LayerAnnotation | None
    cells: LayerAnnotation | None
    saved_at: str | None = None
    saved_by: str | None = None
    software: str | None = None

    def layers(self) -> list[LayerAnnotation]:
        """The layers present: sites then cells."""
        return [layer for layer in (self.sites, self.cells) if layer is not None]

    def equals(self, other: Annotations) -> bool:
        """Exactly equal (see :meth:`LayerAnnotation.equals`), provenance included."""
        if not isinstance(other, Annotations):
            return False
        if (self.image != other.image or self.material != other.material
                or (self.saved_at, self.saved_by, self.software) != (other.saved_at, other.saved_by, other.software)):
            return False
        for mine, theirs in ((self.sites, other.sites), (self.cells, other.cells)):
            if (mine is None) != (theirs is None) or (mine is not None and not mine.equals(theirs)):
                return False
        return True

    def to_dict(self, folder: str | os.PathLike | None = None) -> dict[str, Any]:
        """The file's content; ``image.file`` made relative to ``folder`` when it lies inside it."""
        image = self.image.to_dict()
        image["file"] = _relative_file(self.image.file, folder)
        return {
            "format": FORMAT,
            "version": VERSION,
            "saved_at": self.saved_at,
            "saved_by": self.saved_by,
            "software": self.software,
            "image": image,
            "material": self.material,
            "sites": None if self.sites is None else self.sites.to_dict(),
            "cells": None if self.cells is None else self.cells.to_dict(),
        }


def sidecar_path(image_path: str | os.PathLike) -> Path:
    """The annotation file of an image file: its name plus ``.annotations.json``.

    Examples
    --------
    >>> sidecar_path("/data/scan.dm4").name
    'scan.dm4.annotations.json'
    """
    p = Path(image_path)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def image_sha256(array: np.ndarray) -> str:
    """SHA-256 (hex) of an image: its dtype, shape and C-contiguous bytes.

    Examples
    --------
    >>> image_sha256(np.zeros((2, 2))) == image_sha256(np.zeros((2, 2)))
    True
    >>> image_sha256(np.zeros((2, 2))) == image_sha256(np.zeros((2, 2), np.float32))
    False
    """
    arr = np.ascontiguousarray(np.asarray(array))
    h = hashlib.sha256()
    h.update(f"{arr.dtype.str}|{arr.shape}|".encode())
    h.update(memoryview(arr).cast("B") if arr.size else b"")
    return h.hexdigest()


def save_annotations(ann: Annotations, path: str | os.PathLike,
                     on_kept: Callable[[str], Any] | None = None, *, saved_by: str | None = None) -> Path:
    """Write annotations to ``path`` atomically; fill their ``saved_at``, ``saved_by`` and ``software``.

    A file already at ``path`` is never overwritten unless it is a readable
    annotation file of the same image: one that cannot be read (damaged, or
    not an annotation file) is first kept aside as ``<name>.damaged-<time>``,
    one of another image (another hash) as ``<name>.replaced-<time>``
    (:mod:`.safekeeping`), and ``on_kept`` (default: a warning) is told where.

    Parameters
    ----------
    ann : Annotations
        What to save. Its provenance fields are set to this save's.
    path : str or Path
        The annotation file (usually :func:`sidecar_path` of the image).
    on_kept : callable, optional
        Called with a message when an earlier file was kept aside; by default
        the message is a :class:`~.safekeeping.EarlierFileKept` warning.
    saved_by : str, optional
        Who saved them: the annotator's name set in the correction dock, or the
        annotators of a consensus file; by default (or when blank) the login name.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        Annotations that break the format's rules (:mod:`.schema`: a layer
        whose data and features differ in length, NaN positions, an unknown
        class...), or a feature column of a dtype that cannot be written; the
        previous file is left intact.
    """
    from .safekeeping import keep_earlier_file, remember_good

    target = Path(path)
    try:
        check_annotations(ann)
    except ValueError as exc:
        raise ValueError(f"cannot save these annotations: {exc}") from None
    who = saved_by.strip() if saved_by is not None and saved_by.strip() else current_user()
    ann.saved_at, ann.saved_by, ann.software = now_iso(), who, software()
    text = dumps_document(ann.to_dict(folder=target.parent))
    kept = keep_earlier_file(target, ann.image.sha256)
    atomic_write_text(target, text)
    remember_good(target, ann.image.sha256)
    if kept is not None:
        if on_kept is None:
            from .safekeeping import EarlierFileKept

            warnings.warn(EarlierFileKept(kept), stacklevel=2)
        else:
            on_kept(kept)
    return target


def load_annotations(path: str | os.PathLike) -> Annotations:
    """Read an annotation file written by :func:`save_annotations`, checking it against the format's rules.

    Parameters
    ----------
    path : str or Path
        The annotation file.

    Returns
    -------
    Annotations
        With ``image.file`` as an absolute path (None if the image had no file).

    Raises
    ------
    AnnotationFileError
        The file is not JSON, not an annotation file, of a newer version,
        misses parts, or breaks the format's rules (:mod:`.schema`); the
        message names the file and says why.
    FileNotFoundError
        There is no such file.
    """
    from .safekeeping import remember_good

    p = Path(path)
    doc = _read_document(p)
    try:
        check_document(doc)
        ann = _decode_document(doc, p)
        check_annotations(ann)
    except KeyError as exc:
        raise AnnotationFileError(f"{p}: damaged annotation file (missing entry {exc})") from None
    except (ValueError, TypeError, AttributeError, OverflowError, IndexError, RecursionError) as exc:
        raise AnnotationFileError(f"{p}: damaged annotation file ({exc})") from None
    remember_good(p, ann.image.sha256)
    return ann


def _read_document(p: Path) -> dict[str, Any]:
    """The parsed JSON of an annotation file, with its size, format and version checked."""
    try:
        check_size(p.stat().st_size)
        doc = parse_json(p.read_bytes())
        check_header(doc, FORMAT, VERSION)
    except ValueError as exc:
        raise AnnotationFileError(f"{p}: {exc}") from None
    return doc


def _decode_document(doc: dict[str, Any], p: Path) -> Annotations:
    """Annotations from a checked document (:func:`~.schema.check_document`)."""
    image = ImageReference.from_dict(doc["image"])
    image.file = _absolute_file(image.file, p.parent)
    layers = {kind: None if doc[kind] is None else LayerAnnotation.from_dict(doc[kind]) for kind in KINDS}
    material = doc["material"]
    return Annotations(image=image, material=material, sites=layers["sites"], cells=layers["cells"],
                       saved_at=doc.get("saved_at"), saved_by=doc.get("saved_by"), software=doc.get("software"))


# --- file paths ---------------------------------------------------------------------------------------------


def _relative_file(file: str | None, folder: str | os.PathLike | None) -> str | None:
    if file is None or folder is None:
        return file
    p = Path(file)
    if not p.is_absolute():
        return p.as_posix()
    try:
        return Path(os.path.abspath(p)).relative_to(Path(os.path.abspath(folder))).as_posix()
    except ValueError:
        return str(p)


def _absolute_file(file: str | None, folder: Path) -> str | None:
    if file is None:
        return None
    p = Path(file)
    return str(p) if p.is_absolute() else os.path.abspath(folder / p)
