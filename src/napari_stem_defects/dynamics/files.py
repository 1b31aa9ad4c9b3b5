"""The files ``napari-stem-defects dynamics`` writes (their columns are a contract, see the README).

``drift.csv``
    One row per frame: ``frame``, ``shift_y_px``, ``shift_x_px`` (rigid drift of the frame
    against frame 0: content at reference position p sits at p + shift), their ``_pm`` values
    (empty without a calibration) and ``residual_rms_px`` (RMS of the non-rigid field).
``tracks.csv``
    One row per site and frame in reference (frame 0) pixels:
    :data:`~.tracking.TRACK_COLUMNS` plus ``y_pm``, ``x_pm``.
``track_features.csv``
    One row per track: :data:`~.tracking.TRACK_FEATURE_COLUMNS`.
``events.csv``
    :data:`~.events.EVENT_COLUMNS`: sites emptied, filled, moved and species changes.
``instability.csv``
    One row per tracked site inside the common field of view:
    :data:`~.pipeline.SITE_INSTABILITY_COLUMNS`.
``instability.npy``
    The instability map (H, W), float32, reference pixels.
``clusters.csv``
    Dense groups of unstable sites: :data:`~.clusters.CLUSTER_COLUMNS`.
``defect_counts.csv`` (with a material)
    Cells of each class per frame.
``dynamics.json``
    Format version, input, calibration, settings, event counts, drift and messages.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import __version__
from ..io.atomic import atomic_save_npy, atomic_write, atomic_write_text, json_default
from .clusters import CLUSTER_COLUMNS
from .pipeline import DynamicsResult

#: Version of the files ``dynamics`` writes; bumped when a column changes meaning.
FORMAT_VERSION = 1


def drift_table(result: DynamicsResult) -> pd.DataFrame:
    """One row per frame: the rigid shift (px, pm) and the RMS of the non-rigid residual field."""
    reg = result.registration
    table = pd.DataFrame({"frame": np.arange(len(reg.shifts)),
                          "shift_y_px": reg.shifts[:, 0], "shift_x_px": reg.shifts[:, 1]})
    scale = 100.0 * result.pixel_size if result.pixel_size else np.nan
    table["shift_y_pm"] = table["shift_y_px"] * scale
    table["shift_x_pm"] = table["shift_x_px"] * scale
    if reg.fields is not None:
        table["residual_rms_px"] = np.sqrt((reg.fields ** 2).sum(axis=1).mean(axis=(1, 2)))
    else:
        table["residual_rms_px"] = 0.0
    return table


def summary(result: DynamicsResult, source: str | None = None) -> dict[str, Any]:
    """The content of ``dynamics.json``."""
    drift = drift_table(result)
    kinds = result.events["kind"].value_counts().to_dict() if len(result.events) else {}
    return {
        "format_version": FORMAT_VERSION,
        "software": f"napari-stem-defects {__version__}",
        "source": source,
        "n_frames": int(len(result.columns)),
        "shape": list(result.registration.registered.shape),
        "pixel_size_A": result.pixel_size,
        "material": None if result.material is None else result.material.name,
        "nn_px": result.nn_px,
        "settings": result.settings,
        "n_tracks": int(len(result.track_features)),
        "n_sites_analysed": int(len(result.site_table)),
        "events": {str(k): int(v) for k, v in kinds.items()},
        "n_clusters": 0 if result.clusters is None else int(len(result.clusters.table)),
        "max_drift_px": float(np.hypot(drift["shift_y_px"], drift["shift_x_px"]).max()),
        "timings_s": result.timings,
        "messages": result.messages,
    }


def _with_pm(table: pd.DataFrame, pixel_size: float | None) -> pd.DataFrame:
    out = table.copy()
    scale = 100.0 * pixel_size if pixel_size else np.nan
    out["y_pm"] = out["y_px"] * scale
    out["x_pm"] = out["x_px"] * scale
    return out


def write_dynamics(result: DynamicsResult, out_dir: str | Path, source: str | None = None) -> dict[str, Path]:
    """Write every file of the module docstring into ``out_dir``, each atomically.

    Returns
    -------
    dict of str to Path
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = {
        "drift": drift_table(result),
        "tracks": _with_pm(result.tracks, result.pixel_size),
        "track_features": result.track_features,
        "events": result.events,
        "instability": result.site_table,
        "clusters": (result.clusters.table if result.clusters is not None
                     else pd.DataFrame(columns=list(CLUSTER_COLUMNS))),
    }
    if len(result.defect_counts):
        tables["defect_counts"] = result.defect_counts
    paths: dict[str, Path] = {}
    for key, table in tables.items():
        paths[key] = out / f"{key}.csv"
        atomic_write(paths[key], lambda p, t=table: t.to_csv(p, index=False, float_format="%.6g"))
    paths["instability_map"] = out / "instability.npy"
    atomic_save_npy(paths["instability_map"], result.instability_map.astype(np.float32))
    paths["summary"] = out / "dynamics.json"
    atomic_write_text(paths["summary"], json.dumps(summary(result, source), indent=2, default=json_default))
    return paths
