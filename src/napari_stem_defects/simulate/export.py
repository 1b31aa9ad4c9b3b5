"""Writing a digital twin to disk: the image, its ground truth, and how it was made."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_save_npy, atomic_write, atomic_write_text, json_default
from .twin import DigitalTwin

#: File names written by :func:`write_twin` (a contract with users' scripts).
IMAGE_FILE = "image.tif"
SITES_FILE = "sites.csv"
CELLS_FILE = "cells.csv"
META_FILE = "twin.json"
#: Maps a composite twin (:func:`~napari_stem_defects.simulate.sample.simulate_sample`) also writes.
MAP_FILES = {"phase_map": "phase_map.npy", "domain_map": "domain_map.npy"}


def write_twin(twin: DigitalTwin, out_dir: str | Path) -> dict[str, Path]:
    """Write a twin as ``image.tif``, ``sites.csv``, ``cells.csv`` and ``twin.json``.

    A composite twin also gets ``phase_map.npy`` (uint8 phase codes) and
    ``domain_map.npy`` (int32, domain + 1). The TIFF is float32 with its
    calibration (nm per pixel, ImageJ style), so the plugin's reader (and
    ImageJ, HyperSpy) opens it at the right scale. Every file is written atomically.

    Parameters
    ----------
    twin : DigitalTwin
        The twin.
    out_dir : str or Path
        Folder (created if needed).

    Returns
    -------
    dict of str to Path
        Paths written, keyed 'image', 'sites', 'cells', 'metadata' (and
        'phase_map', 'domain_map' when the twin has them).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"image": out / IMAGE_FILE, "sites": out / SITES_FILE, "cells": out / CELLS_FILE,
             "metadata": out / META_FILE}
    atomic_write(paths["image"], lambda tmp: _write_tiff(tmp, twin.image, twin.pixel_size))
    atomic_write_text(paths["sites"], twin.sites.to_csv(index=False))
    atomic_write_text(paths["cells"], twin.cells.to_csv(index=False))
    for key, name in MAP_FILES.items():
        if isinstance(twin.extra.get(key), np.ndarray):
            paths[key] = out / name
            atomic_save_npy(paths[key], twin.extra[key])
    meta = {
        **twin.metadata,
        "shape": list(twin.image.shape),
        "counts": {
            "sites": int(len(twin.sites)),
            "cells": int(len(twin.cells)),
            "site_defects": {k: int(v) for k, v in twin.sites["defect"].value_counts().items()},
            "cell_classes": {k: int(v) for k, v in twin.cells["class"].value_counts().items()},
            **({"boundary_cells": int(twin.cells["boundary"].sum())} if "boundary" in twin.cells else {}),
        },
        "files": {k: p.name for k, p in paths.items()},
        "coordinates": "(y_px, x_px) = (row, col) in pixels, pixel centres on integers",
    }
    atomic_write_text(paths["metadata"], json.dumps(meta, indent=2, default=json_default))
    return paths


def _write_tiff(path: Path, image: np.ndarray, pixel_size_A: float) -> None:
    import tifffile

    per_nm = 10.0 / pixel_size_A  # pixels per nm
    tifffile.imwrite(
        path,
        image.astype(np.float32),
        imagej=True,
        resolution=(per_nm, per_nm),
        metadata={"unit": "nm", "axes": "YX"},
    )

