"""Screenshots of every dock after a run, in a real viewer on a 1366 x 768 laptop screen.

Run under a display of that size::

    xvfb-run -a -s "-screen 0 1366x768x24" .venv/bin/python scripts/screenshots.py --out screenshots

It opens the "MoS2 with vacancies" sample (and the image series for Dynamics), opens all
seven docks from the plugin as a person would, runs each, and writes for every dock
``<dock>.png`` (what shows on the screen) and ``<dock>_full.png`` (its whole scrolled
content), plus ``window.png`` (the main window) and, with ``--readme``, the small README
screenshot. It prints the main window's height, the canvas size, each run's time and the
longest time its progress bar stood still.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

PLUGIN = "napari-stem-defects"
DOCKS = ("Check pixel calibration", "Detect atom columns", "Classify unit cells", "Defect heatmaps", "Dynamics",
         "Correct labels", "Train a model")


def _slug(name: str) -> str:
    return name.lower().replace(" ", "_")


class ProgressLog:
    """Times at which a dock's progress bar moved (to find the longest still stretch)."""

    def __init__(self, bar) -> None:
        self.times: list[float] = []
        bar.changed.connect(lambda *_: self.times.append(time.perf_counter()))

    def start(self) -> None:
        self.times = [time.perf_counter()]

    def longest_still(self) -> float:
        t = np.array(self.times + [time.perf_counter()])
        return float(np.diff(t).max()) if len(t) > 1 else 0.0


def save_small_png(image, path: Path, width: int = 1100, colours: int = 96) -> int:
    """Save a QImage scaled to ``width`` with a reduced palette (a README picture well under 300 KB)."""
    from PIL import Image
    from qtpy.QtCore import QBuffer, QIODevice, Qt

    scaled = image.scaledToWidth(width, Qt.TransformationMode.SmoothTransformation)
    buffer = QBuffer()
    buffer.open(QIODevice.OpenModeFlag.ReadWrite)
    scaled.save(buffer, "PNG")
    import io

    picture = Image.open(io.BytesIO(bytes(buffer.data()))).convert("RGB")
    picture.quantize(colors=colours, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="screenshots", help="folder for the PNG files")
    parser.add_argument("--readme", default=None, help="also write the small README screenshot here")
    parser.add_argument("--skip-dynamics", action="store_true", help="do not run the image-series analysis")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import os

    scratch = tempfile.TemporaryDirectory()  # autosaves and model versions of this run, never the user's
    os.environ["NAPARI_STEM_DEFECTS_MODELS"] = str(Path(scratch.name) / "models")

    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    screen = app.primaryScreen().geometry()
    if (screen.width(), screen.height()) != (1366, 768):
        print(f"warning: the screen is {screen.width()} x {screen.height()}, not a 1366 x 768 laptop's")
    window = viewer.window._qt_window
    window.setGeometry(0, 0, screen.width(), screen.height())
    (image, _truth) = viewer.open_sample(PLUGIN, "mos2_vacancies")
    docks = {name: viewer.window.add_plugin_dock_widget(PLUGIN, name)[1] for name in DOCKS}
    for _ in range(5):
        app.processEvents()
        time.sleep(0.05)
    rows = []

    def show(name: str) -> None:
        docks[name].native.parentWidget().raise_()
        for _ in range(3):
            app.processEvents()
            time.sleep(0.05)

    def shoot(name: str) -> None:
        show(name)
        dock = docks[name]
        dock.native.parentWidget().grab().save(str(out / f"{_slug(name)}.png"))
        dock.body.grab().save(str(out / f"{_slug(name)}_full.png"))

    def timed(name: str, action) -> None:
        log = ProgressLog(docks[name].progress)
        show(name)
        log.start()
        t0 = time.perf_counter()
        action()
        app.processEvents()
        rows.append((name, time.perf_counter() - t0, log.longest_still()))

    show("Check pixel calibration")
    t0 = time.perf_counter()
    docks["Check pixel calibration"]._on_measure()
    rows.append(("Check pixel calibration", time.perf_counter() - t0, float("nan")))
    shoot("Check pixel calibration")
    timed("Detect atom columns", lambda: docks["Detect atom columns"].run(blocking=True))
    shoot("Detect atom columns")
    timed("Classify unit cells", lambda: docks["Classify unit cells"].run(blocking=True))
    viewer.reset_view()
    viewer.camera.zoom *= 2.5  # a few dozen cells: columns, cells and their classes readable
    shoot("Classify unit cells")
    window.grab().save(str(out / "window_cells.png"))
    if args.readme:
        size = save_small_png(window.grab().toImage(), Path(args.readme))
        print(f"README screenshot: {args.readme} ({size / 1024:.0f} KB)")
    viewer.layers.selection.active = viewer.layers[f"{image.name} cells"]
    correct = docks["Correct labels"]
    show("Correct labels")
    t0 = time.perf_counter()
    correct.next_uncertain()
    app.processEvents()
    rows.append(("Correct labels (next uncertain)", time.perf_counter() - t0, float("nan")))
    shoot("Correct labels")
    window.grab().save(str(out / "window_correct.png"))
    viewer.reset_view()
    timed("Defect heatmaps", lambda: docks["Defect heatmaps"].run(blocking=True))
    shoot("Defect heatmaps")
    window.grab().save(str(out / "window_heatmaps.png"))

    with tempfile.TemporaryDirectory() as folder:
        correct.set_class("V_M")  # one verified cell, so the training set is not empty
        dataset = Path(folder) / "set"
        correct.export_training_set(dataset, others=[], blocking=True)
        train = docks["Train a model"]
        shoot("Train a model")  # the empty list explains itself
        (out / "train_a_model.png").rename(out / "train_a_model_empty.png")
        train.add_dataset(dataset)
        train.name.value = "my-model"
        shoot("Train a model")

    if not args.skip_dynamics:
        for layer in list(viewer.layers):
            viewer.layers.remove(layer)
        viewer.open_sample(PLUGIN, "dynamics_stack")
        dyn = docks["Dynamics"]
        dyn.layer.reset_choices()
        timed("Dynamics", lambda: dyn.run(blocking=True))
        shoot("Dynamics")
        window.grab().save(str(out / "window_dynamics.png"))

    height, width = viewer.canvas.size
    print(f"Main window {window.frameGeometry().width()} x {window.frameGeometry().height()} px on a "
          f"{screen.width()} x {screen.height()} screen with all {len(DOCKS)} docks open; canvas {width} x {height}")
    print("| dock | run (s) | longest still progress (s) |")
    print("|---|---|---|")
    for name, seconds, still in rows:
        print(f"| {name} | {seconds:.1f} | {'' if np.isnan(still) else f'{still:.1f}'} |")
    print(f"screenshots in {out}/")
    viewer.close()
    scratch.cleanup()


if __name__ == "__main__":
    main()
