"""Column detection results as napari Points layer data (no Qt, no napari import).

Points are stored in pixels, like the image they were found in, and carry the
image's ``scale`` and ``units``, so they sit on the image in physical space.
Every point has the row of the site table as ``features``, and is coloured by
species: metals in warm colours, chalcogen columns in cool ones (single-atom
columns lighter than full X2 columns), empty sites as hollow yellow rings
(the convention of the ground-truth layers of :mod:`napari_stem_defects.sample_data`).

Examples
--------
>>> species_colour("Mo"), species_colour("S2"), species_colour("unobtainium")
('#EE7733', '#0077BB', '#BBBBBB')
>>> legend_html({"Mo": 3, "empty": 1}).count("white-space:nowrap")
2
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .result import EMPTY, SITE_STRUCTURE_COLUMNS, ColumnResult

LayerDataTuple = tuple[Any, dict[str, Any], str]

#: Colour (hex) of each species. Metals warm, chalcogen columns cool or purple (two-atom
#: columns darker than single-atom ones), empty sites yellow (drawn as hollow rings), adatoms
#: white (drawn as diamonds). Any two species of one material differ by CIEDE2000 >= 10 for
#: normal vision and under simulated deuteranopia and protanopia (:mod:`napari_stem_defects.palette`).
SPECIES_COLOURS: dict[str, str] = {
    # metals
    "Mo": "#EE7733", "W": "#D10000", "Nb": "#EE3377", "Re": "#AA3377", "V": "#FFFFB9",
    "Ta": "#882255", "Ti": "#DDCC77", "Cr": "#BB5566", "Hf": "#994455", "Pt": "#FFAABB",
    # chalcogen columns: two atoms, then one atom
    "S2": "#0077BB", "SSe": "#44AA99", "Se2": "#A2468B", "STe": "#8877DD", "SeTe": "#88CCAA",
    "Te2": "#117733", "S": "#D1FFFF", "Se": "#EE99DD", "Te": "#CCDD55",
    # no column, or one where none belongs
    EMPTY: "#FFEE33", "adatom": "#FFFFFF",
    # classes of a free mixture (no material given), dimmest first
    "M1": "#FFB9A2", "M2": "#D6604D", "M3": "#B2182B", "M4": "#67001F",
    "X1": "#E8FFFF", "X2": "#92C5DE", "X3": "#4393C3", "X4": "#2166AC",
}
#: Colour of a species missing from :data:`SPECIES_COLOURS`.
FALLBACK_COLOUR = "#BBBBBB"
#: Point diameter as a fraction of the nearest-neighbour (M to X) distance: small enough
#: that the column stays visible around its marker.
SIZE_FRACTION = 0.4
#: Face opacity of an occupied site's marker (its edge is opaque): the column shows through.
FACE_ALPHA = 0.35
#: Marker of a column found as a peak, of a site placed by the lattice fit (no peak found
#: there, but the species fit says it holds atoms), and of a site on a hollow position.
SYMBOL_DETECTED, SYMBOL_LATTICE, SYMBOL_HOLLOW = "disc", "square", "diamond"
#: Features of every point, in order (``frame`` is appended for stacks). ``y`` and
#: ``x`` are physical coordinates in the layer's ``units`` (Å when calibrated, else
#: pixels); ``y_px`` and ``x_px`` are always pixels. ``verified`` is True for sites a
#: person checked or edited, ``source`` says who set the label: ``"model"`` for
#: detected sites, ``"human"`` once a person edited them.
FEATURE_COLUMNS = (
    "y", "x", "y_px", "x_px", "sublattice", "species", "probability", "intensity",
    "detected", "refined_by", "i", "j", "site_id", "verified", "source",
)
#: ``source`` of a site or cell labelled by a detector or classifier.
SOURCE_MODEL = "model"


def species_colour(species: str) -> str:
    """Hex colour of a species (:data:`FALLBACK_COLOUR` when unknown)."""
    return SPECIES_COLOURS.get(str(species), FALLBACK_COLOUR)


def hex_to_rgba(colour: str, alpha: float = 1.0) -> tuple[float, float, float, float]:
    """``'#RRGGBB'`` as an RGBA tuple of floats in [0, 1].

    Examples
    --------
    >>> hex_to_rgba("#FF0000")
    (1.0, 0.0, 0.0, 1.0)
    """
    c = colour.lstrip("#")
    return (int(c[0:2], 16) / 255, int(c[2:4], 16) / 255, int(c[4:6], 16) / 255, float(alpha))


def species_counts(sites: pd.DataFrame | Sequence[str]) -> dict[str, int]:
    """Number of sites of each species, in legend order (metals, chalcogens, others, empty last)."""
    species = sites["species"] if isinstance(sites, pd.DataFrame) else pd.Series(list(sites), dtype=object)
    counts = species.astype(str).value_counts()
    known = list(SPECIES_COLOURS)
    order = sorted(counts.index, key=lambda s: (s == EMPTY, s not in known, known.index(s) if s in known else 0, s))
    return {s: int(counts[s]) for s in order}


def legend(counts: Mapping[str, int]) -> dict[str, dict[str, Any]]:
    """``{species: {"colour": hex, "count": n}}`` for a layer's metadata."""
    return {s: {"colour": species_colour(s), "count": int(n)} for s, n in counts.items()}


