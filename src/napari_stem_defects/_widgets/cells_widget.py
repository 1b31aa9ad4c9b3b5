"""Dock widget: classify the unit cells of a detected column lattice and count the defects.

Reads the sites from a Points layer of the "Detect atom columns" widget (its
features, and its point positions, so moved points and edited species count),
classifies every cell with a CNN (the shipped one or a fine-tuned version from
the "model" list; or its two-stage decision, or the physics baseline of the
sites' species), and shows the cells as the Shapes
layer ``<image> cells`` with a legend, a statistics table, a bar chart of defect
counts and a CSV export. For a stack only the current frame is classified.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
import pandas as pd
from magicgui.widgets import ComboBox, Container, FloatSpinBox, PushButton

from ..cells.classify import CLASSIFIERS, classify_site_table
from ..cells.shapes_layer import (
    cells_to_shapes_data, class_colour, class_counts, estimate_lattice_vectors, legend_html, low_confidence_mask,
)
from ..cells.statistics import DefectStatistics, defect_statistics
from ..layer_calibration import calibration_note
from ..model_registry import SHIPPED
from ._dock import (
    Section, StemDock, adopt_material, current_frame, is_grey_image, layer_choice, material_choice, pixel_size,
    plot_canvas, plot_style, text_label,
)
from ._jobs import JobRunner
from ._parts import CsvExport, ask_csv_path, put_shapes
from ._model_choice import ModelChoice

if TYPE_CHECKING:
    import napari

log = logging.getLogger(__name__)
#: Errors that mean "these sites cannot be classified", shown as a message.
EXPECTED_ERRORS = (ValueError, KeyError, IndexError, FileNotFoundError)
@dataclass
class CellsRun:
    """What one classification produced.

    Attributes
    ----------
    cells : DataFrame or None
        The classified cell table.
    stats : DefectStatistics or None
        Counts and concentrations over the complete cells.
    a1, a2 : ndarray or None
        Lattice vectors (y, x pixels) of the cell polygons.
    frame : int or None
        Stack frame classified (None for a 2D image).
    error : str
        Why nothing was classified ("" when it worked).
    cancelled : bool
        The run was cancelled before it finished (nothing is shown).
    layer : napari.layers.Shapes or None
        The Shapes layer that shows the cells.
    params : dict
        Settings of the run (material).
    """

    cells: pd.DataFrame | None = None
    stats: DefectStatistics | None = None
    a1: np.ndarray | None = None
    a2: np.ndarray | None = None
    frame: int | None = None
    error: str = ""
    cancelled: bool = False
    layer: Any = None
    params: dict[str, Any] = field(default_factory=dict)


def ask_save_path(parent: Any, default: str) -> str:
    """Ask for a CSV file to write ("" when cancelled); tests replace this function."""
    return ask_csv_path(parent, "Export defect statistics", default)


class CellsWidget(CsvExport, StemDock):
    """Classify unit cells from detected columns; show them, their legend, statistics and a bar chart.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer whose images and column Points layers are offered.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(viewer)
        self.last_run = None
        self.layer = layer_choice(viewer, is_grey_image, tooltip="the image whose cells to classify (for a stack, "
                                  "the frame shown)")
        self.points = layer_choice(viewer, _is_points, label="sites", nullable=True,
                                   tooltip="the atom columns (a Points layer of 'Detect atom columns', with your "
                                           "corrections); default '<image> columns'")
        self.material = material_choice()
        self.classifier = ComboBox(label="classifier", choices=list(CLASSIFIERS), value="cnn+columns",
                                   tooltip="cnn+columns: the network chosen under 'model' times what the sites' "
                                           "species say (default, as analyze: a cell never contradicts its "
                                           "columns); cnn: the network alone; cnn-two-stage: perfect vs defective, "
                                           "then the kind; physics: the sites' species against Z contrast, no "
                                           "network")
        self.model = ModelChoice("cells", self.native,
                                 "weights of the CNN classifiers: 'shipped' (packaged) or a version "
                                 "trained with the 'Train a model' dock")
        self.threshold = FloatSpinBox(label="low confidence <", min=0.0, max=1.0, step=0.05, value=0.8,
                                      tooltip="cells whose class probability is below this (0-1) are marked unsure "
                                              "(thick edge, tinted face) for review. Default 0.80")
        buttons = self.run_area("Classify cells", "classify every unit cell of the sites layer",
                                what="the classification")
        self.legend = text_label(tooltip="class colours (cell edges) and counts")
        self.statistics = text_label(tooltip="counts, shares and concentrations of the complete cells")
        self.export_button = PushButton(text="Export statistics CSV", enabled=False,
                                        tooltip="write the statistics table and the composition to a CSV file")
        self.figure, self.canvas = plot_canvas(220)
        plot = Section("Defect counts", expanded=True, tooltip="bar chart of the defect cells per class")
        plot.add_native(self.canvas)
        form = Container(labels=True, widgets=[self.layer, self.points, self.material, self.classifier, self.model,
                                               self.threshold])
        self.extend([form, buttons, self.progress, self.result, self.legend,
                     Section("Statistics", [self.statistics, self.export_button], expanded=True, labels=False,
                             tooltip="counts, shares and concentrations, and which calibration they used"),
                     plot])
        self.finish()
        self.runner = JobRunner(self.native, self.run_button, self.cancel_button, self.progress, self._say)
        self.run_button.changed.connect(lambda *_: self.run())
        self.cancel_button.changed.connect(self.cancel)
        self.export_button.changed.connect(lambda *_: self.export_csv())
        self.layer.changed.connect(self._on_layer)
        self.points.changed.connect(self._on_points)
        viewer.layers.events.inserted.connect(self._on_layer)
        self.classifier.changed.connect(self._on_classifier)
        self._on_layer()
        self._on_classifier()

    def refresh_models(self) -> None:
        """Re-list the model versions (keeping the chosen one when it still exists)."""
        self.model.refresh()

    def _on_classifier(self, *_) -> None:
        self.model.enabled = self.classifier.value != "physics"

    def _on_layer(self, *_) -> None:
        """Pick the image's column layer as the sites (``<image> columns`` first), and its material."""
        image, current = self.layer.value, self.points.value
        layers = [] if image is None else column_layers(self._viewer, image)
        if layers and (current is None or current not in layers) and layers[0] in self.points.choices:
            self.points.value = layers[0]
        self._on_points()

    def _on_points(self, *_) -> None:
        points, image = self.points.value, self.layer.value
        material = None
        if points is not None:
            material = points.metadata.get("parameters", {}).get("material")
        if not material and image is not None:
            material = image.metadata.get("material")
        adopt_material(self.material, material)

    def _say(self, message: str) -> None:
        self.say(message)

    def _current_frame(self, layer) -> int:
        return current_frame(self._viewer, layer)

    def _sites(self, image, points) -> tuple[pd.DataFrame, int | None, dict[str, Any]]:
        """The site table of the points (:func:`points_sites`) at the frame shown, the frame, and its parameters."""
        frame = self._current_frame(image) if image is not None and image.ndim == 3 else None
        sites, params = points_sites(points, frame)
        return sites, frame, params

    def run(self, blocking: bool = False) -> CellsRun | Any | None:
        """Classify the cells of the selected sites.

        Parameters
        ----------
        blocking : bool
            Work on the calling thread and return the :class:`CellsRun`;
            otherwise start a ``thread_worker`` and return it.
        """
        if self.runner.busy:
            return self.runner.worker
        image, points = self.layer.value, self.points.value
        if image is None:
            self._say("Open or select an image first.")
            return None
        if points is None or len(points.data) == 0:
            self._say(f"No atom columns for '{image.name}': detect columns first (Detect atom columns widget).")
            return None
        missing = {"sublattice", "species", "site_id", "i", "j"} - set(points.features.columns)
        if missing:
            self._say(f"'{points.name}' is not a column layer (no {', '.join(sorted(missing))} features).")
            return None
        sites, frame, params = self._sites(image, points)
        pixels = np.asarray(image.data[frame] if frame is not None else image.data)
        job = {"sites": sites, "frame": frame, "params": params, "material": self.material.value,
               "classifier": self.classifier.value, "model": self.model.value or SHIPPED, "pixels": pixels,
               "pixel_size": pixel_size(image), "image": image, "points": points,
               "calibration": calibration_note(image)}
        if not blocking:
            self._say("Classifying cells...")
        return self.runner.start(self._work, job, self._apply, blocking=blocking, what="Classification")

    def cancel(self, *_) -> None:
        """Stop the running classification at its next checkpoint."""
        self.runner.cancel()

    def _work(self, job: dict[str, Any], report: Callable[[float], None]) -> Generator[float, None, CellsRun]:
        """Lattice vectors, classes and statistics; yields the fraction done (``job['cancel']`` stops it)."""
        run = CellsRun(frame=job["frame"], params={"material": job["material"], "classifier": job["classifier"],
                                                   "model": job["model"]})
        try:
            sites, params = job["sites"], job["params"]
            if (sites["sublattice"].astype(str) == "M").sum() == 0:
                raise ValueError("no metal sites among the columns")
            a1, a2 = params.get("a1_px"), params.get("a2_px")
            run.a1, run.a2 = ((np.asarray(a1, float), np.asarray(a2, float)) if a1 is not None and a2 is not None
                              else estimate_lattice_vectors(sites))
            yield 0.2
            run.cancelled = job["cancel"].is_set()
            if run.cancelled:
                return run
            model = None
            if job["classifier"] != "physics":
                from ..cells.cnn import load_cell_model

                model = load_cell_model(self.model.path(job["model"]))
            # posteriors are not kept on the Points layer: for physics the species in its features decide
            run.cells = classify_site_table(job["pixels"], sites, job["material"], job["classifier"],
                                            nn_px=params.get("nn_px"), model=model)
            yield 0.8
            run.cancelled = job["cancel"].is_set()  # cancelled while classifying: show nothing
            if run.cancelled:
                run.cells = None
                return run
            run.stats = defect_statistics(run.cells, job["material"], job["pixel_size"])
        except EXPECTED_ERRORS as err:
            run.error = str(err) or type(err).__name__
        except Exception as err:  # a bug, not bad input: log it, never a traceback dialog
            log.exception("cell classification failed")
            run.error = f"unexpected error ({type(err).__name__}: {err}); details in the log"
        yield 1.0
        return run

    def _apply(self, job: dict[str, Any], run: CellsRun) -> CellsRun:
        """Show a finished run: Shapes layer, summary, legend, statistics, bar chart."""
        self.last_run = run
        if run.cancelled:
            self._say("Cancelled.")
            return run
        if run.error or run.cells is None:
            self._say(f"Cannot classify cells ({run.error or 'no result'}).")
            self.legend.value = self.statistics.value = ""
            self.export_button.enabled = False
            self._draw_bars(None)
            return run
        image = job["image"]
        if image in self._viewer.layers:
            run.layer = self._show(image, run, job)
        if run.frame is None and job["points"] in self._viewer.layers:
            _one_answer_on_points(job["points"], job["sites"], run.cells, job["material"])
        n_low = int(low_confidence_mask(run.cells, self.threshold.value).sum())
        where = "" if run.frame is None else f" of frame {run.frame} (current frame only)"
        model = "" if job["classifier"] == "physics" else f" (model {job['model']})"
        from ..cells.alike_pairs import alike_pair_notes
        from ..columns.intensity import metal_x2_intensity
        from ..columns.stated_shares import stated_share_notes
        from ..simulate.microscope import settings_from_metadata

        notes = alike_pair_notes(job["material"], run.stats.counts, settings_from_metadata(image.metadata),
                                 metal_x2_intensity(job["sites"]))
        notes += stated_share_notes(job["material"], job["sites"])
        self._say(f"{len(run.cells)} cells{where} ({run.stats.n_cells} complete), {job['material']}, "
                  f"{job['classifier']}{model}, "
                  f"{n_low} below confidence {self.threshold.value:.2f}." + "".join(f"\n{n}" for n in notes))
        self.legend.value = legend_html(class_counts(run.cells), n_low)
        self.statistics.value = statistics_html(run.stats, job.get("calibration"))
        self.export_button.enabled = True
        self._draw_bars(run.stats)
        return run

    def _show(self, image, run: CellsRun, job: dict[str, Any]):
        """Put the cells in the Shapes layer "<image> cells", replacing its data if it exists."""
        name = f"{image.name} cells"
        meta = {"material": job["material"], "classifier": job["classifier"],
                "model": None if job["classifier"] == "physics" else job["model"], "sites_layer": job["points"].name,
                "frame": run.frame,
                "image_layer": image.name}
        data, kwargs, _ = cells_to_shapes_data(
            run.cells, run.a1, run.a2, scale=tuple(image.scale)[-2:], units=tuple(str(u) for u in image.units)[-2:],
            translate=tuple(image.translate)[-2:], name=name, low_confidence=self.threshold.value, metadata=meta)
        return put_shapes(self._viewer, data, kwargs)

    def _draw_bars(self, stats: DefectStatistics | None) -> None:
        """Bar chart of the defect classes present (perfect cells in the title)."""
        self.figure.clear()
        style, fg = plot_style(self.figure, self._viewer)
        if stats is not None:
            present = {c: n for c, n in stats.counts.items() if n > 0 and c != "perfect"}
            with matplotlib.rc_context(style):
                ax = self.figure.add_subplot(1, 1, 1)
                ax.bar(list(present), list(present.values()), color=[class_colour(c) for c in present],
                       edgecolor=fg, linewidth=0.4)
                ax.set(ylabel="cells", title=f"defect cells ({stats.counts.get('perfect', 0)} perfect)")
                ax.tick_params(axis="x", labelrotation=45)
                for label in ax.get_xticklabels():
                    label.set_horizontalalignment("right")
        self.canvas.draw_idle()

    def _csv_export(self) -> tuple[pd.DataFrame, str, str] | str:
        """The statistics table and the composition of the last run (:func:`statistics_table`) for ``export_csv``."""
        run = self.last_run
        if run is None or run.stats is None:
            return "Classify cells first."
        name = f"{getattr(self.layer.value, 'name', 'cells')}_defects.csv"
        return statistics_table(run.stats), name, "Statistics written to {path}."

    def _ask_csv_path(self, default: str) -> str:
        return ask_save_path(self.native, default)


