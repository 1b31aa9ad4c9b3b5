"""What one run of the "Detect atom columns" dock needs and produced, and how the dock names and words it."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..columns.result import EMPTY, ColumnResult
from ..model_registry import SHIPPED


@dataclass
class DetectionRun:
    """What one run produced.

    Attributes
    ----------
    results, errors : dict of (int or None) to ColumnResult, str
        Result, or why it failed, per analysed frame (key None for a 2D image).
    cancelled : bool
        The run was cancelled before it finished.
    check : ImageCheck or None
        With a material: whether the image is a 2H monolayer of it
        (:mod:`napari_stem_defects.image_check`). When it failed and
        "analyse anyway" was off, ``results`` is empty and no layer was added.
    layer : napari.layers.Points or None
        The Points layer that shows the columns.
    """

    results: dict[int | None, ColumnResult] = field(default_factory=dict)
    errors: dict[int | None, str] = field(default_factory=dict)
    cancelled: bool = False
    check: Any = None
    layer: Any = None


@dataclass
class DetectionJob:
    """What the worker needs, read on the GUI thread (``microscope``: typed or the image's settings;
    ``energy_kV``: the beam energy alone, where the file records no detector angles)."""

    layer: Any
    key: str
    data: Any
    frames: tuple[int | None, ...]
    params: dict[str, Any]
    mask: np.ndarray | None = None
    microscope: Any = None
    note: str = ""
    energy_kV: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)


def map_key(job: DetectionJob, frame: int | None) -> tuple:
    """Cache key of a detection map: image layer, frame, method and (deep method) model version."""
    return (job.key, frame, job.params["method"], job.params["model"])


def method_label(params: dict[str, Any]) -> str:
    """Which detector made a layer: 'classical', 'deep', or 'deep: <model version>'."""
    method, model = params.get("method", "classical"), params.get("model")
    return method if method != "deep" or model in (None, SHIPPED) else f"{method}: {model}"


def columns_layer_name(image_name: str, params: dict[str, Any]) -> str:
    """``<image> columns`` for the classical method, ``<image> columns (<method>)`` for the others.

    Examples
    --------
    >>> columns_layer_name("scan", {"method": "classical"}), columns_layer_name("scan", {"method": "deep"})
    ('scan columns', 'scan columns (deep)')
    >>> columns_layer_name("scan", {"method": "deep", "model": "mine-v2"})
    'scan columns (deep: mine-v2)'
    """
    label = method_label(params)
    return f"{image_name} columns" if label == "classical" else f"{image_name} columns ({label})"


def summary(run: DetectionRun, params: dict[str, Any]) -> tuple[str, str]:
    """A few lines for the dock (what was found, what failed), and the details (messages, settings)."""
    lines, details = [], []
    for frame, r in list(run.results.items())[:3]:
        where, n_empty = ("" if frame is None else f"Frame {frame}: "), int((r.sites["species"] == EMPTY).sum())
        lines.append(f"{where}{len(r.sites)} sites ({int(r.sites['detected'].sum())} columns found, "
                     f"{n_empty} empty), nn {r.nn_px:.1f} px.")
        details += [f"{where}{m}" for m in r.messages]
    lines += [f"... {len(run.results)} frames analysed in all."] * (len(run.results) > 3)
    lines += [f"Cannot detect columns ({'' if f is None else f'frame {f}: '}{e})." for f, e in run.errors.items()]
    lines += ["Cancelled."] * run.cancelled
    details += [f"{method_label(params)}, threshold {params['threshold']:.2f}, {params['refine']}, "
                f"{params['material']}."] * bool(run.results)
    return "\n".join(lines), "\n".join(details)


__all__ = ["DetectionJob", "DetectionRun", "columns_layer_name", "map_key", "method_label", "summary"]