def legend_html(result_or_counts: ColumnResult | pd.DataFrame | Mapping[str, int] | Sequence[ColumnResult]) -> str:
    """A coloured legend (swatch, species, count per line) as rich text for a QLabel.

    Parameters
    ----------
    result_or_counts : ColumnResult, list of ColumnResult, DataFrame or mapping
        A result (or several, counted together), a site table, or species counts.

    Returns
    -------
    str
        HTML entries that wrap with the dock's width; empty sites get a hollow swatch,
        adatoms a diamond. "" when there is nothing to show.
    """
    obj = result_or_counts
    if isinstance(obj, Mapping):
        counts = {str(k): int(v) for k, v in obj.items()}
    elif isinstance(obj, (ColumnResult, pd.DataFrame)):
        counts = species_counts(obj.sites if isinstance(obj, ColumnResult) else obj)
    else:
        counts = species_counts([s for r in obj for s in r.sites["species"]])
    # entries flow on as few lines as the dock's width allows (a non-breaking space inside an entry)
    return " &nbsp; ".join(
        f'<span style="white-space:nowrap"><span style="color:{species_colour(s)}; font-size:large">'
        f'{"&#9675;" if s == EMPTY else ("&#9670;" if s == "adatom" else "&#9679;")}'
        f"</span>&nbsp;{html.escape(s)}: {n}</span>" for s, n in counts.items())


def site_features(result: ColumnResult, scale: Sequence[float] = (1.0, 1.0), frame: int | None = None) -> pd.DataFrame:
    """The site table as Points features: physical y, x first, then the table, plus ``frame``.

    Sites without a ``verified`` column get False, without a ``source`` column
    ``"model"`` (see :data:`FEATURE_COLUMNS`).

    Parameters
    ----------
    result : ColumnResult
        Detected columns.
    scale : sequence of float
        Size of a pixel (y, x); only the last two values are used.
    frame : int, optional
        Frame of a stack the result belongs to; adds a ``frame`` column.
    """
    sites = result.sites
    sy, sx = (float(s) for s in tuple(scale)[-2:])
    features = pd.DataFrame({"y": sites["y_px"].to_numpy(float) * sy, "x": sites["x_px"].to_numpy(float) * sx})
    for column in FEATURE_COLUMNS[2:]:
        if column in sites:
            features[column] = sites[column].to_numpy()
        elif column == "verified":
            features[column] = np.zeros(len(sites), bool)
        elif column == "source":
            features[column] = np.full(len(sites), SOURCE_MODEL, dtype=object)
    features["verified"] = features["verified"].astype(bool)
    for column in SITE_STRUCTURE_COLUMNS:  # domain, phase, boundary: where the detection found them
        if column in sites:
            features[column] = sites[column].to_numpy()
    if frame is not None:
        features["frame"] = np.full(len(sites), int(frame))
    return features


def detection_parameters(result: ColumnResult) -> dict[str, Any]:
    """What a result was found with, as plain Python values (for layer metadata)."""
    fits = {
        key: {"labels": list(f.labels), "means": _floats(f.means), "sigmas": _floats(f.sigmas),
              "weights": _floats(f.weights), "gamma": float(f.gamma)}
        for key, f in result.species_fits.items()
    }
    return {
        "method": result.method,
        "nn_px": float(result.nn_px),
        "a1_px": _floats(result.a1),
        "a2_px": _floats(result.a2),
        "m_offset_px": _floats(result.m_offset),
        "pixel_size_A": None if result.pixel_size is None else _floats(result.pixel_size),
        "n_peaks": int(len(result.peaks)),
        "species_fits": fits,
        "messages": list(result.messages),
    }


