"""Dock widget "Consensus labels": several annotators' files of one image, their agreement and disagreements.

"Load annotators' files..." reads two or more annotation files of one image (each person
saves their own with "Correct labels", which records their name), matches their sites and
cells by position (:mod:`napari_stem_defects.annotations.consensus`) and shows

* a Points layer ``<image> disagreements``: every site the annotators did not label alike,
  with its votes as text and features (``vote_counts``, ``labels``, ``trusted``...);
* a Shapes layer ``<image> disputed cells``: every cell they did not classify alike;
* Fleiss' kappa overall and per class.

"Save consensus..." writes the consensus annotation file (majority labels; labels with at
least "min votes" agreeing votes marked verified, the ones a training set is built from)
and the agreement CSV beside it, as ``napari-stem-defects consensus`` does.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import Container, PushButton, SpinBox

from ._dock import Section, StemDock, row
from ._dock import text_label as _text

if TYPE_CHECKING:
    from collections.abc import Sequence

    import napari

def ask_annotation_files(parent: Any, default: str) -> list[str]:
    """Ask for the annotators' files ([] when cancelled); tests replace this function."""
    from qtpy.QtWidgets import QFileDialog

    paths, _ = QFileDialog.getOpenFileNames(parent, "Annotators' files of one image", default,
                                            "Annotations (*.annotations.json)")
    return [str(p) for p in paths or ()]


def ask_consensus_file(parent: Any, default: str) -> str:
    """Ask where to write the consensus file ("" when cancelled); tests replace this function."""
    from qtpy.QtWidgets import QFileDialog

    path, _ = QFileDialog.getSaveFileName(parent, "Save the consensus annotations as", default,
                                          "Annotations (*.annotations.json)")
    return str(path or "")


