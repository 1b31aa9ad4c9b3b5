"""napari sample data: digital twins that open with their ground truth.

Each sample is an Image layer in Å with the twin's metadata, plus a Points
layer of every lattice site (empty sites included) whose ``features`` are the
exact labels, coloured by sublattice (the image series too: its sites in every
frame); a composite twin adds its phase and domain maps as Labels layers. The
frame axis of a series is labelled ``frame``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .columns.structure_layers import PHASE_COLOURS
from .simulate.presets import PRESETS
from .simulate.twin import DigitalTwin
from .vocabulary import PHASE_CODES, PHASE_OF_CODE

LayerDataTuple = tuple[Any, dict[str, Any], str]
#: Axis labels of an image series.
FRAME_AXES = ("frame", "y", "x")


def twin_layers(twin: DigitalTwin, name: str) -> list[LayerDataTuple]:
    """Layer data for a twin: its image and its ground-truth sites.

    Parameters
    ----------
    twin : DigitalTwin
        The simulated image and labels.
    name : str
        Base name of the layers.

    Returns
    -------
    list of layer data tuples
        ``[(image, kwargs, "image"), (points, kwargs, "points")]``, then for a
        composite twin ``(phase_map, kwargs, "labels")`` and ``(domain_map, kwargs, "labels")``.
    """
    scale = (twin.pixel_size, twin.pixel_size)
    units = ("angstrom", "angstrom")
    kwargs = {"name": name, "scale": scale, "units": units, "colormap": "gray", "metadata": twin.metadata}
    if np.isnan(twin.image).any():  # masked pixels: contrast from the recorded ones
        kwargs["contrast_limits"] = tuple(float(v) for v in np.nanpercentile(twin.image, [0.1, 99.9]))
    image = (twin.image, kwargs, "image")
    sites = twin.sites
    features = sites.drop(columns=["y_px", "x_px"]).copy()
    features["occupied"] = features["n_atoms"] > 0
    empty = ~features["occupied"].to_numpy()
    points = (
        sites[["y_px", "x_px"]].to_numpy(),
        {
            "name": f"{name} ground truth",
            "scale": scale,
            "units": units,
            "features": features,
            "size": 0.5 / twin.pixel_size,  # 0.5 Å across, in pixels (data units)
            **_site_style(features["sublattice"].to_numpy(), empty),
            "border_width": 0.25,
            "opacity": 0.6,
            "visible": True,
            "metadata": {"ground_truth": True, "source": "digital twin", "legend": _LEGEND},
        },
        "points",
    )
    return [image, points, *_map_layers(twin, name, scale, units)]


def _map_layers(twin: DigitalTwin, name: str, scale: tuple[float, float],
                units: tuple[str, str]) -> list[LayerDataTuple]:
    """Labels layers of a composite twin's exact phase map and domain map (none for a plain twin)."""
    if not isinstance(twin.extra.get("phase_map"), np.ndarray):
        return []
    codes = sorted(PHASE_CODES.values())
    phases = (
        twin.extra["phase_map"],
        {"name": f"{name} phase map (truth)", "scale": scale, "units": units, "opacity": 0.35,
         "colormap": {None: (0, 0, 0, 0), **{c: _PHASE_COLOURS[c] for c in codes}},
         "features": pd.DataFrame({"index": codes, "phase": [PHASE_OF_CODE[c] for c in codes]}),
         "metadata": {"ground_truth": True, "codes": dict(PHASE_CODES)}},
        "labels",
    )
    domains = twin.extra.get("domains", [])
    table = pd.DataFrame({"index": [0] + [d["domain"] + 1 for d in domains],
                          "domain": [-1] + [d["domain"] for d in domains],
                          "grain": [-1] + [d["grain"] for d in domains],
                          "phase": ["none"] + [d["phase"] for d in domains],
                          "mirror": [False] + [d["mirror"] for d in domains]})
    domain = (
        twin.extra["domain_map"],
        {"name": f"{name} domains (truth)", "scale": scale, "units": units, "opacity": 0.35, "visible": False,
         "features": table, "metadata": {"ground_truth": True, "domains": domains}},
        "labels",
    )
    return [phases, domain]


def _site_style(sublattice: np.ndarray, empty: np.ndarray) -> dict[str, Any]:
    """Face and border colours of ground-truth sites: by sublattice, hollow yellow rings where empty."""
    colours = np.array([_COLOURS.get(str(s), (1.0, 1.0, 1.0, 1.0)) for s in sublattice], dtype=float).reshape(-1, 4)
    return {"face_color": np.where(empty[:, None], [[0, 0, 0, 0]], colours),
            "border_color": np.where(empty[:, None], [[1, 1, 0, 1]], colours)}