def result_to_points_data(
    result: ColumnResult,
    *,
    scale: Sequence[float] = (1.0, 1.0),
    units: str | Sequence[str] = "pixel",
    name: str = "columns",
    frame: int | None = None,
    translate: Sequence[float] | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> LayerDataTuple:
    """Layer data for the columns of one 2D image.

    Parameters
    ----------
    result : ColumnResult
        Detected columns.
    scale : sequence of float
        The image layer's scale (y, x): Å per pixel when calibrated.
    units : str or sequence of str
        The image layer's units ("angstrom" or "pixel").
    name : str
        Layer name.
    frame : int, optional
        Adds a ``frame`` feature (the points stay 2D; see
        :func:`stack_results_to_points_data` for points on a stack).
    translate : sequence of float, optional
        The image layer's translate.
    parameters : mapping, optional
        Extra detection parameters (threshold, refinement, material...) kept in
        ``metadata["parameters"]``.

    Returns
    -------
    tuple
        ``(data, kwargs, "points")`` with ``data`` of shape (N, 2) in pixels.
    """
    features = site_features(result, scale, frame)
    data = features[["y_px", "x_px"]].to_numpy(float).reshape(-1, 2)
    params = {**detection_parameters(result), **dict(parameters or {})}
    scale2 = tuple(float(v) for v in last_axes(scale, 2, 1.0))
    return data, _style(features, result.nn_px, name, scale2, _last_units(units, 2), translate, params), "points"


def stack_results_to_points_data(
    results: Sequence[ColumnResult],
    *,
    frames: Sequence[int] | None = None,
    scale: Sequence[float] = (1.0, 1.0, 1.0),
    units: str | Sequence[str] = "pixel",
    name: str = "columns",
    translate: Sequence[float] | None = None,
    parameters: Mapping[str, Any] | None = None,
    frame_parameters: Mapping[int, Mapping[str, Any]] | None = None,
) -> LayerDataTuple:
    """Layer data for the columns of several frames of a stack: 3D points (frame, y, x).

    Parameters
    ----------
    results : sequence of ColumnResult
        One result per analysed frame.
    frames : sequence of int, optional
        Frame index of each result; defaults to 0, 1, 2, ...
    scale : sequence of float
        The stack layer's scale (frame, y, x) or just (y, x).
    units : str or sequence of str
        The stack layer's units.
    name, translate, parameters
        As in :func:`result_to_points_data`.
    frame_parameters : mapping of int to mapping, optional
        Extra parameters of each frame (frames may be run with different
        thresholds), merged into ``metadata["parameters"]["frames"][frame]``.

    Returns
    -------
    tuple
        ``(data, kwargs, "points")`` with ``data`` of shape (N, 3): frame, y, x.
    """
    results = list(results)
    frames = list(range(len(results))) if frames is None else [int(f) for f in frames]
    if len(frames) != len(results):
        raise ValueError(f"{len(results)} results but {len(frames)} frame indices")
    scale3 = tuple(float(v) for v in last_axes(scale, 3, 1.0))
    parts = [site_features(r, scale3, f) for r, f in zip(results, frames, strict=True)]
    features = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[*FEATURE_COLUMNS, "frame"])
    data = features[["frame", "y_px", "x_px"]].to_numpy(float).reshape(-1, 3)
    nn = float(np.median([r.nn_px for r in results])) if results else 1.0
    params = dict(parameters or {})
    extra = frame_parameters or {}
    params["frames"] = {f: {**detection_parameters(r), **dict(extra.get(f, {}))}
                        for r, f in zip(results, frames, strict=True)}
    return data, _style(features, nn, name, scale3, _last_units(units, 3), translate, params), "points"


