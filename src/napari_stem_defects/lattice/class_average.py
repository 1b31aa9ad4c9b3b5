"""Class-averaged defect images: every instance of a class aligned on its fitted sites, averaged and fitted.

Each instance's frame is the local lattice of the detected metal sites in a ring around it (between
``inner`` and ``outer`` lattice constants, so the relaxation near the defect does not move the frame): a
least-squares ``position = c + i b1 + j b2`` over those sites. The patch is sampled (sub-pixel, linear
interpolation) on the common grid of the mean basis, so every instance lands on the same ideal lattice; the
average, the number averaged and the signal-to-noise follow. Gaussian fits of the average's columns
(:func:`~napari_stem_defects.columns.refine_gaussian`), less those of the average of perfect cells at the same
places, give the relaxation of every column around the defect in pm; its error bar is the standard deviation
of the same over bootstrap resamples of the instances.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.spatial import cKDTree

from .strain import fit_reference, metal_rows

#: Columns of :attr:`ClassAverage.columns` (and of ``class_average_columns.csv``).
AVERAGE_COLUMNS = ("class", "sublattice", "ti", "tj", "r_pm", "dy_pm", "dx_pm", "radial_pm", "radial_err_pm",
                   "n_averaged")


@dataclass
class ClassAverage:
    """One class's average.

    Attributes
    ----------
    name : str
    image : ndarray of float32 (h, w)
        The average, centred on the defect.
    n : int
        Instances averaged.
    snr, snr_single : float
        Signal (standard deviation of the average over the patch) over the noise of the average
        (``sqrt(mean variance over instances / n)``), and the same for one instance.
    columns : DataFrame
        :data:`AVERAGE_COLUMNS`: each column within ``fit_cells`` of the centre, its lattice coordinates
        relative to the centre, distance, fitted displacement (against the perfect-cell average when given,
        else the ideal lattice) and radial part with its bootstrap error.
    """

    name: str
    image: np.ndarray
    n: int
    snr: float
    snr_single: float
    columns: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(AVERAGE_COLUMNS)))


@dataclass
class _Frames:
    centres_t: np.ndarray  # (k, 2) lattice coordinates of the centres, snapped to the thirds grid
    origin: np.ndarray  # (k, 2) c
    basis: np.ndarray  # (k, 2, 2) columns b1, b2 (y, x)
    mean_basis: np.ndarray  # (2, 2)


def instance_frames(sites: pd.DataFrame, centres: np.ndarray, a_px: float, inner: float = 3.0,
                    outer: float = 6.0) -> tuple[_Frames, np.ndarray]:
    """The local lattice of every instance from the detected metals in the ring ``inner..outer`` (cells).

    Returns
    -------
    frames : _Frames
        For the instances that have one (at least 8 ring sites of one domain).
    ok : ndarray of bool
        Which of ``centres`` have a frame.
    """
    metal = metal_rows(sites)
    yx = sites.loc[metal, ["y_px", "x_px"]].to_numpy(float)
    ij = sites.loc[metal, ["i", "j"]].to_numpy(np.int64)
    dom = sites.loc[metal, "domain"].to_numpy(np.int64) if "domain" in sites else np.zeros(len(yx), np.int64)
    ok = np.zeros(len(centres), bool)
    out_t, out_c, out_b = [], [], []
    if len(yx) < 8:
        return _Frames(np.zeros((0, 2)), np.zeros((0, 2)), np.zeros((0, 2, 2)), np.eye(2) * a_px), ok
    tree = cKDTree(yx)
    for k, centre in enumerate(np.asarray(centres, float)):
        idx = np.asarray(tree.query_ball_point(centre, outer * a_px), int)
        if len(idx) == 0:
            continue
        idx = idx[np.linalg.norm(yx[idx] - centre, axis=1) >= inner * a_px]
        if len(idx) < 8:
            continue
        main = np.bincount(dom[idx] - dom.min()).argmax() + dom.min()
        idx = idx[dom[idx] == main]
        if len(idx) < 8:
            continue
        c, b1, b2 = fit_reference(yx[idx], ij[idx])
        basis = np.column_stack([b1, b2])
        if abs(np.linalg.det(basis)) < 1e-6:
            continue
        t = np.linalg.solve(basis, centre - c)
        out_t.append(np.round(3 * t) / 3)
        out_c.append(c)
        out_b.append(basis)
        ok[k] = True
    if not out_b:
        return _Frames(np.zeros((0, 2)), np.zeros((0, 2)), np.zeros((0, 2, 2)), np.eye(2) * a_px), ok
    b = np.stack(out_b)
    return _Frames(np.stack(out_t), np.stack(out_c), b, np.median(b, axis=0)), ok


def aligned_patches(image: np.ndarray, frames: _Frames, half_px: int, mean_basis: np.ndarray | None = None) -> np.ndarray:
    """Patches (k, 2 half + 1, 2 half + 1) of every instance, sampled on the mean basis' grid around its centre."""
    mb = frames.mean_basis if mean_basis is None else mean_basis
    q = np.mgrid[-half_px:half_px + 1, -half_px:half_px + 1].reshape(2, -1).T.astype(float)  # (P, 2) y, x
    tq = np.linalg.solve(mb, q.T).T  # lattice coordinates of the grid
    img = np.asarray(image, np.float64)
    fill = float(np.nanmedian(img))
    img = np.where(np.isfinite(img), img, fill)
    out = np.empty((len(frames.origin), 2 * half_px + 1, 2 * half_px + 1), np.float32)
    for k in range(len(frames.origin)):
        where = frames.origin[k] + (frames.centres_t[k] + tq) @ frames.basis[k].T
        out[k] = ndimage.map_coordinates(img, where.T, order=1, mode="nearest").reshape(out.shape[1:])
    return out


