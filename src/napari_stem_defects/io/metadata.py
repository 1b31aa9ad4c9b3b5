"""Metadata trees of rsciio signals: lookup helpers and the values later stages need.

rsciio returns each signal with a ``metadata`` tree (HyperSpy's layout), the
reader's own ``original_metadata`` and a ``mapping`` between them that it
leaves to HyperSpy. This module applies that mapping for the keys used here
and extracts the beam energy, detector name and collection angles and the
frame interval of a stack. It imports neither napari, Qt nor a parser.

Decisions
---------
* **Lookup** is tolerant to HyperSpy's key slugs: ``"microscope.high
  tension"`` also finds ``"microscope.high_tension"`` and the reverse.
* **Missing or unusable values** (absent, non-numeric, non-finite, not
  positive where a positive value is meant) give ``None``; a ``mapping``
  entry that does not apply is skipped.
* **Beam energy** is in keV: rsciio's mapped value first, else an NCEM or
  TIA voltage tag in V divided by 1000.
* **Collection angles** are Velox's ``CollectionAngleRange``, stored in rad,
  returned in mrad.
* **Frame interval** is in seconds: the scale of a time navigation axis,
  else ImageJ's ``finterval`` (with its ``tunit``), else Velox's
  ``FrameTime``.
"""

from __future__ import annotations

import codecs
import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["as_float", "beam_energy_keV", "collection_angles_mrad", "detector", "frame_interval_s",
           "get_path", "imagej_header", "merged_metadata", "plain_dict", "signal_title"]

_SECONDS_PER = {"s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3,
                "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ns": 1e-9, "min": 60.0, "h": 3600.0}

_DETECTOR_KEYS = {"detector", "detectorname", "detector name", "detector_name"}


# --------------------------------------------------------------------------- trees


def merged_metadata(signal: Mapping[str, Any]) -> dict[str, Any]:
    """rsciio ``metadata`` plus what its ``mapping`` takes from ``original_metadata``.

    rsciio leaves applying the mapping to HyperSpy; this does it for the few
    keys used here (beam energy, detector).

    Parameters
    ----------
    signal : Mapping
        One rsciio signal dict (keys ``metadata``, ``original_metadata``,
        ``mapping``, any of them may be missing).

    Returns
    -------
    dict
        A plain-dict copy of ``metadata`` with each mapped value that
        ``original_metadata`` holds and ``metadata`` lacks filled in.
    """
    metadata = plain_dict(signal.get("metadata") or {})
    original = signal.get("original_metadata") or {}
    for source, target in (signal.get("mapping") or {}).items():
        try:
            dest, function = target
            found, value = get_path(original, source)
            if not found:
                continue
            if function is not None:
                value = function(value)
        except Exception:  # noqa: BLE001 - a mapping that does not apply is skipped
            continue
        if value is not None and get_path(metadata, dest)[0] is False:
            _set_path(metadata, dest, value)
    return metadata


def _slug(key: str) -> str:
    """Key spelling HyperSpy uses for mapping paths (spaces etc. -> underscores)."""
    return re.sub(r"\W", "_", str(key)).lower()


