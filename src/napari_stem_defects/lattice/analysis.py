"""One frame's lattice analysis (strain, profiles, class averages, cross-sections) and the files it writes.

:func:`analyse_frame` runs every step on a frame's site table and cells; :func:`write_lattice_files` writes
``strain_maps.npy``, ``defect_profiles.csv``, ``class_averages.npz``, ``class_average_columns.csv`` and
``class_averages.png`` (``analyze --strain``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .class_average import AVERAGE_COLUMNS, ClassAverage, class_averages
from .cross_section import CROSS_SECTION_COLUMN, column_cross_sections
from .profiles import defect_centres, defect_profiles
from .strain import STRAIN_COLUMNS, measure_strain, strain_maps

#: Columns ``analyze --strain`` appends to ``sites.csv``, in order.
LATTICE_SITE_COLUMNS = (*STRAIN_COLUMNS, CROSS_SECTION_COLUMN)


@dataclass
class LatticeFrame:
    """Everything :func:`analyse_frame` measured on one frame.

    Attributes
    ----------
    site_values : DataFrame
        :data:`LATTICE_SITE_COLUMNS` indexed like the site table.
    maps : ndarray of float32 (4, H, W)
        exx, eyy, exy, rotation_deg on the image grid (NaN outside the crystal).
    profiles : DataFrame
        :data:`~napari_stem_defects.lattice.profiles.PROFILE_COLUMNS`.
    averages : list of ClassAverage
    messages : list of str
    """

    site_values: pd.DataFrame
    maps: np.ndarray
    profiles: pd.DataFrame
    averages: list[ClassAverage] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)


def analyse_frame(image: np.ndarray, sites: pd.DataFrame, cells: pd.DataFrame | None, nn_px: float,
                  pixel_size: tuple[float, float] | None, metadata: dict[str, Any] | None = None,
                  reference: str | np.ndarray = "domain", window: int = 2) -> LatticeFrame:
    """Strain, rotation, defect profiles, class averages and column cross-sections of one frame.

    Parameters
    ----------
    image : ndarray (H, W)
    sites : DataFrame
        The frame's site table (columns stage).
    cells : DataFrame, optional
        Its classified cells (``cells.csv`` rows); without them no profiles or averages.
    nn_px : float
        Metal-chalcogen distance in pixels.
    pixel_size : (float, float), optional
        Å per pixel; without it distances stay in pixels (the ``_pm`` columns then hold pixels: a message
        says so).
    metadata : dict, optional
        The file's metadata (incident-beam normalisation for the cross-sections).
    reference : {'domain', 'material'} or ndarray of bool
        Reference lattice (see :func:`~napari_stem_defects.lattice.strain.reference_lattices`); 'material'
        needs the material's lattice constant in ``metadata['lattice_constant_A']`` or the nn distance.
    window : int
        Local-fit window in cells.
    """
    a_px = float(nn_px) * np.sqrt(3.0)
    messages: list[str] = []
    pm = None if pixel_size is None else float(np.mean(pixel_size)) * 100.0
    if pm is None:
        messages.append("no pixel size: profiles and relaxations are in pixels, not pm")
    nominal = None
    if isinstance(reference, str) and reference == "material":
        a_A = (metadata or {}).get("lattice_constant_A")
        if a_A is None or pixel_size is None:
            raise ValueError("a 'material' strain reference needs the material's lattice constant and a pixel size")
        nominal = float(a_A) / float(np.mean(pixel_size))
    strain = measure_strain(sites, reference, nominal, window)
    messages += strain.messages
    values = strain.table.loc[:, list(STRAIN_COLUMNS)].copy()
    values[CROSS_SECTION_COLUMN], source = column_cross_sections(image, sites, nn_px, metadata or {}, pixel_size)
    if source not in ("dose", "detector levels"):
        messages.append(source)
    maps = strain_maps(sites, strain.table, image.shape[-2:], nn_px)
    centres = defect_centres(cells) if cells is not None else {}
    profiles = defect_profiles(sites, strain.table, centres, a_px, pm)
    averages = class_averages(image, sites, centres, a_px, pm)
    return LatticeFrame(values, maps, profiles, averages, messages)


def analyse_frames(image: Any, frames: np.ndarray, results: list[Any], cells: list[pd.DataFrame],
                   material: str | None, reference: str = "domain") -> list[LatticeFrame]:
    """:func:`analyse_frame` of every frame of an ``analyze`` run (a StemImage, its (T, H, W) frames, their
    ColumnResults and classified cells); the material gives the nominal lattice constant."""
    meta = dict(image.metadata)
    if material and "lattice_constant_A" not in meta:
        from ..materials import parse_material

        meta["lattice_constant_A"] = parse_material(material).a
    return [analyse_frame(frame, r.sites, cells[t] if cells else None, r.nn_px, image.pixel_size, meta, reference)
            for t, (frame, r) in enumerate(zip(frames, results))]


def gallery_figure(averages: list[ClassAverage], columns: int = 4, size: float = 1.6):
    """A matplotlib Figure: one panel per class average with its class, n and SNR (no pyplot state)."""
    from matplotlib.figure import Figure

    n = max(1, len(averages))
    cols = min(columns, n)
    rows = int(np.ceil(n / cols))
    fig = Figure(figsize=(size * cols, size * rows + 0.2), dpi=100)
    for k in range(rows * cols):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.set_axis_off()
        if k < len(averages):
            avg = averages[k]
            ax.imshow(avg.image, cmap="gray")
            snr = "" if not np.isfinite(avg.snr) else f", SNR {avg.snr:.0f}"
            ax.set_title(f"{avg.name}\nn={avg.n}{snr}", fontsize=7)
        elif not averages and k == 0:
            ax.text(0.5, 0.5, "no defect class\nto average", ha="center", va="center", fontsize=8)
    fig.tight_layout()
    return fig


def write_lattice_files(frames: list[LatticeFrame], out: Path, stack: bool) -> dict[str, Path]:
    """Write the lattice files of ``analyze --strain`` (atomically) and return their paths."""
    from ..io.atomic import atomic_save_npy, atomic_write

    paths = {"strain_maps": out / "strain_maps.npy", "defect_profiles": out / "defect_profiles.csv",
             "class_averages": out / "class_averages.npz", "class_average_columns": out / "class_average_columns.csv",
             "class_gallery": out / "class_averages.png"}
    maps = np.stack([f.maps for f in frames]) if stack else frames[0].maps
    atomic_save_npy(paths["strain_maps"], maps.astype(np.float32))
    profiles, columns, arrays = [], [], {}
    for t, frame in enumerate(frames):
        prof = frame.profiles.copy()
        cols = pd.concat([a.columns for a in frame.averages], ignore_index=True) if frame.averages else \
            pd.DataFrame(columns=list(AVERAGE_COLUMNS))
        if stack:
            prof.insert(0, "frame", t)
            cols.insert(0, "frame", t)
        profiles.append(prof)
        columns.append(cols)
        for avg in frame.averages:
            key = f"{avg.name}" if not stack else f"frame{t}_{avg.name}"
            arrays[key] = avg.image
            arrays[f"{key}__n"] = np.array(avg.n)
            arrays[f"{key}__snr"] = np.array(avg.snr)
    prof_all = pd.concat(profiles, ignore_index=True)
    cols_all = pd.concat(columns, ignore_index=True)
    atomic_write(paths["defect_profiles"], lambda p: prof_all.to_csv(p, index=False, float_format="%.4f"))
    atomic_write(paths["class_average_columns"], lambda p: cols_all.to_csv(p, index=False, float_format="%.4f"))
    def save_npz(p: Path) -> None:
        with open(p, "wb") as f:  # a file object: savez adds no suffix
            np.savez_compressed(f, **arrays)

    atomic_write(paths["class_averages"], save_npz)
    fig = gallery_figure(frames[0].averages)
    atomic_write(paths["class_gallery"], lambda p: fig.savefig(p, format="png"))
    return paths


__all__ = ["LATTICE_SITE_COLUMNS", "LatticeFrame", "analyse_frame", "analyse_frames", "gallery_figure", "write_lattice_files"]