def statistics_table(stats: DefectStatistics) -> pd.DataFrame:
    """The per-class table (``kind`` 'class') followed by the site composition (``kind`` 'composition')."""
    classes = stats.table().assign(kind="class")
    comp = pd.DataFrame({"class": list(stats.composition), "count": [round(v * stats.n_cells) for v in
                                                                     stats.composition.values()],
                         "fraction": list(stats.composition.values()), "concentration_cm2": np.nan,
                         "kind": "composition"})
    out = pd.concat([classes, comp], ignore_index=True)
    return out[["kind", "class", "count", "fraction", "concentration_cm2"]]


def statistics_html(stats: DefectStatistics, calibration: str | None = None) -> str:
    """Counts, shares and concentrations of the classes present, as an HTML table.

    Parameters
    ----------
    stats : DefectStatistics
    calibration : str, optional
        Which calibration the concentrations used (:func:`~napari_stem_defects.layer_calibration.calibration_note`).
    """
    calibrated = any(np.isfinite(v) for v in stats.concentration_cm2.values())
    head = ("<tr><th align=left>class</th><th align=right>n</th><th align=right>%</th>"
            + ("<th align=right>cm<sup>-2</sup></th>" * calibrated) + "</tr>")
    rows = []
    for c, n in stats.counts.items():
        if n == 0:
            continue
        conc = f"<td>{stats.concentration_cm2[c]:.2e}</td>" if calibrated else ""
        rows.append(f"<tr><td>{html.escape(c)}</td><td align=right>{n}</td>"
                    f"<td align=right>{100 * stats.fraction[c]:.1f}</td>{conc}</tr>")
    area = f", {stats.area_nm2:.1f} nm<sup>2</sup>" if calibrated else ""
    how = calibration if calibration else ("calibrated" if calibrated else "uncalibrated")
    note = (f"{stats.n_cells} complete cells{area}; {html.escape(how)}"
            + ("" if calibrated else ": no concentrations"))
    return f"{note}<table cellspacing=0 cellpadding=3>{head}{''.join(rows)}</table>"


