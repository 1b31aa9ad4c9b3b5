"""``dataset.csv``: one row per file of a batch, in a stable column order.

The columns are a contract (documented in the README; later releases add
columns, never rename them): :data:`DATASET_COLUMNS` in this order, then one
``composition_<site>:<content>`` column per site content found in the
dataset (``composition_M:Mo``, ``composition_X:S2``...), sorted.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..heatmaps.classes import HEATMAP_CLASSES
from ..simulate.defects import CELL_CLASSES


def _class_columns() -> list[str]:
    cols = []
    for c in CELL_CLASSES:
        cols += [f"count_{c}", f"expected_count_{c}", f"concentration_{c}_cm2", f"concentration_{c}_lo95_cm2",
                 f"concentration_{c}_hi95_cm2"]
    return cols


#: Columns of ``dataset.csv`` before the composition columns, in order.
DATASET_COLUMNS: tuple[str, ...] = (
    "file", "status", "message", "frames", "height_px", "width_px", "material",
    "pixel_size_y_A", "pixel_size_x_A", "pixel_size_source",
    "calibration_checked", "calibration_measured_A", "calibration_difference", "calibration_ok",
    "n_sites", "n_detected", "n_cells", "area_nm2",
    *_class_columns(),
    *(f"regions_{c}" for c in HEATMAP_CLASSES),
    "warnings", "run_time_s", "finished", "content_sha256", "results",
)
#: Prefix of the composition columns.
COMPOSITION_PREFIX = "composition_"


def file_row(rel: str, analysis: Any, summary: dict | None, calibration: dict, pixel_source: str) -> dict[str, Any]:
    """The ``dataset.csv`` values of one analysed file (status, times and warnings are added by the record).

    Parameters
    ----------
    rel : str
        The file's relative path.
    analysis : Analysis
        What :func:`napari_stem_defects.analyze.analyze_image` returned.
    summary : dict or None
        ``analysis.summary()`` (None without a material).
    calibration : dict
        :func:`napari_stem_defects.batch.worker.calibration_check`.
    pixel_source : {'file', 'override', 'none'}
        Where the pixel size came from.
    """
    image = analysis.image
    shape = tuple(image.data.shape)
    pixel = image.pixel_size
    measured = calibration.get("measured_A")
    row: dict[str, Any] = {
        "file": rel, "frames": shape[0] if len(shape) == 3 else 1, "height_px": shape[-2], "width_px": shape[-1],
        "material": analysis.settings.get("material") or "",
        "pixel_size_y_A": None if pixel is None else pixel[0], "pixel_size_x_A": None if pixel is None else pixel[1],
        "pixel_size_source": pixel_source,
        "calibration_checked": bool(calibration.get("checked")),
        "calibration_measured_A": None if not measured else float(np.mean(measured)),
        "calibration_difference": calibration.get("relative_difference"),
        "calibration_ok": calibration.get("ok"),
        "n_sites": int(sum(len(r.sites) for r in analysis.columns)),
        "n_detected": int(sum(int(r.sites["detected"].sum()) for r in analysis.columns)),
    }
    if summary is not None:
        total = summary["total"]
        row.update(n_cells=total["n_cells"], area_nm2=total["area_nm2"])
        for c in CELL_CLASSES:
            lo, hi = total.get("concentration_ci95_cm2", {}).get(c, (None, None))
            row.update({f"count_{c}": total["counts"].get(c), f"expected_count_{c}": total.get("expected_count", {}).get(c),
                        f"concentration_{c}_cm2": total["concentration_cm2"].get(c),
                        f"concentration_{c}_lo95_cm2": lo, f"concentration_{c}_hi95_cm2": hi})
        row.update({f"{COMPOSITION_PREFIX}{k}": v for k, v in total["composition"].items()})
    if analysis.heatmaps:
        counts = analysis.heatmaps_summary()["region_counts"]
        row.update({f"regions_{c}": counts.get(c) for c in HEATMAP_CLASSES})
    return row


def record_row(record: dict[str, Any]) -> dict[str, Any]:
    """The full ``dataset.csv`` row of a file's batch record (its analysis values, status, message, times)."""
    row = dict(record.get("row") or {"file": record.get("file")})
    row.update(status=record.get("status"), message=record.get("message", ""),
               warnings="; ".join(record.get("warnings") or []), run_time_s=record.get("run_time_s"),
               finished=record.get("finished"), content_sha256=record.get("content_sha256"),
               results=record.get("file"))
    return row


def dataset_table(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """The ``dataset.csv`` table of some file records, sorted by file."""
    rows = sorted((record_row(r) for r in records), key=lambda r: str(r.get("file")))
    composition = sorted({k for r in rows for k in r if k.startswith(COMPOSITION_PREFIX)})
    table = pd.DataFrame(rows, columns=[*DATASET_COLUMNS, *composition])
    for col in ("frames", "height_px", "width_px", "n_sites", "n_detected", "n_cells",
                *(f"count_{c}" for c in CELL_CLASSES), *(f"regions_{c}" for c in HEATMAP_CLASSES)):
        table[col] = table[col].astype("Int64")
    return table


def write_dataset(records: Iterable[dict[str, Any]], path: str | Path) -> Path:
    """Write ``dataset.csv`` atomically (six significant digits; empty cells for missing values)."""
    from ..io.atomic import atomic_write

    table = dataset_table(records)
    path = Path(path)
    atomic_write(path, lambda p: table.to_csv(p, index=False, float_format="%.6g"))
    return path


__all__ = ["COMPOSITION_PREFIX", "DATASET_COLUMNS", "dataset_table", "file_row", "record_row", "write_dataset"]