def _snr(patches: np.ndarray) -> tuple[float, float]:
    n = len(patches)
    mean = patches.mean(axis=0)
    signal = float(mean.std())
    var = float(patches.var(axis=0, ddof=1).mean()) if n > 1 else float("nan")
    noise_one = np.sqrt(var) if var > 0 else float("nan")
    return signal / (noise_one / np.sqrt(n)), signal / noise_one


def column_grid(mean_basis: np.ndarray, centre_t: np.ndarray, half_px: int, fit_cells: float,
                a_px: float) -> pd.DataFrame:
    """Metal and X2 columns within ``fit_cells`` of the patch centre and inside it: lattice coordinates relative
    to the centre and their ideal (y, x) in the patch."""
    rows = []
    span = int(np.ceil(fit_cells)) + 2
    for sub, off in (("M", 0.0), ("X", 1.0 / 3.0)):
        for i in range(-span, span + 1):
            for j in range(-span, span + 1):
                t = np.array([i + off, j + off]) - (centre_t - np.floor(centre_t))
                p = mean_basis @ t
                r = float(np.hypot(*p))
                if 0.3 * a_px < r <= fit_cells * a_px and np.all(np.abs(p) < half_px - 0.25 * a_px):
                    rows.append((sub, t[0], t[1], r, p[0] + half_px, p[1] + half_px))
    return pd.DataFrame(rows, columns=["sublattice", "ti", "tj", "r_px", "y_px", "x_px"])


def _fit(avg: np.ndarray, start: np.ndarray, radius: float) -> np.ndarray:
    from ..columns.refine import refine_gaussian

    fit = refine_gaussian(avg.astype(np.float64), start, radius)
    pos = np.where(fit.converged[:, None], fit.positions, np.nan)
    return pos