def point_colours(features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Face and border RGBA (N, 4) for features: a translucent face and an opaque edge in the
    species colour, hollow for empty sites."""
    species = features["species"].astype(str).to_numpy()
    colours = np.array([hex_to_rgba(species_colour(s)) for s in species], float).reshape(-1, 4)
    face = colours.copy()
    face[:, 3] = FACE_ALPHA
    face[species == EMPTY] = 0.0
    return face, colours


def point_symbols(features: pd.DataFrame) -> np.ndarray:
    """Marker of each site: a disc for a detected column, a square for an occupied site placed
    by the lattice fit, a diamond on a hollow site (adatoms); empty sites are discs (drawn hollow).

    Examples
    --------
    >>> table = pd.DataFrame({"sublattice": ["M", "X", "X", "H"], "species": ["Mo", "S2", "empty", "adatom"],
    ...                       "refined_by": ["gaussian", "lattice", "lattice", "gaussian"]})
    >>> point_symbols(table).tolist()
    ['disc', 'square', 'disc', 'diamond']
    """
    n = len(features)
    sub = features["sublattice"].astype(str).to_numpy() if "sublattice" in features else np.full(n, "M")
    species = features["species"].astype(str).to_numpy() if "species" in features else np.full(n, "")
    if "refined_by" in features:
        placed = features["refined_by"].astype(str).to_numpy() == "lattice"
    elif "detected" in features:
        placed = ~features["detected"].to_numpy(bool)
    else:
        placed = np.zeros(n, bool)
    symbol = np.where(placed & (species != EMPTY), SYMBOL_LATTICE, SYMBOL_DETECTED)
    return np.where(sub == "H", SYMBOL_HOLLOW, symbol)


def point_border_widths(features: pd.DataFrame) -> np.ndarray:
    """Relative edge width of each marker: wider rings for empty sites."""
    return np.where(features["species"].astype(str).to_numpy() == EMPTY, 0.3, 0.15)


def marker_legend_html() -> str:
    """What the marker shapes mean, as one line of rich text."""
    return ("<span>&#9679;&nbsp;column found &nbsp; &#9632;&nbsp;placed by the lattice fit &nbsp; "
            "&#9675;&nbsp;empty site &nbsp; &#9670;&nbsp;adatom</span>")


def points_kwargs(
    features: pd.DataFrame,
    nn_px: float,
    *,
    name: str,
    scale: Sequence[float],
    units: Sequence[str],
    translate: Sequence[float] | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Points layer keyword arguments for site features, styled like detected columns.

    Parameters
    ----------
    features : DataFrame
        Site features (at least ``species`` and ``sublattice``).
    nn_px : float
        Nearest-neighbour distance in pixels (sets the point size).
    name : str
        Layer name.
    scale, units : sequence
        The layer's scale and units (one per axis of the points).
    translate : sequence of float, optional
        The layer's translate.
    parameters : mapping, optional
        Detection parameters for ``metadata["parameters"]``.

    Returns
    -------
    dict
        ``name, scale, units, features, size, face_color, border_color, border_width,
        border_width_is_relative, symbol, opacity, metadata`` (and ``translate``).
    """
    return _style(features, nn_px, name, tuple(float(s) for s in scale), tuple(str(u) for u in units),
                  translate, dict(parameters or {}))


def _style(features, nn_px, name, scale, units, translate, params) -> dict[str, Any]:
    face, border = point_colours(features)
    kwargs: dict[str, Any] = {
        "name": name,
        "scale": scale,
        "units": units,
        "features": features,
        "size": SIZE_FRACTION * float(nn_px) if np.isfinite(nn_px) and nn_px > 0 else 5.0,
        "face_color": face,
        "border_color": border,
        "border_width": point_border_widths(features),
        "border_width_is_relative": True,
        "symbol": point_symbols(features),
        "opacity": 1.0,
        "metadata": {
            "legend": legend(species_counts(features)),
            "parameters": params,
            "feature_units": {"y": units[-2], "x": units[-1], "y_px": "pixel", "x_px": "pixel"},
            "source": "napari-stem-defects column detection",
        },
    }
    if translate is not None:
        kwargs["translate"] = tuple(float(t) for t in last_axes(translate, len(scale), 0.0))
    return kwargs


def last_axes(values: Any, n: int, fill: Any) -> tuple:
    """The last ``n`` of ``values`` (a scalar counts as one), padded in front with ``fill``.

    Examples
    --------
    >>> last_axes((1.0, 0.12, 0.12), 2, 1.0), last_axes((0.12,), 3, 1.0)
    ((0.12, 0.12), (1.0, 1.0, 0.12))
    """
    vals = [values] if isinstance(values, (str, int, float)) else list(values)
    return tuple(([fill] * n + vals)[-n:])


def _last_units(units: str | Sequence[str], n: int) -> tuple[str, ...]:
    return tuple(str(u) for u in last_axes(units, n, "pixel"))


def _floats(values) -> list[float] | None:
    return None if values is None else [float(v) for v in np.ravel(values)]
