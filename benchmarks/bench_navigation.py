"""How long "Next uncertain" takes in the Correct labels dock with 15k cells, in a real viewer.

Run under a display (``xvfb-run -a -s "-screen 0 1366x768x24" python benchmarks/bench_navigation.py``).
Each click selects the next least confident cell, centres and zooms the view on it, and is
timed until the canvas has redrawn (events processed). The peer is the dock's first release,
which only re-centred the view: run it with PYTHONPATH pointing at that release to compare.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd


def cells_table(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """n x n cells of a hexagonal lattice with random classes and confidences."""
    from napari_stem_defects.simulate.defects import CELL_CLASSES

    a1, a2 = np.array([0.0, 20.0]), np.array([17.32, 10.0])
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    centres = i.reshape(-1, 1) * a1 + j.reshape(-1, 1) * a2 + (10.0, 10.0 + 10.0 * n)
    rng = np.random.default_rng(seed)
    cells = pd.DataFrame({"cell_id": np.arange(n * n), "i": i.ravel(), "j": j.ravel(), "y_px": centres[:, 0],
                          "x_px": centres[:, 1], "class": rng.choice(list(CELL_CLASSES), n * n),
                          "confidence": rng.uniform(0.3, 1.0, n * n), "verified": False, "source": "model"})
    return cells, a1, a2


def _camera(viewer):
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=122, help="cells per side (122: 14,884 cells)")
    parser.add_argument("--clicks", type=int, default=20)
    parser.add_argument("--label", default="this branch", help="what is measured (e.g. the first release)")
    args = parser.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_stem_defects._widgets.correct_widget import CorrectWidget

    def canvas_size(viewer):
        return tuple(viewer.canvas.size)
    from napari_stem_defects.cells.shapes_layer import cells_to_shapes_data

    cells, a1, a2 = cells_table(args.n)
    extent = cells[["y_px", "x_px"]].to_numpy().max(axis=0) + 20
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1366, 740)
    app = QApplication.instance()
    image = viewer.add_image(np.zeros(tuple(int(v) for v in extent), np.float32), name="scan", scale=(0.1, 0.1),
                             units=("angstrom", "angstrom"), metadata={"material": "MoS2"})
    data, kwargs, _ = cells_to_shapes_data(cells, a1, a2, scale=(0.1, 0.1), units="angstrom", name="scan cells")
    shapes = viewer.add_shapes(data, **kwargs)
    widget = CorrectWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image.value, widget.cells.value = image, shapes
    viewer.reset_view()
    app.processEvents()
    overview = _camera(viewer).zoom
    handler, redraw, pan, zooms = [], [], [], []
    for k in range(args.clicks):
        t0 = time.perf_counter()
        back = k % 2 == 1 and hasattr(widget, "previous_uncertain")  # (the first release had no "previous")
        row = widget.previous_uncertain() if back else widget.next_uncertain()
        t1 = time.perf_counter()
        app.processEvents()  # the canvas redraws
        t2 = time.perf_counter()
        handler.append(t1 - t0)
        redraw.append(t2 - t1)
        zooms.append(_camera(viewer).zoom)
        assert shapes.selected_data == {row}
        # the same redraw after a plain pan by a person, for comparison
        _camera(viewer).center = tuple(np.asarray(_camera(viewer).center) + 0.5)
        t3 = time.perf_counter()
        app.processEvents()
        pan.append(time.perf_counter() - t3)
    handler, redraw, pan = (np.array(x[1:]) * 1000 for x in (handler, redraw, pan))  # the 1st builds caches
    print(f"{args.label}: next / previous uncertain on {len(cells)} cells, {args.clicks - 1} clicks "
          "(this machine: 2 cores, Xvfb with software OpenGL):")
    print("| step | median ms | max ms |")
    print("|---|---|---|")
    print(f"| dock: pick the cell, select it, centre and zoom | {np.median(handler):.0f} | {handler.max():.0f} |")
    print(f"| napari: redraw the canvas after it | {np.median(redraw):.0f} | {redraw.max():.0f} |")
    print(f"| napari: redraw after a plain pan (peer) | {np.median(pan):.0f} | {pan.max():.0f} |")
    print(f"view after a click: {min(canvas_size(viewer)) / zooms[-1] / (20 * 0.1):.1f} cells across "
          f"(the overview showed {min(canvas_size(viewer)) / overview / (20 * 0.1):.0f})")
    viewer.close()


if __name__ == "__main__":
    main()