def class_average(image: np.ndarray, sites: pd.DataFrame, centres: np.ndarray, name: str, a_px: float,
                  pm_per_px: float | None = None, perfect: np.ndarray | None = None, fit_cells: float = 1.7,
                  n_boot: int = 30, seed: int = 0, half_cells: float = 2.0) -> ClassAverage | None:
    """Align, average and fit every instance of one class.

    Parameters
    ----------
    image : ndarray (H, W)
    sites : DataFrame
        Site table (detected metals with ``i, j``, ``domain``).
    centres : ndarray (k, 2)
        Instance centres (y, x) px (:func:`~napari_stem_defects.lattice.profiles.defect_centres`).
    name : str
        The class.
    a_px : float
        Lattice constant in pixels.
    pm_per_px : float, optional
        Picometres per pixel (None: displacements in pixels).
    perfect : ndarray (m, 2), optional
        Centres of perfect cells: their average, fitted the same way, is the zero of the displacements
        (it cancels the fit's bias from overlapping columns).
    fit_cells : float
        Columns within this many lattice constants are fitted.
    n_boot : int
        Bootstrap resamples for the error bars.
    half_cells : float
        Half-width of the patch in lattice constants.

    Returns
    -------
    ClassAverage or None
        None when no instance has a frame.
    """
    frames, ok = instance_frames(sites, centres, a_px)
    if not ok.any():
        return None
    half = int(np.ceil(half_cells * a_px))
    patches = aligned_patches(image, frames, half)
    avg = patches.mean(axis=0)
    snr, snr_one = _snr(patches) if len(patches) > 1 else (float("nan"), float("nan"))
    mb = frames.mean_basis
    grid = column_grid(mb, frames.centres_t[0], half, fit_cells, a_px)
    scale = 1.0 if pm_per_px is None else float(pm_per_px)
    if len(grid) == 0:
        return ClassAverage(name, avg, len(patches), snr, snr_one)
    ideal = grid[["y_px", "x_px"]].to_numpy(float)
    radius = 0.4 * a_px / np.sqrt(3.0)
    zero = ideal
    if perfect is not None and len(perfect):
        pf, pok = instance_frames(sites, perfect, a_px)
        if pok.any():
            pf.centres_t = pf.centres_t - np.floor(pf.centres_t) + (frames.centres_t[0] - np.floor(frames.centres_t[0]))
            zero = _fit(aligned_patches(image, pf, half, mb).mean(axis=0), ideal, radius)
            zero = np.where(np.isfinite(zero), zero, ideal)
    rng = np.random.default_rng(seed)
    fitted = _fit(avg, ideal, radius)
    boots = np.stack([_fit(patches[rng.integers(0, len(patches), len(patches))].mean(axis=0), ideal, radius)
                      for _ in range(n_boot if len(patches) > 1 else 0)]) if len(patches) > 1 else None
    d = fitted - zero
    rhat = (ideal - half) / np.linalg.norm(ideal - half, axis=1, keepdims=True)
    radial = np.sum(d * rhat, axis=1)
    err = np.full(len(ideal), np.nan)
    if boots is not None:
        radial_boots = np.sum((boots - zero) * rhat, axis=2)
        enough = np.isfinite(radial_boots).sum(axis=0) > 1
        err[enough] = np.nanstd(radial_boots[:, enough], axis=0, ddof=1)
    columns = pd.DataFrame({"class": name, "sublattice": grid["sublattice"], "ti": grid["ti"], "tj": grid["tj"],
                            "r_pm": grid["r_px"] * scale, "dy_pm": d[:, 0] * scale, "dx_pm": d[:, 1] * scale,
                            "radial_pm": radial * scale, "radial_err_pm": err * scale, "n_averaged": len(patches)})
    return ClassAverage(name, avg, len(patches), snr, snr_one, columns[list(AVERAGE_COLUMNS)])


def class_averages(image: np.ndarray, sites: pd.DataFrame, centres: dict[str, np.ndarray], a_px: float,
                   pm_per_px: float | None = None, perfect: np.ndarray | None = None,
                   max_instances: int = 2000, **kwargs) -> list[ClassAverage]:
    """:func:`class_average` of every class in ``centres`` (at most ``max_instances`` each, and of perfect cells)."""
    if perfect is not None and len(perfect) > max_instances:
        perfect = perfect[np.linspace(0, len(perfect) - 1, max_instances).astype(int)]
    out = []
    for name, where in sorted(centres.items()):
        where = np.asarray(where, float).reshape(-1, 2)[:max_instances]
        avg = class_average(image, sites, where, name, a_px, pm_per_px, perfect, **kwargs)
        if avg is not None:
            out.append(avg)
    return out


def relaxation_summary(avg: ClassAverage, shell: str = "M") -> tuple[float, float, float]:
    """Mean radial relaxation (pm) of the nearest shell of ``shell`` columns, its error and its radius (pm)."""
    cols = avg.columns[(avg.columns["sublattice"] == shell) & np.isfinite(avg.columns["radial_pm"])]
    if len(cols) == 0:
        return float("nan"), float("nan"), float("nan")
    r0 = cols["r_pm"].min()
    first = cols[cols["r_pm"] < r0 * 1.1]
    err = float(np.sqrt(np.nanmean(first["radial_err_pm"] ** 2) / len(first)))
    return float(first["radial_pm"].mean()), err, float(r0)


__all__ = ["AVERAGE_COLUMNS", "ClassAverage", "aligned_patches", "class_average", "class_averages",
           "column_grid", "instance_frames", "relaxation_summary"]
