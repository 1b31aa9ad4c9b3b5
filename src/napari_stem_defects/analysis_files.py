"""The files ``napari-stem-defects analyze`` writes, atomically (their columns are a contract: README).

:func:`write_analysis` writes ``sites.csv``, ``analysis.json``, ``phase_map.npy`` and
``domain_map.npy``, with a material ``cells.csv`` and ``summary.json``, and with heatmaps
``heatmaps.npy``, ``uncertainty.npy``, ``heatmaps.json`` and ``regions.csv``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import __version__
from .columns.result import ColumnResult
from .io.atomic import atomic_save_npy, atomic_write, atomic_write_text, json_default
from .vocabulary import PHASE_CODES

if TYPE_CHECKING:
    from .analysis_result import Analysis

#: Version of the files ``analyze`` writes; bumped when a column changes meaning.
FORMAT_VERSION = 1

def write_analysis(analysis: Analysis, out_dir: str | Path, source: str | None = None) -> dict[str, Path]:
    """Write ``sites.csv``, ``analysis.json``, (with a material) ``cells.csv`` and ``summary.json``, and
    (with heatmaps) ``heatmaps.npy``, ``uncertainty.npy``, ``heatmaps.json`` and ``regions.csv``, atomically.

    Returns
    -------
    dict of str to Path
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"sites": out / "sites.csv", "analysis": out / "analysis.json", "phase_map": out / "phase_map.npy",
             "domain_map": out / "domain_map.npy"}
    table = analysis.sites_table()
    atomic_write(paths["sites"], lambda p: table.to_csv(p, index=False, float_format="%.4f"))
    phases, domains = analysis.phase_maps()
    stack = analysis.image.data.ndim == 3
    atomic_save_npy(paths["phase_map"], np.stack(phases) if stack else phases[0])
    atomic_save_npy(paths["domain_map"], np.stack(domains) if stack else domains[0])
    if analysis.cells:
        paths["cells"], paths["summary"] = out / "cells.csv", out / "summary.json"
        cells = analysis.cells_table()
        atomic_write(paths["cells"], lambda p: cells.to_csv(p, index=False, float_format="%.4f"))
        atomic_write_text(paths["summary"], json.dumps(analysis.summary(), indent=2, default=json_default))
    if analysis.heatmaps:
        paths.update(_write_heatmaps(analysis, out, source))
    if analysis.lattice:
        from .lattice.analysis import write_lattice_files

        paths.update(write_lattice_files(analysis.lattice, out, stack))
    info = {
        "format_version": FORMAT_VERSION,
        "software": f"napari-stem-defects {__version__}",
        "source": source,
        "name": analysis.image.name,
        "shape": list(analysis.image.data.shape),
        "pixel_size_A": None if analysis.image.pixel_size is None else list(analysis.image.pixel_size),
        "settings": analysis.settings,
        "warnings": analysis.warnings,
        "image_check": None if analysis.check is None else analysis.check.as_dict(),
        "sites_columns": list(table.columns),
        "phase_codes": PHASE_CODES,
        "phase_map_file": "phase_map.npy",
        "domain_map_file": "domain_map.npy",
        "frames": [_frame_info(r) for r in analysis.columns],
    }
    if analysis.lattice:
        info["lattice_messages"] = [f.messages for f in analysis.lattice]
    atomic_write_text(paths["analysis"], json.dumps(info, indent=2, default=json_default))
    return paths


def _write_heatmaps(analysis: Analysis, out: Path, source: str | None) -> dict[str, Path]:
    paths = {"heatmaps": out / "heatmaps.npy", "uncertainty": out / "uncertainty.npy",
             "heatmaps_info": out / "heatmaps.json", "regions": out / "regions.csv"}
    maps, unc = analysis.heatmap_arrays()
    for key, array in (("heatmaps", maps), ("uncertainty", unc)):
        atomic_save_npy(paths[key], array)
    regions = analysis.regions_table()
    # six significant digits: a one-pixel region is ~1e-4 nm^2
    atomic_write(paths["regions"], lambda p: regions.to_csv(p, index=False, float_format="%.6g"))
    info = {**analysis.heatmaps_info(), "source": source, "name": analysis.image.name}
    atomic_write_text(paths["heatmaps_info"], json.dumps(info, indent=2, default=json_default))
    return paths


def _frame_info(result: ColumnResult) -> dict:
    counts = result.sites.groupby(["sublattice", "species"]).size()
    return {
        "a1_px": result.a1.tolist(),
        "a2_px": result.a2.tolist(),
        "nn_px": result.nn_px,
        "n_sites": int(len(result.sites)),
        "n_detected": int(result.sites["detected"].sum()),
        "counts": {f"{sub}:{sp}": int(n) for (sub, sp), n in counts.items()},
        "species_fits": {
            sub: {"labels": fit.labels, "means": fit.means.tolist(), "sigmas": fit.sigmas.tolist(),
                  "weights": fit.weights.tolist(), "gamma": fit.gamma}
            for sub, fit in result.species_fits.items()
        },
        "messages": result.messages,
        "n_peaks": int(len(result.peaks)),
        "n_unexplained_peaks": int(len(result.unexplained)),
        "domains": [{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in d.items()}
                    for d in result.domains],
    }


__all__ = ["FORMAT_VERSION", "write_analysis"]