class ConsensusWidget(StemDock):
    """Load several annotators' files of one image; show agreement, disagreements and kappa.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        viewer = getattr(viewer, "__wrapped__", viewer)
        super().__init__(viewer)
        self.consensus = None
        self.files: list[str] = []
        self.load_button = PushButton(text="Load annotators' files...",
                                      tooltip="pick two or more .annotations.json files of ONE image, one per "
                                              "annotator")
        self.min_votes = SpinBox(label="min votes", value=2, min=1, max=99,
                                 tooltip="agreeing votes a label needs to be trusted (verified in the consensus "
                                         "file, used for training)")
        self.save_button = PushButton(text="Save consensus...", enabled=False,
                                      tooltip="write the consensus annotation file and the agreement CSV beside it")
        self.kappa = _text(tooltip="Fleiss' kappa: agreement beyond chance, overall and per class "
                                   "(1 perfect, 0 chance level)")
        self.result = _text(tooltip="what was loaded or written")
        self.extend([
            Section("Annotators", [row(self.load_button), Container(labels=True, widgets=[self.min_votes]),
                                   self.result], expanded=True, labels=False,
                    tooltip="the annotators' files and the votes a trusted label needs"),
            Section("Agreement", [self.kappa], expanded=True, labels=False, tooltip="Fleiss' kappa per class"),
            Section("Consensus file", [self.save_button], expanded=True, labels=False,
                    tooltip="write the merged labels"),
        ])
        self.finish()
        self.load_button.changed.connect(lambda *_: self.load())
        self.save_button.changed.connect(lambda *_: self.save())
        self.min_votes.changed.connect(lambda *_: self._rebuild())

    # ------------------------------------------------------------------ actions
    def load(self, paths: Sequence[str] | None = None) -> bool:
        """Read the annotators' files (asked with a dialog when not given) and show their disagreements."""
        from ..annotations.consensus import (
            ConsensusError,
            annotator_names,
            load_annotator_files,
        )

        if paths is None:
            paths = ask_annotation_files(self.native, str(Path.home()))
        if not paths:
            return False
        try:
            self._anns = load_annotator_files(paths)
        except ConsensusError as err:
            self.say(str(err))
            return False
        self.files = [str(p) for p in paths]
        self._names = annotator_names(self._anns, self.files)
        self.min_votes.max = len(self._anns)
        with self.min_votes.changed.blocked():
            self.min_votes.value = min(len(self._anns), len(self._anns) // 2 + 1)
        return self._rebuild()

    def _rebuild(self) -> bool:
        from ..annotations.consensus import ConsensusError, build_consensus
        from ..annotations.consensus_report import disagreements, kappa_rows

        if not getattr(self, "_anns", None):
            return False
        try:
            self.consensus = build_consensus(self._anns, self._names, min_votes=self.min_votes.value)
        except ConsensusError as err:
            self.say(str(err))
            return False
        found = disagreements(self.consensus, self._anns)
        self._show_layers(found)
        self.kappa.value = _kappa_html(kappa_rows(self.consensus))
        self.save_button.enabled = True
        counts = [f"{len(found.sites)} of {len(self.consensus.sites.majority)} sites"
                  if self.consensus.sites is not None else "",
                  f"{len(found.cells)} of {len(self.consensus.cells.majority)} cells"
                  if self.consensus.cells is not None else ""]
        self.say(f"{len(self._anns)} annotators ({', '.join(self._names)}) disagree on "
                 f"{' and '.join(c for c in counts if c)}.")
        return True

    def save(self, path: str | None = None) -> Path | None:
        """Write the consensus annotation file and its agreement CSV (asked with a dialog when not given)."""
        from ..annotations.consensus_report import agreement_table, consensus_paths
        from ..annotations.store import save_annotations
        from ..io.atomic import atomic_write_text

        if self.consensus is None:
            self.say("Load the annotators' files first.")
            return None
        if path is None:
            path = ask_consensus_file(self.native, str(Path(self.files[0]).with_name("consensus.annotations.json")))
        if not path:
            return None
        target, csv = consensus_paths(path, None, "consensus", None)
        if target.resolve() in {Path(f).resolve() for f in self.files}:
            self.say(f"{target} is an annotator's file; choose a new name.")
            return None
        merged = self.consensus.annotations
        try:
            save_annotations(merged, target, saved_by=merged.saved_by)
            atomic_write_text(csv, agreement_table(self.consensus).to_csv(index=False))
        except (OSError, ValueError) as err:
            self.say(f"Cannot write {target} ({err}).")
            return None
        self.say(f"Consensus saved to {target} and {csv.name}.")
        return target

    # ------------------------------------------------------------------ layers
    def _show_layers(self, found) -> None:
        """Add the disagreement layers, replacing the ones this dock added before."""
        from ..annotations.consensus_report import disagreement_layer_data

        for data, kwargs, kind in disagreement_layer_data(self.consensus, found):
            if kwargs["name"] in self._viewer.layers:
                self._viewer.layers.remove(self._viewer.layers[kwargs["name"]])
            if kind == "points":
                self._viewer.add_points(data, **kwargs)
            elif len(data):
                self._viewer.add_shapes(data, **kwargs)
            else:  # no disputed cells: an empty layer (napari cannot colour shapes it does not have)
                self._viewer.add_shapes(**{k: kwargs[k] for k in ("name", "scale", "units", "translate")})


def _kappa_html(rows: list[dict]) -> str:
    """Fleiss' kappa rows as a small HTML table (``-`` where undefined)."""
    if not rows:
        return "No items to compare."
    cells = []
    for r in rows:
        kappa = "-" if not math.isfinite(r["kappa"]) else f"{r['kappa']:.3f}"
        label = f"<b>{r['kind']}</b>" if r["class"] == "(all)" else r["class"]
        cells.append(f"<tr><td>{label}</td><td align='right'>{r['share']:.3f}</td>"
                     f"<td align='right'>{kappa}</td></tr>")
    return ("Fleiss' kappa<table cellspacing='4'><tr><th align='left'>class</th><th>share</th><th>kappa</th></tr>"
            + "".join(cells) + "</table>")


__all__ = ["ConsensusWidget", "ask_annotation_files", "ask_consensus_file"]