def points_sites(points: Any, frame: int | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The site table of a column Points layer (of one stack frame), and its detection parameters.

    Positions come from the layer data, so moved points count; points without a site of their own
    (a duplicated ``site_id``) are left out.
    """
    sites = points.features.copy()
    data = np.asarray(points.data, float)
    sites["y_px"], sites["x_px"] = data[:, -2], data[:, -1]
    params = dict(points.metadata.get("parameters", {}))
    if frame is not None:
        if "frame" not in sites and data.shape[1] == 3:
            sites["frame"] = data[:, 0].round().astype(int)
        if "frame" in sites:
            sites = sites[sites["frame"].astype(int) == frame].drop(columns="frame")
        params = {**params, **params.get("frames", {}).get(frame, {})}
    if "verified" not in sites:
        sites["verified"] = False
    # points added by hand copy another point's features (its site_id), or get site_id -1 in the
    # Correct labels dock: they belong to no cell (an added adatom still marks its cell, by position)
    hand = sites["site_id"].duplicated() | ((sites["site_id"].astype(int) < 0)
                                            & (sites["sublattice"].astype(str) != "H"))
    return sites[~hand].reset_index(drop=True), params


def _one_answer_on_points(points: Any, sites: pd.DataFrame, cells: pd.DataFrame, material: str) -> int:
    """Give the columns layer the species its cells' classes imply (one answer per column); returns how many changed.

    Sites a person verified keep their species (their cells already follow them); the others take
    the pair of contents of :func:`~napari_stem_defects.cells.joint.one_answer`.
    """
    from ..cells.joint import one_answer
    from ._correct_styles import restyle_points

    answer = one_answer(sites, cells, material).set_index("site_id")
    features = points.features.copy()
    rows = features["site_id"].isin(answer.index).to_numpy().copy()
    if "verified" in features:
        rows &= ~features["verified"].astype(bool).to_numpy()
    ids = features.loc[rows, "site_id"]
    new = answer.loc[ids, "species"].to_numpy()
    changed = features.loc[rows, "species"].astype(str).to_numpy() != new.astype(str)
    if not changed.any():
        return 0
    features.loc[rows, "species"] = new
    features.loc[rows, "probability"] = answer.loc[ids, "probability"].to_numpy()
    points.features = features
    restyle_points(points)
    return int(changed.sum())


def _is_points(layer: Any) -> bool:
    from napari.layers import Points

    return isinstance(layer, Points)


def column_layers(viewer: Any, image: Any) -> list:
    """The column Points layers of ``image``: ``<image> columns`` first, then other methods' layers."""
    from napari.layers import Points

    name = f"{image.name} columns"
    found = [x for x in viewer.layers if isinstance(x, Points) and (x.name == name or x.name.startswith(name + " ("))]
    return sorted(found, key=lambda x: x.name != name)


__all__ = ["CellsRun", "CellsWidget", "ask_save_path", "column_layers", "statistics_html",
           "statistics_table"]
