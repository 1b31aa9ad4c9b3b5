"""napari layer data for a :class:`~.pipeline.DynamicsResult` (plain tuples; no viewer needed)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .pipeline import DynamicsResult
from .tracking import napari_tracks_data

#: Colour of each event kind (RGBA) in the events Points layer and its legend.
EVENT_COLOURS: dict[str, tuple[float, float, float, float]] = {
    "emptied": (0.725, 0.18, 0.0, 1.0),
    "filled": (0.18, 0.725, 0.545, 1.0),
    "moved": (1.0, 0.91, 0.18, 1.0),
    "species_changed": (0.30, 0.55, 1.00, 1.0),
}
_CLUSTER_COLOUR = (1.0, 0.35, 0.9, 1.0)

LayerDataTuple = tuple[Any, dict[str, Any], str]


def _placement(scale: tuple[float, float], units: tuple[str, str], translate: tuple[float, float],
               stacked: bool) -> dict[str, Any]:
    if stacked:
        return {"scale": (1.0, *scale), "units": ("", *units), "translate": (0.0, *translate),
                "axis_labels": ("frame", "y", "x")}
    return {"scale": tuple(scale), "units": tuple(units), "translate": tuple(translate)}


def event_points(events: pd.DataFrame, nn_px: float) -> tuple[np.ndarray, dict[str, Any]]:
    """(t, y, x) points of the events (a move sits at its destination) and their Points kwargs."""
    moved = (events["kind"] == "moved").to_numpy()
    y = np.where(moved, events["to_y_px"], events["y_px"]).astype(float)
    x = np.where(moved, events["to_x_px"], events["x_px"]).astype(float)
    data = np.column_stack([events["frame"].to_numpy(float), y, x]) if len(events) else np.empty((0, 3))
    colours = np.array([EVENT_COLOURS.get(k, (1, 1, 1, 1)) for k in events["kind"]]).reshape(-1, 4)
    return data, {"features": events.reset_index(drop=True), "face_color": "transparent",
                  "border_color": colours, "border_width": 0.15, "border_width_is_relative": True,
                  "size": 1.6 * nn_px, "symbol": "ring"}


def dynamics_layers(
    result: DynamicsResult,
    name: str,
    *,
    scale: tuple[float, float] = (1.0, 1.0),
    units: tuple[str, str] = ("pixel", "pixel"),
    translate: tuple[float, float] = (0.0, 0.0),
) -> list[LayerDataTuple]:
    """Registered stack, tracks, events, instability map, sites coloured by instability, clusters.

    Parameters
    ----------
    result : DynamicsResult
        What :func:`~.pipeline.analyze_stack` found.
    name : str
        Name of the analysed image layer (the new layers are named after it).
    scale, units, translate : tuple
        Placement of the image's last two axes (physical calibration).

    Returns
    -------
    list of (data, kwargs, layer_type)
    """
    stack_at = _placement(scale, units, translate, stacked=True)
    plane_at = _placement(scale, units, translate, stacked=False)
    reg = result.registration
    meta = {"dynamics": True, "image_layer": name, "pixel_size_A": result.pixel_size}
    out: list[LayerDataTuple] = []
    finite = reg.registered[np.isfinite(reg.registered)]
    limits = (float(np.percentile(finite, 0.5)), float(np.percentile(finite, 99.5))) if finite.size else (0, 1)
    out.append((reg.registered, {"name": f"{name} registered", "colormap": "gray", "contrast_limits": limits,
                                 "metadata": {**meta, "shifts_px": reg.shifts.tolist()}, **stack_at}, "image"))

    data, features = napari_tracks_data(result.tracks)
    if len(data):
        # per-track features (lifetime, displacement, events) on every vertex of the track
        per_track = result.track_features.set_index("track_id")[
            ["lifetime_frames", "net_displacement_px", "max_step_px", "n_events"]]
        extra = per_track.reindex(data[:, 0].astype(int)).reset_index(drop=True)
        if result.pixel_size:
            extra["net_displacement_pm"] = extra["net_displacement_px"] * 100.0 * result.pixel_size
        features = pd.concat([features.reset_index(drop=True), extra], axis=1)
        out.append((data, {"name": f"{name} tracks", "features": features, "tail_length": 5,
                           "metadata": meta, **stack_at}, "tracks"))

    points, kwargs = event_points(result.events, result.nn_px)
    out.append((points, {"name": f"{name} events", **kwargs, "metadata": {**meta, "legend": EVENT_COLOURS},
                         **stack_at}, "points"))

    imap = result.instability_map
    top = float(np.nanmax(imap)) if np.isfinite(imap).any() and np.nanmax(imap) > 0 else 1.0
    out.append((imap, {"name": f"{name} instability", "colormap": "inferno", "blending": "additive",
                       "contrast_limits": (0.0, top), "metadata": meta, **plane_at}, "image"))

    sites = result.site_table
    # explicit limits: napari takes them from min/max, and one NaN site (a patch never fully in view)
    # would make them NaN and every point transparent; NaN sites stay transparent
    scored = sites["instability"].to_numpy(float)
    scored = scored[np.isfinite(scored)]
    low = float(scored.min()) if scored.size else 0.0
    high = float(scored.max()) if scored.size and scored.max() > low else low + 1.0
    out.append((sites[["y_px", "x_px"]].to_numpy(float),
                {"name": f"{name} site instability", "features": sites.reset_index(drop=True),
                 "face_color": "instability", "face_colormap": "plasma", "face_contrast_limits": (low, high),
                 "border_width": 0,
                 "size": 0.6 * result.nn_px, "metadata": meta, **plane_at}, "points"))

    clusters = result.clusters
    if clusters is not None and len(clusters.polygons):
        table = clusters.table.reset_index(drop=True)
        out.append(([np.asarray(p, float) for p in clusters.polygons],
                    {"name": f"{name} unstable clusters", "shape_type": "polygon", "features": table,
                     "edge_color": [_CLUSTER_COLOUR] * len(table), "face_color": "transparent",
                     "edge_width": max(0.15 * result.nn_px, 1.0),
                     "text": {"string": "{n_sites} sites", "color": "white", "size": 9},
                     "metadata": meta, **plane_at}, "shapes"))
    return out


def legend_html() -> str:
    """Event colours as rich text for the dock."""
    items = []
    for kind, (r, g, b, _) in EVENT_COLOURS.items():
        colour = f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"
        items.append(f"<span style='color:{colour}'>&#9711;</span> {kind.replace('_', ' ')}")
    return "Events: " + " &nbsp; ".join(items)
