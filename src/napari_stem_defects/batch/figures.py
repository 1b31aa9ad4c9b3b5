"""The report's figures, drawn with matplotlib (Agg, no pyplot state) to PNG.

Per file (drawn by the worker that analysed it, while the analysis is in
memory): the image with its classified cells, the concentrations with their
95 % intervals, the column intensity histograms with the fitted species
components, and the heatmaps. Per dataset (drawn by the report): the
concentrations of every file with error bars and pooled, the class counts,
the composition, the calibration check and the run times.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Largest side of a thumbnail, in pixels.
THUMB_PX = 560
#: Classes drawn and plotted (every class but 'perfect').
_DEFECTS = ("V_X1", "V_X2", "V_M", "V_X1+V_M", "V_X2+V_M", "M_X", "X_M", "dopant_M", "sub_X", "adatom")
_STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
          "axes.spines.top": False, "axes.spines.right": False, "figure.dpi": 100}


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def to_png(fig: Any) -> bytes:
    """The figure as PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    return buf.getvalue()


def thumbnail(image: np.ndarray, max_side: int = THUMB_PX) -> tuple[np.ndarray, int]:
    """Block-mean downsampled image (at most ``max_side`` px) and the factor used.

    Examples
    --------
    >>> small, k = thumbnail(np.ones((1000, 500)), 400)
    >>> small.shape, k
    ((334, 167), 3)
    """
    img = np.nan_to_num(np.asarray(image, np.float32))
    k = max(1, int(np.ceil(max(img.shape) / max_side)))
    if k == 1:
        return img, 1
    h, w = (img.shape[0] + k - 1) // k * k, (img.shape[1] + k - 1) // k * k
    padded = np.pad(img, ((0, h - img.shape[0]), (0, w - img.shape[1])), mode="edge")
    return padded.reshape(h // k, k, w // k, k).mean(axis=(1, 3)), k


def _contrast(img: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(img, [0.5, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1)


def overview_png(image: np.ndarray, cells: Any, title: str, nn_px: float | None = None) -> bytes:
    """The image with a ring in its class colour around every defective cell (dashed when the classifier was
    unsure, confidence under 0.6).

    Parameters
    ----------
    image : ndarray (H, W)
    cells : DataFrame or None
        Cell table (``y_px, x_px, class, confidence``) of this frame.
    title : str
    nn_px : float, optional
        Metal to chalcogen distance in image pixels (sets the rings' size).
    """
    import matplotlib
    from matplotlib.collections import PatchCollection
    from matplotlib.lines import Line2D
    from matplotlib.patches import Circle

    from ..cells.shapes_layer import class_colour

    small, k = thumbnail(image)
    with matplotlib.rc_context(_STYLE):
        fig = _figure(8.0, 6.0 * small.shape[0] / small.shape[1] + 0.5)
        ax = fig.add_subplot()
        lo, hi = _contrast(small)
        ax.imshow(small, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(title, loc="left")
        shown = cells[cells["class"] != "perfect"] if cells is not None and len(cells) else None
        if shown is not None and len(shown):
            radius = max(2.5, 0.7 * (nn_px or 8.0) / k)
            handles = []
            for cls in _DEFECTS:
                part = shown[shown["class"] == cls]
                if not len(part):
                    continue
                sure = part["confidence"].to_numpy(float) >= 0.6 if "confidence" in part else np.ones(len(part), bool)
                colour = class_colour(cls)
                centres = np.column_stack([part["x_px"].to_numpy(float), part["y_px"].to_numpy(float)]) / k
                for mask, style in ((sure, "solid"), (~sure, (0, (2, 1.5)))):
                    if mask.any():
                        ax.add_collection(PatchCollection([Circle(c, radius) for c in centres[mask]],
                                                          facecolor="none", edgecolor=colour, linewidth=1.6,
                                                          linestyle=style))
                handles.append(Line2D([], [], marker="o", ls="none", mfc="none", mec=colour, mew=1.6, ms=9,
                                      label=f"{cls} ({len(part)})"))
            handles.append(Line2D([], [], marker="o", ls="none", mfc="none", mec="#666666", mew=1.2, ms=9,
                                  label="unsure (dashed)"))
            ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False,
                      title="defective cells")
        elif cells is not None:
            ax.text(1.02, 0.98, "no defective cell", transform=ax.transAxes, va="top")
        return to_png(fig)


def histograms_png(result: Any) -> bytes:
    """Column intensity histogram of each sublattice with every fitted species component (as the columns dock)."""
    import matplotlib

    from ..columns.points_layer import species_colour

    fits = [result.species_fits[s] for s in ("M", "X") if s in result.species_fits]
    with matplotlib.rc_context(_STYLE):
        fig = _figure(6.0, 2.2 * max(1, len(fits)))
        for n, fit in enumerate(fits):
            ax = fig.add_subplot(len(fits), 1, n + 1)
            ax.set(title=f"{'metal' if fit.sublattice == 'M' else 'chalcogen'} sites ({fit.sublattice})",
                   xlabel="integrated intensity", ylabel="density")
            values = np.asarray(fit.intensities, float)
            values = values[np.isfinite(values)]
            if not values.size:
                continue
            ax.hist(values, bins=min(80, max(10, values.size // 20)), density=True, color="#999999", alpha=0.6)
            pad = 0.1 * np.ptp(values) + 1e-9
            xs = np.linspace(values.min() - pad, values.max() + pad, 400)
            pdf = fit.component_pdf(xs)
            for label, weight, curve in zip(fit.labels, fit.weights, pdf, strict=False):
                if weight < 0.005:  # a species the mixture found no column of
                    continue
                colour = species_colour(label)
                ax.plot(xs, curve, color="#444444" if colour.upper() == "#FFFFFF" else colour, lw=1.6,
                        label=f"{label} ({weight:.0%})")
            ax.plot(xs, pdf.sum(axis=0), color="black", lw=0.8, ls="--", label="mixture")
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        return to_png(fig)


def concentrations_png(total: dict, title: str = "concentration (95 % interval)") -> bytes | None:
    """Defect concentrations of one file with their 95 % intervals (counts when uncalibrated)."""

    classes = [c for c in _DEFECTS if total["counts"].get(c) or total.get("expected_count", {}).get(c, 0) >= 0.5]
    if not classes:
        return None
    calibrated = all(np.isfinite(total["concentration_cm2"].get(c, np.nan)) for c in classes)
    if calibrated:
        values = np.array([total["concentration_cm2"][c] for c in classes]) / 1e12
        ci = np.array([total["concentration_ci95_cm2"][c] for c in classes]) / 1e12
        label = "concentration (10$^{12}$ cm$^{-2}$)"
    else:
        values = np.array([total["counts"][c] for c in classes], float)
        ci = np.array([total["count_ci95"][c] for c in classes])
        label = "cells (no calibration)"
    return _bars_png(classes, values, ci, label, title)


def _bars_png(classes: Sequence[str], values: np.ndarray, ci: np.ndarray, label: str, title: str) -> bytes:
    import matplotlib

    from ..cells.shapes_layer import class_colour

    with matplotlib.rc_context(_STYLE):
        fig = _figure(6.0, 0.5 + 0.32 * len(classes) + 0.6)
        ax = fig.add_subplot()
        y = np.arange(len(classes))
        colours = [class_colour(c) if class_colour(c).upper() != "#FFFFFF" else "#DDDDDD" for c in classes]
        ax.barh(y, values, color=colours, edgecolor="black", linewidth=0.5)
        err = np.vstack([np.clip(values - ci[:, 0], 0, None), np.clip(ci[:, 1] - values, 0, None)])
        ax.errorbar(values, y, xerr=err, fmt="none", ecolor="black", capsize=3, lw=1)
        ax.set_yticks(y, classes)
        ax.invert_yaxis()
        ax.set(xlabel=label, title=title)
        return to_png(fig)


def heatmaps_png(image: np.ndarray, result: Any) -> bytes:
    """Thumbnails of each family's defect probability map over the image (first frame)."""
    import matplotlib

    maps = np.asarray(result.maps)
    small, _ = thumbnail(image, 260)
    with matplotlib.rc_context(_STYLE):
        fig = _figure(2.2 * len(result.classes), 2.5)
        for n, cls in enumerate(result.classes):
            ax = fig.add_subplot(1, len(result.classes), n + 1)
            ax.imshow(small, cmap="gray", vmin=_contrast(small)[0], vmax=_contrast(small)[1])
            prob, _ = thumbnail(maps[n], 260)
            ax.imshow(np.ma.masked_less(prob, 0.05), cmap="inferno", vmin=0, vmax=1, alpha=0.75,
                      extent=(-0.5, small.shape[1] - 0.5, small.shape[0] - 0.5, -0.5))
            ax.set_axis_off()
            ax.set_title(cls)
        return to_png(fig)


def file_figures(analysis: Any, first: np.ndarray, folder: Path) -> dict[str, str]:
    """Draw one analysed file's figures into ``folder``; names of the PNG files by figure."""
    from ..io.atomic import atomic_write

    pngs: dict[str, bytes | None] = {}
    cells = analysis.cells[0] if analysis.cells else None
    shape = "x".join(str(n) for n in analysis.image.data.shape)
    frame = " (frame 0)" if analysis.image.data.ndim == 3 else ""
    pngs["overview"] = overview_png(first, cells, f"{analysis.image.name}{frame}, {shape} px",
                                    analysis.columns[0].nn_px)
    pngs["histograms"] = histograms_png(analysis.columns[0])
    if analysis.cells:
        pngs["concentrations"] = concentrations_png(analysis.summary()["total"])
    if analysis.heatmaps:
        pngs["heatmaps"] = heatmaps_png(first, analysis.heatmaps[0])
    names = {}
    remove_figures(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for key, png in pngs.items():
        if png is None:
            continue
        atomic_write(folder / f"{key}.png", lambda p, data=png: Path(p).write_bytes(data))
        names[key] = f"{key}.png"
    return names


#: The per-file figures, as ``<name>.png`` in the file's ``figures/`` folder.
FIGURE_NAMES = ("overview", "histograms", "concentrations", "heatmaps")


def remove_figures(folder: Path) -> None:
    """Remove the per-file figures an earlier run drew (only those; the folder too when it is left empty)."""
    for key in FIGURE_NAMES:
        (folder / f"{key}.png").unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass


# --------------------------------------------------------------------------- dataset


def dataset_concentrations_png(table: Any, pooled: dict[str, dict[str, tuple[float, float, float]]]) -> bytes | None:
    """Concentration of each defect class in every file with its 95 % interval, and pooled per material."""
    import matplotlib

    ok = table[table["status"] == "ok"]
    classes = [c for c in _DEFECTS if f"count_{c}" in ok and ok[f"count_{c}"].fillna(0).sum() > 0]
    if not classes or ok["area_nm2"].isna().all():
        return None
    cols = 2 if len(classes) > 1 else 1
    rows = (len(classes) + cols - 1) // cols
    with matplotlib.rc_context(_STYLE):
        fig = _figure(9.0, 2.3 * rows + 0.3)
        x = np.arange(len(ok))
        for n, cls in enumerate(classes):
            ax = fig.add_subplot(rows, cols, n + 1)
            value = ok[f"concentration_{cls}_cm2"].to_numpy(float) / 1e12
            lo = ok[f"concentration_{cls}_lo95_cm2"].to_numpy(float) / 1e12
            hi = ok[f"concentration_{cls}_hi95_cm2"].to_numpy(float) / 1e12
            err = np.vstack([np.clip(value - lo, 0, None), np.clip(hi - value, 0, None)])
            ax.errorbar(x, value, yerr=err, fmt="o", ms=3, capsize=2, lw=0.8, color="#0077BB")
            for material, per_class in pooled.items():
                c, plo, phi = per_class.get(cls, (np.nan, np.nan, np.nan))
                if np.isfinite(c):
                    ax.axhspan(plo / 1e12, phi / 1e12, color="#EE7733", alpha=0.2, lw=0)
                    ax.axhline(c / 1e12, color="#EE7733", lw=1, label=f"{material} pooled")
            ax.set(title=cls, ylabel="10$^{12}$ cm$^{-2}$")
            ax.set_ylim(bottom=0)
            if len(ok) <= 25:
                ax.set_xticks(x, [Path(f).name for f in ok["file"]], rotation=60, ha="right", fontsize=7)
            else:
                ax.set_xlabel("file (dataset.csv order)")
            if n == 0 and pooled:
                ax.legend(frameon=False)
        return to_png(fig)


def dataset_pooled_png(material: str, per_class: dict[str, tuple[float, float, float]],
                       classes: Sequence[str]) -> bytes | None:
    """Pooled concentration of the given defect classes over a material's files, with its 95 % interval."""
    classes = [c for c in classes if np.isfinite(per_class.get(c, (np.nan,))[0])]
    if not classes:
        return None
    values = np.array([per_class[c][0] for c in classes]) / 1e12
    ci = np.array([per_class[c][1:] for c in classes]) / 1e12
    return _bars_png(classes, values, ci, "concentration (10$^{12}$ cm$^{-2}$)",
                     f"{material}: all files pooled (95 % interval)")


def dataset_composition_png(table: Any) -> bytes | None:
    """Share of each site content (metal and chalcogen sites) in every file, as stacked bars."""
    import matplotlib

    from ..columns.points_layer import species_colour

    ok = table[table["status"] == "ok"]
    cols = [c for c in ok.columns if c.startswith("composition_")]
    if not cols or not len(ok):
        return None
    with matplotlib.rc_context(_STYLE):
        fig = _figure(9.0, 0.8 + 0.22 * min(len(ok), 60) + 0.8)
        for n, site in enumerate(("M", "X")):
            ax = fig.add_subplot(1, 2, n + 1)
            mine = [c for c in cols if c.startswith(f"composition_{site}:")]
            left = np.zeros(len(ok))
            y = np.arange(len(ok))
            for col in mine:
                share = ok[col].fillna(0).to_numpy(float)
                label = col.split(":", 1)[1]
                colour = species_colour(label)
                ax.barh(y, share, left=left, color="#DDDDDD" if colour.upper() == "#FFFFFF" else colour,
                        edgecolor="black", linewidth=0.3, label=label)
                left += share
            ax.set(title=f"{'metal' if site == 'M' else 'chalcogen'} sites", xlabel="share", xlim=(0, 1))
            if len(ok) <= 60:
                ax.set_yticks(y, [Path(f).name for f in ok["file"]] if n == 0 else [""] * len(ok), fontsize=7)
            ax.invert_yaxis()
            ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.04), ncol=4, frameon=False)
            ax.set_title(ax.get_title(), pad=22)
        return to_png(fig)


def dataset_calibration_png(table: Any, tolerance: float) -> bytes | None:
    """Relative difference between each file's pixel size and the one its lattice implies."""
    import matplotlib

    ok = table[(table["status"] == "ok") & table["calibration_difference"].notna()]
    if not len(ok):
        return None
    diff = 100 * ok["calibration_difference"].to_numpy(float)
    with matplotlib.rc_context(_STYLE):
        fig = _figure(9.0, 2.6)
        ax = fig.add_subplot()
        x = np.arange(len(ok))
        bad = diff > 100 * tolerance
        ax.axhspan(0, 100 * tolerance, color="#009988", alpha=0.15, lw=0, label=f"within {100 * tolerance:g} %")
        ax.scatter(x[~bad], diff[~bad], s=14, color="#009988")
        ax.scatter(x[bad], diff[bad], s=18, color="#CC3311", label="off: check the pixel size")
        ax.set(ylabel="pixel size vs lattice (%)", title="calibration check", ylim=(0, max(2 * 100 * tolerance,
                                                                                         1.1 * diff.max())))
        if len(ok) <= 25:
            ax.set_xticks(x, [Path(f).name for f in ok["file"]], rotation=60, ha="right", fontsize=7)
        ax.legend(frameon=False)
        return to_png(fig)


def dataset_runtime_png(table: Any) -> bytes | None:
    """Run time of every file (seconds) against its number of pixels."""
    import matplotlib

    done = table[table["run_time_s"].notna() & table["height_px"].notna()]
    if not len(done):
        return None
    pixels = (done["height_px"].astype(float) * done["width_px"].astype(float) * done["frames"].astype(float)) / 1e6
    with matplotlib.rc_context(_STYLE):
        fig = _figure(4.4, 2.8)
        ax = fig.add_subplot()
        failed = (done["status"] != "ok").to_numpy()
        ax.scatter(pixels[~failed], done["run_time_s"][~failed], s=14, color="#0077BB", label="ok")
        if failed.any():
            ax.scatter(pixels[failed], done["run_time_s"][failed], s=14, color="#CC3311", label="failed")
        ax.set(xlabel="megapixels (all frames)", ylabel="run time (s)", title="time per file")
        ax.legend(frameon=False)
        return to_png(fig)


__all__ = ["FIGURE_NAMES", "THUMB_PX", "remove_figures", "concentrations_png", "dataset_calibration_png", "dataset_composition_png",
           "dataset_concentrations_png", "dataset_pooled_png", "dataset_runtime_png", "file_figures",
           "heatmaps_png", "histograms_png", "overview_png", "thumbnail", "to_png"]