def get_path(tree: Any, dotted: str) -> tuple[bool, Any]:
    """Look up ``a.b.c`` in nested dicts, tolerant to HyperSpy's key slugs.

    Parameters
    ----------
    tree : Any
        Nested mappings (anything else holds no path).
    dotted : str
        Keys separated by dots.

    Returns
    -------
    found : bool
        Whether every level exists.
    value : Any
        The value there, or None when not found.

    Examples
    --------
    >>> get_path({"microscope": {"high tension": 300000}}, "microscope.high_tension")
    (True, 300000)
    >>> get_path({"a": 1}, "a.b")
    (False, None)
    """
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping):
            return False, None
        if part in node:
            node = node[part]
            continue
        matches = [k for k in node if _slug(k) == _slug(part)]
        if not matches:
            return False, None
        node = node[matches[0]]
    return True, node


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts, creating levels."""
    *parents, last = dotted.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            return
    node[last] = value


def plain_dict(tree: Mapping[str, Any]) -> dict[str, Any]:
    """Nested mappings as plain dicts (leaves kept as they are).

    Parameters
    ----------
    tree : Mapping
        Any nested mapping (rsciio may return ``DTBox`` or ordered dicts).

    Returns
    -------
    dict
        The same tree with string keys and ``dict`` at every level.
    """
    return {str(k): plain_dict(v) if isinstance(v, Mapping) else v for k, v in tree.items()}


def imagej_header(original: Mapping[str, Any]) -> dict[str, str]:
    """``key=value`` lines of an ImageJ TIFF ImageDescription (empty dict if none).

    Parameters
    ----------
    original : Mapping
        The ``original_metadata`` of a TIFF signal.

    Returns
    -------
    dict of str to str
        Keys and stripped values, with ImageJ's ``\\uXXXX`` escapes decoded.

    Examples
    --------
    >>> imagej_header({"ImageDescription": "ImageJ=1.53\\nunit=nm\\nfinterval=0.5"})
    {'ImageJ': '1.53', 'unit': 'nm', 'finterval': '0.5'}
    >>> imagej_header({})
    {}
    """
    text = original.get("ImageDescription")
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if not isinstance(text, str) or not text.startswith("ImageJ="):
        return {}
    header: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            value = value.strip()
            if "\\u" in value:  # ImageJ escapes non-ASCII units, e.g. \u00B5m
                value = codecs.decode(value, "unicode_escape")
            header[key.strip()] = value
    return header


# --------------------------------------------------------------------------- values


def signal_title(metadata: Mapping[str, Any]) -> str | None:
    """The signal title, or None when empty.

    Parameters
    ----------
    metadata : Mapping
        A signal's (merged) ``metadata`` tree.

    Returns
    -------
    str or None
        ``General.title``, stripped.
    """
    found, title = get_path(metadata, "General.title")
    if not found or title is None:
        return None
    return str(title).strip() or None


def as_float(value: Any) -> float | None:
    """``value`` as a finite float, or None.

    Parameters
    ----------
    value : Any
        A number, a numeric string, or bytes holding one.

    Returns
    -------
    float or None

    Examples
    --------
    >>> as_float(b"0.5"), as_float("nan"), as_float(None)
    (0.5, None, None)
    """
    try:
        number = float(value.decode() if isinstance(value, bytes) else value)
    except (TypeError, ValueError, AttributeError):
        return None
    return number if math.isfinite(number) else None


def beam_energy_keV(metadata: Mapping[str, Any], original: Mapping[str, Any]) -> float | None:
    """Beam energy in keV (rsciio mapping, else NCEM/TIA voltage tags in V).

    Parameters
    ----------
    metadata, original : Mapping
        The signal's merged ``metadata`` and its ``original_metadata``.

    Returns
    -------
    float or None
        A positive energy in keV, or None when no tag holds one.
    """
    found, kev = get_path(metadata, "Acquisition_instrument.TEM.beam_energy")
    energy = as_float(kev) if found else None
    if energy is None:
        for path in ("microscope.high tension",
                     "ObjectInfo.ExperimentalConditions.MicroscopeConditions.AcceleratingVoltage",
                     "Optics.AccelerationVoltage"):
            found, volts = get_path(original, path)
            volts = as_float(volts) if found else None
            if volts is not None:
                energy = volts / 1000.0
                break
    return energy if energy is not None and energy > 0 else None


def detector(metadata: Mapping[str, Any], original: Mapping[str, Any]) -> str | None:
    """Detector name: Velox result/detector tags, rsciio mapping, else any 'Detector' tag.

    Parameters
    ----------
    metadata, original : Mapping
        The signal's merged ``metadata`` and its ``original_metadata``.

    Returns
    -------
    str or None
        The first non-empty name found, stripped.
    """
    for tree, path in ((original, "BinaryResult.Detector"),
                       (original, "DetectorMetadata.DetectorName"),
                       (metadata, "Acquisition_instrument.TEM.Detector.Camera.Name"),
                       (metadata, "Acquisition_instrument.TEM.Detector.name")):
        found, value = get_path(tree, path)
        if found and isinstance(value, str) and value.strip():
            return value.strip()
    return _find_string(original, _DETECTOR_KEYS)


def _find_string(tree: Mapping[str, Any], keys: set[str], depth: int = 0) -> str | None:
    """First non-empty string under a key in ``keys`` (case-insensitive), depth first."""
    if depth > 12:
        return None
    for key, value in tree.items():
        if str(key).lower() in keys and isinstance(value, str) and value.strip():
            return value.strip()
    for value in tree.values():
        if isinstance(value, Mapping):
            found = _find_string(value, keys, depth + 1)
            if found:
                return found
    return None


def collection_angles_mrad(original: Mapping[str, Any]) -> tuple[float, float] | None:
    """(inner, outer) detector collection semi-angles in mrad (Velox, stored in rad).

    Parameters
    ----------
    original : Mapping
        The signal's ``original_metadata``.

    Returns
    -------
    tuple of float or None
        (inner, outer) in mrad, or None when not stored.
    """
    for base in ("DetectorMetadata.CollectionAngleRange", "Detector.CollectionAngleRange"):
        found_b, begin = get_path(original, base + ".begin")
        found_e, end = get_path(original, base + ".end")
        inner, outer = as_float(begin), as_float(end)
        if found_b and found_e and inner is not None and outer is not None and outer > 0:
            return (inner * 1000.0, outer * 1000.0)
    return None


def frame_interval_s(nav: list[Mapping[str, Any]], original: Mapping[str, Any]) -> float | None:
    """Time between frames of a stack: time-axis scale, ImageJ finterval or Velox FrameTime.

    Parameters
    ----------
    nav : list of Mapping
        The navigation axes of the stack (rsciio axis dicts), frame axis first.
    original : Mapping
        The signal's ``original_metadata``.

    Returns
    -------
    float or None
        Seconds between frames, or None when the file does not say.
    """
    if nav:
        unit = str(nav[0].get("units") or "").strip().lower()
        scale = as_float(nav[0].get("scale"))
        if unit in _SECONDS_PER and scale is not None and scale > 0:
            return scale * _SECONDS_PER[unit]
    imagej = imagej_header(original)
    interval = as_float(imagej.get("finterval"))
    if interval is not None and interval > 0:
        return interval * _SECONDS_PER.get(imagej.get("tunit", "s").strip().lower(), 1.0)
    for path in ("Scan.FrameTime", "ObjectInfo.AcquireInfo.FrameTime"):
        found, value = get_path(original, path)
        value = as_float(value) if found else None
        if value is not None and value > 0:
            return value
    return None