_COLOURS = {"M": (1.0, 0.5, 0.05, 1.0), "X": (0.12, 0.47, 0.71, 1.0), "H": (0.84, 0.15, 0.16, 1.0)}
#: Phase-map colours: none and 2H transparent (the lattice shows through), 1T green, hole dark blue,
#: amorphous orange, masked grey.
_PHASE_COLOURS = PHASE_COLOURS  # one palette with the columns dock
_LEGEND = {"M": "metal site (orange)", "X": "chalcogen column: X2 in 2H, single X in 1T (blue)", "H": "adatom (red)",
           "empty": "vacant site (hollow yellow ring)"}


def _sample(key: str) -> list[LayerDataTuple]:
    layers = twin_layers(PRESETS[key](), key)
    _scale_bar()
    return layers


def _scale_bar() -> None:
    """The samples are calibrated: switch on the scale bar of the window they open in."""
    import sys

    if "napari" in sys.modules:
        from ._widgets._dock import show_scale_bar_in_current_viewer

        show_scale_bar_in_current_viewer(True)


def mos2_vacancies() -> list[LayerDataTuple]:
    """MoS2 with vacancies at high dose, with ground truth."""
    return _sample("mos2_vacancies")


def mos2_real_sample() -> list[LayerDataTuple]:
    """MoS2 as real samples look (grains, mirror twin, 1T', hole, amorphous patch, NaN mask), with ground truth."""
    return _sample("mos2_real_sample")


def wse2_low_dose() -> list[LayerDataTuple]:
    """WSe2 at low dose, with ground truth."""
    return _sample("wse2_low_dose")


def mowsse_alloy() -> list[LayerDataTuple]:
    """MoWSSe alloy, with ground truth."""
    return _sample("mowsse_alloy")


def dynamics_stack(seed: int = 2027) -> list[LayerDataTuple]:
    """MoS2 image series (12 frames, 1e6 e/Å^2 per frame) with drift and beam-driven defect dynamics.

    The stack is a :func:`~napari_stem_defects.simulate.stack.simulate_stack`
    twin; its metadata holds the true drift (``shifts_px``) and every event
    (``events``: frame, kind, site ids, reference positions and species).

    Parameters
    ----------
    seed : int
        Seed of the simulation.

    Returns
    -------
    list of layer data tuples
        ``[(frames, kwargs, "image"), (sites, kwargs, "points")]``: a (t, y, x) Image layer
        with scale ``(1, Å/px, Å/px)`` and axes labelled ``frame, y, x``, and the ground truth:
        every site inside each frame (``frame, y_px, x_px`` points) with its ``site_id``,
        ``sublattice``, ``species``, ``occupied`` and ``n_atoms``.

    Examples
    --------
    >>> (frames, kwargs, kind), (sites, truth, _) = dynamics_stack()
    >>> frames.shape, kwargs["scale"], kwargs["axis_labels"], kind, sites.shape[1]
    ((12, 256, 256), (1.0, 0.12, 0.12), ('frame', 'y', 'x'), 'image', 3)
    """
    from .simulate.imaging import ImagingParams
    from .simulate.stack import simulate_stack

    stack = simulate_stack(
        "MoS2", n_frames=12, shape=(256, 256), pixel_size=0.12, seed=seed, rotation_deg=9.0,
        drift_step_px=1.0, warp_px=0.3, events_per_frame=4.0,
        imaging=ImagingParams(dose=1e6, line_jitter=0.05),
    )
    events = stack.events.astype(object).where(stack.events.notna(), None)
    metadata = {**stack.metadata, "events": events.to_dict(orient="records")}
    scale = (1.0, stack.pixel_size, stack.pixel_size)
    kwargs = {
        "name": "dynamics_stack",
        "scale": scale,
        "units": ("", "angstrom", "angstrom"),
        "axis_labels": FRAME_AXES,
        "colormap": "gray",
        "metadata": metadata,
    }
    sites = stack.sites[stack.sites["inside"].to_numpy(bool)].reset_index(drop=True)
    features = sites[["frame", "site_id", "sublattice", "species", "occupied", "n_atoms"]].copy()
    empty = ~features["occupied"].to_numpy(bool)
    points = (
        sites[["frame", "y_px", "x_px"]].to_numpy(float),
        {"name": "dynamics_stack ground truth", "scale": scale, "units": ("", "angstrom", "angstrom"),
         "axis_labels": FRAME_AXES, "features": features, "size": 0.5 / stack.pixel_size,
         **_site_style(features["sublattice"].to_numpy(), empty), "border_width": 0.25, "opacity": 0.6,
         "out_of_slice_display": False,
         "metadata": {"ground_truth": True, "source": "digital twin image series", "legend": _LEGEND}},
        "points",
    )
    _scale_bar()
    return [(stack.frames, kwargs, "image"), points]
